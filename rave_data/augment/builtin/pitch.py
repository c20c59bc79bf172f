"""Pitch shift in semitones, length kept (pedalboard's Rubber Band PitchShift)."""
from __future__ import annotations

import numpy as np

from rave_data import hookimpl
from rave_data.augment.builtin._board import run_effect
from rave_data.augment.contract import Augmenter, Param


class PitchShift(Augmenter):
    """Shift the pitch by a number of semitones without changing the duration."""

    name = "pitch_shift"
    params = (Param("semitones", (-2.0, 2.0), lo=-24.0, hi=24.0, doc="pitch change in semitones"),)

    def apply(self, audio: np.ndarray, sr: int, semitones: float = 0.0) -> np.ndarray:
        if semitones == 0.0:
            return audio
        import pedalboard  # lazy: `ravedata plugins` and --help never load it

        return run_effect(pedalboard.PitchShift(semitones=semitones), audio, sr)


@hookimpl
def register_augmenters(register):
    register(PitchShift)
