"""What stages 1 and 2 share: the reconstruction pass, its spectral loss,
validation on held-out audio, and reconstruction audio for TensorBoard."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from rave_model.losses import SpectralDistance
from rave_model.train.precision import Precision, compiled

if TYPE_CHECKING:
    from rave_model.train.stage import TrainContext


class AutoencoderPass(nn.Module):
    """encode -> sample -> decode as one module, so a distributed wrapper
    (``ctx.wrap``: DDP) sees the whole pass in one ``forward`` call.
    ``forward(x [B, C, T])`` -> (y [B, C, T], y_bands [B, C*n_bands, T/n_bands], kl scalar),
    all float32.

    The encoder and decoder run under ``precision``'s autocast (and compiled when
    ``compile``); the PQMF analysis and synthesis, the posterior sampling and its
    KL (softplus, log) run in float32 on float32 inputs, as the losses that use them.
    """

    def __init__(self, model: nn.Module, precision: Precision | None = None, compile: bool = False) -> None:
        super().__init__()
        self.model = model
        self._autocast = precision.autocast if precision is not None else contextlib.nullcontext
        # A plain tuple, not submodules: the compiled wrappers share the model's
        # parameters, which must appear once (state_dict, DDP) under their own names.
        self._nets = (compiled(model.encoder, compile), compiled(model.decoder, compile))

    def forward(self, x: torch.Tensor, frozen_encoder: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        encoder, decoder = self._nets
        with torch.no_grad() if frozen_encoder else contextlib.nullcontext():
            bands = model.pqmf(model.pad_to_hop(x))
            with self._autocast():
                params = encoder(bands)
            z, kl = model.reparametrize(params.float())
        with self._autocast():
            y_bands = decoder(z)
        y_bands = y_bands.float()
        y = model.multiband_inverse(y_bands)
        return y[..., : x.shape[-1]], y_bands[..., : x.shape[-1] // model.n_bands], kl


class Reconstruction:
    """The autoencoder pass with the reference's two spectral distances: one
    on the PQMF sub-bands, one on the full-band signal.

    ``__call__(x [B, C, T], frozen_encoder)`` returns (y [B, C, T], losses) with
    losses {"multiband", "fullband", "kl"} (float32 tensors: the spectral distances
    are computed outside autocast, on float32 signals).
    """

    def __init__(self, ctx: TrainContext, precision: Precision | None = None) -> None:
        self.ctx = ctx
        scales = [int(s) for s in ctx.cfg.train.stft_scales]
        self.fullband = SpectralDistance(scales).to(ctx.device)
        self.multiband = SpectralDistance(scales).to(ctx.device)
        self.net = ctx.wrap(AutoencoderPass(ctx.model, precision, bool(ctx.cfg.train.compile)))

        self.field: tuple[int, int] | None = None
        if ctx.cfg.train.valid_signal_crop:
            self.field = self._receptive_field()

    def _receptive_field(self) -> tuple[int, int]:
        """Measured once per run and kept in the run's info (saved in every
        checkpoint), so both stages and a resumed run crop the same samples."""
        from rave_model.receptive_field import receptive_field

        stored = self.ctx.info.get("receptive_field")
        if stored is None:
            stored = list(receptive_field(self.ctx.model))
            self.ctx.info["receptive_field"] = stored
            sr = float(self.ctx.cfg.data.sr)
            self.ctx.logger.info(
                f"receptive field: {1000 * stored[0] / sr:.1f} ms <- x -> {1000 * stored[1] / sr:.1f} ms; "
                "the multiband loss skips that much at each end of a crop (train.valid_signal_crop)"
            )
        return int(stored[0]), int(stored[1])

    def __call__(self, x: torch.Tensor, frozen_encoder: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y, y_bands, kl = self.net(x, frozen_encoder)
        # As the reference: the decoder's own sub-bands against the PQMF
        # analysis of the input, and the synthesised signal against the input.
        x_bands = self.ctx.model.multiband(x)
        if self.field is not None:
            from rave_model.receptive_field import valid_crop

            x_bands, y_bands = valid_crop(x_bands, self.field), valid_crop(y_bands, self.field)
        losses = {
            "multiband": self.multiband(x_bands, y_bands),
            "fullband": self.fullband(x, y),
            "kl": kl,
        }
        return y, losses


@torch.no_grad()
def validate(ctx: TrainContext, distance: SpectralDistance) -> dict[str, float]:
    """Full-band spectral distance of the deterministic reconstruction
    (``model.forward``: the posterior mean) over the validation crops."""
    model = ctx.model
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x in ctx.data.val_batches(ctx.device):
        y = model(x)[..., : x.shape[-1]]
        total += float(distance(x, y)) * x.shape[0]
        count += x.shape[0]
    model.train(was_training)
    return {"spectral_distance": total / count} if count else {}


@torch.no_grad()
def log_reconstructions(ctx: TrainContext, tag: str, step: int, n: int = 4) -> None:
    """Original then reconstruction of the first ``n`` validation crops, one clip."""
    model = ctx.model
    was_training = model.training
    model.eval()
    for x in ctx.data.val_batches(ctx.device, limit=n):
        y = model(x)[..., : x.shape[-1]]
        # [B, C, T] pairs -> [C, B*2*T]: x0 y0 x1 y1 ...
        pairs = torch.stack([x, y], 1).permute(2, 0, 1, 3).reshape(x.shape[1], -1)
        ctx.logger.audio(tag, pairs, step, int(ctx.cfg.data.sr))
        break
    model.train(was_training)
