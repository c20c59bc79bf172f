"""Decoding every supported format, streaming, and refusing bad files clearly."""
from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import rave_data.io.decode as decode
from rave_data.io.audioinfo import DecodeError
from rave_data.io.decode import AudioSource, open_audio, read_all
from rave_data.io.decoder_choice import decoders_for
from tests.audio import concat, noise, silence, sine, write
from tests.rave_data.media import encode


def signal(sr: int, channels: int = 2, seconds: float = 1.3) -> np.ndarray:
    return concat(sine(seconds / 2, sr, 440, amp=0.4, channels=channels), noise(seconds / 2, sr, 0.1, channels))


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
    import rave_data.io.decode as decode

    def refuse(path: Path) -> decode.AudioSource:
        raise DecodeError(path, "Format not recognised")

    monkeypatch.setitem(decode.OPENERS, "soundfile", refuse)
    monkeypatch.setitem(decode.OPENERS, "pyav", refuse)
    x = signal(32000)
    path = write(tmp_path / "a.flac", x, 32000, subtype="PCM_24")
    with open_audio(path) as src:
        assert src.info.backend == "pedalboard" and src.info.frames == x.shape[1]
        blocks = list(src.blocks(3000))
    assert all(b.shape[1] <= 3000 for b in blocks)
    assert np.max(np.abs(np.concatenate(blocks, axis=1) - x)) < 1e-6


# decoder choice and exact lengths, per format and decoder ------------------------------
#: (file, how it is written, sr, decoders that read it). Written by libsndfile
#: (soundfile) where it can, by PyAV's encoders otherwise.
FORMATS = [
    ("a.wav", "PCM_16", 44100, ("soundfile", "pyav")),
    ("a.flac", "PCM_24", 96000, ("soundfile", "pyav")),
    ("a.aiff", "PCM_16", 22050, ("soundfile", "pyav")),
    ("a.w64", "PCM_16", 16000, ("soundfile", "pyav")),
    ("a.ogg", "VORBIS", 44100, ("pyav", "soundfile")),
    ("a.opus", "OPUS", 48000, ("pyav", "soundfile")),
    ("b.opus", "libopus", 48000, ("pyav", "soundfile")),
    ("a.mp3", "MPEG_LAYER_III", 44100, ("soundfile", "pyav")),
    ("b.mp3", "libmp3lame", 32000, ("soundfile", "pyav")),
    ("a.m4a", "aac", 44100, ("pyav",)),
    ("a.wma", "wmav2", 44100, ("pyav",)),
]


