"""Low-pass and high-pass filters: duller or thinner versions of the same sound."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from rave_data import hookimpl
from rave_data.augment.builtin._board import run_effect
from rave_data.augment.contract import Augmenter, Param


class _TwoStageFilter(Augmenter):
    """Two pedalboard one-pole stages: 12 dB/octave, audible yet never ringing."""

    effect: ClassVar[str] = ""  # pedalboard class name

    def apply(self, audio: np.ndarray, sr: int, cutoff_hz: float = 1000.0) -> np.ndarray:
        import pedalboard

        stage = getattr(pedalboard, self.effect)
        f = min(cutoff_hz, 0.45 * sr)  # a cutoff above Nyquist is meaningless at low rates
        return run_effect(pedalboard.Pedalboard([stage(f), stage(f)]), audio, sr)


class Lowpass(_TwoStageFilter):
    """Remove content above a cutoff (12 dB/octave)."""

    name = "lowpass"
    effect = "LowpassFilter"
    params = (Param("cutoff_hz", (4000.0, 16000.0), lo=100.0, hi=24000.0, log=True, doc="cutoff frequency"),)


class Highpass(_TwoStageFilter):
    """Remove content below a cutoff (12 dB/octave)."""

    name = "highpass"
    effect = "HighpassFilter"
    params = (Param("cutoff_hz", (40.0, 300.0), lo=10.0, hi=5000.0, log=True, doc="cutoff frequency"),)


@hookimpl
def register_augmenters(register):
    register(Lowpass)
    register(Highpass)
