"""Encoders: PQMF sub-bands ``[B, C * n_bands, T / n_bands]`` to latent parameters
``[B, 2 * latent_size, T / hop_length]`` (mean and pre-softplus scale, stacked)."""
from __future__ import annotations

import torch
import torch.nn as nn

from rave_model.blocks import DilatedUnit, conv, lrelu, wn
from rave_model.config import ModelConfig


class EncoderV1(nn.Module):
    """The paper's encoder: a conv stem, then per ratio ``r`` BatchNorm, LeakyReLU and a
    strided conv (kernel ``2r + 1``) that doubles the width; a grouped conv head keeps
    the mean and scale halves independent (acids-rave's ``groups=n_out``).

    Like acids-rave, these convolutions are not weight-normalised (BatchNorm does the
    conditioning). In eval mode BatchNorm is a per-channel affine map, so it streams.
    """

    def __init__(self, cfg: ModelConfig, data_size: int) -> None:
        super().__init__()
        c, causal = cfg.capacity, cfg.causal
        layers: list[nn.Module] = [conv(data_size, c, 7, causal=causal)]
        dim = c
        for r in cfg.ratios:
            out = 2 * dim
            layers += [nn.BatchNorm1d(dim), lrelu(), conv(dim, out, 2 * r + 1, stride=r, causal=causal)]
            for _ in range(cfg.encoder_repeat - 1):
                layers += [nn.BatchNorm1d(out), lrelu(), conv(out, out, 3, causal=causal)]
            dim = out
        layers += [lrelu(), conv(dim, 2 * cfg.latent_size, 5, groups=2, causal=causal)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderV2(nn.Module):
    """acids-rave v2: per ratio, dilated residual units then a strided conv (kernel ``2r``)
    doubling the width; weight-normalised."""

    def __init__(self, cfg: ModelConfig, data_size: int) -> None:
        super().__init__()
        c, k, causal, norm = cfg.capacity, cfg.kernel_size, cfg.causal, cfg.weight_norm
        layers: list[nn.Module] = [wn(conv(data_size, c, 2 * k + 1, causal=causal), norm)]
        dim = c
        for r, dilations in zip(cfg.ratios, cfg.dilations):
            layers += [DilatedUnit(dim, k, d, causal, norm) for d in dilations]
            layers += [lrelu(), wn(conv(dim, 2 * dim, 2 * r, stride=r, causal=causal), norm)]
            dim *= 2
        layers += [lrelu(), wn(conv(dim, 2 * cfg.latent_size, k, causal=causal), norm)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_encoder(cfg: ModelConfig, data_size: int) -> nn.Module:
    return EncoderV1(cfg, data_size) if cfg.architecture == "v1" else EncoderV2(cfg, data_size)
