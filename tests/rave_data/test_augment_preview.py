"""`ravedata preview`: variants + a real PNG, through the CLI; the figure's
axes, labels and colour scale, and the STFT, in process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from rave_data.augment.spectrogram import Panel, spectrogram_figure, stft_db
from tests.audio import clicks, concat, noise, sine, write
from tests.rave_data.plugin_dists import pip_install, write_project

BIN = Path(sys.executable).parent
SR = 22050


def read_png(path: Path) -> np.ndarray:
    """[h, w, 3] uint8 of a PNG (checks it decodes)."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_stft_finds_a_sine_at_its_level_in_dbfs():
    db = stft_db(sine(1.0, SR, 1000.0, amp=0.5)[0].astype(np.float64), hop=512)
    spectrum = db.mean(axis=1)
    assert abs(np.argmax(spectrum) * SR / 2048 - 1000.0) < SR / 2048
    assert abs(spectrum.max() - 20 * np.log10(0.5)) < 1.5  # a -6 dBFS sine reads about -6 dB


def test_figure_has_time_and_frequency_axes_a_db_colour_bar_and_a_label_per_panel():
    x = sine(1.0, SR, 440.0)
    fig = spectrogram_figure([Panel("original: x.wav", x), Panel("aug01: gain(db=-6)", x[:, : SR // 2] * 0.5),
                              Panel("aug02 FAILED: boom(level=0.9)", None, "augmenter 'boom' (plugin 'b'): raised")], SR)
    axes = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    bar = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(axes) == 3 and len(bar) == 1 and bar[0].get_ylabel() == "level (dBFS)"
    assert [a.get_title(loc="left") for a in axes] == ["original: x.wav", "aug01: gain(db=-6)", "aug02 FAILED: boom(level=0.9)"]
    assert axes[-1].get_xlabel() == "time (s)" and all(a.get_ylabel() == "Hz" for a in axes)
    assert all(a.get_xlim() == (0.0, 1.0) for a in axes)  # one time axis: the longest signal
    ticks = [t.get_text() for t in axes[0].get_yticklabels()]
    assert {"100", "1k", "10k"} <= set(ticks)
    # the half-length variant's image ends at 0.5 s; the failed one has no image, only its error
    assert axes[1].images[0].get_extent()[1] == 0.5 and not axes[2].images
    assert "raised" in " ".join(t.get_text() for t in axes[2].texts)
    # the colour scale: 80 dB down from the loudest level (rounded up to 10 dB), shared by all panels
    lo, hi = axes[0].images[0].get_clim()
    assert hi - lo == 80.0 and axes[1].images[0].get_clim() == (lo, hi) and hi == 0.0


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
    assert img.shape[1] == 1000 and img.shape[0] >= 4 * 150  # original + 3 variants, a panel each
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 100  # spectrogram colours, not a blank image
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
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


FLAKY = """
from rave_data import hookimpl
from rave_data.augment import Augmenter, Param
class Boom(Augmenter):
    name = "boom"
    params = (Param("level", (0.0, 1.0), lo=0.0, hi=1.0),)
    def apply(self, audio, sr, level=0.5):
        if level > 0.5:
            raise RuntimeError(f"level too high: {level}")
        return audio * level
@hookimpl
def register_augmenters(register):
    register(Boom)
"""


def test_a_failing_variant_is_an_empty_labelled_panel_and_the_others_are_drawn(tmp_path):
    pip_install(tmp_path / "site", write_project(tmp_path / "boom", "ravedata-boom", "boom", "rd_boom", FLAKY))
    write(tmp_path / "voice.wav", concat(sine(1.0, SR, 220.0), noise(0.5, SR)), SR)
    (tmp_path / "plan.toml").write_text('[[steps]]\nname = "boom"\n')
    env_path = str(tmp_path / "site")

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "ravedata"), "preview", "voice.wav", "--augment-config", "plan.toml",
                               "-n", "4", "--seed", "3", *extra], capture_output=True, text=True, cwd=tmp_path,
                              timeout=120, env={**os.environ, "PYTHONPATH": env_path})

    r = run()
    assert r.returncode == 1 and "Traceback" not in r.stderr
    record = json.loads((tmp_path / "preview-voice" / "voice.preview.json").read_text())
    levels = [v["augment"][0]["params"]["level"] for v in record["variants"]]
    failed = [i for i, lv in enumerate(levels, 1) if lv > 0.5]
    assert failed and len(failed) < 4, levels  # seed 3 draws both kinds
    for i, v in enumerate(record["variants"], 1):
        if i in failed:
            assert v["output"] is None and "level too high" in v["error"] and "RuntimeError" in v["traceback"]
            assert not (tmp_path / "preview-voice" / f"voice.aug{i:02d}.wav").exists()
            assert f"ravedata preview: error: variant {i}: augmenter 'boom' (plugin 'boom'): raised RuntimeError" in r.stderr
        else:
            assert (tmp_path / "preview-voice" / v["output"]).is_file()
    assert f"voice.aug{failed[0]:02d} (failed)" in r.stdout
    img = read_png(tmp_path / "preview-voice" / "voice.preview.png")
    # A failed panel is flat light grey (plus its label text); a drawn one is not.
    h = img.shape[0]
    assert (img == 0xE8).all(axis=2).sum() > 0.02 * img.shape[0] * img.shape[1] * len(failed) / 5, h

    v = run("--traceback")
    assert v.returncode == 1
    assert "sampled chain:" in v.stderr and "> 1. boom:boom(level=" in v.stderr and "<- failed here" in v.stderr
    assert "Traceback (most recent call last):" in v.stderr and 'raise RuntimeError(f"level too high' in v.stderr


def test_preview_help_names_the_default_folder_and_the_docs_show_it(tmp_path):
    r = subprocess.run([str(BIN / "ravedata"), "preview", "--help"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": "200"})
    assert "./preview-STEM" in r.stdout and "voice.wav -> ./preview-voice" in r.stdout and "--traceback" in r.stdout
    docs = (Path(__file__).resolve().parents[2] / "docs" / "augmentation.md").read_text()
    assert "./preview-STEM" in docs and "--traceback" in docs