def _lag(x: np.ndarray, y: np.ndarray, most: int = 1200) -> int:
    """The shift of ``y`` against ``x`` (within +-most) that matches best, on
    the noise half of :func:`signal` (a sine would match every period)."""
    w = x[len(x) // 2 + most : len(x) // 2 + most + 8192]
    start = len(x) // 2 + most
    return max(range(-most, most + 1), key=lambda k: float(np.dot(w, y[start + k : start + k + 8192])))


def _make(tmp_path: Path, name: str, how: str, sr: int, x: np.ndarray) -> Path:
    if how.isupper():  # a libsndfile subtype
        fmt = "OGG" if name.endswith(".opus") else None
        with sf.SoundFile(str(tmp_path / name), "w", sr, x.shape[0], how, format=fmt) as f:
            for i in range(0, x.shape[1], sr):  # libsndfile's vorbis encoder crashes on one huge write
                f.write(np.ascontiguousarray(x[:, i : i + sr].T))
        return tmp_path / name
    return encode(tmp_path / name, x, sr, codec=how)


@pytest.mark.parametrize("name,how,sr,decoders", FORMATS, ids=[f"{f[0]}-{f[1]}" for f in FORMATS])
def test_exact_length_per_format_and_decoder(tmp_path: Path, name: str, how: str, sr: int,
                                              decoders: tuple[str, ...]) -> None:
    """Every decoder of a format gives the generated length exactly: encoder
    delay and padding removed (LAME gapless info, Vorbis/Opus pre-skip and end
    granule, the AAC priming and end padding of an m4a edit list)."""
    x = signal(sr, seconds=2.4)  # whole milliseconds: what an m4a edit list holds by default
    path = _make(tmp_path, name, how, sr, x)
    assert decoders_for(path) == decoders + tuple(d for d in ("soundfile", "pyav", "pedalboard")
                                                  if d not in decoders and len(decoders) > 1)
    for d in decoders:
        with open_audio(path, decoders=(d,)) as src:
            assert src.info.backend == d
            y = np.concatenate(list(src.blocks(5000)), axis=1)
            assert (src.info.sr, src.info.channels) == (sr, 2) and src.warnings == []
        if name.endswith(".wma"):  # the header gives milliseconds: rounded up, the end made good with silence
            assert 0 <= src.info.frames - x.shape[1] <= 8192 and y.shape[1] == src.info.frames
            continue
        assert src.info.frames == y.shape[1] == x.shape[1], d
        if d == "soundfile":
            assert sf.info(str(path)).frames == x.shape[1]
        assert _lag(x[0], y[0]) == 0, d  # aligned with the source: no delay left in
    # The first decoder is the one chosen by default.
    with open_audio(path) as src:
        assert src.info.backend == decoders[0]


def test_m4a_known_length_not_decoder_output(tmp_path: Path) -> None:
    # FFmpeg's AAC decoder gives 441344 frames for this 441000-frame file (the
    # end padding); the edit list says 441000, and that is what comes out.
    p = encode(tmp_path / "ten.m4a", sine(10.0, 44100, channels=2), 44100)
    import av

    with av.open(str(p)) as c:
        assert sum(f.samples for f in c.decode(c.streams.audio[0])) == 441344
    with open_audio(p) as src:
        assert src.info.frames == sum(b.shape[1] for b in src.blocks(65536)) == 441000
    # The edit list counts in the movie's time scale (milliseconds unless the
    # muxer is told otherwise): with the sample rate as scale, any length is exact.
    p = encode(tmp_path / "odd.m4a", sine(3.0001, 44100), 44100, movie_timescale="44100")
    with open_audio(p) as src:
        assert src.info.frames == sum(b.shape[1] for b in src.blocks(65536)) == 132304


@pytest.mark.parametrize("channels", [1, 6])
def test_m4a_mono_and_multichannel(tmp_path: Path, channels: int) -> None:
    x = signal(48000, channels=channels, seconds=1.0)
    p = encode(tmp_path / f"a{channels}.m4a", x, 48000)
    y, sr = read_all(p)
    assert sr == 48000 and y.shape == x.shape


def test_no_system_ffmpeg_needed(tmp_path: Path) -> None:
    """m4a, wma, opus decode with no ffmpeg/ffprobe on PATH (PyAV bundles FFmpeg)."""
    files = [encode(tmp_path / n, signal(44100 if n != "c.opus" else 48000), 44100 if n != "c.opus" else 48000)
             for n in ("a.m4a", "b.wma", "c.opus")]
    code = ("import sys; from rave_data.io.decode import read_all\n"
            "for p in sys.argv[1:]: print(read_all(p)[0].shape[1])")
    env = {**os.environ, "PATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code, *map(str, files)], env=env, capture_output=True, text=True,
                         check=True)
    assert [int(n) for n in out.stdout.split()][::2] == [57330, 62400]


# a decoder failing or ending short ------------------------------------------------------
def _stops_after(monkeypatch: pytest.MonkeyPatch, backend: str, frames: int, fail: bool) -> None:
    """Make ``backend`` stop after ``frames`` frames: by raising mid-file
    (``fail``) or by simply ending, as libsndfile's Vorbis decoder ended
    5,806 samples early on a real 207 s OGG file."""
    real = decode.OPENERS[backend]

    class Stopping:
        def __init__(self, path: Path) -> None:
            self._r = real(path)
            self.info = self._r.info

        def blocks(self, block_frames: int):
            left = frames
            for b in self._r.blocks(block_frames):
                if left <= 0:
                    break
                yield b[:, :left]
                left -= b.shape[1]
            if fail:
                raise DecodeError(self.info.path, f"corrupt data after {frames / self.info.sr:.2f} s")

        def close(self) -> None:
            self._r.close()

    monkeypatch.setitem(decode.OPENERS, backend, Stopping)


@pytest.mark.parametrize("fail", [True, False], ids=["fails", "ends-early"])
def test_next_decoder_carries_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    x = signal(44100, seconds=3.0)
    p = _make(tmp_path, "a.ogg", "VORBIS", 44100, x)
    whole = read_all(p)[0]
    _stops_after(monkeypatch, "pyav", 50000, fail)
    with open_audio(p) as src:
        y = np.concatenate(list(src.blocks(4096)), axis=1)
        assert src.decoders == ["pyav", "soundfile"]
        assert len(src.warnings) == 1 and "soundfile decoded the rest" in src.warnings[0]
        assert ("failed" in src.warnings[0]) == fail and "at 1.13 s" in src.warnings[0]
        assert src.shortfall_seconds == 0
    assert y.shape == x.shape
    np.testing.assert_allclose(y, whole, atol=1e-5)  # the two Vorbis decoders agree; the splice is seamless


def test_short_decode_is_kept_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = signal(44100, seconds=3.0)
    p = _make(tmp_path, "a.ogg", "VORBIS", 44100, x)
    _stops_after(monkeypatch, "pyav", 100000, False)
    _stops_after(monkeypatch, "soundfile", 60000, False)
    with open_audio(p) as src:
        n = sum(b.shape[1] for b in src.blocks(4096))
        assert src.decoders == ["pyav", "soundfile"]  # not pedalboard: it would pad with silence
        assert n == 100000 and src.shortfall_seconds == pytest.approx((x.shape[1] - 100000) / 44100)
        assert src.warnings[-1].startswith("ends short: decoded 2.27 s of the 3.00 s the header declares")
        said = list(src.warnings)
        assert sum(b.shape[1] for b in src.blocks(4096)) == n and src.warnings == said  # a second pass, said once
    with pytest.raises(DecodeError, match="truncated or corrupt: decoded 2.27 s of the 3.00 s"):
        with open_audio(p, strict=True) as src:
            list(src.blocks(4096))


def test_first_decoder_refusing_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path):
        raise DecodeError(path, "Format not recognised")

    monkeypatch.setitem(decode.OPENERS, "pyav", refuse)
    x = signal(44100)
    p = _make(tmp_path, "a.ogg", "VORBIS", 44100, x)
    with open_audio(p) as src:
        assert src.info.backend == "soundfile" and src.info.frames == x.shape[1]


