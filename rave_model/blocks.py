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


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    causal: bool = False,
    padding: tuple[int, int] | None = None,
) -> Conv1d:
    """A streaming :class:`Conv1d`, padded by :func:`~rave_model.cached_conv.conv_padding`
    (acids-rave's rule) unless ``padding=(left, right)`` is given (NoiseGeneratorV2's
    ``(r, 0)``)."""
    return Conv1d(
        in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups, causal=causal, padding=padding
    )


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
            layers += [lrelu(), wn(conv(dim, dim, kernel_size, dilation=d, causal=causal), norm)]
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
                wn(conv(dim, dim, kernel_size, dilation=dilation, causal=causal), norm),
                lrelu(),
                wn(conv(dim, dim, 1, causal=causal), norm),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def upsample(in_dim: int, out_dim: int, ratio: int, causal: bool, norm: bool) -> nn.Module:
    """``[B, in_dim, T] -> [B, out_dim, T * ratio]`` (transposed conv, kernel 2 * ratio,
    the first ``ratio // 2`` output samples dropped offline as the reference's
    ``padding=ratio // 2``)."""
    if ratio == 1:
        return wn(conv(in_dim, out_dim, 3, causal=causal), norm)
    return wn(ConvTranspose1d(in_dim, out_dim, 2 * ratio, ratio, causal=causal), norm)
