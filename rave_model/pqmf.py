"""Pseudo-QMF multiband decomposition (RAVE's first and last layer).

A prototype low-pass filter (Kaiser-windowed sinc) is cosine-modulated into
``n_bands`` band-pass filters. Analysis filters and decimates the signal into
``n_bands`` critically sampled sub-bands; synthesis up-samples, filters and sums them.
The prototype's cut-off is tuned so that the aliasing between neighbouring bands
cancels (the criterion of Lin & Vaidyanathan 1998, as in acids-rave), which makes
analysis followed by synthesis near-perfect reconstruction.

Both directions are built from the streaming-aware layers of ``cached_conv`` (analysis
is a strided convolution, synthesis a transposed convolution), so the PQMF streams
exactly like the rest of the model. The filters are buffers, never trained.

Design is done with numpy (no scipy needed).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rave_model.cached_conv import CachedPad1d, OverlapAdd, conv_transpose1d_mm, polyphase_weight


def kaiser_lowpass(wc: float, attenuation: float, n_taps: int | None = None) -> np.ndarray:
    """Kaiser-windowed sinc low-pass with cut-off ``wc`` (radians/sample), odd length.

    The length and window shape follow Kaiser's formulas for the given stop-band
    attenuation (dB) and a transition width of ``wc / pi`` (as acids-rave does).
    """
    a = attenuation
    if a > 50:
        beta = 0.1102 * (a - 8.7)
    elif a > 21:
        beta = 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    else:
        beta = 0.0
    if n_taps is None:
        width = wc / np.pi  # in units of pi rad/sample
        n_taps = int(math.ceil((a - 7.95) / (2.285 * np.pi * width) + 1))
        n_taps = 2 * (n_taps // 2) + 1
    t = np.arange(n_taps) - (n_taps - 1) / 2
    return (wc / np.pi) * np.sinc(wc / np.pi * t) * np.kaiser(n_taps, beta)


def _aliasing(wc: float, attenuation: float, n_bands: int) -> float:
    """Worst leakage of h * h~ at multiples of 2M (zero for a perfect prototype)."""
    h = kaiser_lowpass(wc, attenuation)
    g = np.convolve(h, h[::-1])
    return float(np.max(np.abs(g[len(g) // 2 :: 2 * n_bands][1:])))


def prototype(attenuation: float, n_bands: int) -> np.ndarray:
    """Prototype low-pass whose cut-off minimises :func:`_aliasing` (golden-section search
    around pi / (2M) after a coarse grid, since the objective is only piecewise smooth)."""
    grid = np.linspace(1.0, 2.5, 61) / n_bands
    best = min(grid, key=lambda w: _aliasing(w, attenuation, n_bands))
    lo, hi = best - 0.025 / n_bands, best + 0.025 / n_bands
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
        if _aliasing(a, attenuation, n_bands) < _aliasing(b, attenuation, n_bands):
            hi = b
        else:
            lo = a
    return kaiser_lowpass((lo + hi) / 2, attenuation)


def filter_bank(h: np.ndarray, n_bands: int) -> np.ndarray:
    """Cosine-modulate the prototype ``h`` (odd length) into ``[n_bands, L]`` filters, with
    ``L`` zero-padded up to a multiple of ``n_bands`` (needed by the polyphase layers)."""
    n = len(h)
    k = np.arange(n_bands)[:, None]
    t = np.arange(n)[None, :] - (n - 1) / 2
    phase = (-1.0) ** k * np.pi / 4
    hk = 2 * h[None, :] * np.cos((2 * k + 1) * np.pi / (2 * n_bands) * t + phase)
    length = int(math.ceil(n / n_bands)) * n_bands
    return np.pad(hk, ((0, 0), (0, length - n)))


class PQMF(nn.Module):
    """``forward``: ``[B, C, T] -> [B, C * n_bands, T / n_bands]``; ``inverse`` undoes it.

    ``T`` must be a multiple of ``n_bands``. Channels are decomposed independently and
    their bands stacked channel-major (channel 0's bands first).
    """

    def __init__(self, n_bands: int, attenuation: float = 100.0, causal: bool = False) -> None:
        super().__init__()
        self.n_bands = n_bands
        if n_bands == 1:
            hk = np.ones((1, 1))
        else:
            hk = filter_bank(prototype(attenuation, n_bands), n_bands)
        # Analysis correlates with hk (a strided convolution); synthesis convolves with hk
        # (a transposed convolution): the cascade is hk's autocorrelation, zero-phase.
        self.register_buffer("analysis_weight", torch.from_numpy(hk).float().unsqueeze(1))  # [M, 1, L]
        self.register_buffer("synthesis_weight", torch.from_numpy(hk * n_bands).float().unsqueeze(1))  # [M, 1, L]
        # The same synthesis as a dense polyphase convolution [n_bands phases, n_bands bands,
        # L / n_bands taps]: oneDNN runs it ~5x faster than the depthwise-like transposed
        # convolution (Cout = 1). Derived from the filters, so not saved in the state dict.
        poly = polyphase_weight(self.synthesis_weight, n_bands).permute(2, 1, 0).contiguous()
        self.register_buffer("synthesis_poly", poly, persistent=False)  # [M phases, M bands, L / M]
        excess = hk.shape[1] - n_bands
        # Offline, analysis pads `excess` samples and synthesis crops as many; both are
        # split so the reconstruction is not delayed.
        self.pad = CachedPad1d(excess, causal)
        self.pad.right = 0 if causal else excess - (excess // 2 // n_bands) * n_bands
        self.ola = OverlapAdd(excess, causal)
        self.ola.left = 0 if causal else excess - self.pad.right
        self.use_mm = False

    def prepare_mm(self) -> None:
        """Inference only: analysis and synthesis as matrix products (see cached_conv)."""
        self.use_mm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_bands == 1:
            return x
        b, c, t = x.shape
        x = self.pad(x.reshape(b * c, 1, t))
        if self.use_mm:
            # Frames of L samples every n_bands samples (a strided view), times the bank.
            frames = x[:, 0].unfold(-1, self.analysis_weight.shape[-1], self.n_bands)  # [B*C, T', L]
            y = torch.matmul(frames, self.analysis_weight[:, 0].t()).transpose(1, 2)
        else:
            y = F.conv1d(x, self.analysis_weight, stride=self.n_bands)
        return y.reshape(b, c * self.n_bands, -1)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C * n_bands, T'] -> [B, C, T' * n_bands]``."""
        if self.n_bands == 1:
            return x
        b, cm, t = x.shape
        c = cm // self.n_bands
        x = x.reshape(b * c, self.n_bands, t)
        if self.use_mm:
            y = conv_transpose1d_mm(x, self.synthesis_weight[:, 0], 1, self.n_bands)
        else:
            m = self.synthesis_poly.shape[-1]
            y = F.conv1d(F.pad(x, (m - 1, m - 1)), self.synthesis_poly)  # [B*C, M phases, t + m - 1]
            y = y.transpose(1, 2).reshape(b * c, 1, -1)  # == F.conv_transpose1d(x, synthesis_weight, stride=M)
        y = self.ola(y, t * self.n_bands)
        return y.reshape(b, c, -1)
