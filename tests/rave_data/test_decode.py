"""Decoding every supported format, streaming, and refusing bad files clearly."""
from __future__ import annotations

import os
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from rave_data.audioinfo import DecodeError, MissingFFmpeg
from rave_data.decode import open_audio, read_all
from tests.audio import concat, noise, silence, sine, write

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg not installed")


def signal(sr: int, channels: int = 2, seconds: float = 1.3) -> np.ndarray:
    return concat(sine(seconds / 2, sr, 440, amp=0.4, channels=channels), noise(seconds / 2, sr, 0.1, channels))


def ffmpeg_encode(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    return dst


# formats -------------------------------------------------------------------------
LOSSLESS = [
    ("a.wav", "PCM_16", 1 / 32768),
    ("a.wav", "PCM_24", 1e-6),
    ("a.wav", "FLOAT", 0.0),
    ("a.flac", "PCM_16", 1 / 32768),
    ("a.aiff", "PCM_24", 1e-6),
    ("a.caf", "PCM_16", 1 / 32768),
    ("a.w64", "PCM_16", 1 / 32768),
    ("UPPER.WAV", "PCM_16", 1 / 32768),
    ("Mixed.FlAc", "PCM_24", 1e-6),
]


@pytest.mark.parametrize("name,subtype,tol", LOSSLESS)
def test_lossless_formats_decode_exactly(tmp_path: Path, name: str, subtype: str, tol: float) -> None:
    x = signal(44100)
    path = write(tmp_path / name, x, 44100, subtype=subtype)
    y, sr = read_all(path)
    assert sr == 44100 and y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= tol
    with open_audio(path) as src:
        assert src.info.backend == "soundfile" and src.info.frames == x.shape[1] and src.info.channels == 2


@pytest.mark.parametrize(
    "name,subtype,format,tol",
    [("u8.wav", "PCM_U8", None, 1 / 64), ("i32.wav", "PCM_32", None, 1e-7), ("mulaw.wav", "ULAW", None, 0.02),
     ("double.wav", "DOUBLE", None, 0.0), ("big.rf64", "PCM_16", "RF64", 1 / 32768)],
)
def test_other_subtypes_and_containers(tmp_path: Path, name: str, subtype: str, format: str | None, tol: float) -> None:
    x = signal(22050, channels=6)  # six channels: nothing assumes mono or stereo
    path = write(tmp_path / name, x, 22050, subtype=subtype, format=format)
    y, sr = read_all(path)
    assert sr == 22050 and y.shape == (6, x.shape[1])
    assert np.max(np.abs(y - x)) <= tol


def test_one_frame_file(tmp_path: Path) -> None:
    path = write(tmp_path / "blip.wav", np.full((2, 1), 0.5, np.float32), 8000)
    y, sr = read_all(path)
    assert y.shape == (2, 1) and y[0, 0] == pytest.approx(0.5, abs=1e-4)


def test_pedalboard_reads_what_soundfile_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rave_data.decode as decode

    def refuse(path: Path) -> decode.AudioSource:
        raise DecodeError(path, "Format not recognised")

    monkeypatch.setattr(decode, "_open_soundfile", refuse)
    x = signal(32000)
    path = write(tmp_path / "a.flac", x, 32000, subtype="PCM_24")
    with open_audio(path) as src:
        assert src.info.backend == "pedalboard" and src.info.frames == x.shape[1]
        blocks = list(src.blocks(3000))
    assert all(b.shape[1] <= 3000 for b in blocks)
    assert np.max(np.abs(np.concatenate(blocks, axis=1) - x)) < 1e-6


@pytest.mark.parametrize(
    "name,subtype,sr",
    [("a.ogg", "VORBIS", 44100), ("a.opus", "OPUS", 48000), ("a.mp3", "MPEG_LAYER_III", 44100)],
)
def test_lossy_formats_keep_exact_length(tmp_path: Path, name: str, subtype: str, sr: int) -> None:
    x = signal(sr)
    fmt = "OGG" if name.endswith(".opus") else None
    path = write(tmp_path / name, x, sr, subtype=subtype, format=fmt)
    with open_audio(path) as src:
        assert src.info.backend == "soundfile"
        assert (src.info.sr, src.info.channels, src.info.frames) == (sr, 2, x.shape[1])
        y = np.concatenate(list(src.blocks(5000)), axis=1)
    assert y.shape == x.shape  # no encoder delay or padding left in
    # The sine half survives lossy coding: strong correlation with the original.
    half = x.shape[1] // 2
    c = np.corrcoef(x[0, 2000:half - 2000], y[0, 2000:half - 2000])[0, 1]
    assert c > 0.95


@needs_ffmpeg
@pytest.mark.parametrize("ext,args", [("m4a", ["-c:a", "aac"]), ("wma", ["-c:a", "wmav2"])])
def test_ffmpeg_formats(tmp_path: Path, ext: str, args: list[str]) -> None:
    x = signal(44100, seconds=2.0)
    wav = write(tmp_path / "src.wav", x, 44100, subtype="PCM_16")
    path = ffmpeg_encode(wav, tmp_path / f"a.{ext.upper()}", *args)
    with open_audio(path) as src:
        assert src.info.backend == "ffmpeg" and (src.info.sr, src.info.channels) == (44100, 2)
        blocks = list(src.blocks(4096))
    assert all(b.shape[0] == 2 and 0 < b.shape[1] <= 4096 and b.dtype == np.float32 for b in blocks)
    y = np.concatenate(blocks, axis=1)
    assert y.shape[1] == src.info.frames
    if ext == "m4a":  # the container's edit list gives the exact length
        assert y.shape[1] == x.shape[1]
    else:  # wma headers are rounded to codec frames (the gap is filled with silence)
        assert abs(y.shape[1] - x.shape[1]) <= 2048
    # The 440 Hz sine of the first half comes back at its level (wma keeps an
    # encoder delay, so compare spectra, not samples).
    seg = y[0, 4096 : x.shape[1] // 2 - 4096]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
    assert abs(np.argmax(spectrum) * 44100 / seg.size - 440) < 5
    assert np.sqrt(np.mean(seg**2)) == pytest.approx(0.4 / np.sqrt(2), rel=0.1)


@needs_ffmpeg
def test_ffmpeg_multichannel_and_mono(tmp_path: Path) -> None:
    # >2 channels come through WAVE_FORMAT_EXTENSIBLE headers, mono through plain ones.
    for channels, sr in ((6, 48000), (1, 22050)):
        src = write(tmp_path / f"s{channels}.wav", signal(sr, channels=channels), sr)
        p = ffmpeg_encode(src, tmp_path / f"a{channels}.m4a", "-c:a", "aac")
        y, got_sr = read_all(p)
        assert got_sr == sr and y.shape[0] == channels
        # The edit list stores the length in the movie's millisecond timescale.
        assert abs(y.shape[1] - signal(sr, channels=channels).shape[1]) <= 1


@needs_ffmpeg
def test_missing_ffmpeg_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav = write(tmp_path / "src.wav", signal(16000), 16000)
    m4a = ffmpeg_encode(wav, tmp_path / "a.m4a", "-c:a", "aac")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(MissingFFmpeg, match="needs ffmpeg.*apt-get install ffmpeg"):
        open_audio(m4a)
    # Formats soundfile reads do not need it.
    assert read_all(wav)[0].shape == (2, signal(16000).shape[1])


# bad input --------------------------------------------------------------------------
def expect_error(path: Path, reason: str) -> DecodeError:
    with pytest.raises(DecodeError) as err:
        with open_audio(path) as src:
            for _ in src.blocks(4096):
                pass
    e = err.value
    assert str(path) in str(e) and reason in e.reason, str(e)
    assert "\n" not in str(e)
    return e


def test_zero_byte_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.wav"
    p.touch()
    expect_error(p, "empty file")


@pytest.mark.parametrize("name,subtype", [("cut.wav", "PCM_16"), ("cut.flac", "PCM_16"), ("cut.aiff", "PCM_16")])
def test_truncated_file(tmp_path: Path, name: str, subtype: str) -> None:
    p = write(tmp_path / name, noise(3.0, 44100, channels=2), 44100, subtype=subtype)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    expect_error(p, "truncated")


def test_truncated_mp3(tmp_path: Path) -> None:
    p = write(tmp_path / "cut.mp3", signal(44100, seconds=4.0), 44100, subtype="MPEG_LAYER_III")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    expect_error(p, "truncated")


@needs_ffmpeg
def test_truncated_m4a(tmp_path: Path) -> None:
    src = write(tmp_path / "s.wav", signal(44100, seconds=6.0), 44100)
    p = ffmpeg_encode(src, tmp_path / "cut.m4a", "-c:a", "aac", "-movflags", "+faststart")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # index intact (faststart), audio cut
    expect_error(p, "truncated")


@needs_ffmpeg
def test_untagged_mp3_has_exact_length(tmp_path: Path) -> None:
    # Without a Xing/Info tag libsndfile only estimates the length from the size.
    src = write(tmp_path / "s.wav", signal(44100, seconds=3.0), 44100)
    p = ffmpeg_encode(src, tmp_path / "plain.mp3", "-c:a", "libmp3lame", "-write_xing", "0")
    import soundfile as sf

    with sf.SoundFile(str(p)) as f:
        decoded = f.read(dtype="float32").shape[0]  # what the decoder really gives
    with open_audio(p) as s:
        assert s.info.frames == decoded  # no padding needed, nothing cut
        assert sum(b.shape[1] for b in s.blocks(10000)) == decoded
    assert abs(decoded - 3 * 44100) <= 2 * 1152  # every mpeg frame, delay included


def test_text_file_named_flac(tmp_path: Path) -> None:
    p = tmp_path / "notes.flac"
    p.write_text("these are my notes, not audio\n" * 20)
    expect_error(p, "not a readable audio file")


def test_garbage_mp3_is_refused_quietly(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # libmpg123 would print "Note: Illegal Audio-MPEG-Header ..." over prep's display.
    p = tmp_path / "noise.mp3"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    expect_error(p, "not a readable audio file")
    out, err = capfd.readouterr()
    assert "Note:" not in err and "Warning:" not in err, err


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    x = signal(16000, seconds=3.0)
    x[1, 30000] = bad  # in the second 16384-frame block: found mid-stream
    p = write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    expect_error(p, "contains NaN or infinite samples")


def test_directory_and_broken_symlink(tmp_path: Path) -> None:
    d = tmp_path / "folder.wav"
    d.mkdir()
    expect_error(d, "is a directory")
    link = tmp_path / "gone.wav"
    link.symlink_to(tmp_path / "missing.wav")
    expect_error(link, "broken symbolic link")
    expect_error(tmp_path / "never.wav", "no such file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path: Path) -> None:
    p = write(tmp_path / "locked.wav", signal(16000), 16000)
    p.chmod(0)
    try:
        expect_error(p, "cannot read")
    finally:
        p.chmod(0o644)


def test_fifo_is_refused_not_hung(tmp_path: Path) -> None:
    p = tmp_path / "pipe.wav"
    os.mkfifo(p)
    expect_error(p, "not a regular file")


# streaming -------------------------------------------------------------------------
def test_blocks_are_bounded_and_repeatable(tmp_path: Path) -> None:
    x = signal(48000, channels=3, seconds=2.0)
    p = write(tmp_path / "a.flac", x, 48000, subtype="PCM_24")
    with open_audio(p) as src:
        first = list(src.blocks(1000))
        second = list(src.blocks(777))  # each call starts again from the top
    assert all(b.shape[1] <= 1000 for b in first) and all(b.shape[1] <= 777 for b in second)
    assert all(b.flags.c_contiguous for b in first)
    np.testing.assert_array_equal(np.concatenate(first, axis=1), np.concatenate(second, axis=1))


def peak_memory_while_streaming(path: Path, block: int) -> tuple[int, int]:
    """(peak bytes Python allocated while streaming, frames decoded)."""
    tracemalloc.start()
    try:
        n = 0
        with open_audio(path) as src:
            for b in src.blocks(block):
                n += b.shape[1]
        return tracemalloc.get_traced_memory()[1], n
    finally:
        tracemalloc.stop()


def test_long_wav_streams_in_constant_memory(tmp_path: Path) -> None:
    # 30 s of 96 kHz stereo: 23 MB as float32; streaming holds a few blocks.
    sr = 96000
    x = concat(*[sine(1.0, sr, 200 + 10 * k, amp=0.3, channels=2) for k in range(30)])
    p = write(tmp_path / "long.wav", x, sr, subtype="PCM_24")
    del x
    peak, n = peak_memory_while_streaming(p, 8192)
    assert n == 30 * sr
    assert peak < 2_000_000  # vs 23 MB for the whole file


@needs_ffmpeg
def test_ffmpeg_path_streams_from_pipe(tmp_path: Path) -> None:
    p = tmp_path / "long.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=f=440:d=30:r=48000", "-ac", "2", "-c:a", "aac", str(p)],
        check=True,
    )
    peak, n = peak_memory_while_streaming(p, 4096)
    assert n == 30 * 48000
    assert peak < 2_000_000  # the whole decode would be 11.5 MB


@needs_ffmpeg
def test_ffmpeg_process_is_reaped_when_stopped_early(tmp_path: Path) -> None:
    p = ffmpeg_encode(write(tmp_path / "s.wav", signal(44100, seconds=10.0), 44100), tmp_path / "a.m4a")
    src = open_audio(p)
    it = src.blocks(1024)
    next(it)
    proc = src._proc
    assert proc is not None and proc.poll() is None  # still decoding: output is read as it comes
    it.close()
    src.close()
    assert proc.returncode is not None  # killed and waited for: no zombie, no orphan


@needs_ffmpeg
def test_no_ffmpeg_left_behind_when_probe_fails(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    p = tmp_path / "garbage.m4a"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    expect_error(p, "")
    # The decoder started alongside ffprobe was killed and reaped.
    assert [c for c in psutil.Process().children() if "ffmpeg" in c.name()] == []


@needs_ffmpeg
def test_ffmpeg_file_can_be_streamed_twice(tmp_path: Path) -> None:
    src = write(tmp_path / "s.wav", signal(44100, seconds=2.0), 44100)
    p = ffmpeg_encode(src, tmp_path / "a.m4a", "-c:a", "aac")
    with open_audio(p) as s:
        first = np.concatenate(list(s.blocks(3000)), axis=1)
        second = np.concatenate(list(s.blocks(5000)), axis=1)
    np.testing.assert_array_equal(first, second)


def test_read_all_of_silence_and_mono(tmp_path: Path) -> None:
    p = write(tmp_path / "quiet.wav", silence(0.5, 22050), 22050)
    y, sr = read_all(p)
    assert (y.shape, sr) == ((1, 11025), 22050) and not y.any()
