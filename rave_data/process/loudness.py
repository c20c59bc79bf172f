"""Level meters: ITU-R BS.1770-4 integrated loudness and sample peak, streaming.

BS.1770 in short: K-weight each channel (a high shelf of about +4 dB above
1.5 kHz modelling the head, then a 38 Hz high-pass, "RLB"), take the mean
square over 400 ms blocks that overlap by 75 % (a new block every 100 ms),
sum the channels with weights (1.0; 1.41 for the surround channels of a 5.0
layout), and convert: ``L = -0.691 + 10 log10(sum)``. Integrated loudness
averages the blocks that pass two gates: an absolute one at -70 LUFS (drops
silence) and a relative one 10 LU below the loudness of the blocks that
passed the first.

The meter keeps one energy number per channel per 100 ms, so a 2-hour file
costs about 600 kB of memory whatever the block size fed.
"""
from __future__ import annotations

import math

import numpy as np

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
STEP_SECONDS = 0.1  # hop between gating blocks
BLOCK_STEPS = 4  # 400 ms gating block = 4 hops


def k_weighting(sr: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The two K-weighting biquads ((b, a) pre-filter, (b, a) RLB high-pass) at ``sr``.

    BS.1770 tabulates coefficients for 48 kHz only. These are the analogue
    prototypes (shelf at 1681.97 Hz, +4.0 dB, Q 0.7072; high-pass at 38.135 Hz,
    Q 0.5003) through the bilinear transform, which reproduces the 48 kHz
    table to 1e-8 and gives the same curve at any other rate.
    """
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sr)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    pre_b = np.array([(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0])
    pre_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])

    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sr)
    a0 = 1.0 + k / q + k * k
    rlb_b = np.array([1.0, -2.0, 1.0])
    rlb_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return (pre_b, pre_a), (rlb_b, rlb_a)


def channel_weights(channels: int) -> np.ndarray:
    """BS.1770 weights: 1.0 for every channel, except 1.41 (+1.5 dB) for the
    two surround channels (4th and 5th) of a 5-channel layout. Other layouts
    declare no positions we could trust, so all their channels weigh 1.0."""
    w = np.ones(channels)
    if channels == 5:
        w[3:5] = 1.41
    return w


class LoudnessMeter:
    """Integrated loudness (LUFS) of a stream of [channels, n] blocks.

    :meth:`integrated_lufs` returns ``-inf`` when no 400 ms block rises above
    the absolute gate: silence, or a stream shorter than 400 ms. Feeding in
    any block sizes gives the same result as one call with the whole signal.
    """

    def __init__(self, sr: int, channels: int) -> None:
        from scipy.signal import lfilter_zi

        self.sr, self.channels = int(sr), int(channels)
        (pre_b, pre_a), (rlb_b, rlb_a) = k_weighting(self.sr)
        # The two biquads as one 4th-order filter: one lfilter pass instead of
        # two (docs/processing.md has the speed-up); in float64 the direct form matches the cascade to
        # 1e-10 at 48 kHz (1e-7 at 192 kHz) in energy.
        self._b, self._a = np.convolve(pre_b, rlb_b), np.convolve(pre_a, rlb_a)
        # Filter state per channel, starting from rest (zeros): a file starts
        # from silence; lfilter_zi's steady state would assume a DC input.
        self._zi = np.zeros((self.channels, len(lfilter_zi(self._b, self._a))))
        self._step = max(1, round(STEP_SECONDS * self.sr))
        self._partial = np.zeros(self.channels)  # sum of squares of the unfinished hop
        self._partial_n = 0
        self._hops: list[np.ndarray] = []  # each [k, channels]: sum of squares per finished hop
        self._weights = channel_weights(self.channels)

    def feed(self, block: np.ndarray) -> None:
        """Measure one [channels, n] block."""
        from scipy.signal import lfilter

        if block.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {block.shape[0]}")
        if block.shape[1] == 0:
            return
        # float64: the 38 Hz high-pass has poles near z=1, float32 would drift.
        y, self._zi = lfilter(self._b, self._a, block.astype(np.float64), axis=1, zi=self._zi)
        sq = y * y  # [C, n]
        pos = 0
        n = sq.shape[1]
        if self._partial_n:
            take = min(self._step - self._partial_n, n)
            self._partial += sq[:, :take].sum(axis=1)
            self._partial_n += take
            pos = take
            if self._partial_n == self._step:
                self._hops.append(self._partial[None, :].copy())
                self._partial[:] = 0.0
                self._partial_n = 0
        whole = (n - pos) // self._step
        if whole:
            seg = sq[:, pos : pos + whole * self._step].reshape(self.channels, whole, self._step)
            self._hops.append(seg.sum(axis=2).T)
            pos += whole * self._step
        if pos < n:
            self._partial += sq[:, pos:].sum(axis=1)
            self._partial_n += n - pos

    def block_loudness(self) -> np.ndarray:
        """Loudness (LUFS) of every complete 400 ms gating block, in order."""
        if not self._hops:
            return np.zeros(0)
        hops = np.concatenate(self._hops, axis=0)  # [hops, C]
        if len(hops) < BLOCK_STEPS:
            return np.zeros(0)
        c = np.cumsum(np.vstack([np.zeros((1, self.channels)), hops]), axis=0)
        ms = (c[BLOCK_STEPS:] - c[:-BLOCK_STEPS]) / (BLOCK_STEPS * self._step)  # [blocks, C]
        power = ms @ self._weights
        with np.errstate(divide="ignore"):
            return -0.691 + 10.0 * np.log10(power)

    def integrated_lufs(self) -> float:
        """Gated integrated loudness in LUFS; ``-inf`` for silence (see class doc)."""
        lk = self.block_loudness()
        lk = lk[lk > ABSOLUTE_GATE_LUFS]
        if lk.size == 0:
            return float("-inf")
        # Gates average powers, not decibels.
        power = 10.0 ** ((lk + 0.691) / 10.0)
        relative = -0.691 + 10.0 * math.log10(power.mean()) + RELATIVE_GATE_LU
        kept = power[lk > relative]
        return float(-0.691 + 10.0 * math.log10(kept.mean()))


class PeakMeter:
    """Largest absolute sample value (linear) over all blocks fed."""

    def __init__(self) -> None:
        self.peak: float = 0.0

    def feed(self, block: np.ndarray) -> None:
        if block.size:
            self.peak = max(self.peak, float(np.abs(block).max()))
