"""Gain in dB: the model sees each timbre at several levels."""
from __future__ import annotations

import numpy as np

from rave_data import hookimpl
from rave_data.augment.contract import Augmenter, Param


class Gain(Augmenter):
    """Multiply by a gain in dB (the host scales the variant down if it would clip)."""

    name = "gain"
    params = (Param("db", (-6.0, 3.0), lo=-60.0, hi=24.0, doc="gain in decibels"),)

    def apply(self, audio: np.ndarray, sr: int, db: float = 0.0) -> np.ndarray:
        return audio * np.float32(10.0 ** (db / 20.0))


@hookimpl
def register_augmenters(register):
    register(Gain)
