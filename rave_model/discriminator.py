"""Discriminators for stage 2: multi-scale (v1) plus multi-period (v2).

As in the RAVE reference (rave/discriminator.py): each sub-discriminator is a
strided convolution stack with weight normalisation and LeakyReLU(0.2) that
returns every convolution's output (the feature maps used for feature
matching), the last being the score map.

- :class:`MultiScaleDiscriminator`: ``n_scales`` 1-d stacks on the signal
  average-pooled by 1, 2, 4, ... (MelGAN).
- :class:`MultiPeriodDiscriminator`: one 2-d stack per period p, on the signal
  folded into [B, C, T/p, p] so each column holds every p-th sample (HiFi-GAN).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Features = list[list[torch.Tensor]]


class ConvStack(nn.Module):
    """Strided conv stack: channels in -> capacity * 2^i -> 1 score channel.

    1-d: [B, C, T] -> features [B, c_i, T / stride^i]; 2-d (periods): kernel
    and stride act on the time axis only: [B, C, T/p, p] -> [B, c_i, ., p].
    """

    def __init__(self, in_channels: int, capacity: int, n_layers: int = 4, kernel_size: int = 15, stride: int = 4, two_d: bool = False) -> None:
        super().__init__()
        conv = nn.Conv2d if two_d else nn.Conv1d
        pad = (kernel_size - 1) // 2
        channels = [in_channels] + [capacity * 2**i for i in range(n_layers)]
        layers: list[nn.Module] = []
        for i in range(n_layers):
            if two_d:
                layers.append(weight_norm(conv(channels[i], channels[i + 1], (kernel_size, 1), stride=(stride, 1), padding=(pad, 0))))
            else:
                layers.append(weight_norm(conv(channels[i], channels[i + 1], kernel_size, stride=stride, padding=pad)))
        layers.append(conv(channels[-1], 1, 1))
        self.convs = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, conv in enumerate(self.convs):
            x = conv(x)
            features.append(x)
            if i < len(self.convs) - 1:
                x = nn.functional.leaky_relu(x, 0.2)
        return features


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, in_channels: int, capacity: int, n_scales: int = 3, n_layers: int = 4, kernel_size: int = 15, stride: int = 4) -> None:
        super().__init__()
        self.stacks = nn.ModuleList(ConvStack(in_channels, capacity, n_layers, kernel_size, stride) for _ in range(n_scales))

    def forward(self, x: torch.Tensor) -> Features:
        out = []
        for stack in self.stacks:
            out.append(stack(x))
            x = nn.functional.avg_pool1d(x, 2)
        return out


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, in_channels: int, capacity: int, periods: Sequence[int] = (2, 3, 5, 7, 11), n_layers: int = 4, kernel_size: int = 5, stride: int = 4) -> None:
        super().__init__()
        self.periods = [int(p) for p in periods]
        self.stacks = nn.ModuleList(ConvStack(in_channels, capacity, n_layers, kernel_size, stride, two_d=True) for _ in self.periods)

    @staticmethod
    def fold(x: torch.Tensor, period: int) -> torch.Tensor:
        """[B, C, T] -> [B, C, ceil(T/p), p] (zero-padded at the end)."""
        pad = (period - x.shape[-1] % period) % period
        x = nn.functional.pad(x, (0, pad))
        return x.reshape(x.shape[0], x.shape[1], -1, period)

    def forward(self, x: torch.Tensor) -> Features:
        return [stack(self.fold(x, p)) for stack, p in zip(self.stacks, self.periods)]


class Discriminator(nn.Module):
    """All configured sub-discriminators; ``forward(x [B, C, T])`` returns one
    feature list per sub-discriminator (periods first, then scales)."""

    def __init__(self, in_channels: int, capacity: int, n_scales: int = 3, periods: Sequence[int] = (), n_layers: int = 4) -> None:
        super().__init__()
        parts: list[nn.Module] = []
        # Periods first, as acids-rave v2's CombineDiscriminators lists them.
        if periods:
            parts.append(MultiPeriodDiscriminator(in_channels, capacity, periods, n_layers))
        if n_scales:
            parts.append(MultiScaleDiscriminator(in_channels, capacity, n_scales, n_layers))
        if not parts:
            raise ValueError("the discriminator needs at least one scale or one period")
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> Features:
        out: Features = []
        for part in self.parts:
            out.extend(part(x))
        return out

    @classmethod
    def from_config(cls, cfg) -> Discriminator:
        t = cfg.train
        return cls(
            in_channels=int(cfg.data.channels),
            capacity=int(t.disc_capacity),
            n_scales=int(t.disc_scales),
            periods=[int(p) for p in t.disc_periods],
            n_layers=int(t.disc_layers),
        )
