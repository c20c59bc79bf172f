"""Building blocks shared by the encoder and the decoder.

All convolutions come from ``cached_conv`` so the whole network can stream, and
all take ``[B, C, T]``. ``wn`` applies weight normalisation when the config asks for
it (acids-rave trains v1 and v2 with it); ``RAVE.folded`` removes it again for
export.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from rave_model.cached_conv import Conv1d, ConvTranspose1d, Residual


def wn(module: nn.Module, enabled: bool) -> nn.Module:
    """Weight-normalise ``module.weight`` (a parametrization, removable at export)."""
    if not enabled:
        return module
    return nn.utils.parametrizations.weight_norm(module)


def lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2)


def mod_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """RAVE's loudness/noise non-linearity: a sigmoid sharpened at low levels, in (0, 2)."""
    return 2 * torch.sigmoid(x) ** 2.3 + 1e-7


class ResidualLayer(nn.Module):
    """v1 residual layer: ``x + conv_dn(lrelu(... conv_d1(lrelu(x))))`` with one dilation per conv."""

    def __init__(self, dim: int, kernel_size: int, dilations: Sequence[int], causal: bool, norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for d in dilations:
            layers += [lrelu(), wn(Conv1d(dim, dim, kernel_size, dilation=d, causal=causal), norm)]
        self.net = Residual(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DilatedUnit(nn.Module):
    """v2 residual unit: ``x + conv1x1(lrelu(conv_d(lrelu(x))))``."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, causal: bool, norm: bool) -> None:
        super().__init__()
        self.net = Residual(
            nn.Sequential(
                lrelu(),
                wn(Conv1d(dim, dim, kernel_size, dilation=dilation, causal=causal), norm),
                lrelu(),
                wn(Conv1d(dim, dim, 1, causal=causal), norm),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def upsample(in_dim: int, out_dim: int, ratio: int, causal: bool, norm: bool) -> nn.Module:
    """``[B, in_dim, T] -> [B, out_dim, T * ratio]`` (transposed conv, kernel 2 * ratio)."""
    if ratio == 1:
        return wn(Conv1d(in_dim, out_dim, 3, causal=causal), norm)
    return wn(ConvTranspose1d(in_dim, out_dim, 2 * ratio, ratio, causal=causal), norm)
