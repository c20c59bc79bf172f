"""Added noise at a signal-to-noise ratio; its own seed keeps apply() deterministic."""
from __future__ import annotations

import numpy as np

from rave_data import hookimpl
from rave_data.augment.contract import Augmenter, Param


def _pink(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """[channels, n] noise with a 1/f power spectrum, unit RMS per channel."""
    n = shape[1]
    spec = np.fft.rfft(rng.standard_normal(shape), axis=1)
    f = np.arange(spec.shape[1], dtype=np.float64)
    f[0] = 1.0  # keep DC finite; it is removed below
    spec /= np.sqrt(f)
    spec[:, 0] = 0.0
    x = np.fft.irfft(spec, n=n, axis=1)
    return x / np.maximum(np.sqrt(np.mean(x**2, axis=1, keepdims=True)), 1e-12)


class Noise(Augmenter):
    """Add white or pink noise at a signal-to-noise ratio (dB, relative to the signal's RMS)."""

    name = "noise"
    params = (
        Param("snr_db", (30.0, 50.0), lo=-10.0, hi=120.0, doc="signal-to-noise ratio in dB"),
        Param("color", ("white", "pink"), kind=str, choices=("white", "pink"), doc="noise spectrum"),
        Param("seed", (0, 2**31 - 1), kind=int, lo=0, hi=2**31 - 1,
              doc="noise generator seed (sampled, so a recorded chain replays the same noise)"),
    )

    def apply(self, audio: np.ndarray, sr: int, snr_db: float = 40.0, color: str = "white", seed: int = 0) -> np.ndarray:
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        if rms == 0.0:
            return audio  # nothing to be relative to: silence stays silence
        rng = np.random.default_rng(seed)
        if color == "pink":
            n = _pink(rng, audio.shape)
        else:
            n = rng.standard_normal(audio.shape)
        return (audio + n * (rms * 10.0 ** (-snr_db / 20.0))).astype(np.float32)


@hookimpl
def register_augmenters(register):
    register(Noise)
