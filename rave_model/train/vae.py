"""Stage 1: representation learning (the VAE warm-up of RAVE).

Encoder and decoder are trained together on the multiband and full-band
spectral distances (weighted by ``train.loss_weights``) plus ``beta * KL``, with
beta warmed up log-linearly from ``train.beta_start`` to ``train.beta_end`` over
``train.beta_warmup_steps``.
Adam (``train.lr``, ``train.betas``) with the learning rate decaying linearly
to ``lr * train.lr_end_factor`` over the stage, as the reference schedules it.
When the stage ends, the latent PCA (:mod:`rave_model.train.pca`) fills the
model's ``latent_mean``/``latent_pca``/``fidelity`` buffers.
Precision, Adam's kernel and compilation: :mod:`rave_model.train.precision`.
"""
from __future__ import annotations

from typing import Any

import torch

from rave_model.losses import beta_schedule
from rave_model.train import precision as prec
from rave_model.train.reconstruction import Reconstruction, log_reconstructions, validate
from rave_model.train.stage import Stage, TrainContext
from rave_model.train.total_loss import weighted_sum


def kl_weight(step: int, tc: Any) -> float:
    """Beta at stage-1 step ``step`` (0 for the first batch). The reference's warm-up
    callback counts the batch before it computes beta, so its first batch is at
    schedule step 1: step k here trains with the schedule at k + 1."""
    return beta_schedule(step + 1, int(tc.beta_warmup_steps), float(tc.beta_start), float(tc.beta_end))


class VAEStage(Stage):
    name = "vae"

    def __init__(self, ctx: TrainContext) -> None:
        super().__init__(ctx)
        tc = ctx.cfg.train
        model = ctx.model
        self.params = list(model.encoder.parameters()) + list(model.decoder.parameters())
        self.precision = prec.for_run(ctx.cfg, ctx.device)
        self.opt = prec.adam(self.params, float(tc.lr), tuple(float(b) for b in tc.betas), ctx.device)
        self.scaler = self.precision.scaler()
        self.sched = torch.optim.lr_scheduler.LinearLR(
            self.opt, start_factor=1.0, end_factor=float(tc.lr_end_factor), total_iters=max(1, int(tc.vae_steps))
        )
        self.recon = Reconstruction(ctx, self.precision)

    def total_steps(self) -> int:
        return int(self.ctx.cfg.train.vae_steps)

    def on_start(self) -> None:
        self.ctx.model.train()

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor | float]:
        tc = self.ctx.cfg.train
        beta = kl_weight(step, tc)
        _, losses = self.recon(batch)
        spectral = {k: losses[k] for k in ("multiband", "fullband")}
        loss = weighted_sum(spectral, tc.loss_weights) + beta * losses["kl"]
        self.precision.step(loss, self.opt, self.scaler)
        self.sched.step()
        out: dict[str, torch.Tensor | float] = {k: v.detach() for k, v in losses.items()}
        out["loss"] = loss.detach()
        out["beta"] = beta
        return out

    def validate(self) -> dict[str, float]:
        return validate(self.ctx, self.recon.fullband)

    def log_media(self, step: int) -> None:
        log_reconstructions(self.ctx, "vae/reconstruction", step)

    def on_complete(self) -> dict[str, Any]:
        from rave_model.train.pca import fit_latent_pca

        result = fit_latent_pca(self.ctx)
        self.ctx.logger.info(
            f"latent PCA: {result['pca_dims']} of {self.ctx.cfg.model.latent_size} dimensions explain "
            f"{self.ctx.cfg.train.fidelity:.0%} of the variance (from {result['pca_frames']} latent frames)"
        )
        return result

    def state_dict(self) -> dict[str, Any]:
        state = {"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prec.load_optimizer_state(self.opt, state["opt"])
        self.sched.load_state_dict(state["sched"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
