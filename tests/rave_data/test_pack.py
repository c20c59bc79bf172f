"""``prep --pack``: short files and tails packed into whole examples, with provenance."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from rave_data.dataset.codec import decode_waveform
from rave_data.dataset.manifest import read_manifest
from rave_data.prep import prep
from rave_data.prep.pack import CROSSFADE_SECONDS
from rave_data.prep.settings import PrepSettings, SettingsError
from tests.audio import concat, noise, sine, write
from tests.rave_data.lmdb_items import lmdb_items

SR = 16000
NUM_SIGNAL = 4096  # one example: 8192 frames, 0.512 s
PACK = dict(sr=SR, num_signal=NUM_SIGNAL, pack=True, trim=False)


def _shots(root, n: int = 9) -> None:
    """One-shots of 0.13 to 0.45 s (all shorter than one example) and one
    1.3 s file (two examples and a tail)."""
    for i in range(n):
        write(root / f"shot{i:02d}.wav", sine(0.13 + 0.04 * i, SR, 200 + 90 * i, amp=0.6), SR)
    write(root / "long" / "take.wav", concat(sine(0.65, SR, 330), noise(0.65, SR, 0.3)), SR)


def _audio(out, output: str) -> np.ndarray:
    data, sr = sf.read(str(out / output), dtype="int16", always_2d=True)
    assert sr == SR
    return data.T


def test_pieces_are_the_outputs_laid_end_to_end(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _shots(src)
    r = prep(src, out, PrepSettings(**PACK), jobs=2)
    lines = read_manifest(out / "manifest.jsonl")
    packed = [x for x in lines if x["kind"] == "packed"]
    own = [x for x in lines if x["kind"] == "original"]
    assert r["dataset"]["examples_packed"] == len(packed) > 0
    assert r["dataset"]["examples"] == len(packed) + sum(len(x["keys"]) for x in own) == len(lmdb_items(out))
    assert r["dataset"]["short_files"] == []  # packed, not lost
    items = lmdb_items(out)
    fade = int(CROSSFADE_SECONDS * SR)
    order = []
    for line in packed:
        (key,) = line["keys"]
        example, _ = decode_waveform(items[key.encode()])
        assert example.shape == (1, 2 * NUM_SIGNAL)
        pieces = line["pieces"]
        # The pieces cover the example end to end, overlapping by the crossfade only.
        assert pieces[0]["at"] == 0 and pieces[-1]["at"] + pieces[-1]["frames"] == 2 * NUM_SIGNAL
        for a, b in zip(pieces, pieces[1:]):
            assert 0 <= a["at"] + a["frames"] - b["at"] <= fade
        for i, p in enumerate(pieces):
            # Outside the crossfades, the example holds exactly the output's samples.
            audio = _audio(out, p["output"])[:, p["offset"] : p["offset"] + p["frames"]]
            assert audio.shape[1] == p["frames"]
            lo = fade if i else 0
            hi = p["frames"] - (fade if i < len(pieces) - 1 else 0)
            np.testing.assert_array_equal(example[:, p["at"] + lo : p["at"] + hi], audio[:, lo:hi])
            order.append((p["source"], p["offset"]))
    # Sources in path order; each piece starts where the last one of its output stopped.
    assert [s for s, _ in order] == sorted(s for s, _ in order)
    tails = {x["output"]: x["tail_frames"] for x in own}
    assert tails["audio/long/take.wav"] == int(1.3 * SR) - 2 * 2 * NUM_SIGNAL
    assert {s for s, _ in order} <= {x["source"] for x in own}


def test_same_dataset_whatever_jobs_and_incremental(tmp_path):
    src = tmp_path / "in"
    _shots(src)
    prep(src, tmp_path / "a", PrepSettings(**PACK), jobs=1)
    prep(src, tmp_path / "b", PrepSettings(**PACK), jobs=3)
    assert lmdb_items(tmp_path / "a") == lmdb_items(tmp_path / "b")
    assert (tmp_path / "a" / "manifest.jsonl").read_text() == (tmp_path / "b" / "manifest.jsonl").read_text()

    out = tmp_path / "a"
    before = lmdb_items(out)
    again = prep(src, out, PrepSettings(**PACK), jobs=2)
    assert again["run"]["processed"] == 0 and lmdb_items(out) == before  # nothing changed, nothing rewritten

    write(src / "shot005.wav", sine(0.3, SR, 990), SR)  # a new one-shot, second in path order
    (src / "shot00.wav").unlink()
    r = prep(src, out, PrepSettings(**PACK), jobs=2)
    lines = read_manifest(out / "manifest.jsonl")
    sources = {p["source"] for x in lines if x["kind"] == "packed" for p in x["pieces"]}
    assert "shot005.wav" in sources and "shot00.wav" not in sources
    referenced = {k.encode() for x in lines for k in x["keys"]}
    assert set(lmdb_items(out)) == referenced and r["dataset"]["examples"] == len(referenced)
    assert not any((out / ".ravedata" / "tails").glob("*.tmp"))
    # The same as a fresh run on the new folder.
    fresh = prep(src, tmp_path / "c", PrepSettings(**PACK), jobs=1)
    assert fresh["dataset"]["examples_packed"] == r["dataset"]["examples_packed"]


def test_pack_and_pad_short_exclude_each_other():
    with pytest.raises(SettingsError, match="--pack and --pad-short"):
        PrepSettings(pack=True, pad_short=True)
    assert "pack" not in PrepSettings().to_record()  # datasets made before the option still match


def test_no_example_is_said_loudly(tmp_path, bin_dir):
    src = tmp_path / "in"
    _shots(src, n=4)
    (src / "long" / "take.wav").unlink()
    cmd = [str(bin_dir / "ravedata"), "prep", str(src), str(tmp_path / "out"), "--sr", str(SR),
           "--num-signal", str(NUM_SIGNAL), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stdout == ""
    assert "NO EXAMPLE in the dataset: 4 of 4 prepared files are shorter than one example (0.51 s" in r.stderr
    assert "--pack" in r.stderr and "--pad-short" in r.stderr and "--num-signal" in r.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dataset"]["examples"] == 0 and "NO EXAMPLE" in report["run"]["warnings"][-1]

    r = subprocess.run([*cmd[:3], str(tmp_path / "packed"), *cmd[4:], "--pack", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["dataset"]["examples"] == report["dataset"]["examples_packed"] == 1  # 0.76 s of one-shots