def expect_error(path: Path, reason: str, strict: bool = False) -> DecodeError:
    with pytest.raises(DecodeError) as err:
        with open_audio(path, strict=strict) as src:
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


def _kept_short(p: Path, seconds: float) -> AudioSource:
    """A truncated file: decoded with a warning (what is there kept), refused under strict."""
    with open_audio(p) as src:
        n = sum(b.shape[1] for b in src.blocks(4096))
    assert src.warnings and n > 0
    assert n <= src.info.frames and n / src.info.sr < 0.75 * seconds
    expect_error(p, "truncated", strict=True)
    return src


@pytest.mark.parametrize("name,subtype", [("cut.wav", "PCM_16"), ("cut.flac", "PCM_16"), ("cut.aiff", "PCM_16")])
def test_truncated_file(tmp_path: Path, name: str, subtype: str) -> None:
    p = write(tmp_path / name, noise(3.0, 44100, channels=2), 44100, subtype=subtype)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    src = _kept_short(p, 3.0)
    assert "truncated" in src.warnings[-1] or "ends short" in src.warnings[-1]


def test_truncated_mp3(tmp_path: Path) -> None:
    p = write(tmp_path / "cut.mp3", signal(44100, seconds=4.0), 44100, subtype="MPEG_LAYER_III")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    src = _kept_short(p, 4.0)
    # libsndfile ended short; PyAV was asked for the rest and had none either.
    assert src.decoders == ["soundfile", "pyav"] and src.warnings[-1].startswith("ends short: decoded 2.")


def test_truncated_m4a(tmp_path: Path) -> None:
    p = encode(tmp_path / "cut.m4a", signal(44100, seconds=6.0), 44100, movflags="+faststart")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # index intact (faststart), audio cut
    src = _kept_short(p, 6.0)
    assert src.decoders == ["pyav"] and src.shortfall_seconds > 2.0


def test_untagged_mp3_has_exact_length(tmp_path: Path) -> None:
    # Without a Xing/Info tag libsndfile only estimates the length from the size.
    p = encode(tmp_path / "plain.mp3", signal(44100, seconds=3.0), 44100, write_xing="0")
    with sf.SoundFile(str(p)) as f:
        decoded = f.read(dtype="float32").shape[0]  # what the decoder really gives
    for d in ("soundfile", "pyav"):
        with open_audio(p, decoders=(d,)) as s:
            assert s.info.frames == decoded  # no padding needed, nothing cut
            assert sum(b.shape[1] for b in s.blocks(10000)) == decoded and s.warnings == []
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


def test_m4a_streams_in_bounded_memory(tmp_path: Path) -> None:
    p = encode(tmp_path / "long.m4a", sine(30.0, 48000, channels=2), 48000)
    peak, n = peak_memory_while_streaming(p, 4096)
    assert n == 30 * 48000
    assert peak < 2_000_000  # the whole decode would be 11.5 MB


def test_garbage_m4a_is_refused_with_a_reason(tmp_path: Path) -> None:
    p = tmp_path / "garbage.m4a"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    e = expect_error(p, "")
    assert e.reason


@pytest.mark.parametrize("name", ["a.m4a", "a.ogg"])
def test_pyav_file_can_be_streamed_twice(tmp_path: Path, name: str) -> None:
    p = encode(tmp_path / name, signal(44100, seconds=2.0), 44100) if name.endswith("m4a") else \
        _make(tmp_path, name, "VORBIS", 44100, signal(44100, seconds=2.0))
    with open_audio(p) as s:
        assert s.info.backend == "pyav"
        first = np.concatenate(list(s.blocks(3000)), axis=1)
        second = np.concatenate(list(s.blocks(5000)), axis=1)
    np.testing.assert_array_equal(first, second)


def test_read_all_of_silence_and_mono(tmp_path: Path) -> None:
    p = write(tmp_path / "quiet.wav", silence(0.5, 22050), 22050)
    y, sr = read_all(p)
    assert (y.shape, sr) == ((1, 11025), 22050) and not y.any()
