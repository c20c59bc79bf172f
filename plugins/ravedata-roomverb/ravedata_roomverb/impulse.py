"""Synthetic room impulse responses, numpy only.

A response is: a unit direct impulse, a few sparse early reflections, then a
diffuse tail of noise decaying exponentially (-60 dB after ``rt60``). The tail
is split into octave-ish bands whose decay times shrink towards the top, since
air and walls absorb high frequencies first; ``damping`` sets how much faster.
"""
from __future__ import annotations

import numpy as np

#: Band edges in Hz for frequency-dependent decay (the last band runs to Nyquist).
BAND_EDGES = (0.0, 500.0, 2000.0, 6000.0)
N_EARLY = 6
EARLY_SHARE = 0.3


def room_ir(sr: int, rt60: float, drr_db: float, damping: float, predelay_ms: float,
            rng: np.random.Generator) -> np.ndarray:
    """One impulse response [L] float64, direct sound at index 0 with gain 1."""
    delay = int(round(predelay_ms * 1e-3 * sr))
    length = delay + max(int(round(rt60 * sr)), 16)
    t = np.arange(length - delay) / sr

    noise = np.fft.rfft(rng.standard_normal(length - delay))
    freqs = np.fft.rfftfreq(length - delay, 1.0 / sr)
    tail = np.zeros(length - delay)
    edges = list(BAND_EDGES) + [sr / 2 + 1]
    n_bands = len(edges) - 1
    for k in range(n_bands):
        band = np.where((freqs >= edges[k]) & (freqs < edges[k + 1]), noise, 0)
        band_rt60 = rt60 * (1.0 - damping * k / max(n_bands - 1, 1))
        # 60 dB = factor 1000 in amplitude over band_rt60 seconds.
        tail += np.fft.irfft(band, n=length - delay) * np.exp(-np.log(1000.0) * t / band_rt60)

    ir = np.zeros(length)
    ir[delay:] = tail
    # Early reflections: sparse, random sign, inside the first 50 ms after the
    # pre-delay, together carrying EARLY_SHARE of the tail's energy.
    early_span = max(1, min(int(0.05 * sr), length - delay - 1))
    pos = delay + rng.integers(1, early_span + 1, N_EARLY)
    amp = rng.choice([-1.0, 1.0], N_EARLY) * rng.uniform(0.5, 1.0, N_EARLY)
    amp *= np.sqrt(EARLY_SHARE * np.sum(tail**2) / np.sum(amp**2))
    np.add.at(ir, pos, amp)

    # Scale everything after the direct sound to the requested direct-to-reverberant ratio.
    reverberant = np.sum(ir[1:] ** 2)
    if reverberant > 0:
        ir[1:] *= np.sqrt(10.0 ** (-drr_db / 10.0) / reverberant)
    ir[0] = 1.0
    return ir


def convolve(audio: np.ndarray, irs: np.ndarray) -> np.ndarray:
    """[C, n] audio, one IR per channel [C, L] -> [C, n] (the tail past the end is cut)."""
    n, length = audio.shape[1], irs.shape[1]
    size = 1 << int(np.ceil(np.log2(n + length - 1)))
    spec = np.fft.rfft(audio, size, axis=1) * np.fft.rfft(irs, size, axis=1)
    return np.fft.irfft(spec, size, axis=1)[:, :n].astype(np.float32)
