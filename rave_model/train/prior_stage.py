"""Stage 3: train the latent prior (:mod:`rave_model.prior`) on the frozen encoder.

Data: the frozen encoder's posterior parameters of every example, computed
once and cached in ``RUN/prior/latents.pt`` (fingerprinted by the encoder and
PCA weights, so a cache made by another model is recomputed, never reused).
The encoder runs once per example instead of once per step, which makes the
prior stage cheap even where the encoder is not. Each step still draws a fresh
latent sample from the cached posterior (``RAVE.reparametrize``), as the
reference does by encoding on the fly, so the prior learns the latent the
decoder is used to, not only its mean.

A sequence is the PCA projection ``latent_pca @ (z - latent_mean)`` cropped to
the prior's ``L`` dimensions (``prior.latent_size``, or as many as
``prior.fidelity`` of the variance needs) and to ``window + L - 1`` frames (the
skew costs L-1 frames), where the window is ``prior.n_frames`` or, when that is 0,
``2^ceil(log2(receptive field))`` frames as acids-rave's prior chooses it, so every
dilation sees real context.

Resumable: the batch at data position (epoch, offset) is drawn from a
generator seeded by ``(train.seed, rank, epoch, offset)``, the prior and its
optimizer are the stage state, the runner restores the RNG, so a resumed run
takes the same steps as one that never stopped.

Where the weights live: ``checkpoint["stage_state"]`` while the stage runs and
after it completes (it is the last stage); :func:`rave_model.prior.load_prior`
reads them back.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from rave_model.data import DataPosition
from rave_model.train.stage import Stage, TrainContext

if TYPE_CHECKING:
    import torch

CACHE_NAME = "latents.pt"


def prior_window(n_frames: int, receptive_field: int) -> int:
    """Latent frames per training sequence: ``n_frames``, or when it is 0 the
    power of two at or above the prior's receptive field (acids-rave's rule)."""
    if n_frames > 0:
        return int(n_frames)
    return 1 << max(0, int(receptive_field) - 1).bit_length()


def model_fingerprint(model: Any) -> str:
    """Hash of every encoder weight and the PCA buffers: the latents depend on nothing else."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        if name.startswith(("encoder.", "pqmf.", "latent_")):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class PriorStage(Stage):
    name = "prior"

    def __init__(self, ctx: TrainContext) -> None:
        import torch

        from rave_model.prior import build_prior, latent_dims_for_fidelity

        super().__init__(ctx)
        pc = ctx.cfg.prior
        full = int(ctx.cfg.model.latent_size)
        if int(pc.latent_size) > 0:
            dims = min(int(pc.latent_size), full)
        else:
            dims = latent_dims_for_fidelity(ctx.model.fidelity.detach().cpu(), float(pc.fidelity))
        self.args = {"latent_size": dims, **{k: int(getattr(pc, k)) for k in ("resolution", "hidden_size", "skip_size", "kernel_size", "cycle_size", "n_layers")}}
        self.prior = build_prior(dims, self.args).to(ctx.device)
        self._make_optimizer()
        self.train_latents: torch.Tensor | None = None  # [N, 2*latent, T] posterior params
        self.val_latents: torch.Tensor | None = None

    def _make_optimizer(self) -> None:
        import torch

        self.net = self.ctx.wrap(self.prior)
        self.opt = torch.optim.Adam(self.prior.parameters(), lr=float(self.ctx.cfg.prior.lr))

    # -- runner interface ----------------------------------------------------------------

    def total_steps(self) -> int:
        return int(self.ctx.cfg.prior.steps)

    def on_start(self) -> None:
        self.ctx.model.eval()
        for p in self.ctx.model.parameters():
            p.requires_grad_(False)
        self.train_latents, self.val_latents = self._latents()
        frames = int(self.train_latents.shape[-1])
        dims = self.prior.latent_size
        self.crop = min(prior_window(self.ctx.cfg.prior.n_frames, self.prior.receptive_field) + dims - 1, frames)
        if self.crop < dims + 1:
            from rave_model.data import DatasetError

            raise DatasetError(
                f"{self.ctx.data.source.path}: examples give {frames} latent frames, the prior needs at least "
                f"{dims + 1} ({dims} dimensions); lower --set prior.latent_size or make longer examples"
            )
        self.ctx.logger.info(
            f"prior: {dims} latent dimensions, {len(self.train_latents)} sequences of {frames} frames, "
            f"training on {self.crop}-frame crops, receptive field {self.prior.receptive_field} frames"
        )

    def batches(self, position: DataPosition) -> Iterator[tuple[Any, DataPosition]]:
        import torch

        assert self.train_latents is not None
        n, frames = len(self.train_latents), self.train_latents.shape[-1]
        bs, seed = int(self.ctx.cfg.prior.batch_size), int(self.ctx.cfg.train.seed)
        pos = DataPosition(position.epoch, position.offset)
        while True:
            rng = np.random.default_rng([seed, self.ctx.rank, pos.epoch, pos.offset, 3])
            which = rng.integers(0, n, bs)
            starts = rng.integers(0, frames - self.crop + 1, bs)
            batch = torch.stack([self.train_latents[i, :, s : s + self.crop] for i, s in zip(which, starts)])
            pos = DataPosition(pos.epoch, pos.offset + 1)
            yield batch.to(self.ctx.device), pos

    def _sequences(self, params: torch.Tensor) -> torch.Tensor:
        """Posterior params [B, 2*latent, T] -> sampled PCA latents [B, L, T]."""
        import torch

        from rave_model.listen import to_pca

        model = self.ctx.model
        with torch.no_grad():
            z, _ = model.reparametrize(params)
            return to_pca(model, z)[:, : self.prior.latent_size]

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        self.prior.train()
        # Through self.net: a DDP wrapper only syncs gradients through its forward().
        loss = self.prior.loss(self._sequences(batch), network=self.net)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"prior_loss": float(loss.detach())}

    def validate(self) -> dict[str, float]:
        import torch

        assert self.val_latents is not None
        self.prior.eval()
        with torch.no_grad(), torch.random.fork_rng():
            # Same noise every validation, so the numbers compare across steps.
            torch.manual_seed(int(self.ctx.cfg.train.seed))
            losses = [
                float(self.prior.loss(self._sequences(self.val_latents[i : i + 8, :, : self.crop].to(self.ctx.device))))
                for i in range(0, len(self.val_latents), 8)
            ]
        return {"prior_loss": float(np.mean(losses))}

    def log_media(self, step: int) -> None:
        import torch

        from rave_model.listen import from_pca

        self.prior.eval()
        with torch.random.fork_rng():
            torch.manual_seed(step)
            z = self.prior.sample(min(4 * self.prior.receptive_field, 256))
            audio = self.ctx.model.decode(from_pca(self.ctx.model, z))
        self.ctx.logger.audio("prior/generation", audio[0], step, int(self.ctx.cfg.data.sr))

    def on_complete(self) -> dict[str, Any]:
        return {"latent_size": self.prior.latent_size}

    def state_dict(self) -> dict[str, Any]:
        return {"args": dict(self.args), "prior": self.prior.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from rave_model.prior import build_prior

        if state["args"] != self.args:
            # The network was built with other settings: keep training that one
            # (changing the architecture mid-stage would throw the training away).
            self.ctx.logger.info(f"prior: resuming with the saved architecture {state['args']}")
            self.args = dict(state["args"])
            self.prior = build_prior(self.args["latent_size"], self.args).to(self.ctx.device)
            self._make_optimizer()
        self.prior.load_state_dict(state["prior"])
        self.opt.load_state_dict(state["optimizer"])

    # -- the latent cache ---------------------------------------------------------------------

    def _latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, val) posterior params [N, 2*latent, T], from the cache or the encoder."""
        import torch

        path = self.ctx.run_dir / "prior" / CACHE_NAME
        fingerprint = model_fingerprint(self.ctx.model)
        if path.is_file():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if cached.get("fingerprint") == fingerprint:
                    return cached["train"], cached["val"]
            except Exception:  # a damaged cache is recomputed, never trusted
                pass
            self.ctx.logger.info(f"prior: {path} was made by another model; recomputing it")
        data = self.ctx.data
        train = self._encode_all(data.train_idx)
        val = self._encode_all(data.val_idx)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save({"fingerprint": fingerprint, "train": train, "val": val}, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return train, val

    def _encode_all(self, indices: np.ndarray) -> torch.Tensor:
        import torch

        params = []
        with torch.no_grad():
            for x in self.ctx.data.examples(indices, self.ctx.device):
                params.append(self.ctx.model.encode(x)[0].cpu())
        frames = min(p.shape[-1] for p in params)  # examples share one length; be safe
        return torch.stack([p[..., :frames] for p in params])
