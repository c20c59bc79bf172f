"""probe(): header facts for every format prep reads, exact where it matters."""
from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from rave_data.io.audioinfo import DecodeError
from rave_data.io.mp3_frames import mp3_exact_frames
from rave_data.io.probe import probe
from rave_data.io.wav_header import read_wav_header
from tests.audio import noise, sine, write
from tests.rave_data.media import encode


def _decoded_frames_pyav(path: Path) -> int:
    """Frames FFmpeg's decoder gives (PyAV, no cutting to any header)."""
    import av

    with av.open(str(path)) as c:
        return sum(f.samples for f in c.decode(c.streams.audio[0]))


@pytest.mark.parametrize(
    "name, sr, channels, subtype, fmt",
    [
        ("a.wav", 44100, 1, "PCM_16", "wav"),
        ("b.wave", 48000, 2, "FLOAT", "wav"),
        ("c.flac", 22050, 2, "PCM_24", "flac"),
        ("d.aiff", 16000, 1, "PCM_16", "aiff"),
        ("e.ogg", 44100, 2, "VORBIS", "ogg"),
        ("f.opus", 48000, 1, "OPUS", "opus"),
        ("g.caf", 32000, 1, "PCM_16", "caf"),
        ("h.w64", 8000, 3, "PCM_16", "w64"),
    ],
)
def test_libsndfile_formats(tmp_path, name, sr, channels, subtype, fmt):
    seconds = 1.37
    container = {"wave": "WAV", "opus": "OGG"}.get(name.rsplit(".", 1)[1])
    path = write(tmp_path / name, noise(seconds, sr, channels=channels), sr, subtype=subtype, format=container)
    info = probe(path)
    assert (info.sr, info.channels, info.format, info.subtype) == (sr, channels, fmt, subtype)
    # The header's frame count is what decoding yields.
    assert info.frames == sf.read(str(path))[0].shape[0]
    assert info.seconds == pytest.approx(seconds, abs=2 / sr)
    assert info.backend == "soundfile"


def test_mp3_with_lame_tag_is_exact(tmp_path):
    path = write(tmp_path / "tagged.mp3", sine(2.0, 44100), 44100, format="MP3")
    assert mp3_exact_frames(path) is None  # the tag is there: libsndfile is exact
    assert probe(path).frames == sf.read(str(path))[0].shape[0] == 88200


@pytest.mark.parametrize("sr, channels", [(44100, 1), (48000, 2), (22050, 2), (16000, 1), (8000, 2)])
def test_mp3_without_xing_header_counts_frames(tmp_path, sr, channels):
    # MPEG-1, MPEG-2 and MPEG-2.5 (8 kHz) layer III, with an ID3v2 tag up front.
    mp3 = encode(tmp_path / "untagged.mp3", sine(2.3, sr, channels=channels), sr, bit_rate=64_000, write_xing="0",
                 id3v2_version="4")
    decoded = sf.read(str(mp3))[0].shape[0]
    assert decoded == _decoded_frames_pyav(mp3)
    # libsndfile alone guesses from the file size here; probe must not.
    assert sf.info(str(mp3)).frames != decoded
    info = probe(mp3)
    assert info.frames == decoded
    assert (info.sr, info.channels, info.format) == (sr, channels, "mp3")


@pytest.mark.parametrize("sr, channels", [(22050, 2), (44100, 1), (48000, 6)])
def test_m4a_through_pyav(tmp_path, sr, channels):
    m4a = encode(tmp_path / "a.m4a", sine(2.5, sr, channels=channels), sr)
    info = probe(m4a)
    assert (info.sr, info.channels, info.format, info.backend) == (sr, channels, "m4a", "pyav")
    # The container's edit list gives the exact length of the source (the
    # decoder itself gives the AAC end padding on top).
    assert info.frames == int(2.5 * sr)
    assert _decoded_frames_pyav(m4a) > info.frames


def test_raw_aac_counts_packets(tmp_path):
    aac = encode(tmp_path / "a.aac", sine(1.7, 44100), 44100)
    info = probe(aac)
    assert info.frames == _decoded_frames_pyav(aac)
    assert info.sr == 44100


def test_wma_and_opus_headers(tmp_path):
    wma = encode(tmp_path / "a.wma", sine(3.0, 44100, channels=2), 44100)
    info = probe(wma)
    assert (info.sr, info.channels, info.backend) == (44100, 2, "pyav")
    # The header's milliseconds round up a little; the decode is made good with silence (decode.py).
    assert 0 <= info.frames - _decoded_frames_pyav(wma) <= 8192
    opus = encode(tmp_path / "b.opus", sine(2.0, 48000), 48000)
    assert probe(opus).frames == sf.info(str(opus)).frames == _decoded_frames_pyav(opus) == 96000


