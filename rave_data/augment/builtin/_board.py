"""Run a pedalboard effect on [channels, n] audio (shared by the built-ins; not a plugin)."""
from __future__ import annotations

from typing import Any

import numpy as np


def run_effect(effect: Any, audio: np.ndarray, sr: int) -> np.ndarray:
    """``audio`` [channels, n] float32 through a pedalboard plugin -> [channels, n].

    Pedalboard effects are deterministic and take mono or stereo; wider files
    go through channel by channel so any channel count works. The effect is
    reset before each run, so no state leaks from one file to the next.
    """
    x = np.ascontiguousarray(audio, dtype=np.float32)
    if x.shape[0] <= 2:
        return effect(x, sr, reset=True)
    return np.stack([effect(x[c : c + 1], sr, reset=True)[0] for c in range(x.shape[0])])
