"""Algorithmic reverb (pedalboard.Reverb, Freeverb): the same source in different rooms."""
from __future__ import annotations

import numpy as np

from rave_data import hookimpl
from rave_data.augment.builtin._board import run_effect
from rave_data.augment.contract import Augmenter, Param


class Reverb(Augmenter):
    """Add room reverberation; the length is kept (the tail past the end is cut)."""

    name = "reverb"
    params = (
        Param("room_size", (0.1, 0.6), lo=0.0, hi=1.0, doc="room size (0 small .. 1 large)"),
        Param("damping", (0.3, 0.7), lo=0.0, hi=1.0, doc="high-frequency damping of the tail"),
        Param("wet_level", (0.05, 0.25), lo=0.0, hi=1.0, doc="level of the reverberated signal"),
        Param("dry_level", 1.0, lo=0.0, hi=1.0, doc="level of the direct signal"),
    )

    def apply(self, audio: np.ndarray, sr: int, room_size: float = 0.3, damping: float = 0.5,
              wet_level: float = 0.15, dry_level: float = 1.0) -> np.ndarray:
        import pedalboard

        rev = pedalboard.Reverb(room_size=room_size, damping=damping, wet_level=wet_level, dry_level=dry_level)
        return run_effect(rev, audio, sr)


@hookimpl
def register_augmenters(register):
    register(Reverb)
