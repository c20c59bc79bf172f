"""Time stretch, pitch kept (pedalboard.time_stretch, Rubber Band): changes the length."""
from __future__ import annotations

import numpy as np

from rave_data import hookimpl
from rave_data.augment.contract import Augmenter, Param


class TimeStretch(Augmenter):
    """Play faster (rate > 1, shorter) or slower (rate < 1, longer) at the same pitch."""

    name = "time_stretch"
    params = (Param("rate", (0.9, 1.1), lo=0.25, hi=4.0, doc="speed factor; 1.1 = 10% faster and shorter"),)

    def apply(self, audio: np.ndarray, sr: int, rate: float = 1.0) -> np.ndarray:
        if rate == 1.0:
            return audio
        import pedalboard

        return pedalboard.time_stretch(np.ascontiguousarray(audio, dtype=np.float32), float(sr), stretch_factor=rate)


@hookimpl
def register_augmenters(register):
    register(TimeStretch)
