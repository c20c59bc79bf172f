"""Pseudo-QMF multiband decomposition (RAVE's first and last layer).

The same filters and the same function as acids-rave 2.3.1's ``CachedPQMF`` (so
imported models and our own see the same sub-bands):

- a prototype low-pass (``firwin`` with a Kaiser window sized by ``kaiserord`` for the
  stop-band attenuation) whose cut-off minimises the aliasing criterion of Lin &
  Vaidyanathan 1998 (``scipy.optimize.fmin`` from ``1 / M``, as the reference), cosine-modulated into ``M`` band-pass filters ``hk [M, L]``,
  centre-padded to the next power of two;
- analysis: a strided correlation with ``hk`` (one extra zero tap to make it odd),
  centred, then :func:`reverse_half`, which flips the sign of the odd bands on even
  frames (it un-mirrors their spectra);
- synthesis: :func:`reverse_half`, then a stride-1 polyphase convolution with ``hk``
  (``[M phases, M bands, L / M + 1]``) times ``M``, whose phases are interleaved in
  reverse order.

``hk`` is the only state (a buffer, ``[n_bands, L]``, the reference's ``pqmf.hk``); the
two convolution weights are derived from it. The paddings stream through
``cached_conv``'s :class:`CachedPad1d`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rave_model.cached_conv import CachedPad1d, conv_padding


def kaiser_lowpass(wc: float, attenuation: float, n_taps: int | None = None) -> np.ndarray:
    """Kaiser-windowed low-pass with cut-off ``wc`` (radians/sample), odd length by
    default (``kaiserord`` for the attenuation and a transition width of ``wc``)."""
    from scipy.signal import firwin, kaiserord

    n, beta = kaiserord(attenuation, wc / np.pi)
    n = 2 * (n // 2) + 1
    n = n if n_taps is None else n_taps
    return firwin(n, wc, window=("kaiser", beta), scale=False, fs=2 * np.pi)


def _aliasing(wc: float, attenuation: float, n_bands: int) -> float:
    """Worst leakage of h * h~ at multiples of 2M (zero for a perfect prototype)."""
    h = kaiser_lowpass(float(np.asarray(wc).reshape(-1)[0]), attenuation)
    g = np.convolve(h, h[::-1], "full")
    return float(np.max(np.abs(g[g.shape[-1] // 2 :: 2 * n_bands][1:])))


def prototype(attenuation: float, n_bands: int) -> np.ndarray:
    """The prototype low-pass (odd length): Nelder-Mead on :func:`_aliasing` from
    ``1 / n_bands``, as the reference, so both designs give the same filter."""
    from scipy.optimize import fmin

    wc = fmin(lambda w: _aliasing(w, attenuation, n_bands), 1 / n_bands, disp=0)[0]
    return kaiser_lowpass(wc, attenuation)


def filter_bank(h: np.ndarray, n_bands: int) -> torch.Tensor:
    """Cosine-modulate the prototype ``h`` (odd length N) into ``[n_bands, L]`` filters,
    centred in ``L`` = the next power of two >= N (the extra zero on the right).
    Computed in float32 like the reference, so the filters are bit-identical."""
    h32 = torch.from_numpy(np.asarray(h)).float()
    n = h32.shape[-1]
    k = torch.arange(n_bands).reshape(-1, 1)
    t = torch.arange(-(n // 2), n // 2 + 1)
    hk = 2 * h32 * torch.cos((2 * k + 1) * math.pi / (2 * n_bands) * t + (-1) ** k * math.pi / 4)
    pad = 2 ** math.ceil(math.log2(n)) - n
    return F.pad(hk, (pad // 2, pad // 2 + pad % 2))


def reverse_half(x: torch.Tensor, phase: int = 0) -> torch.Tensor:
    """``[B, M, T]``: negate the odd bands on the frames ``t`` where ``t + phase`` is even."""
    m, t = x.shape[-2], x.shape[-1]
    odd_band = (torch.arange(m, device=x.device) % 2).view(m, 1)
    even_frame = 1 - (torch.arange(t, device=x.device) + phase) % 2
    return x * (1 - 2 * odd_band * even_frame.view(1, t)).to(x.dtype)


def analysis_weight(hk: torch.Tensor) -> torch.Tensor:
    """``hk [M, L]`` -> the analysis kernel ``[M, 1, L']`` (``L'`` odd)."""
    w = hk.unsqueeze(1)
    return F.pad(w, (0, 1)) if w.shape[-1] % 2 == 0 else w


def synthesis_weight(hk: torch.Tensor) -> torch.Tensor:
    """``hk [M, L]`` -> the polyphase synthesis kernel ``[M phases, M bands, L / M (+1, odd)]``."""
    m, length = hk.shape
    w = hk.flip(-1).reshape(m, length // m, m).permute(2, 0, 1)  # [phase, band, tap]
    return F.pad(w, (0, 1)) if w.shape[-1] % 2 == 0 else w


class PQMF(nn.Module):
    """``forward``: ``[B, C, T] -> [B, C * n_bands, T / n_bands]``; ``inverse`` undoes it.

    ``T`` must be a multiple of ``n_bands``. Channels are decomposed independently and
    their bands stacked channel-major (channel 0's bands first).

    Streaming, the analysis is delayed by its right padding (``analysis_delay`` frames),
    and :func:`reverse_half` keeps the offline frame parity. The synthesis' sign pattern
    follows the frames it is given; ``synthesis_phase`` shifts it for a caller whose
    sub-band stream is delayed by an odd number of frames.
    """

    def __init__(self, n_bands: int, attenuation: float = 100.0, causal: bool = False) -> None:
        super().__init__()
        self.n_bands = n_bands
        hk = torch.ones(1, 1) if n_bands == 1 else filter_bank(prototype(attenuation, n_bands), n_bands)
        self.register_buffer("hk", hk)  # [M, L]
        # Derived kernels: not saved, refreshed whenever hk is loaded.
        self.register_buffer("analysis", analysis_weight(self.hk), persistent=False)  # [M, 1, L']
        self.register_buffer("synthesis", synthesis_weight(self.hk), persistent=False)  # [M, M, L / M (+1)]
        self.register_load_state_dict_post_hook(PQMF._refresh)
        ka, ks = self.analysis.shape[-1], self.synthesis.shape[-1]
        # Odd kernels: the reference's centred padding is (k - 1) / 2 on each side.
        self.pad = CachedPad1d(*conv_padding(ka, causal=causal))
        self.inverse_pad = CachedPad1d(*conv_padding(ks, causal=causal))
        self.analysis_delay = self.pad.right // n_bands
        self.synthesis_phase = 0
        self.use_mm = False

    @staticmethod
    def _refresh(module: nn.Module, _keys) -> None:
        with torch.no_grad():
            module.analysis = analysis_weight(module.hk).to(module.analysis)
            module.synthesis = synthesis_weight(module.hk).to(module.synthesis)

    def prepare_mm(self) -> None:
        """Inference only: analysis as a matrix product of strided frames."""
        self.use_mm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_bands == 1:
            return x
        b, c, t = x.shape
        x = self.pad(x.reshape(b * c, 1, t))
        if self.use_mm:
            # Frames of L' samples every n_bands samples (a strided view), times the bank.
            frames = x[:, 0].unfold(-1, self.analysis.shape[-1], self.n_bands)  # [B*C, T', L']
            y = torch.matmul(frames, self.analysis[:, 0].t()).transpose(1, 2)
        else:
            y = F.conv1d(x, self.analysis, stride=self.n_bands)
        phase = self.analysis_delay if self.pad.streaming else 0
        y = reverse_half(y, phase)
        return y.reshape(b, c * self.n_bands, -1)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C * n_bands, T'] -> [B, C, T' * n_bands]``."""
        if self.n_bands == 1:
            return x
        b, cm, t = x.shape
        c = cm // self.n_bands
        x = reverse_half(x.reshape(b * c, self.n_bands, t), self.synthesis_phase if self.inverse_pad.streaming else 0)
        y = F.conv1d(self.inverse_pad(x), self.synthesis) * self.n_bands  # [B*C, M phases, T']
        # Phase p of frame q is output sample q * M + (M - 1 - p).
        y = y.flip(1).transpose(1, 2).reshape(b, c, t * self.n_bands)
        return y
