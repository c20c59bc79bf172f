"""Decode audio files into streams of float32 blocks, whatever their format.

Three backends, tried in order for each file:

1. **soundfile** (libsndfile): wav, flac, ogg/vorbis, opus, aiff, caf, w64 and
   mp3. Reads mp3 with exact lengths (it honours the LAME/Xing encoder delay
   and padding), so it goes first.
2. **pedalboard** (JUCE): whatever libsndfile refuses but JUCE reads. Its mp3
   reader keeps the encoder padding (+1105 samples), one more reason it is
   only the fallback.
3. **ffmpeg** (a subprocess, when on PATH) for what neither reads (m4a, aac,
   wma, ...). ``ffprobe`` gives the rate and channels, ffmpeg streams raw
   ``f32le`` through a pipe, so even ffmpeg files are never held whole.

Every failure is a :class:`~rave_data.audioinfo.DecodeError` whose message
names the file and the reason; a file that needs ffmpeg when there is none
raises :class:`~rave_data.audioinfo.MissingFFmpeg`.

Heavy or optional libraries (soundfile, pedalboard) are imported inside the
functions that need them so that ``ravedata --help`` stays instant.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from rave_data.audioinfo import AudioInfo, DecodeError, MissingFFmpeg

#: Extensions that only ffmpeg reads on Linux: when ffmpeg is missing these
#: raise MissingFFmpeg rather than a generic "cannot decode".
FFMPEG_EXTENSIONS: frozenset[str] = frozenset({"m4a", "mp4", "aac", "wma", "alac", "ac3", "mka", "webm"})

#: Subtypes that cannot hold NaN or infinity (integer PCM), so their blocks
#: skip the finiteness check.
_INTEGER_SUBTYPES = re.compile(r"^(PCM_S?\d+|PCM_U8|ULAW|ALAW|DPCM_\d+|DWVW_\d+|IMA_ADPCM|MS_ADPCM|GSM610|G7\d\d.*)$")

#: mp3 headers may round the length to whole mpeg frames; a shortfall up to
#: this many samples is padding, not truncation.
_MP3_TOLERANCE = 2 * 1152

#: ffmpeg-decoded formats: a shortfall up to this many samples (or 0.5 %) is
#: header rounding (wma declares ~2000 samples more than it decodes).
_FFMPEG_TOLERANCE = 8192

#: ffmpeg has written all its samples: it must exit within this many seconds.
_EXIT_TIMEOUT_S = 30.0

# libsndfile recovers from a truncated wav/aiff/w64 by shortening the length,
# silently; its log (``extra_info``) keeps "data : <declared> (should be <found>)".
_SIZE_MISMATCH = re.compile(r"^\s*(data|SSND|RIFF|riff|FORM)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)


def _check_path(path: Path) -> None:
    """Refuse what is not a readable, non-empty regular file, with the reason."""
    if not os.path.exists(path):
        if os.path.islink(path):
            raise DecodeError(path, "broken symbolic link")
        raise DecodeError(path, "no such file")
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


class AudioSource:
    """One opened audio file: exact header :attr:`info` and a stream of blocks.

    Use :func:`open_audio` to make one; it is a context manager. Each call of
    :meth:`blocks` streams the file from the start, so a caller may read it
    twice (e.g. measure loudness, then process) without holding it in memory.
    """

    info: AudioInfo

    def __init__(
        self,
        info: AudioInfo,
        handle: Any = None,
        ffmpeg: str | None = None,
        started: tuple[subprocess.Popen[bytes], IO[bytes]] | None = None,
    ) -> None:
        self.info = info
        self._handle = handle  # soundfile.SoundFile | pedalboard ReadableAudioFile | None
        self._ffmpeg = ffmpeg  # path of the ffmpeg binary for the ffmpeg backend
        # An ffmpeg already decoding (started by open_audio, in parallel with
        # ffprobe), unread: the first blocks() call takes it.
        self._proc, self._stderr = started if started else (None, None)
        self._fresh = started is not None
        self._check_finite = info.subtype is None or not _INTEGER_SUBTYPES.match(info.subtype)

    # context manager -------------------------------------------------------
    def __enter__(self) -> AudioSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:  # never leave an ffmpeg child behind
        try:
            self.close()
        except Exception:
            pass

    def close(self) -> None:
        """Release the file and reap any ffmpeg process. Safe to call twice."""
        self._stop_ffmpeg()
        if self._handle is not None:
            try:
                self._handle.close()
            finally:
                self._handle = None

    # streaming -------------------------------------------------------------
    def blocks(self, block_frames: int = 65536) -> Iterator[np.ndarray]:
        """Yield float32 blocks of shape [channels, <=block_frames], in order.

        The blocks add up to exactly ``info.frames`` frames. Raises
        DecodeError on NaN/infinite samples and on truncation or corrupt
        data met mid-stream.
        """
        if block_frames <= 0:
            raise ValueError("block_frames must be positive")
        if self.info.backend == "ffmpeg":
            raw = self._ffmpeg_blocks(block_frames)
        elif self.info.backend == "pedalboard":
            raw = self._pedalboard_blocks(block_frames)
        else:
            raw = self._soundfile_blocks(block_frames)
        yield from self._exact(raw, block_frames)

    def _exact(self, raw: Iterator[np.ndarray], block_frames: int) -> Iterator[np.ndarray]:
        """Check every block and make the total exactly ``info.frames``."""
        path, want = self.info.path, self.info.frames
        done = 0
        for block in raw:
            if self._check_finite and not np.isfinite(block).all():
                raise DecodeError(path, "contains NaN or infinite samples")
            if done + block.shape[1] > want:  # a decoder giving more than the header: keep the header's count
                block = block[:, : want - done]
            if block.shape[1]:
                done += block.shape[1]
                yield block
            if done >= want:
                break
        missing = want - done
        if missing <= 0:
            return
        if missing <= self._tolerance():
            # The header's length was rounded to codec frames: pad with silence
            # so the promise "blocks add up to info.frames" holds.
            while missing > 0:
                n = min(missing, block_frames)
                missing -= n
                yield np.zeros((self.info.channels, n), np.float32)
            return
        raise DecodeError(
            path,
            f"truncated or corrupt: decoded {done / self.info.sr:.2f} s of the "
            f"{want / self.info.sr:.2f} s the header declares",
        )

    def _tolerance(self) -> int:
        """Frames a decoder may fall short of the header without it being truncation."""
        if self.info.backend == "ffmpeg":
            # wma/aac headers round to codec frames; real truncation is far larger.
            return max(_FFMPEG_TOLERANCE, self.info.frames // 200)
        return _MP3_TOLERANCE if self.info.format == "mp3" else 0

    def _soundfile_blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        import soundfile as sf

        f = self._handle
        f.seek(0)
        quiet = self.info.format == "mp3"
        while True:
            try:
                with _native_stderr_silenced(quiet):
                    data = f.read(block_frames, dtype="float32", always_2d=True)  # [n, channels]
            except sf.LibsndfileError as e:
                raise DecodeError(
                    self.info.path, f"corrupt or truncated data after {f.tell() / self.info.sr:.2f} s ({e})"
                ) from None
            if data.shape[0] == 0:
                return
            yield np.ascontiguousarray(data.T)

    def _pedalboard_blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        f = self._handle
        f.seek(0)
        while f.tell() < f.frames:
            try:
                data = f.read(block_frames)  # [channels, n] float32
            except Exception as e:  # JUCE reports bad data as RuntimeError
                raise DecodeError(self.info.path, f"corrupt data: {e}") from None
            if data.shape[1] == 0:
                return
            yield np.ascontiguousarray(data, dtype=np.float32)

    def _ffmpeg_blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        ch = self.info.channels
        if not self._fresh:  # the process started by open_audio is used by the first call only
            self._stop_ffmpeg()
            self._proc, self._stderr = _spawn_ffmpeg(self._ffmpeg or "ffmpeg", self.info.path)
        self._fresh = False
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        nbytes = block_frames * ch * 4
        try:
            self._check_wav_header(proc.stdout)
            while True:
                buf = proc.stdout.read(nbytes)  # blocks until nbytes or EOF: a bounded pipe read
                if not buf:
                    break
                usable = len(buf) - len(buf) % (ch * 4)
                yield np.frombuffer(buf[:usable], np.float32).reshape(-1, ch).T.copy()
            self._finish_ffmpeg()
        finally:
            self._stop_ffmpeg()

    # ffmpeg process handling ----------------------------------------------
    def _check_wav_header(self, stream: IO[bytes]) -> None:
        """Read ffmpeg's WAV header off the pipe; check it is the float32 layout ffprobe described."""
        riff = _read_exact(stream, 12)
        if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RF64") or riff[8:12] != b"WAVE":
            self._finish_ffmpeg()  # raises with ffmpeg's own message when it failed
            raise DecodeError(self.info.path, "ffmpeg produced no audio")
        fmt: tuple[int, int, int, int] | None = None
        while True:
            head = _read_exact(stream, 8)
            if len(head) < 8:
                self._finish_ffmpeg()
                raise DecodeError(self.info.path, "ffmpeg produced no audio")
            cid, size = head[:4], int.from_bytes(head[4:], "little")
            if cid == b"data":
                break
            body = _read_exact(stream, size + (size & 1))  # chunks are word-aligned
            if cid == b"fmt ":
                tag, channels = int.from_bytes(body[0:2], "little"), int.from_bytes(body[2:4], "little")
                sr, bits = int.from_bytes(body[4:8], "little"), int.from_bytes(body[14:16], "little")
                if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag leads the GUID
                    tag = int.from_bytes(body[24:26], "little")
                fmt = (tag, channels, sr, bits)
        if fmt != (3, self.info.channels, self.info.sr, 32):
            raise DecodeError(
                self.info.path,
                f"ffmpeg decodes a layout ffprobe did not announce (format tag, channels, rate, bits = {fmt})",
            )

    def _finish_ffmpeg(self) -> None:
        """Wait for a process that reached EOF; raise with its message if it failed."""
        proc = self._proc
        if proc is None:
            return
        try:
            rc = proc.wait(timeout=_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DecodeError(self.info.path, f"ffmpeg did not exit within {_EXIT_TIMEOUT_S:.0f} s") from None
        if rc != 0:
            raise DecodeError(self.info.path, f"ffmpeg failed: {self._ffmpeg_message() or f'exit status {rc}'}")

    def _ffmpeg_message(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = [ln.strip() for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def _stop_ffmpeg(self) -> None:
        proc, self._proc = self._proc, None
        self._fresh = False
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
            proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _spawn_ffmpeg(ffmpeg: str, path: Path) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start ffmpeg decoding ``path``'s first audio stream to float32 WAV on a pipe.

    WAV rather than raw samples: its header tells channels and rate, so the
    stream is checked against what ffprobe said. ``-bitexact`` keeps
    metadata chunks out of the header. stderr goes to a file, not a pipe: a
    chatty ffmpeg can never block on it.
    """
    cmd = [
        ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn",
        "-map_metadata", "-1", "-bitexact", "-c:a", "pcm_f32le", "-f", "wav", "pipe:1",
    ]
    err = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    except OSError as e:
        err.close()
        raise DecodeError(path, f"cannot run ffmpeg: {e}") from None
    return proc, err


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    """``n`` bytes from a pipe (fewer only at EOF)."""
    data = stream.read(n)
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            break
        data += more
    return data


def _open_soundfile(path: Path) -> AudioSource:
    import soundfile as sf

    try:
        with _native_stderr_silenced(_ext(path) == "mp3"):
            f = sf.SoundFile(str(path))
    except Exception as e:  # LibsndfileError, or RuntimeError from older versions
        raise DecodeError(path, _clean_sf_error(e)) from None
    try:
        reason = _libsndfile_truncation(f)
        if reason:
            raise DecodeError(path, reason)
        if f.frames <= 0 or f.samplerate <= 0 or f.channels <= 0:
            raise DecodeError(path, "no audio samples in file")
        fmt = f.format.lower()
        fmt = {"wavex": "wav"}.get(fmt, fmt)
        frames = int(f.frames)
        if fmt == "mp3":
            # Without a Xing/Info tag libsndfile estimates the length from the
            # file size; mp3_frames counts the frame headers, as `duration` does.
            from rave_data.mp3_frames import mp3_exact_frames

            frames = mp3_exact_frames(path) or frames
        info = AudioInfo(path, int(f.samplerate), int(f.channels), frames, fmt, f.subtype, "soundfile")
    except BaseException:
        f.close()
        raise
    return AudioSource(info, handle=f)


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


def _open_pedalboard(path: Path) -> AudioSource:
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
    return AudioSource(info, handle=f)


def _open_ffmpeg(path: Path) -> AudioSource:
    # ffprobe (through probe.py, shared with `ravedata duration`) gives the
    # rate, the channels and the header length; edit lists applied, that
    # length is exact for m4a, whose decoder output keeps the end padding.
    from rave_data.probe import _probe_ffprobe

    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        raise MissingFFmpeg(path)
    # Start decoding while ffprobe reads the header: each process start costs
    # as much as decoding half a minute of AAC, so the two overlap.
    started = _spawn_ffmpeg(ffmpeg, path)
    try:
        head = _probe_ffprobe(path)
        if head.frames <= 0:
            raise DecodeError(path, "no audio samples in file")
    except BaseException:
        AudioSource(AudioInfo(path, 1, 1, 1, "", None, "ffmpeg"), started=started).close()
        raise
    # The header's length is the promise (it is what `ravedata duration`
    # reports): the m4a decoder's end padding is cut, and a header that
    # overstates a little (wma) is made good with silence; see _exact.
    # subtype None: AAC/WMA decoders give floats, so the finiteness check stays on.
    info = AudioInfo(path, head.sr, head.channels, head.frames, head.format, None, "ffmpeg")
    return AudioSource(info, ffmpeg=ffmpeg, started=started)


def open_audio(path: Path | str) -> AudioSource:
    """Open ``path`` with the first backend that reads it (see module doc).

    Raises DecodeError (naming the file and the reason) or MissingFFmpeg.
    """
    path = Path(path)
    _check_path(path)
    try:
        return _open_soundfile(path)
    except DecodeError as e:
        first = e
        if first.reason.startswith("truncated"):
            raise  # the format was recognised: another backend would hide the damage
    try:
        return _open_pedalboard(path)
    except DecodeError:
        pass
    try:
        return _open_ffmpeg(path)
    except DecodeError:
        # For m4a/aac/wma ffmpeg's own reason (or MissingFFmpeg) is the one
        # that matters; for the formats libsndfile knows, its reason is.
        if _ext(path) in FFMPEG_EXTENSIONS:
            raise
        raise DecodeError(path, f"not a readable audio file ({first.reason})") from None


def read_all(path: Path | str) -> tuple[np.ndarray, int]:
    """Decode a whole file: ([channels, n] float32, sample rate). For small files."""
    with open_audio(path) as src:
        blocks = list(src.blocks(1 << 18))
        data = np.concatenate(blocks, axis=1) if blocks else np.zeros((src.info.channels, 0), np.float32)
        return data, src.info.sr
