"""Hold a processed stream until its normalisation gain is known.

Normalising needs the peak or loudness of the *whole* processed file before
the first sample can be written, and decoding + resampling twice would double
the cost of ``prep``. So the processed stream is spooled once: in memory while
small, spilled to a raw float32 temp file beyond :data:`MEMORY_BYTES` (64 MB: a
few minutes of audio stay in RAM), which
keeps a 2-hour 96 kHz file from ever being held whole in RAM.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

MEMORY_BYTES = 64 * 1024**2


class Spool:
    """Append [channels, n] float32 blocks, then read them back in order."""

    def __init__(self, channels: int, spill_path: Path | str, memory_bytes: int = MEMORY_BYTES) -> None:
        self.channels = channels
        self.frames = 0
        self._spill_path = Path(spill_path)
        self._memory_bytes = memory_bytes
        self._blocks: list[np.ndarray] = []
        self._held = 0
        self._file: BinaryIO | None = None

    def append(self, block: np.ndarray) -> None:
        if not block.shape[1]:
            return
        self.frames += block.shape[1]
        if self._file is None:
            self._blocks.append(block)
            self._held += block.nbytes
            if self._held > self._memory_bytes:
                self._spill()
        else:
            self._write(block)

    def _spill(self) -> None:
        self._file = open(self._spill_path, "w+b")
        for block in self._blocks:
            self._write(block)
        self._blocks, self._held = [], 0

    def _write(self, block: np.ndarray) -> None:
        assert self._file is not None
        # Interleaved [n, channels] so any run of frames is one contiguous read.
        self._file.write(np.ascontiguousarray(block.T, dtype=np.float32).tobytes())

    def blocks(self, block_frames: int = 1 << 16) -> Iterator[np.ndarray]:
        """The spooled stream again, in order, as [channels, <=block_frames]
        float32 blocks (of varying length). May be called several times (the
        original, then each variant)."""
        if self._file is None:
            # The stored blocks as they came (no concatenation: that would
            # double the memory held), split when longer than asked.
            for block in self._blocks:
                for start in range(0, block.shape[1], block_frames):
                    yield block[:, start : start + block_frames]
            return
        self._file.flush()
        frame_bytes = 4 * self.channels
        for start in range(0, self.frames, block_frames):
            n = min(block_frames, self.frames - start)
            self._file.seek(start * frame_bytes)
            data = np.frombuffer(self._file.read(n * frame_bytes), dtype=np.float32)
            yield data.reshape(n, self.channels).T

    def close(self) -> None:
        self._blocks = []
        if self._file is not None:
            self._file.close()
            self._file = None
            try:
                os.unlink(self._spill_path)
            except FileNotFoundError:
                pass
