"""Dynamic-range compression, the compand-style augmentation acids-rave applied."""
from __future__ import annotations

import numpy as np

from rave_data import hookimpl
from rave_data.augment.builtin._board import run_effect
from rave_data.augment.contract import Augmenter, Param


class Compress(Augmenter):
    """Compress the dynamics above a threshold, then restore the input's peak level."""

    name = "compress"
    params = (
        Param("threshold_db", (-30.0, -10.0), lo=-60.0, hi=0.0, doc="level above which gain is reduced"),
        Param("ratio", (2.0, 6.0), lo=1.0, hi=20.0, doc="compression ratio (4 = 4 dB in -> 1 dB out above threshold)"),
        Param("attack_ms", (1.0, 20.0), lo=0.1, hi=200.0, doc="attack time in milliseconds"),
        Param("release_ms", (50.0, 300.0), lo=1.0, hi=2000.0, doc="release time in milliseconds"),
        Param("makeup", True, kind=bool, doc="scale the result back to the input's peak level"),
    )

    def apply(self, audio: np.ndarray, sr: int, threshold_db: float = -20.0, ratio: float = 4.0,
              attack_ms: float = 5.0, release_ms: float = 100.0, makeup: bool = True) -> np.ndarray:
        import pedalboard

        comp = pedalboard.Compressor(threshold_db=threshold_db, ratio=ratio, attack_ms=attack_ms, release_ms=release_ms)
        y = run_effect(comp, audio, sr)
        if makeup:
            # Without makeup gain every compressed variant is simply quieter,
            # which the gain augmenter already covers; with it the variant is
            # a denser sound at the same peak level, as compand produces.
            peak_in, peak_out = float(np.abs(audio).max(initial=0.0)), float(np.abs(y).max(initial=0.0))
            if peak_out > 0.0:
                y = y * np.float32(peak_in / peak_out)
        return y


@hookimpl
def register_augmenters(register):
    register(Compress)
