"""Compressed test files written in-process (PyAV's bundled encoders), so the
tests need no system ffmpeg: m4a/aac (AAC), wma (WMA v2), opus, mp3."""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

#: extension -> (container format, codec)
CODECS = {
    "m4a": ("mp4", "aac"),
    "aac": ("adts", "aac"),
    "wma": ("asf", "wmav2"),
    "opus": ("ogg", "libopus"),
    "mp3": ("mp3", "libmp3lame"),
}


def encode(path: Path | str, audio: np.ndarray | Iterable[np.ndarray], sr: int, codec: str | None = None,
           bit_rate: int = 128_000, **container_options: str) -> Path:
    """Write [channels, n] float audio (an array, or an iterable of such
    blocks for long files) with PyAV; the codec follows the extension."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, default_codec = CODECS[path.suffix[1:].lower()]
    blocks = iter([audio] if isinstance(audio, np.ndarray) else audio)
    first = next(blocks, None)
    if first is None:
        raise ValueError("no audio to encode")
    channels = first.shape[0]
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    with av.open(str(path), "w", format=fmt, options=container_options) as out:
        stream = out.add_stream(codec or default_codec, rate=sr, layout=layout)
        stream.bit_rate = bit_rate
        sample_fmt = stream.codec_context.codec.audio_formats[0].name
        planar = sample_fmt.endswith("p")
        step, start = 4096, 0
        for x in _steps(itertools.chain([first], blocks), step):
            if sample_fmt.rstrip("p") == "s16":
                x = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
            elif sample_fmt.rstrip("p") == "s32":
                x = np.round(np.clip(x, -1, 1) * 2147483647.0).astype(np.int32)
            data = x if planar else np.ascontiguousarray(x.T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(data, format=sample_fmt, layout=layout)
            frame.sample_rate = sr
            frame.pts = start
            start += x.shape[1]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _steps(blocks: Iterable[np.ndarray], step: int) -> Iterator[np.ndarray]:
    """float32 [channels, <=step] pieces of each block in turn."""
    for block in blocks:
        for i in range(0, block.shape[1], step):
            yield np.ascontiguousarray(block[:, i : i + step], dtype=np.float32)
