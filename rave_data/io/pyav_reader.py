"""Audio through PyAV: FFmpeg's demuxers and decoders, in-process.

PyAV (``av`` on PyPI) ships wheels that bundle their own FFmpeg libraries,
so no system ffmpeg is needed. Its decoders are the fastest we have for
Vorbis, Opus, AAC and WMA (docs/prep.md has the measured table), and the only
ones for m4a/aac/wma on Linux.

Exact lengths. FFmpeg's demuxers already drop the encoder delay the file
declares (Opus pre-skip, Vorbis/Opus end granule, MP3 LAME gapless info, the
start of an m4a edit list): the one thing left is the end padding of AAC in
mp4/m4a, which the decoder still outputs (441344 frames for a 441000-frame
file). So the length promised in :class:`~rave_data.io.audioinfo.AudioInfo` is
the header's (edit lists applied) and the decoded stream is cut to it.

- :func:`header` reads that length without decoding (``ravedata duration``
  and ``prep`` agree on it).
- :class:`PyAVStream` decodes a file into float32 blocks.

``av`` is slow to import: it is imported here only, and this module only
where a file needs it.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rave_data.io.audioinfo import AudioInfo, DecodeError

#: Samples per AAC frame: a raw ADTS stream has no length in any header, and
#: counting its packets (demux only) is exact.
_AAC_FRAME = 1024

#: Integer sample formats -> the scale that maps them to [-1, 1).
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9.223372036854776e18}


def _av() -> Any:
    try:
        import av
    except ImportError as e:  # a dependency: only a broken install lands here
        raise RuntimeError(f"PyAV (the 'av' package) is not importable: {e}") from None
    return av


def _open(path: Path) -> Any:
    av = _av()
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise DecodeError(path, _reason(e)) from None
    except OSError as e:
        raise DecodeError(path, (e.strerror or str(e)).lower()) from None
    if not container.streams.audio:
        container.close()
        raise DecodeError(path, "no audio stream")
    return container


def _reason(e: Exception) -> str:
    """FFmpeg's message without the file name it prefixes."""
    msg = getattr(e, "strerror", None) or str(e)
    msg = msg.split(": '", 1)[0].strip() or type(e).__name__
    if msg == "Invalid data found when processing input":
        return "not a recognised audio format (corrupt, or another kind of file)"
    return msg[0].lower() + msg[1:]


def header(path: Path | str) -> AudioInfo:
    """Rate, channels and exact length of ``path`` from its headers (no decoding)."""
    path = Path(path)
    container = _open(path)
    try:
        return _info(path, container)
    finally:
        container.close()


def _info(path: Path, container: Any) -> AudioInfo:
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    sr = int(ctx.sample_rate or stream.rate or 0)
    channels = int(ctx.channels or 0)
    if sr <= 0 or channels <= 0:
        raise DecodeError(path, "audio stream without sample rate or channels")
    codec = ctx.name
    fmt = path.suffix[1:].lower() or container.format.name
    if container.format.name == "aac":  # raw ADTS: count the packets (demux only)
        counter = _open(path)
        try:
            frames = sum(1 for p in counter.demux(counter.streams.audio[0]) if p.size) * _AAC_FRAME
        finally:
            counter.close()
    elif stream.duration is not None and stream.time_base is not None:
        # Stream time base: exact (m4a edit lists already applied).
        frames = int(round(stream.duration * stream.time_base * sr))
        if codec == "opus" and container.format.name == "ogg":
            # Ogg Opus: the end granule counts the pre-skip the decoder drops.
            frames -= int(ctx.delay or 0)
    elif container.duration is not None:
        frames = int(round(container.duration * sr / 1_000_000))  # AV_TIME_BASE units
    else:
        raise DecodeError(path, "duration unknown (no duration in any header)")
    if fmt == "mp3" and codec.startswith("mp3"):
        # Without a Xing/Info tag the demuxer estimates from the bitrate.
        from rave_data.io.mp3_frames import mp3_exact_frames

        frames = mp3_exact_frames(path) or frames
    if frames <= 0:
        raise DecodeError(path, "no audio samples in file")
    subtype = codec.upper()
    return AudioInfo(path, sr, channels, frames, fmt, subtype, "pyav")


