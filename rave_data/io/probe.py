"""Header facts of an audio file without decoding its samples.

:func:`probe` answers "how long, at which rate, how many channels" for every
format ``prep`` reads, reading as little of the file as the format allows:

- plain PCM/float WAV: :mod:`rave_data.io.wav_header` reads the chunk headers
  in Python (cheaper than opening it with libsndfile; same answers, anything unusual
  goes to libsndfile).
- libsndfile (through soundfile): wav/aiff/flac/ogg/opus/caf/w64/mp3
  headers. Opening a file reads its header only.
- mp3: libsndfile's frame count is exact when the file carries a Xing/Info
  (LAME) or VBRI tag, which every mainstream encoder writes; without one it
  is an estimate from the file size, so :mod:`rave_data.io.mp3_frames` counts
  the MPEG frame headers instead.
- m4a/aac/wma (and anything libsndfile refuses): PyAV
  (:func:`rave_data.io.pyav_reader.header`: FFmpeg's demuxers in-process, the
  m4a edit list applied, a raw ADTS stream's packets counted), the same
  length ``prep`` decodes to. No system ffmpeg is involved.

Only soundfile is imported here (no torch, no pedalboard; ``av``, slow to
import, only when a file needs it): ``ravedata duration`` must start fast.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from rave_data.io.audioinfo import AudioInfo, DecodeError
from rave_data.io.decoder_choice import AV_ONLY
from rave_data.io.wav_header import read_wav_header



def probe(path: Path | str) -> AudioInfo:
    """Header facts of ``path``; raises :class:`DecodeError` naming the file
    and the reason when it cannot be read."""
    if not isinstance(path, Path):  # re-wrapping a Path re-parses it, a cost an audit pays per file
        path = Path(path)
    ext = os.path.splitext(path.name)[1][1:].lower()
    if ext in AV_ONLY:
        _check_file(path)
        return _probe_pyav(path)
    if ext in ("wav", "wave"):
        wav = read_wav_header(path)
        if wav is not None:
            return AudioInfo(path, wav.sr, wav.channels, wav.frames, "wav", wav.subtype, "soundfile")
    try:
        info = _probe_soundfile(path)
    except DecodeError as sf_error:
        _check_file(path)  # a clearer reason than libsndfile's, if it applies
        # libsndfile refuses some files FFmpeg reads (an .ogg holding a codec
        # libsndfile lacks, a .wav wrapping mp3 data). Ask PyAV before
        # giving up, but report libsndfile's reason if PyAV fails too.
        try:
            return _probe_pyav(path)
        except DecodeError:
            raise sf_error from None
    if info.format == "mp3":
        from rave_data.io.mp3_frames import mp3_exact_frames

        frames = mp3_exact_frames(path)
        if frames is not None and frames != info.frames:
            info = AudioInfo(path, info.sr, info.channels, frames, "mp3", info.subtype, info.backend)
    return info


def _check_file(path: Path) -> None:
    # Only on the slow paths: the common case pays no extra stat().
    try:
        size = path.stat().st_size
        with open(path, "rb"):  # surfaces "permission denied" and the like
            pass
    except OSError as e:
        raise DecodeError(path, (e.strerror or str(e)).lower()) from None
    if size == 0:
        raise DecodeError(path, "empty file (0 bytes)")


# --- libsndfile -----------------------------------------------------------------


#: Attempts to read this file's own reason for a failed open (see below).
_ERROR_RETRIES = 100


def _probe_soundfile(path: Path) -> AudioInfo:
    fast = _libsndfile()
    if fast is None:
        return _probe_soundfile_wrapper(path)
    snd, ffi, formats, subtypes, error_lock = fast
    info = ffi.new("SF_INFO*")
    name = os.fsencode(path)
    handle = snd.sf_open(name, snd.SFM_READ, info)
    if handle == ffi.NULL:
        # The reason of a failed open is process-global (sf_error(NULL)), and
        # other threads' opens - unlocked, to keep the common case parallel -
        # can overwrite it between our open and our read, even a success
        # resetting it to "No Error" (seen in CI). A failure (rare) is retried
        # under soundfile's error lock until the reason read is a real one.
        with error_lock:
            for _ in range(_ERROR_RETRIES):
                handle = snd.sf_open(name, snd.SFM_READ, info)
                if handle != ffi.NULL:
                    break
                code = snd.sf_error(ffi.NULL)
                if code:
                    message = ffi.string(snd.sf_error_number(code)).decode(errors="replace")
                    raise DecodeError(path, _sf_reason(message))
            else:
                raise DecodeError(path, "not a readable audio file (libsndfile gave no reason)")
    snd.sf_close(handle)
    subtype = subtypes.get(info.format & 0x0000FFFF)
    return AudioInfo(
        path=path,
        sr=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=_sf_format_name(formats.get(info.format & 0x0FFF0000, "unknown"), subtype),
        subtype=subtype,
        backend="soundfile",
    )


@functools.lru_cache(maxsize=1)
def _libsndfile() -> tuple[Any, Any, dict[int, str], dict[int, str], Any] | None:
    """soundfile's cffi handles on libsndfile, or None if they moved.

    Why not ``soundfile.SoundFile``: an audit opens thousands of files and
    only needs the SF_INFO struct that ``sf_open`` fills in. The wrapper's
    per-file Python work (mode checks, path checks, an error lock) costs
    several times the libsndfile call itself (figures in docs/duration.md).
    These names have been stable across soundfile releases;
    if a future one drops them, we use the public wrapper instead.
    """
    try:
        import soundfile as sf

        snd, ffi = sf._snd, sf._ffi
        formats = {v: k for k, v in sf._formats.items()}
        subtypes = {v: k for k, v in sf._subtypes.items()}
        error_lock = sf.SoundFile._sf_error_lock
        snd.sf_open, snd.sf_close, snd.sf_error, snd.sf_error_number, snd.SFM_READ  # noqa: B018
    except (ImportError, AttributeError):
        return None
    return snd, ffi, formats, subtypes, error_lock


def _probe_soundfile_wrapper(path: Path) -> AudioInfo:
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            return AudioInfo(
                path=path,
                sr=int(f.samplerate),
                channels=int(f.channels),
                frames=int(f.frames),
                format=_sf_format_name(f.format, f.subtype),
                subtype=f.subtype or None,
                backend="soundfile",
            )
    except sf.LibsndfileError as e:
        raise DecodeError(path, _sf_reason(e.error_string)) from None
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        raise DecodeError(path, str(e) or type(e).__name__) from None


def _sf_format_name(major: str, subtype: str | None) -> str:
    # Names users know: libsndfile calls an Opus file "OGG" and a
    # WAVE_FORMAT_EXTENSIBLE file "WAVEX"; both are reported by what they are.
    if subtype == "OPUS":
        return "opus"
    name = major.lower()
    return "wav" if name == "wavex" else name


def _sf_reason(error_string: str) -> str:
    reason = (error_string or "unreadable").strip().rstrip(".")
    if reason == "Format not recognised":
        return "not a recognised audio format (corrupt, or another kind of file)"
    return reason[0].lower() + reason[1:]


# --- PyAV ----------------------------------------------------------------------------


def _probe_pyav(path: Path) -> AudioInfo:
    from rave_data.io.pyav_reader import header

    return header(path)


__all__ = ["probe", "AV_ONLY"]
