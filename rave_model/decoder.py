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
import torch.nn.functional as F

from rave_model.blocks import DilatedUnit, ResidualLayer, conv, lrelu, mod_sigmoid, upsample, wn
from rave_model.cached_conv import Delay, FrameNoise
from rave_model.config import ModelConfig


def impulse_response(gains: torch.Tensor, size: int) -> torch.Tensor:
    """Band gains ``[..., nb]`` -> a filter of ``size`` taps ``[..., size]`` (acids-rave's
    ``amp_to_impulse_response``): the zero-phase inverse real FFT of the gains
    (``2 (nb - 1)`` taps), Hann-windowed around its centre, zero-padded to ``size`` and
    laid out with its negative-time half at the end of the frame."""
    ir = torch.fft.irfft(torch.complex(gains, torch.zeros_like(gains)))
    n = ir.shape[-1]
    ir = torch.roll(ir, n // 2, -1) * torch.hann_window(n, dtype=ir.dtype, device=ir.device)
    ir = F.pad(ir, (0, size - n))
    return torch.roll(ir, -n // 2, -1)


def fft_convolve(signal: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Causal linear convolution of ``signal [..., N]`` by ``kernel [..., N]`` truncated to
    ``N`` samples (``out[n] = sum_{m <= n} signal[m] kernel[n - m]``), through FFTs of
    length ``2N`` as acids-rave's ``fft_convolve``."""
    n = signal.shape[-1]
    spectrum = torch.fft.rfft(F.pad(signal, (0, n))) * torch.fft.rfft(F.pad(kernel, (n, 0)))
    out = torch.fft.irfft(spectrum, n=2 * n)
    return out[..., n:]


class NoiseGenerator(nn.Module):
    """Filtered white noise: ``[B, in_size, T] -> [B, data_size, T]``.

    Strided convolutions (``net``) predict, for every frame of ``prod(ratios)`` samples,
    ``noise_bands`` gains per output channel; each frame of uniform noise in [-1, 1) is
    filtered by the impulse response those gains make (:func:`impulse_response`,
    :func:`fft_convolve`), as acids-rave's NoiseGenerator / NoiseGeneratorV2 do.

    ``version`` "v1" (NoiseGenerator): kernel-3 convolutions of width ``in_size``, padded
    (1, 1). "v2" (NoiseGeneratorV2): kernel ``2r`` convolutions of ``hidden`` channels,
    padded ``(r, 0)``. Neither is weight-normalised.

    Frames are independent, so this streams without state. The noise tensor is drawn
    as ``torch.rand(B, frames, data_size, frame)`` (the reference's draw), frames as its
    outer dimension, so for a batch of one a seeded run consumes random numbers in the
    same order whether the signal comes whole or in blocks. The export sets
    ``deterministic``: noise then comes from a counter-based hash (``FrameNoise``), so
    block and whole processing match without any seeding.
    """

    def __init__(
        self,
        in_size: int,
        data_size: int,
        ratios: list[int],
        noise_bands: int,
        causal: bool,
        version: str = "v1",
        hidden: int = 128,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if version == "v1":
            channels = [in_size] * len(ratios) + [data_size * noise_bands]
        else:
            channels = [in_size] + [hidden] * (len(ratios) - 1) + [data_size * noise_bands]
        for i, r in enumerate(ratios):
            if version == "v1":
                layers.append(conv(channels[i], channels[i + 1], 3, stride=r, causal=causal))
            else:
                layers.append(conv(channels[i], channels[i + 1], 2 * r, stride=r, padding=(r, 0)))
            if i < len(ratios) - 1:
                layers.append(lrelu())
        self.net = nn.Sequential(*layers)
        self.data_size = data_size
        self.noise_bands = noise_bands
        frame = 1
        for r in ratios:
            frame *= r
        self.frame = frame
        # Training draws from torch.rand; the export switches to the streaming-safe hash.
        self.deterministic = False
        self.frame_noise = FrameNoise(seed=0x5EED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The filtering runs in float32 even under bfloat16/float16 autocast in
        # training: FFTs have no bfloat16 kernels (float32 inputs: unchanged).
        gains = mod_sigmoid(self.net(x).float() - 5)  # [B, D * nb, F]
        b, f = gains.shape[0], gains.shape[-1]
        gains = gains.permute(0, 2, 1).reshape(b, f, self.data_size, self.noise_bands)  # [B, F, D, nb]
        ir = impulse_response(gains, self.frame)  # [B, F, D, frame]
        if self.deterministic:
            noise = self.frame_noise.uniform(b, f, self.data_size * self.frame, x.device)
            noise = noise.view(b, f, self.data_size, self.frame).to(gains.dtype) * 2 - 1
        else:
            noise = torch.rand(b, f, self.data_size, self.frame, dtype=gains.dtype, device=x.device) * 2 - 1
        noise = fft_convolve(noise, ir)  # [B, F, D, frame]
        return noise.permute(0, 2, 1, 3).reshape(b, self.data_size, f * self.frame)


def noise_branch(cfg: ModelConfig, in_size: int, data_size: int) -> nn.Module:
    if not cfg.use_noise:
        return nn.Identity()
    return NoiseGenerator(
        in_size, data_size, cfg.noise_ratios, cfg.noise_bands, cfg.causal, cfg.noise_generator, cfg.noise_hidden
    )


class GeneratorV1(nn.Module):
    def __init__(self, cfg: ModelConfig, data_size: int) -> None:
        super().__init__()
        c, causal, norm, n = cfg.capacity, cfg.causal, cfg.weight_norm, len(cfg.ratios)
        layers: list[nn.Module] = [wn(conv(cfg.latent_size, 2**n * c, 7, causal=causal), norm)]
        for i, r in enumerate(cfg.ratios):
            in_dim, out_dim = 2 ** (n - i) * c, 2 ** (n - i - 1) * c
            layers += [lrelu(), upsample(in_dim, out_dim, r, causal, norm)]
            # acids-rave v1's ResidualStack with a single kernel size: residual layers in sequence.
            layers += [ResidualLayer(out_dim, cfg.kernel_size, ds, causal, norm) for ds in cfg.dilations]
        self.net = nn.Sequential(*layers)
        dim = c
        ls = cfg.loud_stride
        self.wave_gen = wn(conv(dim, data_size, 7, causal=causal), norm)
        self.loud_gen = wn(conv(dim, 1, 2 * ls + 1, stride=ls, causal=causal), norm)
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
        layers: list[nn.Module] = [wn(conv(cfg.latent_size, dim, k, causal=causal), norm)]
        for r, dilations in zip(cfg.ratios[::-1], cfg.dilations[::-1]):
            layers += [lrelu(), upsample(dim, dim // 2, r, causal, norm)]
            dim //= 2
            layers += [DilatedUnit(dim, k, d, causal, norm) for d in dilations]
        layers.append(lrelu())
        self.net = nn.Sequential(*layers)
        self.amplitude_modulation = cfg.amplitude_modulation
        out = 2 * data_size if cfg.amplitude_modulation else data_size
        self.wave_gen = wn(conv(dim, out, 2 * k + 1, causal=causal), norm)
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
