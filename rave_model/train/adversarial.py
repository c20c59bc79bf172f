"""Stage 2: adversarial fine-tuning (RAVE's second phase).

The encoder is frozen (eval mode, no gradients: its BatchNorm statistics and
the latent PCA stay what stage 1 left). The decoder learns against a
discriminator (:mod:`rave_model.discriminator`): on one step in
``train.disc_every`` the discriminator is updated on real vs decoded audio,
on the others the decoder is updated on the weighted sum (``train.loss_weights``) of

    multiband and fullband spectral distances,
    adversarial loss (hinge or LSGAN, ``train.gan_loss``),
    feature matching,

as the reference alternates them. Adam with ``train.betas`` for both; the
decoder continues at the rate stage 1 ended with (``lr * lr_end_factor``),
the discriminator uses ``train.disc_lr``. The discriminator runs under the
run's autocast and its features go to the losses in float32; precision,
Adam's kernel and compilation: :mod:`rave_model.train.precision`.
"""
from __future__ import annotations

from typing import Any

import torch

from rave_model.discriminator import Discriminator
from rave_model.losses import adversarial_losses
from rave_model.train import precision as prec
from rave_model.train.reconstruction import Reconstruction, log_reconstructions, validate
from rave_model.train.stage import Stage, TrainContext
from rave_model.train.total_loss import weighted_sum


def _split(features: list[list[torch.Tensor]], n: int) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """Features of cat([real, fake]) -> (real features, fake features)."""
    real = [[f[:n] for f in sub] for sub in features]
    fake = [[f[n:] for f in sub] for sub in features]
    return real, fake


class AdversarialStage(Stage):
    name = "adversarial"

    def __init__(self, ctx: TrainContext) -> None:
        super().__init__(ctx)
        tc = ctx.cfg.train
        betas = tuple(float(b) for b in tc.betas)
        # Freeze before any wrapping so a DDP wrapper only syncs the decoder.
        ctx.model.encoder.requires_grad_(False)
        # The v1 decoder adds its noise branch from stage 2 on (as acids-rave).
        ctx.model.set_warmed_up(True)
        self.discriminator = Discriminator.from_config(ctx.cfg).to(ctx.device)
        self.precision = prec.for_run(ctx.cfg, ctx.device)
        compile = bool(tc.compile)
        wrapped = ctx.wrap(self.discriminator)
        # Compiled views for the training steps (the wrapper for the discriminator's
        # own update, the plain module for scoring the decoder's output).
        self.disc = prec.compiled(wrapped, compile)
        self.disc_score = self.disc if wrapped is self.discriminator else prec.compiled(self.discriminator, compile)
        self.gen_opt = prec.adam(ctx.model.decoder.parameters(), float(tc.lr) * float(tc.lr_end_factor), betas, ctx.device)
        self.dis_opt = prec.adam(self.discriminator.parameters(), float(tc.disc_lr), betas, ctx.device)
        self.gen_scaler, self.dis_scaler = self.precision.scaler(), self.precision.scaler()
        self.recon = Reconstruction(ctx, self.precision)

    def total_steps(self) -> int:
        return int(self.ctx.cfg.train.adversarial_steps)

    def on_start(self) -> None:
        from rave_model.train.logging import human_count

        n = sum(p.numel() for p in self.discriminator.parameters())
        self.ctx.logger.info(f"discriminator: {human_count(n)} parameters")
        self._modes()

    def _modes(self) -> None:
        model = self.ctx.model
        model.train()
        model.encoder.eval()
        self.discriminator.train()

    def _features(self, disc: Any, x: torch.Tensor, n: int) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
        with self.precision.autocast():
            features = disc(x)
        return _split(prec.float32_features(features), n)

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        tc = self.ctx.cfg.train
        n = batch.shape[0]
        if step % int(tc.disc_every) == 0:
            with torch.no_grad():  # only the decoded audio: no loss needed here
                y = self.recon.net(batch, True)[0]
            real, fake = self._features(self.disc, torch.cat([batch, y], 0), n)
            adv = adversarial_losses(real, fake, str(tc.gan_loss), int(tc.fm_skip_features), bool(tc.fm_relative))
            self.precision.step(adv["dis"], self.dis_opt, self.dis_scaler)
            return {k: adv[k].detach() for k in ("dis", "pred_real", "pred_fake")}

        y, losses = self.recon(batch, frozen_encoder=True)
        # The discriminator only scores here; its parameters get no update.
        self.discriminator.requires_grad_(False)
        # The plain module, not the DDP wrapper: no gradient of it is wanted here,
        # and a DDP forward would wait for gradients that never come.
        real, fake = self._features(self.disc_score, torch.cat([batch, y], 0), n)
        self.discriminator.requires_grad_(True)
        adv = adversarial_losses(real, fake, str(tc.gan_loss), int(tc.fm_skip_features), bool(tc.fm_relative))
        terms = {
            "multiband": losses["multiband"],
            "fullband": losses["fullband"],
            "adversarial": adv["adv"],
            "feature_matching": adv["feature_matching"],
        }
        loss = weighted_sum(terms, tc.loss_weights)
        self.precision.step(loss, self.gen_opt, self.gen_scaler)
        return {**{k: v.detach() for k, v in terms.items()}, "loss": loss.detach()}

    def validate(self) -> dict[str, float]:
        metrics = validate(self.ctx, self.recon.fullband)
        self._modes()
        return metrics

    def log_media(self, step: int) -> None:
        log_reconstructions(self.ctx, "adversarial/reconstruction", step)
        self._modes()

    def state_dict(self) -> dict[str, Any]:
        state = {
            "discriminator": self.discriminator.state_dict(),
            "gen_opt": self.gen_opt.state_dict(),
            "dis_opt": self.dis_opt.state_dict(),
        }
        if self.gen_scaler is not None:
            state["gen_scaler"], state["dis_scaler"] = self.gen_scaler.state_dict(), self.dis_scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        prec.load_optimizer_state(self.gen_opt, state["gen_opt"])
        prec.load_optimizer_state(self.dis_opt, state["dis_opt"])
        if self.gen_scaler is not None and "gen_scaler" in state:
            self.gen_scaler.load_state_dict(state["gen_scaler"])
            self.dis_scaler.load_state_dict(state["dis_scaler"])
