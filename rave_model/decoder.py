"""Decoders: latent ``[B, latent_size, T']`` to PQMF sub-bands ``[B, C * n_bands, T' * prod(ratios)]``.

v1 (the paper): an up-sampling stack with residual layers feeds three heads: a
waveform (tanh) modulated by a loudness envelope (``mod_sigmoid``), plus filtered noise
once the model is warmed up (stage 2), as acids-rave does.
v2 (acids-rave v2): up-sampling with dilated units, a waveform head that also predicts
a sigmoid amplitude (``amplitude_modulation``), optional noise, and a final tanh.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rave_model.blocks import DilatedUnit, ResidualLayer, lrelu, mod_sigmoid, upsample, wn
from rave_model.cached_conv import Conv1d, Delay, FrameNoise
from rave_model.config import ModelConfig


class NoiseGenerator(nn.Module):
    """Filtered white noise: ``[B, in_size, T] -> [B, data_size, T]``.

    Strided convs predict, for every frame of ``prod(ratios)`` samples, ``noise_bands``
    gains per output channel; each frame of uniform noise is filtered in the frequency
    domain by those gains (linearly interpolated over the FFT bins). Frames are
    independent, so this streams without state. The noise tensor is drawn with frames
    as its outer dimension, so for a batch of one a seeded run consumes random numbers
    in the same order whether the signal comes whole or in blocks. The export sets
    ``deterministic``: noise then comes from a counter-based hash (``FrameNoise``), so
    block and whole processing match without any seeding.
    """

    def __init__(self, in_size: int, data_size: int, ratios: list[int], noise_bands: int, causal: bool) -> None:
        super().__init__()
        channels = [in_size] * len(ratios) + [data_size * noise_bands]
        layers: list[nn.Module] = []
        for i, r in enumerate(ratios):
            layers.append(Conv1d(channels[i], channels[i + 1], 3, stride=r, causal=causal))
            if i < len(ratios) - 1:
                layers.append(lrelu())
        self.net = nn.Sequential(*layers)
        self.data_size = data_size
        self.noise_bands = noise_bands
        frame = 1
        for r in ratios:
            frame *= r
        self.frame = frame
        # [noise_bands, frame // 2 + 1] linear interpolation of band gains onto FFT bins.
        bins = torch.linspace(0, noise_bands - 1, frame // 2 + 1)
        lo = bins.floor().clamp(max=noise_bands - 1).long()
        hi = (lo + 1).clamp(max=noise_bands - 1)
        frac = bins - lo.float()
        interp = torch.zeros(noise_bands, frame // 2 + 1)
        cols = torch.arange(frame // 2 + 1)
        interp[lo, cols] += 1 - frac
        interp[hi, cols] += frac
        self.register_buffer("interp", interp, persistent=False)
        # Training draws from torch.rand; the export switches to the streaming-safe hash.
        self.deterministic = False
        self.frame_noise = FrameNoise(seed=0x5EED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gains = mod_sigmoid(self.net(x) - 5)  # [B, D * nb, F]
        b, f = gains.shape[0], gains.shape[-1]
        gains = gains.reshape(b, self.data_size, self.noise_bands, f).permute(0, 3, 1, 2)  # [B, F, D, nb]
        gains = gains @ self.interp  # [B, F, D, frame // 2 + 1]
        if self.deterministic:
            noise = self.frame_noise.uniform(b, f, self.data_size * self.frame, x.device)
            noise = noise.view(b, f, self.data_size, self.frame).to(x.dtype) * 2 - 1
        else:
            noise = torch.rand(b, f, self.data_size, self.frame, dtype=x.dtype, device=x.device) * 2 - 1
        noise = torch.fft.irfft(torch.fft.rfft(noise) * gains, n=self.frame)  # [B, F, D, frame]
        return noise.permute(0, 2, 1, 3).reshape(b, self.data_size, f * self.frame)


def noise_branch(cfg: ModelConfig, in_size: int, data_size: int) -> nn.Module:
    if not cfg.use_noise:
        return nn.Identity()
    return NoiseGenerator(in_size, data_size, cfg.noise_ratios, cfg.noise_bands, cfg.causal)


class GeneratorV1(nn.Module):
    def __init__(self, cfg: ModelConfig, data_size: int) -> None:
        super().__init__()
        c, causal, norm, n = cfg.capacity, cfg.causal, cfg.weight_norm, len(cfg.ratios)
        layers: list[nn.Module] = [wn(Conv1d(cfg.latent_size, 2**n * c, 7, causal=causal), norm)]
        for i, r in enumerate(cfg.ratios):
            in_dim, out_dim = 2 ** (n - i) * c, 2 ** (n - i - 1) * c
            layers += [lrelu(), upsample(in_dim, out_dim, r, causal, norm)]
            # acids-rave v1's ResidualStack with a single kernel size: residual layers in sequence.
            layers += [ResidualLayer(out_dim, cfg.kernel_size, ds, causal, norm) for ds in cfg.dilations]
        self.net = nn.Sequential(*layers)
        dim = c
        ls = cfg.loud_stride
        self.wave_gen = wn(Conv1d(dim, data_size, 7, causal=causal), norm)
        self.loud_gen = wn(Conv1d(dim, 1, 2 * ls + 1, stride=ls, causal=causal), norm)
        self.loud_stride = ls
        # Once streaming, the wave head lags by its right padding; delay loudness to match.
        self.loud_align = Delay(max(0, self.wave_gen.delay - self.loud_gen.delay) if ls == 1 else 0)
        self.use_noise = cfg.use_noise
        self.noise = noise_branch(cfg, dim, data_size)
        # acids-rave adds the noise only from stage 2 on (set by RAVE.set_warmed_up).
        self.register_buffer("warmed_up", torch.tensor(False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.net(z)
        loud = self.loud_align(self.loud_gen(x))
        if self.loud_stride != 1:
            loud = loud.repeat_interleave(self.loud_stride, -1)
        y = torch.tanh(self.wave_gen(x)) * mod_sigmoid(loud)
        if self.use_noise and bool(self.warmed_up):
            y = y + self.noise(x)
        return y


class GeneratorV2(nn.Module):
    def __init__(self, cfg: ModelConfig, data_size: int) -> None:
        super().__init__()
        c, k, causal, norm, n = cfg.capacity, cfg.kernel_size, cfg.causal, cfg.weight_norm, len(cfg.ratios)
        dim = 2**n * c
        layers: list[nn.Module] = [wn(Conv1d(cfg.latent_size, dim, k, causal=causal), norm)]
        for r, dilations in zip(cfg.ratios[::-1], cfg.dilations[::-1]):
            layers += [lrelu(), upsample(dim, dim // 2, r, causal, norm)]
            dim //= 2
            layers += [DilatedUnit(dim, k, d, causal, norm) for d in dilations]
        layers.append(lrelu())
        self.net = nn.Sequential(*layers)
        self.amplitude_modulation = cfg.amplitude_modulation
        out = 2 * data_size if cfg.amplitude_modulation else data_size
        self.wave_gen = wn(Conv1d(dim, out, 2 * k + 1, causal=causal), norm)
        self.use_noise = cfg.use_noise
        self.noise = noise_branch(cfg, dim, data_size)
        self.register_buffer("warmed_up", torch.tensor(False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.net(z)
        y = self.wave_gen(x)
        if self.amplitude_modulation:
            y, amp = y.chunk(2, 1)
            y = y * torch.sigmoid(amp)
        if self.use_noise:
            y = y + self.noise(x)
        return torch.tanh(y)


def build_decoder(cfg: ModelConfig, data_size: int) -> nn.Module:
    return GeneratorV1(cfg, data_size) if cfg.architecture == "v1" else GeneratorV2(cfg, data_size)
