"""`ravedata duration`: the real command on real files and real LMDB datasets."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import lmdb
import numpy as np
import pytest
import yaml

from rave_data.audit import HISTOGRAM_EDGES, audit, format_duration
from rave_data.dataset.codec import INT16, AudioBuffer, AudioExample, encode, encode_waveform
from tests.audio import clicks, noise, silence, sine, write
from tests.rave_data.media import encode as encode_audio


def run(bin_dir: Path, *args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / "ravedata"), "duration", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """772 s of readable audio in 4 files over 3 folders, 1 broken file, 1 non-audio file.

    Low sample rates keep the files small; durations are what matters here."""
    root = tmp_path / "tree"
    write(root / "a.wav", silence(600.0, 1000), 1000)
    write(root / "b.flac", noise(150.0, 1000, channels=2), 1000)
    write(root / "sub" / "c.wav", clicks(20.0, 1000), 1000)
    write(root / "sub" / "deep" / "d.mp3", sine(2.0, 8000), 8000, format="MP3")
    (root / "sub" / "bad.wav").write_bytes(b"RIFF but not really" * 10)
    (root / "notes.txt").write_text("not audio")
    return root


def test_familiar_first_lines_then_tables(bin_dir, tree):
    out = run(bin_dir, str(tree))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "Found 5 audio files"
    assert lines[1] == "total duration: 0h 12m 52s"
    assert "1 file could not be read" in out.stdout
    assert f"unreadable: {tree / 'sub' / 'bad.wav'}: not a recognised audio format" in out.stdout
    assert "notes.txt" not in out.stdout
    # The format table: one row per (format, rate, channels).
    assert any("flac" in ln and "1000 Hz" in ln and "0h 02m 30s" in ln for ln in lines)
    assert any("wav" in ln and "1000 Hz" in ln and "0h 10m 20s" in ln for ln in lines)
    assert any("mp3" in ln and "8000 Hz" in ln for ln in lines)
    assert "By folder" not in out.stdout
    assert out.stderr == ""


def test_json_has_everything_and_only_json(bin_dir, tree):
    out = run(bin_dir, str(tree), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)  # fails if anything but JSON is on stdout
    assert data["found"] == 5 and data["readable"] == 4
    assert data["total_seconds"] == pytest.approx(772.0, abs=0.01)
    assert data["total"] == "0h 12m 52s"
    groups = {(g["format"], g["sr"], g["channels"]): (g["files"], g["seconds"]) for g in data["groups"]}
    assert groups[("wav", 1000, 1)] == (2, pytest.approx(620.0))
    assert groups[("flac", 1000, 2)] == (1, pytest.approx(150.0))
    assert groups[("mp3", 8000, 1)] == (1, pytest.approx(2.0))
    assert Path(data["shortest"][0]["path"]).name == "d.mp3"
    assert Path(data["longest"][0]["path"]).name == "a.wav"
    hist = {h["label"]: h["files"] for h in data["histogram"]}
    assert sum(hist.values()) == 4
    assert hist["2s - 5s"] == 1 and hist["10s - 30s"] == 1 and hist["2m - 5m"] == 1 and hist["10m - 30m"] == 1
    assert hist["30s - 1m"] == 0  # empty bins inside the range are kept, so gaps show
    folders = {Path(f["path"]).relative_to(tree).as_posix(): f["files"] for f in data["folders"]}
    assert folders == {".": 2, "sub": 1, "sub/deep": 1}
    assert data["unreadable"] == [
        {"path": str(tree / "sub" / "bad.wav"), "reason": data["unreadable"][0]["reason"]}
    ]
    assert "not a recognised audio format" in data["unreadable"][0]["reason"]
    assert len(data["files"]) == 4 and data["datasets"] == []


def test_no_recursive_and_by_folder(bin_dir, tree):
    flat = json.loads(run(bin_dir, str(tree), "--no-recursive", "--json").stdout)
    assert sorted(Path(f["path"]).name for f in flat["files"]) == ["a.wav", "b.flac"]
    assert flat["unreadable"] == []

    out = run(bin_dir, str(tree / "sub"), str(tree / "b.flac"), "--by-folder")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[:2] == ["Found 4 audio files", "total duration: 0h 02m 52s"]
    by_folder = out.stdout.split("By folder", 1)[1]
    assert str(tree / "sub" / "deep") in by_folder and "0h 00m 20s" in by_folder


def test_current_folder_by_default(bin_dir, tree):
    out = run(bin_dir, cwd=tree / "sub")
    assert out.stdout.splitlines()[:2] == ["Found 3 audio files", "total duration: 0h 00m 22s"]


def test_missing_path_is_a_one_line_error(bin_dir, tree):
    out = run(bin_dir, str(tree), str(tree / "nope"))
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip().splitlines() == [f"ravedata duration: error: {tree / 'nope'}: no such file or folder"]


def test_m4a_wma_without_system_ffmpeg(bin_dir, tree):
    encode_audio(tree / "song.m4a", sine(2.5, 44100, channels=2), 44100)
    encode_audio(tree / "talk.wma", sine(1.5, 22050), 22050)
    (tree / "bad.m4a").write_bytes(b"\0\0\0\x20ftypM4A " + b"\0" * 64)
    env = {**os.environ, "PATH": str(tree)}  # neither ffmpeg nor ffprobe: PyAV reads the headers in-process
    (tree / "gone.flac").symlink_to(tree / "nowhere.flac")
    data = json.loads(run(bin_dir, str(tree), "--json", env=env).stdout)
    reasons = {Path(u["path"]).name: u["reason"] for u in data["unreadable"]}
    assert sorted(reasons) == ["bad.m4a", "bad.wav", "gone.flac"] and reasons["bad.m4a"]
    assert reasons["gone.flac"].startswith("broken symbolic link (points to ")  # counted, not silently left out
    assert data["readable"] == 6
    seconds = {Path(f["path"]).name: f["seconds"] for f in data["shortest"] + data["longest"]}
    assert seconds["song.m4a"] == 2.5  # the edit list's exact length
    assert seconds["talk.wma"] == pytest.approx(1.5, abs=0.2)


# --- prepared datasets -----------------------------------------------------------


def _lmdb(folder: Path, values: list[bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(folder), map_size=64 * 1024**2)
    with env.begin(write=True) as txn:
        for i, v in enumerate(values):
            txn.put(b"%08d" % i, v)
    env.close()


def _acids_example(wave: np.ndarray, sr: int) -> bytes:
    # acids-rave's preprocess wrote shape = (channels, len(bytes) / channels):
    # in bytes, not samples. Reproduce the quirk.
    data = wave.astype("<i2").tobytes()
    buf = AudioBuffer(data=data, sampling_rate=sr, shape=[wave.shape[0], len(data) // wave.shape[0]], precision=INT16)
    return encode(AudioExample(buffers={"waveform": buf}))


def test_acids_rave_dataset(bin_dir, tmp_path):
    db = tmp_path / "acids"
    rng = np.random.default_rng(1)
    n = 4096
    _lmdb(db, [_acids_example(rng.integers(-900, 900, (2, n)), 16000) for _ in range(9)])
    # acids-rave's metadata has no sr, and its n_seconds is approximate.
    (db / "metadata.yaml").write_text(yaml.safe_dump({"lazy": False, "channels": 2, "n_seconds": 2.0}))
    data = json.loads(run(bin_dir, str(db), "--json").stdout)
    assert data["found"] == 0
    [ds] = data["datasets"]
    assert ds["made_by"] == "acids-rave" and ds["error"] is None
    assert (ds["examples"], ds["samples_per_example"], ds["sr"], ds["channels"]) == (9, n, 16000, 2)
    assert ds["seconds"] == pytest.approx(9 * n / 16000)
    assert ds["metadata_seconds"] == 2.0 and ds["original_seconds"] is None

    text = run(bin_dir, str(tmp_path)).stdout
    assert text.splitlines()[0] == "Found 0 audio files"
    assert f"Dataset {db} (made by acids-rave)" in text
    assert f"examples: 9 of {n} samples" in text
    assert f"in the LMDB: {format_duration(9 * n / 16000)} at 16000 Hz, 2 channels" in text


def test_prepared_dataset_original_vs_augmentation(bin_dir, tmp_path):
    out = tmp_path / "out"
    frames = 8192
    _lmdb(out, [encode_waveform(np.zeros((1, frames), np.int16), 44100) for _ in range(5)])
    (out / "metadata.yaml").write_text(
        yaml.safe_dump({"lazy": False, "channels": 1, "sr": 44100, "n_seconds": 5 * frames / 44100,
                        "example_frames": frames, "tool": "ravedata"})
    )
    write(out / "audio" / "piece.wav", sine(3.0, 44100), 44100)
    write(out / "audio" / "piece.aug1.wav", sine(3.0, 44100), 44100)
    lines = [
        {"kind": "original", "output": "audio/piece.wav", "seconds_out": 700.0},
        {"kind": "original", "output": "audio/other.wav", "seconds_out": 72.0},
        {"kind": "augmented", "output": "audio/piece.aug1.wav", "seconds_out": 37100.0},
    ]
    (out / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    # prep's own state store is a hidden LMDB: not a dataset to report.
    _lmdb(out / ".ravedata" / "state", [b"{}"])

    text = run(bin_dir, str(out)).stdout
    # Files under out/audio are the files; the LMDB is the dataset: not counted twice.
    assert text.splitlines()[:2] == ["Found 2 audio files", "total duration: 0h 00m 06s"]
    assert text.count("Dataset ") == 1
    assert f"Dataset {out} (made by ravedata)" in text
    assert "original 0h 12m 52s, with augmentation 10h 31m 12s" in text
    [ds] = json.loads(run(bin_dir, str(out), "--json").stdout)["datasets"]
    assert (ds["examples"], ds["sr"], ds["channels"]) == (5, 44100, 1)
    assert ds["seconds"] == pytest.approx(5 * frames / 44100)
    assert (ds["original_seconds"], ds["augmented_seconds"]) == (772.0, 37100.0)


def test_on_real_prep_output_agrees_with_its_manifest(bin_dir, tmp_path):
    write(tmp_path / "in" / "a.wav", sine(7.0, 16000), 16000)
    out = tmp_path / "out"
    prep = subprocess.run(
        [str(bin_dir / "ravedata"), "prep", str(tmp_path / "in"), str(out), "--sr", "16000",
         "--num-signal", "8192", "--augment"],
        capture_output=True, text=True,
    )
    assert prep.returncode == 0, prep.stderr
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    meta = yaml.safe_load((out / "metadata.yaml").read_text())

    data = json.loads(run(bin_dir, str(out), "--json").stdout)
    # Every output file prep lists is found once, with the length prep recorded.
    assert data["found"] == data["readable"] == len(manifest)
    assert data["total_seconds"] == pytest.approx(sum(m["seconds_out"] for m in manifest), abs=1e-3)
    [ds] = data["datasets"]
    assert ds["made_by"] == "ravedata"
    assert (ds["examples"], ds["sr"], ds["channels"]) == (meta["n_examples"], 16000, 1)
    assert ds["seconds"] == pytest.approx(meta["n_seconds"], abs=1e-3)
    assert ds["original_seconds"] == pytest.approx(7.0, abs=1e-3)
    augmented = sum(m["seconds_out"] for m in manifest if m["kind"] == "augmented")
    assert augmented > 0 and ds["augmented_seconds"] == pytest.approx(augmented)


def test_lazy_and_broken_datasets_are_reported(bin_dir, tmp_path):
    lazy = tmp_path / "lazy"
    entries = [AudioExample(metadata={"path": f"/music/{i}.wav", "length": str(60.5 * (i + 1)), "channels": "1"})
               for i in range(3)]
    _lmdb(lazy, [encode(e) for e in entries])
    (lazy / "metadata.yaml").write_text(yaml.safe_dump({"lazy": True, "channels": 1, "n_seconds": 363.0}))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "data.mdb").write_bytes(b"garbage" * 100)

    out = run(bin_dir, str(tmp_path), "--json")
    assert out.returncode == 0
    ds = {Path(d["path"]).name: d for d in json.loads(out.stdout)["datasets"]}
    assert ds["lazy"]["lazy"] is True and ds["lazy"]["examples"] == 3
    assert ds["lazy"]["seconds"] == pytest.approx(60.5 + 121.0 + 181.5)
    assert ds["broken"]["error"]  # a reason, not a crash
    text = run(bin_dir, str(tmp_path)).stdout
    assert "lazy: 3 source files referenced" in text
    assert "cannot read it:" in text


# --- the library --------------------------------------------------------------------


def test_pyav_pool_keeps_order_and_matches_serial(tmp_path):
    # m4a files go to the thread pool, the rest are read in order; the merged
    # result must be in discovery order whatever finishes first.
    for i in range(8):
        wav = write(tmp_path / f"d{i % 2}" / f"f{i}.wav", silence(0.5 * (i + 1), 8000), 8000)
        if i % 3 == 0:
            encode_audio(wav.with_suffix(".m4a"), silence(0.5 * (i + 1), 8000), 8000)
            wav.unlink()
    serial, pooled = audit([tmp_path], workers=1), audit([tmp_path], workers=4)
    assert [f.path for f in pooled.files] == [f.path for f in serial.files]
    assert [f.path.suffix for f in pooled.files].count(".m4a") == 3
    assert [f.frames for f in pooled.files] == [f.frames for f in serial.files]
    assert [f.frames for f in pooled.files] == [4000 * (int(f.path.stem[1:]) + 1) for f in pooled.files]


def test_histogram_bins_and_duration_format(tmp_path):
    for name, seconds in [("a", 0.4), ("b", 0.9), ("c", 1.0), ("d", 7.0)]:
        write(tmp_path / f"{name}.wav", silence(seconds, 1000), 1000)
    bins = audit([tmp_path]).histogram()
    assert [(b.low, b.high, b.files) for b in bins] == [(0, 1, 2), (1, 2, 1), (2, 5, 0), (5, 10, 1)]
    assert [b.label for b in bins] == ["< 1s", "1s - 2s", "2s - 5s", "5s - 10s"]
    assert HISTOGRAM_EDGES[-1] == 3600
    assert format_duration(772) == "0h 12m 52s"
    assert format_duration(37872) == "10h 31m 12s"
    assert format_duration(59.6) == "0h 01m 00s"
    assert format_duration(360000) == "100h 00m 00s"
