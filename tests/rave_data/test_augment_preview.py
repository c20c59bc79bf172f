"""`ravedata preview`: variants + a real PNG, through the CLI; the PNG writer and STFT in process."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from rave_data.augment.spectrogram import BAND_HEIGHT, spectrogram_image, stft_db, write_png
from tests.audio import clicks, concat, noise, sine, write

BIN = Path(sys.executable).parent
SR = 22050


def read_png(path: Path) -> np.ndarray:
    """Decode our own PNGs (8-bit RGB, filter 0) back to [h, w, 3]: checks the file is well-formed."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
            size = (h, w)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert size is not None
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(size[0], 1 + size[1] * 3)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(size[0], size[1], 3)


def test_png_writer_round_trips(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", rgb)
    assert np.array_equal(read_png(tmp_path / "x.png"), rgb)


def test_stft_finds_a_sine():
    db = stft_db(sine(1.0, SR, 1000.0)[0].astype(np.float64), hop=512)
    assert abs(np.argmax(db.mean(axis=1)) * SR / 2048 - 1000.0) < SR / 2048


def test_image_has_one_band_per_signal_on_a_shared_time_axis():
    x = sine(1.0, SR, 440.0)
    img = spectrogram_image([x, x[:, : SR // 2]], SR, width=200)
    assert img.shape[0] == 2 * BAND_HEIGHT + 2 and img.shape[1] <= 200
    second = img[BAND_HEIGHT + 2 :]
    assert second[:, -20:].max() == 0  # the half-length signal ends halfway: black after
    assert second[:, :20].max() > 0


def ravedata(*args, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "ravedata"), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_preview_writes_variants_image_and_record(tmp_path):
    src = write(tmp_path / "voice.wav", concat(sine(1.0, SR, 220.0, channels=2), noise(0.5, SR, channels=2),
                                               clicks(1.0, SR, channels=2)), SR)
    plan = tmp_path / "plan.toml"
    plan.write_text('[[steps]]\nname = "time_stretch"\nparams = { rate = [0.8, 0.8] }\n\n'
                    '[[steps]]\nname = "gain"\nprobability = 0.5\n')
    r = ravedata("preview", src, "--augment-config", plan, "-n", "3", "--seed", "5", "-o", "pv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "pv"
    assert sorted(p.name for p in out.iterdir()) == [
        "voice.aug01.wav", "voice.aug02.wav", "voice.aug03.wav", "voice.preview.json", "voice.preview.png"]
    for i in (1, 2, 3):
        y, sr = sf.read(out / f"voice.aug0{i}.wav", always_2d=True)
        assert sr == SR and y.shape[1] == 2 and abs(y.shape[0] - 2.5 * SR / 0.8) < 0.02 * SR
        assert f"voice.aug0{i}.wav: time_stretch(rate=0.8" in r.stdout
    img = read_png(out / "voice.preview.png")
    assert img.shape[0] == 4 * BAND_HEIGHT + 3 * 2  # original + 3 variants
    # the original band is shorter (rate 0.8 makes variants longer): black on its right
    assert img[:BAND_HEIGHT, -5:].max() == 0 and img[BAND_HEIGHT + 2 : 2 * BAND_HEIGHT + 2, -5:].max() > 0
    record = json.loads((out / "voice.preview.json").read_text())
    assert record["seed"] == 5 and len(record["variants"]) == 3
    assert record["variants"][0]["augment"][0]["name"] == "time_stretch"

    again = ravedata("preview", src, "--augment-config", plan, "-n", "3", "--seed", "5", "-o", "pv2", cwd=tmp_path)
    assert again.returncode == 0
    assert all((out / f).read_bytes() == (tmp_path / "pv2" / f).read_bytes()
               for f in ("voice.aug01.wav", "voice.aug02.wav", "voice.aug03.wav", "voice.preview.png"))


def test_preview_excerpt_and_default_folder(tmp_path):
    write(tmp_path / "long.flac", sine(6.0, SR, 330.0), SR)
    r = ravedata("preview", "long.flac", "-n", "1", "--start", "1", "--seconds", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "preview-long" / "long.preview.json").read_text())
    assert record["seconds"] == 2.0 and record["start"] == 1.0


def test_preview_errors_are_one_line(tmp_path):
    (tmp_path / "text.wav").write_text("not audio")
    bad_plan = tmp_path / "plan.toml"
    bad_plan.write_text('[[steps]]\nname = "wobble"\n')
    write(tmp_path / "ok.wav", sine(0.5, SR), SR)
    for args, needle in (
        (["text.wav"], "text.wav"),
        (["missing.wav"], "missing.wav"),
        (["ok.wav", "--augment-config", "plan.toml"], "unknown augmenter 'wobble'"),
        (["ok.wav", "--start", "10"], "no audio at 10 s"),
    ):
        r = ravedata("preview", *args, cwd=tmp_path)
        assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