class PyAVStream:
    """An open file: :attr:`info` and :meth:`blocks` (from the start, each call)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._container = _open(self.path)
        try:
            self.info = _info(self.path, self._container)
        except BaseException:
            self._container.close()
            raise

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """float32 [channels, block_frames] blocks (the last may be shorter),
        as the decoder gives them (the caller cuts them to ``info.frames``).
        Raises DecodeError when the decoder fails mid-stream."""
        av = _av()
        if self._container is None or self._used:
            self.close()
            self._container = _open(self.path)
        self._used = True
        stream = self._container.streams.audio[0]
        gather = _Gather(self.info.channels)
        try:
            for frame in self._container.decode(stream):
                gather.add(frame)
                if gather.held >= block_frames:
                    yield from gather.take(block_frames)
        except av.FFmpegError as e:
            seconds = (gather.done + gather.held) / self.info.sr
            raise DecodeError(self.path, f"corrupt data after {seconds:.2f} s ({_reason(e)})") from None
        except _LayoutChange as e:
            raise DecodeError(self.path, str(e)) from None
        yield from gather.take(block_frames, last=True)

    _used = False


class _LayoutChange(Exception):
    pass


#: Sample format (without the planar "p") -> numpy dtype of its samples.
_DTYPES = {"flt": np.float32, "dbl": np.float64, "u8": np.uint8, "s16": np.int16, "s32": np.int32, "s64": np.int64}


class _Gather:
    """Decoded frames -> float32 [channels, n] blocks.

    A frame's samples are kept as the bytes of its planes and turned into
    arrays once per block: ``bytes(plane)`` costs a fraction of
    ``frame.to_ndarray()``, which took as long as decoding itself on
    Vorbis's ~1000-sample frames.
    """

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.held = 0  # frames gathered, not yet yielded
        self.done = 0  # frames yielded
        self._chunks: list[list[bytes]] = []
        self._name = ""  # the frames' sample format, e.g. "fltp"
        self._bytes = 0  # bytes per sample of one plane
        self._ready: list[np.ndarray] = []  # arrays of an earlier sample format

    def add(self, frame: Any) -> None:
        name = frame.format.name
        if name != self._name:
            self._switch(frame)
        n = frame.samples
        size = n * self._bytes
        planes = frame.planes
        if len(planes) != len(self._chunks):
            raise _LayoutChange(f"the channel count changes mid-stream (now {len(planes)} planes)")
        for chunk, plane in zip(self._chunks, planes):
            b = bytes(plane)
            if len(b) != size:  # planes may be padded; a packed frame of other channels is short
                if len(b) < size:
                    raise _LayoutChange("the channel count changes mid-stream")
                b = b[:size]
            chunk.append(b)
        self.held += n

    def _switch(self, frame: Any) -> None:
        """A new sample format (the first frame, or a change mid-stream)."""
        if any(self._chunks):
            self._ready.append(self._array())
        fmt = frame.format
        self._name = fmt.name
        planes = self.channels if fmt.is_planar else 1
        self._bytes = fmt.bytes * (1 if fmt.is_planar else self.channels)
        self._chunks = [[] for _ in range(planes)]

    def _array(self) -> np.ndarray:
        planar = self._name.endswith("p")
        name = self._name.rstrip("p")
        dtype = _DTYPES[name]
        if planar:
            n = sum(len(b) for b in self._chunks[0]) // np.dtype(dtype).itemsize
            a = np.empty((self.channels, n), dtype)
            for row, c in zip(a, self._chunks):
                row[:] = np.frombuffer(b"".join(c), dtype)
        else:
            a = np.frombuffer(b"".join(self._chunks[0]), dtype).reshape(-1, self.channels).T
        for c in self._chunks:
            c.clear()
        if name == "flt":
            return a if planar else np.ascontiguousarray(a)
        out = np.array(a, dtype=np.float32, order="C")
        if name == "u8":
            out -= 128.0
        if name != "dbl":
            out *= np.float32(1.0 / _INT_SCALE[name])
        return out

    def take(self, block_frames: int, last: bool = False) -> Iterator[np.ndarray]:
        """Yield whole blocks of what is held (and the rest when ``last``)."""
        parts = self._ready
        if any(self._chunks):
            parts = parts + [self._array()]
        self._ready = []
        if not parts:
            return
        joined = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        pos = 0
        while joined.shape[1] - pos >= block_frames:
            yield joined[:, pos : pos + block_frames]
            pos += block_frames
            self.done += block_frames
        rest = joined[:, pos:]
        if last and rest.shape[1]:
            self.done += rest.shape[1]
            yield rest
            rest = rest[:, :0]
        self.held = rest.shape[1]
        if self.held:
            self._ready = [rest]
