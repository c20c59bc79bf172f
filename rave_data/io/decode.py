"""Decode audio files into streams of float32 blocks, whatever their format.

Each format has its decoders in order, fastest exact one first
(:mod:`rave_data.io.decoder_choice`; the measured table is in docs/prep.md):

- **soundfile** (libsndfile): PCM WAV/AIFF/W64/CAF read in place, FLAC and
  MP3 (it honours the LAME/Xing encoder delay and padding);
- **pyav** (:mod:`rave_data.io.pyav_reader`, FFmpeg's decoders in-process, no
  system ffmpeg): Vorbis, Opus (twice libsndfile's speed), and the only
  reader of m4a/aac/wma;
- **pedalboard** (JUCE): the last resort for a file the others refuse to
  open. Its mp3 reader keeps the encoder padding (+1105 samples), and past
  the end of a truncated file it gives silence, so it never takes over
  from a decoder that stopped.

A file is opened with the first decoder that accepts it. A decoder that
fails mid-file, or ends short of the header's length, hands over to the next
one, which decodes from the start and carries on where the first stopped. A
file that still ends short is kept with what was decoded, the shortfall
reported in :attr:`AudioSource.warnings` (``strict=True``: refused).

Every failure is a :class:`~rave_data.io.audioinfo.DecodeError` whose message
names the file and the reason.

Heavy libraries (soundfile, av, pedalboard) are imported inside the
functions that need them so that ``ravedata --help`` stays instant.
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from rave_data.io.audioinfo import AudioInfo, DecodeError
from rave_data.io.decoder_choice import AV_ONLY, decoders_for

#: Subtypes that cannot hold NaN or infinity (integer PCM), so their blocks
#: skip the finiteness check.
_INTEGER_SUBTYPES = re.compile(r"^(PCM_S?\d+|PCM_U8|ULAW|ALAW|DPCM_\d+|DWVW_\d+|IMA_ADPCM|MS_ADPCM|GSM610|G7\d\d.*|PCM_S\d+[LB]E|FLAC)$")

#: mp3 headers may round the length to whole mpeg frames; a shortfall up to
#: this many samples is padding, not truncation.
_MP3_TOLERANCE = 2 * 1152

#: wma headers give the length in milliseconds, rounded up to ~2000 samples
#: more than the decoder gives: a shortfall up to this many samples (or
#: 0.5 %) is header rounding, made good with silence.
_WMA_TOLERANCE = 8192

# libsndfile recovers from a truncated wav/aiff/w64 by shortening the length,
# silently; its log (``extra_info``) keeps "data : <declared> (should be <found>)".
_SIZE_MISMATCH = re.compile(r"^\s*(data|SSND|RIFF|riff|FORM)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)


def _check_path(path: Path) -> None:
    """Refuse what is not a readable, non-empty regular file, with the reason."""
    if not os.path.exists(path):
        from rave_data.io.discover import broken_link

        raise DecodeError(path, broken_link(path) or "no such file")
    try:
        st = os.stat(path)
    except OSError as e:
        raise DecodeError(path, f"cannot stat: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DecodeError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device would block libsndfile forever.
        raise DecodeError(path, "not a regular file")
    if st.st_size == 0:
        raise DecodeError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise DecodeError(path, f"cannot read: {e.strerror or e}") from None


def _ext(path: Path) -> str:
    return path.suffix[1:].lower()


def _libsndfile_truncation(sf_file: Any) -> str | None:
    """The reason a libsndfile header disagrees with the file size, or None."""
    for m in _SIZE_MISMATCH.finditer(sf_file.extra_info or ""):
        declared, found = int(m.group(2)), int(m.group(3))
        # Streamed writers leave 0 or 0xFFFFFFFF-ish placeholders: not truncation.
        # A whole-file size a few bytes over is a missing pad byte, common and harmless.
        slack = 0 if m.group(1) in ("data", "SSND") else 16
        if found + slack < declared < 0xFFFF0000:
            return f"truncated file: header declares {declared} bytes of {m.group(1)}, only {found} present"
    return None


class _Reader(Protocol):
    """One decoder's view of a file."""

    info: AudioInfo

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """[channels, n] float32 blocks from the start of the file."""

    def close(self) -> None: ...


