"""Pitch shift in semitones, length kept (Signalsmith Stretch or Rubber Band)."""
from __future__ import annotations

from rave_data import hookimpl
from rave_data.augment.builtin._stretch import ENGINE_PARAM, StretchStep
from rave_data.augment.contract import Param


class PitchShift(StretchStep):
    """Shift the pitch by a number of semitones without changing the duration."""

    name = "pitch_shift"
    params = (Param("semitones", (-2.0, 2.0), lo=-24.0, hi=24.0, doc="pitch change in semitones"), ENGINE_PARAM)


@hookimpl
def register_augmenters(register):
    register(PitchShift)
