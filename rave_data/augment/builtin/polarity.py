"""Polarity inversion: sounds identical, yet a new waveform for a waveform model."""
from __future__ import annotations

import numpy as np

from rave_data import hookimpl
from rave_data.augment.contract import Augmenter


class Polarity(Augmenter):
    """Invert the polarity (multiply every sample by -1)."""

    name = "polarity"

    def apply(self, audio: np.ndarray, sr: int) -> np.ndarray:
        return -audio


@hookimpl
def register_augmenters(register):
    register(Polarity)
