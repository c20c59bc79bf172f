"""Pitch shift and time stretch in one call, by Signalsmith Stretch or Rubber Band.

Shared by ``pitch_shift`` and ``time_stretch``; not a plugin. When the two are
adjacent in a chain they fuse into one pass (:meth:`StretchStep.fuse`): half the
cost, and one phase-vocoder pass fewer, so fewer artefacts.

Engines:

- ``signalsmith`` (default; python-stretch, MIT): about twice as fast as Rubber
  Band's fast engine on one core, clean on voice and instruments; what
  audiomentations uses too.
- ``rubberband`` (pedalboard.time_stretch, finer R3 engine): slower, for users
  who prefer its transient handling.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rave_data.augment.contract import Augmenter, Param

ENGINES = ("signalsmith", "rubberband")
ENGINE_PARAM = Param("engine", "signalsmith", kind=str, choices=ENGINES,
                     doc="signalsmith (fast) or rubberband (pedalboard's finer engine, slower)")


def stretch(audio: np.ndarray, sr: int, rate: float = 1.0, semitones: float = 0.0,
            engine: str = "signalsmith") -> np.ndarray:
    """[channels, n] -> [channels, ~n / rate], pitch moved by ``semitones``.

    Both engines are deterministic and compensate their latency (a click stays
    at its sample). Imported lazily: `ravedata plugins` never loads them.
    """
    if rate == 1.0 and semitones == 0.0:
        return audio
    x = np.ascontiguousarray(audio, dtype=np.float32)
    if engine == "rubberband":
        import pedalboard

        return pedalboard.time_stretch(x, float(sr), stretch_factor=float(rate),
                                       pitch_shift_in_semitones=float(semitones), high_quality=True)
    import python_stretch

    st = python_stretch.Signalsmith.Stretch()
    st.preset(x.shape[0], int(sr))
    st.setTimeFactor(float(rate))
    st.setTransposeSemitones(float(semitones))
    return np.asarray(st.process(x), dtype=np.float32)


class StretchStep(Augmenter):
    """Base of pitch_shift and time_stretch: parameters ``rate``/``semitones`` + ``engine``."""

    def apply(self, audio: np.ndarray, sr: int, rate: float = 1.0, semitones: float = 0.0,
              engine: str = "signalsmith") -> np.ndarray:
        return stretch(audio, sr, rate, semitones, engine)

    def fuse(self, params: Mapping[str, Any], other: Augmenter,
             other_params: Mapping[str, Any]) -> Callable[[np.ndarray, int], np.ndarray] | None:
        # Pitch then stretch (or the reverse) is one call; two steps of the same
        # kind are left alone (their record says two passes).
        if not isinstance(other, StretchStep) or type(other) is type(self):
            return None
        both = {**other_params, **params}
        engines = {params.get("engine"), other_params.get("engine")}
        both["engine"] = "rubberband" if "rubberband" in engines else "signalsmith"
        return lambda audio, sr: stretch(audio, sr, both.get("rate", 1.0), both.get("semitones", 0.0), both["engine"])
