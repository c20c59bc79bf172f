"""The worker's output stage on streams of [channels, n] float32 blocks:
gain, quantisation to int16, regrouping into fixed-length segments, and the
scratch buffers that let these passes reuse memory from block to block.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from rave_data.prep.spool import Spool

#: Frames per block: large enough that per-block overhead is negligible,
#: small enough that a block of 96 kHz stereo stays near 1.5 MB.
BLOCK_FRAMES = 1 << 17


def to_int16(x: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16, rounded, symmetric (+-32767, as acids-rave scales)."""
    return quantize_into(x, np.empty(x.shape, np.float32), np.empty(x.shape, np.int16))


def quantize_into(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """:func:`to_int16` of ``x`` into ``q`` (int16), ``y`` (float32, same
    shape) its scratch; returns ``q``."""
    np.multiply(x, np.float32(32767.0), out=y, dtype=np.float32)
    np.rint(y, out=y)
    np.clip(y, -32767, 32767, out=y)
    np.copyto(q, y, casting="unsafe")  # exact: y holds integers in int16's range
    return q


class Scratch:
    """Per-shape buffers reused from block to block.

    The output stage runs a few elementwise passes over every block (gain,
    scale, round, clip, cast); into fresh arrays, the page faults of each new
    block would cost more than the arithmetic (docs/prep.md, "Worker output
    stage"). Whatever a buffer holds is valid only until the next call with
    the same name: for consumers that use a block at once.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, str], np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, int], dtype: type) -> np.ndarray:
        """A [shape] array of ``dtype`` named ``name``, reused across calls."""
        key = (name, np.dtype(dtype).str)
        buf = self._bufs.get(key)
        size = shape[0] * shape[1]
        if buf is None or buf.size < size:
            buf = self._bufs[key] = np.empty(max(size, 2 * BLOCK_FRAMES), dtype)
        return buf[:size].reshape(shape)


def scaled(spool: Spool, gain: float, scratch: Scratch | None = None) -> Iterator[np.ndarray]:
    """The spooled stream times ``gain``, in blocks of at most
    :data:`BLOCK_FRAMES`; into ``scratch`` when given (each block then valid
    only until the next: for a consumer that does not keep blocks)."""
    g = np.float32(gain)
    for block in spool.blocks(BLOCK_FRAMES):
        if gain == 1.0:
            yield block
        elif scratch is None:
            yield block * g
        else:
            yield np.multiply(block, g, out=scratch.get("gain", block.shape, np.float32))


def segments(blocks: Iterable[np.ndarray], frames: int) -> Iterator[np.ndarray]:
    """Regroup a block stream into [channels, frames] segments (last one shorter)."""
    pending: list[np.ndarray] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += block.shape[1]
        while held >= frames:
            joined = np.concatenate(pending, axis=1)
            yield joined[:, :frames]
            pending, held = [joined[:, frames:]], held - frames
    if held:
        yield np.concatenate(pending, axis=1)
