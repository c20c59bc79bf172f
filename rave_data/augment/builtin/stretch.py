"""Time stretch, pitch kept (Signalsmith Stretch or Rubber Band): changes the length."""
from __future__ import annotations

from rave_data import hookimpl
from rave_data.augment.builtin._stretch import ENGINE_PARAM, StretchStep
from rave_data.augment.contract import Param


class TimeStretch(StretchStep):
    """Play faster (rate > 1, shorter) or slower (rate < 1, longer) at the same pitch."""

    name = "time_stretch"
    params = (Param("rate", (0.9, 1.1), lo=0.25, hi=4.0, doc="speed factor; 1.1 = 10% faster and shorter"), ENGINE_PARAM)


@hookimpl
def register_augmenters(register):
    register(TimeStretch)