def test_bad_m4a_names_the_reason(tmp_path):
    m4a = tmp_path / "song.m4a"
    m4a.write_bytes(b"\0\0\0\x20ftypM4A " + b"\0" * 64)
    with pytest.raises(DecodeError) as err:
        probe(m4a)
    assert "song.m4a" in str(err.value) and err.value.reason and "\n" not in str(err.value)


def test_unreadable_files_name_the_reason(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.touch()
    junk = tmp_path / "junk.flac"
    junk.write_bytes(b"this is not audio\n" * 50)
    with pytest.raises(DecodeError, match=r"empty\.wav: empty file"):
        probe(empty)
    with pytest.raises(DecodeError) as err:
        probe(junk)
    assert err.value.path == junk and "not a recognised audio format" in err.value.reason
    with pytest.raises(DecodeError, match="missing.wav"):
        probe(tmp_path / "missing.wav")


def test_truncated_wav_reports_what_is_there(tmp_path):
    path = write(tmp_path / "full.wav", sine(2.0, 16000), 16000)
    data = path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: 44 + 2 * 5000])  # header + 5000 samples, header still says 32000
    info = probe(cut)
    assert info.frames == sf.read(str(cut))[0].shape[0] == 5000



def test_public_soundfile_wrapper_gives_the_same_answers(tmp_path, monkeypatch):
    # probe reads SF_INFO through soundfile's cffi handles for speed; if a
    # soundfile release moves them, the public SoundFile path must agree.
    import rave_data.io.probe as probe_mod

    files = [
        write(tmp_path / "a.wav", noise(0.3, 16000, channels=2), 16000),
        write(tmp_path / "b.flac", sine(0.7, 22050), 22050, subtype="PCM_24"),
        write(tmp_path / "c.opus", sine(0.5, 48000), 48000, format="OGG", subtype="OPUS"),
    ]
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 8)
    fast = [probe(f) for f in files]
    with pytest.raises(DecodeError) as fast_err:
        probe(junk)
    monkeypatch.setattr(probe_mod, "_libsndfile", lambda: None)
    assert [probe(f) for f in files] == fast
    with pytest.raises(DecodeError) as slow_err:
        probe(junk)
    assert slow_err.value.reason == fast_err.value.reason
    assert [f.format for f in fast] == ["wav", "flac", "opus"]


def _libsndfile_facts(path: Path) -> tuple[int, int, int, str]:
    with sf.SoundFile(str(path)) as f:
        return f.samplerate, f.channels, f.frames, f.subtype


@pytest.mark.parametrize("container", ["WAV", "WAVEX"])
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW"])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_python_wav_header_agrees_with_libsndfile(tmp_path, container, subtype, channels):
    path = write(tmp_path / "x.wav", noise(0.05, 11025, channels=channels), 11025, subtype=subtype, format=container)
    header = read_wav_header(path)
    if subtype == "ULAW":
        assert header is None  # not ours to read: libsndfile answers
    else:
        assert header is not None
        assert (header.sr, header.channels, header.frames, header.subtype) == _libsndfile_facts(path)
    info = probe(path)
    assert (info.sr, info.channels, info.frames, info.subtype) == _libsndfile_facts(path)
    assert info.format == "wav"


def test_python_wav_header_odd_layouts(tmp_path):
    src = write(tmp_path / "src.wav", noise(0.1, 8000, channels=2), 8000)
    data = src.read_bytes()
    fmt_and_riff, body = data[:36], data[36:]  # 'data' chunk starts at 36 in soundfile's output
    assert body[:4] == b"data"
    # An odd-sized LIST chunk (padded) before data, and a chunk after data.
    odd = b"LIST" + (5).to_bytes(4, "little") + b"abcde" + b"\0"
    after = b"junk" + (4).to_bytes(4, "little") + b"1234"
    big = b"bext" + (10_001).to_bytes(4, "little") + b"x" * 10_001 + b"\0"  # past the first read
    cases = {
        "list_before.wav": fmt_and_riff + odd + body,
        "big_chunk_before.wav": fmt_and_riff + big + body,
        "chunk_after.wav": fmt_and_riff + body + after,
        "cut_mid_frame.wav": data[: 44 + 4 * 100 + 3],  # 100 frames and 3 stray bytes
    }
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        header = read_wav_header(path)
        assert header is not None, name
        assert (header.sr, header.channels, header.frames, header.subtype) == _libsndfile_facts(path), name
    assert read_wav_header(tmp_path / "cut_mid_frame.wav").frames == 100
    # Not RIFF/WAVE at all: the caller falls back to libsndfile.
    (tmp_path / "flac_named.wav").write_bytes(write(tmp_path / "y.flac", sine(0.1, 8000), 8000).read_bytes())
    assert read_wav_header(tmp_path / "flac_named.wav") is None
    assert probe(tmp_path / "flac_named.wav").format == "flac"
