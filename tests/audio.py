"""Generated test audio: sines, noise, clicks, silence, written with soundfile.

Shared by every test module (import ``from tests.audio import ...`` or use the
fixtures in conftest). Nothing here is a committed binary.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def sine(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    """[channels, n] float32 sine; channel k is detuned by k Hz so channels differ."""
    t = np.arange(int(round(seconds * sr))) / sr
    return np.stack([amp * np.sin(2 * np.pi * (freq + k) * t) for k in range(channels)]).astype(np.float32)


def noise(seconds: float, sr: int, amp: float = 0.1, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amp * rng.standard_normal((channels, int(round(seconds * sr))))).astype(np.float32)


def clicks(seconds: float, sr: int, every: float = 0.25, amp: float = 0.9, channels: int = 1) -> np.ndarray:
    x = np.zeros((channels, int(round(seconds * sr))), np.float32)
    x[:, :: max(1, int(every * sr))] = amp
    return x


def silence(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    return np.zeros((channels, int(round(seconds * sr))), np.float32)


def concat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts, axis=1)


def write(path: Path | str, audio: np.ndarray, sr: int, subtype: str | None = None, format: str | None = None) -> Path:
    """Write [channels, n] audio; the format follows the extension unless given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.ascontiguousarray(audio.T), sr, subtype=subtype, format=format)
    return path
