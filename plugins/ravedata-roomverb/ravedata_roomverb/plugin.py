"""The plugin module named by the ``ravedata`` entry point: registers ``room``."""
from __future__ import annotations

import numpy as np

from rave_data import hookimpl
from rave_data.augment import Augmenter, Param
from ravedata_roomverb.impulse import convolve, room_ir


class Room(Augmenter):
    """Convolve with a synthetic room impulse response (RT60, direct-to-reverberant ratio)."""

    name = "room"
    params = (
        Param("rt60", (0.2, 0.8), lo=0.05, hi=4.0, doc="reverberation time in seconds (-60 dB)"),
        Param("drr_db", (4.0, 14.0), lo=-10.0, hi=30.0, doc="direct-to-reverberant ratio in dB (higher = drier)"),
        Param("damping", (0.2, 0.7), lo=0.0, hi=0.95, doc="how much faster high frequencies decay"),
        Param("predelay_ms", (0.0, 20.0), lo=0.0, hi=200.0, doc="gap before the reverberant tail"),
        Param("seed", (0, 2**31 - 1), kind=int, lo=0, hi=2**31 - 1, doc="which random room (replayable)"),
    )

    def apply(self, audio: np.ndarray, sr: int, rt60: float = 0.5, drr_db: float = 8.0, damping: float = 0.5,
              predelay_ms: float = 10.0, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        # One response per channel, drawn in turn from the same generator: a
        # stereo file gets decorrelated (wide) reverberation, deterministically.
        irs = [room_ir(sr, rt60, drr_db, damping, predelay_ms, rng) for _ in range(audio.shape[0])]
        return convolve(audio.astype(np.float64), np.stack(irs))


@hookimpl
def register_augmenters(register):
    register(Room)
