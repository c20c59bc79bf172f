"""What every reader of audio files agrees on: header facts and decode errors.

``decode.py`` (streaming samples) and ``probe.py`` (headers only) both speak
these types, so ``prep`` and ``duration`` report files the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of one audio file. ``frames`` is per channel and exact
    (no mp3 encoder padding)."""

    path: Path
    sr: int
    channels: int
    frames: int
    format: str  # lower-case container name, e.g. "wav", "flac", "mp3", "m4a"
    subtype: str | None = None  # e.g. "PCM_16", "FLOAT"; None when unknown
    backend: str = "soundfile"  # the decoder: "soundfile" | "pyav" | "pedalboard"

    @property
    def seconds(self) -> float:
        return self.frames / self.sr if self.sr else 0.0


class DecodeError(Exception):
    """A file that cannot be read. ``str()`` names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason
