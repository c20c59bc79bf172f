"""Run a pedalboard effect on [channels, n] audio (shared by the built-ins; not a plugin)."""
from __future__ import annotations

from typing import Any

import numpy as np


def run_effect(effect: Any, audio: np.ndarray, sr: int) -> np.ndarray:
    """``audio`` [channels, n] float32 through a pedalboard plugin -> [channels, n].

    Pedalboard effects are deterministic and take mono or stereo; wider files
    go through channel by channel so any channel count works, and any length
    down to one sample. The effect is reset before each run, so no state leaks
    from one file to the next.
    """
    x = np.ascontiguousarray(audio, dtype=np.float32)
    channels, n = x.shape
    if n <= channels:
        # Pedalboard infers the layout from the shape ([2, 2] is ambiguous, [2, 1]
        # reads as channels-last). A few trailing zeros make it unambiguous and,
        # the effects being causal, do not change the first n samples.
        x = np.pad(x, ((0, 0), (0, channels + 1 - n)))
    if channels <= 2:
        y = effect(x, sr, reset=True)
    else:
        y = np.stack([effect(x[c : c + 1], sr, reset=True)[0] for c in range(channels)])
    return y[:, :n]
