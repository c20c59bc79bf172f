"""Peaking EQ: one bell boost or cut, like a different microphone or room colour."""
from __future__ import annotations

import numpy as np

from rave_data import hookimpl
from rave_data.augment.builtin._board import run_effect
from rave_data.augment.contract import Augmenter, Param


class Eq(Augmenter):
    """Boost or cut a band around a centre frequency (pedalboard.PeakFilter)."""

    name = "eq"
    params = (
        Param("freq_hz", (150.0, 8000.0), lo=20.0, hi=20000.0, log=True, doc="centre frequency (sampled log-uniformly)"),
        Param("gain_db", (-6.0, 6.0), lo=-24.0, hi=24.0, doc="boost (+) or cut (-) in dB"),
        Param("q", (0.5, 2.0), lo=0.1, hi=10.0, doc="bandwidth; higher = narrower"),
    )

    def apply(self, audio: np.ndarray, sr: int, freq_hz: float = 1000.0, gain_db: float = 0.0, q: float = 0.707) -> np.ndarray:
        import pedalboard

        # A centre above Nyquist is meaningless at low sample rates; keep it just under.
        freq = min(freq_hz, 0.45 * sr)
        return run_effect(pedalboard.PeakFilter(cutoff_frequency_hz=freq, gain_db=gain_db, q=q), audio, sr)


@hookimpl
def register_augmenters(register):
    register(Eq)
