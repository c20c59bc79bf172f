"""Losses: multi-scale spectral distance, adversarial losses, feature matching.

Faithful to the RAVE reference (rave/core.py): the spectral distance sums, for
every STFT scale, a relative L2 distance of magnitudes (the "linear" term,
which weights loud partials) and an L1 distance of log magnitudes (the "log"
term, which weights quiet detail). The same distance is applied to the
multiband (PQMF) signal and to the full-band signal. The KL term lives with
the posterior, in :meth:`rave_model.model.RAVE.reparametrize`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mean_difference(target: torch.Tensor, value: torch.Tensor, norm: str = "L1", relative: bool = False) -> torch.Tensor:
    """Mean L1 or L2 difference; ``relative`` divides by the target's own norm."""
    diff = target - value
    if norm == "L1":
        out = diff.abs().mean()
        return out / target.abs().mean() if relative else out
    if norm == "L2":
        out = (diff * diff).mean()
        return out / (target * target).mean() if relative else out
    raise ValueError(f"norm must be 'L1' or 'L2', got {norm!r}")


class MultiScaleSTFT(nn.Module):
    """Magnitude STFTs at several window sizes (hop = window / 4, Hann).

    [B, C, T] -> list of [B*C, n_fft/2+1, frames]; channels (and PQMF bands)
    are folded into the batch so each is compared on its own.
    """

    def __init__(self, scales: Sequence[int]) -> None:
        super().__init__()
        self.scales = [int(s) for s in scales]
        for s in self.scales:
            self.register_buffer(f"window_{s}", torch.hann_window(s), persistent=False)

    def forward(self, x: torch.Tensor, scales: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Magnitudes at ``scales`` (default: all of this module's scales)."""
        x = x.reshape(-1, x.shape[-1])
        out = []
        for s in self.scales if scales is None else scales:
            win = getattr(self, f"window_{s}")
            spec = torch.stft(x, n_fft=s, hop_length=s // 4, win_length=s, window=win.to(x.dtype), center=True, return_complex=True)
            out.append(spec.abs())
        return out


class SpectralDistance(nn.Module):
    """Multi-scale spectral distance (the reference's AudioDistanceV1).

    ``forward(x, y)`` with x, y [B, C, T] returns a scalar: sum over scales of
    ``||X - Y||^2 / ||X||^2 + mean|log(X + eps) - log(Y + eps)|``.
    Scales larger than the signal are skipped (multiband signals are short).
    """

    def __init__(self, scales: Sequence[int] = (2048, 1024, 512, 256, 128), log_epsilon: float = 1e-7) -> None:
        super().__init__()
        self.stft = MultiScaleSTFT(scales)
        self.log_epsilon = log_epsilon

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = min(x.shape[-1], y.shape[-1])
        x, y = x[..., :n], y[..., :n]
        keep = [s for s in self.stft.scales if s <= n]
        if not keep:
            raise ValueError(f"signal of {n} samples is shorter than every STFT scale {self.stft.scales}")
        total = x.new_zeros(())
        for sx, sy in zip(self.stft(x, keep), self.stft(y, keep)):
            lin = mean_difference(sx, sy, "L2", relative=True)
            log = mean_difference(torch.log(sx + self.log_epsilon), torch.log(sy + self.log_epsilon), "L1")
            total = total + lin + log
        return total


def beta_schedule(step: int, warmup: int, start: float, end: float) -> float:
    """KL weight at ``step``: log-linear from ``start`` to ``end`` over
    ``warmup`` steps, then constant (the reference's BetaWarmupCallback)."""
    import math

    if warmup <= 1 or step >= warmup:
        return end
    t = step / warmup
    return math.exp(math.log(start) * (1 - t) + math.log(end) * t)


def hinge_gan(score_real: torch.Tensor, score_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(discriminator loss, generator loss) of the hinge GAN."""
    loss_dis = (torch.relu(1 - score_real) + torch.relu(1 + score_fake)).mean()
    return loss_dis, -score_fake.mean()


def ls_gan(score_real: torch.Tensor, score_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(discriminator loss, generator loss) of the least-squares GAN."""
    loss_dis = ((score_real - 1).pow(2) + score_fake.pow(2)).mean()
    return loss_dis, (score_fake - 1).pow(2).mean()


GAN_LOSSES = {"hinge": hinge_gan, "lsgan": ls_gan}


def gan_loss(name: str):
    try:
        return GAN_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown adversarial loss {name!r}; known: {', '.join(GAN_LOSSES)}") from None


def adversarial_losses(
    features_real: Sequence[Sequence[torch.Tensor]],
    features_fake: Sequence[Sequence[torch.Tensor]],
    loss: str = "hinge",
    skip_features: int = 0,
    relative_fm: bool = False,
) -> dict[str, torch.Tensor]:
    """Discriminator, generator and feature-matching losses.

    ``features_*`` holds, per sub-discriminator, its list of feature maps with
    the score last. Feature matching is the mean L1 distance of the real and
    fake feature maps (the real ones are the target), averaged over layers
    (after skipping the first ``skip_features``) and over sub-discriminators; the
    discriminator and adversarial losses and the mean scores ``pred_*`` are summed
    over sub-discriminators (as acids-rave's training_step).
    Returns {"dis", "adv", "feature_matching", "pred_real", "pred_fake"}.
    """
    fn = gan_loss(loss)
    dis = adv = fm = pred_real = pred_fake = 0.0
    for real, fake in zip(features_real, features_fake):
        layers = list(zip(real, fake))[skip_features:]
        fm = fm + sum(mean_difference(r.detach(), f, "L1", relative=relative_fm) for r, f in layers) / max(1, len(layers))
        d, a = fn(real[-1], fake[-1])
        dis, adv = dis + d, adv + a
        pred_real = pred_real + real[-1].detach().mean()
        pred_fake = pred_fake + fake[-1].detach().mean()
    n = max(1, len(features_real))
    # Scores summed over sub-discriminators, as the reference logs them.
    return {"dis": dis, "adv": adv, "feature_matching": fm / n, "pred_real": pred_real, "pred_fake": pred_fake}
