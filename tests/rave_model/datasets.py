"""Tiny LMDB datasets written directly (no prep), for the training tests.

Two layouts:
- "ravedata": metadata.yaml with sr/channels/num_signal, as `ravedata prep` writes it;
- "acids": as acids-rave's `rave preprocess` writes it: metadata.yaml with only
  ``lazy``/``channels``/``n_seconds`` (no sr), and AudioBuffer ``shape`` given in
  bytes (as some acids-rave versions did), so the reader must infer both.
"""
from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np
import yaml

from rave_data.dataset import codec
from tests.audio import noise, sine


def tiny_examples(n: int, sr: int = 16000, frames: int = 8192, channels: int = 1, seed: int = 0) -> list[np.ndarray]:
    """``n`` int16 examples [channels, frames]: sines of varied pitch plus a little noise."""
    out = []
    seconds = frames / sr
    for i in range(n):
        x = sine(seconds, sr, freq=110.0 * (1 + i % 7), amp=0.4, channels=channels)
        x = x + noise(seconds, sr, amp=0.05, channels=channels, seed=seed + i)
        x = x[:, :frames]
        out.append(np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16))
    return out


def write_dataset(folder: Path, examples: list[np.ndarray], sr: int = 16000, layout: str = "ravedata") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    channels, frames = examples[0].shape
    env = lmdb.open(str(folder), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, x in enumerate(examples):
            if layout == "acids":
                buf = codec.AudioBuffer(
                    data=np.ascontiguousarray(x, "<i2").tobytes(),
                    sampling_rate=sr,
                    shape=[x.size * 2],  # bytes, not samples
                    precision=codec.INT16,
                )
                value = codec.encode(codec.AudioExample(buffers={"waveform": buf}))
            else:
                value = codec.encode_waveform(x, sr)
            txn.put(b"%08d" % i, value)
    env.close()
    if layout == "acids":
        meta = {"lazy": False, "channels": channels, "n_seconds": len(examples) * frames / sr}
    else:
        meta = {"lazy": False, "channels": channels, "sr": sr, "num_signal": frames // 2, "example_frames": frames, "n_examples": len(examples)}
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return folder
