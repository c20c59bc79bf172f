"""`ravedata prep` as users run it: real subprocesses, real files, kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from rave_data.prep.lock import FolderLock
from tests.audio import concat, noise, silence, sine, write
from tests.rave_data.media import encode
from tests.rave_data.lmdb_items import lmdb_items

SMALL = ["--sr", "16000", "--num-signal", "2048"]


def _run(bin_dir, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(bin_dir / "ravedata"), "prep", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def _one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for needle in needles:
        assert needle in r.stderr


def test_mixed_formats_json_and_strict(tmp_path, bin_dir):
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "talk.mp3", concat(sine(2.0, 44100), silence(2.0, 44100), sine(2.0, 44100, 660)), 44100)
    write(src / "album" / "track.flac", noise(3.0, 96000, channels=2), 96000, subtype="PCM_24")
    write(src / "album" / ".hidden.wav", sine(1.0, 16000), 16000)
    write(src / "FIELD.WAV", sine(2.0, 48000, 110), 48000)
    encode(src / "voice.m4a", sine(2.0, 44100, 330), 44100)  # PyAV in-process: no system ffmpeg
    (src / "broken.flac").write_text("just text")
    (src / "moved.wav").symlink_to(tmp_path / "elsewhere" / "moved.wav")  # a broken link

    r = _run(bin_dir, str(src), str(out), *SMALL, "--json", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report == json.loads((out / "report.json").read_text())
    expected = {"talk.mp3", "album/track.flac", "FIELD.WAV", "voice.m4a"}
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {x["source"] for x in lines} == expected
    skipped = {x["source"]: x["reason"] for x in report["run"]["skipped"]}
    assert set(skipped) == {"broken.flac", "moved.wav"}
    assert skipped["moved.wav"] == f"broken symbolic link (points to {tmp_path / 'elsewhere' / 'moved.wav'}, which does not exist)"
    assert report["run"]["files_found"] == len(expected) + 2  # the hidden file is not found
    for x in lines:
        assert (out / x["output"]).is_file()
    # mp3 lengths are exact (no encoder padding): 6 s in, trimmed pause -> 5 s out.
    talk = next(x for x in lines if x["source"] == "talk.mp3")
    assert talk["seconds_in"] == pytest.approx(6.0, abs=1e-3)
    assert talk["seconds_out"] == pytest.approx(5.0, abs=0.05)
    assert len(lmdb_items(out)) == report["dataset"]["examples"] > 0

    strict = _run(bin_dir, str(src), str(out), *SMALL, "--strict", "--quiet")
    assert strict.returncode == 1 and strict.stdout == ""


def test_summary_refusals_and_errors(tmp_path, bin_dir):
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "a.wav", concat(sine(1.0, 16000), silence(3.0, 16000), sine(1.0, 16000)), 16000)
    r = _run(bin_dir, str(src), str(out), *SMALL, check=True)
    assert "files found 1: processed 1" in r.stdout and "silence trimmed 2.0 s" in r.stdout

    _one_line_error(_run(bin_dir, str(src), str(out), "--sr", "22050", "--num-signal", "2048"),
                    "other settings", "sr: 16000 -> 22050", "--overwrite")
    _one_line_error(_run(bin_dir, str(tmp_path / "missing"), str(out)), "input folder not found")
    (tmp_path / "file").write_text("x")
    _one_line_error(_run(bin_dir, str(src), str(tmp_path / "file" / "out")), "cannot create output folder")
    _one_line_error(_run(bin_dir, str(src), str(out), "--normalize", "rms"), "--normalize rms")
    with FolderLock(out / ".ravedata" / "lock", str(out)):
        _one_line_error(_run(bin_dir, str(src), str(out), *SMALL), "another ravedata prep", str(os.getpid()))
    assert _run(bin_dir, str(src), str(out), "--sr", "22050", "--num-signal", "2048", "--overwrite", "-q").returncode == 0


def test_exit_status_follows_the_convention(tmp_path, bin_dir):
    """2: bad usage or input; 1: the run made no example at all; 0: some
    files skipped but examples written (the skipped ones reported)."""
    src = tmp_path / "in"
    write(src / "good.wav", sine(1.0, 16000), 16000)
    (src / "bad.wav").write_text("not audio")

    r = _run(bin_dir, str(src), str(tmp_path / "out"), "--no-such-option")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    _one_line_error(_run(bin_dir, str(tmp_path / "missing"), str(tmp_path / "out")), "input folder not found")

    r = _run(bin_dir, str(src), str(tmp_path / "out"), *SMALL)
    assert r.returncode == 0, r.stderr
    assert "files found 2: processed 1, unchanged 0, skipped 1" in r.stdout
    assert "skipped bad.wav: " in r.stdout

    only_bad = tmp_path / "only-bad"
    for name in ("a.wav", "b.flac"):
        (only_bad / name).parent.mkdir(exist_ok=True)
        (only_bad / name).write_text("not audio")
    r = _run(bin_dir, str(only_bad), str(tmp_path / "out-bad"), *SMALL, "--json")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "NO EXAMPLE in the dataset: none of the 2 files found could be used" in r.stderr
    assert {x["source"] for x in json.loads(r.stdout)["run"]["skipped"]} == {"a.wav", "b.flac"}


@pytest.mark.slow
def test_kill_9_at_any_point_then_rerun_completes(tmp_path, bin_dir):
    src = tmp_path / "in"
    for i in range(5):
        write(src / f"s{i}.wav", noise(6.0, 44100, seed=i, channels=2), 44100)
    args = [*SMALL, "--quiet", "--augment", "--variants", "1"]
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    _run(bin_dir, str(src), str(ref), *args, "--jobs", "1", check=True)
    full = time.monotonic() - t0
    expected = sorted(lmdb_items(ref).values())

    for k, frac in enumerate((0.4, 0.8)):
        out = tmp_path / f"out{k}"
        p = subprocess.Popen([str(bin_dir / "ravedata"), "prep", str(src), str(out), *args, "--jobs", "2"],
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(frac * full)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        _run(bin_dir, str(src), str(out), *args, check=True)
        got = lmdb_items(out)
        # Same examples (keys may be numbered differently after a crash), each once.
        assert sorted(got.values()) == expected
        lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        assert sorted(k.encode() for x in lines for k in x["keys"]) == sorted(got)
        assert len(lines) == 10 and all((out / x["output"]).is_file() for x in lines)
        assert not [p for p in (out / "audio").rglob(".*.tmp")]


def test_prep_never_imports_torch(tmp_path):
    """torch's CUDA build costs ~600 MB resident per process: prep must not load it
    (the 1-hour-file memory target depends on it)."""
    import sys

    write(tmp_path / "in" / "a.wav", sine(1.0, 44100), 44100)
    code = (
        "import sys; from rave_data.prep import prep; from rave_data.prep.settings import PrepSettings;"
        f"prep({str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r}, PrepSettings(sr=16000, num_signal=2048), jobs=1);"
        "bad = [m for m in ('torch', 'torchaudio') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
