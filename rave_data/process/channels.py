"""Channel layout: make every block have the number of channels asked for."""
from __future__ import annotations

import numpy as np


def to_channels(block: np.ndarray, channels: int) -> np.ndarray:
    """Return ``block`` ([N, n] float32) as [channels, n].

    - ``channels == 1``: the mean of all N channels (a plain downmix; the mean,
      not the sum, so a full-scale stereo file cannot clip).
    - ``N == 1``, ``channels > 1``: the mono channel is duplicated.
    - ``1 < N < channels``: channels are cycled (L, R, L, R, ...), so every
      output channel carries real signal rather than silence.
    - ``N > channels > 1``: the first ``channels`` channels are kept (for the
      usual layouts L, R come first); folding the others in would change the
      balance in ways that depend on a layout the file rarely declares.
    """
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    n_in = block.shape[0]
    if n_in == channels:
        return block
    if channels == 1:
        return block.mean(axis=0, keepdims=True, dtype=np.float32)
    if n_in > channels:
        return np.ascontiguousarray(block[:channels])
    return block[np.arange(channels) % n_in]