class AudioSource:
    """One opened audio file: exact header :attr:`info` and a stream of blocks.

    Use :func:`open_audio` to make one; it is a context manager. Each call of
    :meth:`blocks` streams the file from the start, so a caller may read it
    twice (e.g. measure loudness, then process) without holding it in memory.
    What a decode had to make good (a decoder that failed and was replaced,
    a file that ends short of its header) is described in :attr:`warnings`
    (one sentence each, without the file name).
    """

    info: AudioInfo

    def __init__(self, reader: _Reader, later: tuple[str, ...] = (), strict: bool = False,
                 warnings: list[str] | None = None) -> None:
        self.info = reader.info
        self.warnings: list[str] = list(warnings or [])
        self._open_warnings = tuple(self.warnings)
        #: Seconds of audio the header declares that no decoder delivered.
        self.shortfall_seconds = 0.0
        #: The decoders that produced the audio (more than one after a hand-over).
        self.decoders: list[str] = [reader.info.backend]
        self._reader: _Reader | None = reader
        self._later = later
        self._strict = strict
        self._check_finite = self.info.subtype is None or not _INTEGER_SUBTYPES.match(self.info.subtype)

    # context manager -------------------------------------------------------
    def __enter__(self) -> AudioSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the file. Safe to call twice."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    # streaming -------------------------------------------------------------
    def blocks(self, block_frames: int = 65536) -> Iterator[np.ndarray]:
        """Yield float32 blocks of shape [channels, <=block_frames], in order.

        The blocks add up to ``info.frames`` frames, or to fewer when no
        decoder reaches the end (then :attr:`warnings` says so; with
        ``strict`` that raises DecodeError instead). Raises DecodeError on
        NaN/infinite samples and when nothing at all can be decoded.
        """
        if block_frames <= 0:
            raise ValueError("block_frames must be positive")
        if self._reader is None:
            raise ValueError("the source is closed")
        path, want, sr = self.info.path, self.info.frames, self.info.sr
        self.warnings = list(self._open_warnings)  # each pass says what it met, once
        self.decoders = [self.info.backend]
        self.shortfall_seconds = 0.0
        reader: _Reader = self._reader
        later = list(self._later)
        done = 0
        failure: str | None = None
        try:
            while True:
                failure = None
                try:
                    for block in _skipped(reader.blocks(block_frames), done):
                        if self._check_finite and not np.isfinite(block).all():
                            raise _NonFinite
                        if done + block.shape[1] > want:  # more than the header (m4a end padding): cut
                            block = block[:, : want - done]
                        if block.shape[1]:
                            done += block.shape[1]
                            yield block
                        if done >= want:
                            break
                except DecodeError as e:
                    failure = e.reason
                if done >= want:
                    return
                if not failure and want - done <= self._tolerance():
                    break  # header rounding, not a decoder stopping early
                # Failed or short: the next decoder that reads the file decodes
                # it from the start and carries on from here.
                nxt = _next_reader(path, later, self.info)
                if nxt is None:
                    break
                stopped = f"failed ({failure})" if failure else "ended early"
                self.warnings.append(f"decoder hand-over: {reader.info.backend} {stopped} at {done / sr:.2f} s; "
                                     f"{nxt.info.backend} decoded the rest")
                if reader is not self._reader:
                    reader.close()
                reader = nxt
                self.decoders.append(nxt.info.backend)
        except _NonFinite:
            raise DecodeError(path, "contains NaN or infinite samples") from None
        finally:
            if reader is not self._reader:
                reader.close()
        missing = want - done
        if missing <= self._tolerance():
            # The header's length was rounded to codec frames: pad with silence
            # so that the blocks add up to info.frames.
            while missing > 0:
                n = min(missing, block_frames)
                missing -= n
                yield np.zeros((self.info.channels, n), np.float32)
            return
        if done == 0 and failure:
            raise DecodeError(path, failure)
        what = f"decoded {done / sr:.2f} s of the {want / sr:.2f} s the header declares"
        if self._strict:
            raise DecodeError(path, f"truncated or corrupt: {what}" + (f" ({failure})" if failure else ""))
        self.shortfall_seconds = missing / sr
        self.warnings.append(f"ends short: {what}" + (f" ({failure})" if failure else "")
                             + f"; kept the {done / sr:.2f} s decoded")

    def _tolerance(self) -> int:
        """Frames a decoder may fall short of the header without it being truncation."""
        if self.info.format == "mp3":
            return _MP3_TOLERANCE
        if self.info.format == "wma":
            return max(_WMA_TOLERANCE, self.info.frames // 200)
        return 0


class _NonFinite(Exception):
    pass


def _skipped(blocks: Iterator[np.ndarray], frames: int) -> Iterator[np.ndarray]:
    """``blocks`` without their first ``frames`` frames."""
    for block in blocks:
        if frames >= block.shape[1]:
            frames -= block.shape[1]
            continue
        if frames:
            block, frames = block[:, frames:], 0
        yield block


def _next_reader(path: Path, later: list[str], info: AudioInfo) -> _Reader | None:
    """The next decoder in ``later`` (consumed) that opens ``path`` with the
    same rate and channels, or None. Not pedalboard: past the end of what a
    file holds, JUCE's readers give silence up to the header's length, which
    would hide the damage."""
    while later:
        name = later.pop(0)
        if name == "pedalboard":
            continue
        try:
            reader = OPENERS[name](path)
        except DecodeError:
            continue
        if (reader.info.sr, reader.info.channels) == (info.sr, info.channels):
            return reader
        reader.close()
    return None


class _SoundFileReader:
    def __init__(self, info: AudioInfo, handle: Any) -> None:
        self.info, self._f = info, handle

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        import soundfile as sf

        f = self._f
        f.seek(0)
        quiet = self.info.format == "mp3"
        while True:
            try:
                with _native_stderr_silenced(quiet):
                    data = f.read(block_frames, dtype="float32", always_2d=True)  # [n, channels]
            except sf.LibsndfileError as e:
                raise DecodeError(self.info.path, f"corrupt data after {f.tell() / self.info.sr:.2f} s ({e})") from None
            if data.shape[0] == 0:
                return
            yield np.ascontiguousarray(data.T)

    def close(self) -> None:
        self._f.close()


class _PedalboardReader:
    def __init__(self, info: AudioInfo, handle: Any) -> None:
        self.info, self._f = info, handle

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        f = self._f
        f.seek(0)
        while f.tell() < f.frames:
            try:
                data = f.read(block_frames)  # [channels, n] float32
            except Exception as e:  # JUCE reports bad data as RuntimeError
                raise DecodeError(self.info.path, f"corrupt data: {e}") from None
            if data.shape[1] == 0:
                return
            yield np.ascontiguousarray(data, dtype=np.float32)

    def close(self) -> None:
        self._f.close()


def _open_soundfile(path: Path) -> _SoundFileReader:
    import soundfile as sf

    try:
        with _native_stderr_silenced(_ext(path) == "mp3"):
            f = sf.SoundFile(str(path))
    except Exception as e:  # LibsndfileError, or RuntimeError from older versions
        raise DecodeError(path, _clean_sf_error(e)) from None
    try:
        if f.frames <= 0 or f.samplerate <= 0 or f.channels <= 0:
            raise DecodeError(path, "no audio samples in file")
        fmt = f.format.lower()
        fmt = {"wavex": "wav"}.get(fmt, fmt)
        frames = int(f.frames)
        if fmt == "mp3":
            # Without a Xing/Info tag libsndfile estimates the length from the
            # file size; mp3_frames counts the frame headers, as `duration` does.
            from rave_data.io.mp3_frames import mp3_exact_frames

            frames = mp3_exact_frames(path) or frames
        info = AudioInfo(path, int(f.samplerate), int(f.channels), frames, fmt, f.subtype, "soundfile")
    except BaseException:
        f.close()
        raise
    return _SoundFileReader(info, f)


def _clean_sf_error(e: Exception) -> str:
    msg = str(e)
    # "Error opening '/long/path': Format not recognised." -> the reason only.
    m = re.search(r":\s*([^:]*?)\.?\s*$", msg)
    reason = m.group(1).strip() if m else msg
    # libsndfile says this when its mp3 reader finds no frame; we know the
    # path is a readable regular file by now, so the data is what is wrong.
    if not reason or "does not exist" in reason:
        return "unrecognised or corrupt data"
    return reason


@contextlib.contextmanager
def _native_stderr_silenced(enabled: bool) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration.

    libmpg123 (inside libsndfile) prints notes about damaged mp3 frames
    ("Note: Trying to resync...") straight to the process's stderr, over
    ``prep``'s progress display; the damage itself reaches us as an error or
    a short read, which is what we report.
    """
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to protect
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _open_pedalboard(path: Path) -> _PedalboardReader:
    try:
        from pedalboard.io import AudioFile
    except ImportError as e:  # pragma: no cover - pedalboard is a dependency
        raise DecodeError(path, f"pedalboard unavailable: {e}") from None
    try:
        f = AudioFile(str(path))
    except Exception as e:
        raise DecodeError(path, str(e).splitlines()[0] if str(e) else "not readable by pedalboard") from None
    try:
        if f.frames <= 0:
            raise DecodeError(path, "no audio samples in file")
        info = AudioInfo(path, int(round(f.samplerate)), int(f.num_channels), int(f.frames), _ext(path),
                         None, "pedalboard")
    except BaseException:
        f.close()
        raise
    return _PedalboardReader(info, f)


def _open_pyav(path: Path) -> _Reader:
    from rave_data.io.pyav_reader import PyAVStream

    return PyAVStream(path)


#: The decoders by name: each opens a path and returns a reader of its
#: blocks, or raises. :func:`open_audio` tries them in the order
#: :func:`~rave_data.io.decoder_choice.decoders_for` gives.
OPENERS = {"soundfile": _open_soundfile, "pyav": _open_pyav, "pedalboard": _open_pedalboard}


def open_audio(path: Path | str, strict: bool = False, decoders: tuple[str, ...] | None = None) -> AudioSource:
    """Open ``path`` with the first of its decoders (:func:`decoders_for`,
    or ``decoders``) that reads it.

    A file whose header promises more than it holds (a truncated WAV) opens
    with a warning, or raises with ``strict``. Raises DecodeError naming the
    file and the reason.
    """
    path = Path(path)
    _check_path(path)
    order = decoders or decoders_for(path)
    reasons: dict[str, str] = {}
    for i, name in enumerate(order):
        try:
            reader = OPENERS[name](path)
        except DecodeError as e:
            reasons[name] = e.reason
            continue
        warnings = []
        if name == "soundfile":
            cut = _libsndfile_truncation(reader._f)
            if cut:
                if strict:
                    reader.close()
                    raise DecodeError(path, cut)
                warnings.append(f"{cut}; kept the {reader.info.seconds:.2f} s present")
        return AudioSource(reader, tuple(order[i + 1 :]), strict, warnings)
    # The reason of the decoder that knows the format best: libsndfile for
    # the formats it reads, FFmpeg's for the others.
    first = reasons.get("soundfile") if "soundfile" in reasons and _ext(path) not in AV_ONLY else None
    if first is None:
        raise DecodeError(path, reasons.get("pyav") or next(iter(reasons.values()), "no decoder"))
    raise DecodeError(path, f"not a readable audio file ({first})")


def read_all(path: Path | str) -> tuple[np.ndarray, int]:
    """Decode a whole file: ([channels, n] float32, sample rate). For small files."""
    with open_audio(path) as src:
        blocks = list(src.blocks(1 << 18))
        data = np.concatenate(blocks, axis=1) if blocks else np.zeros((src.info.channels, 0), np.float32)
        return data, src.info.sr
