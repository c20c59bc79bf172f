"""prep through the Python API: dataset contents, incremental runs, --jobs
determinism, augmentation, and the small pieces (spool, names, quantisation)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from rave_data.dataset.codec import decode_waveform
from rave_data.dataset.manifest import read_manifest
from rave_data.dataset.reader import open_dataset
from rave_data.prep import PrepError, prep
from rave_data.prep.blocks import Scratch, quantize_into, scaled, segments, to_int16
from rave_data.prep.job import output_name
from rave_data.prep.settings import DEFAULT_VARIANTS, PrepSettings, SettingsError
from rave_data.prep.spool import Spool
from tests.audio import clicks, concat, noise, silence, sine, write
from tests.rave_data.lmdb_items import lmdb_items

SR = 16000
#: Small examples keep the tests fast: 2 x 2048 frames = 0.256 s at 16 kHz.
SMALL = dict(sr=SR, num_signal=2048)


def _corpus(root, seconds: float = 2.0) -> None:
    write(root / "a.wav", concat(sine(seconds, 48000), silence(2.5, 48000), noise(seconds, 48000)), 48000)
    write(root / "sub" / "b.flac", sine(seconds, 44100, freq=220, channels=2), 44100)
    write(root / "sub" / "deeper" / "c.ogg", clicks(seconds, 22050), 22050)
    write(root / "d.wav", noise(seconds, 96000, channels=2, seed=3), 96000, subtype="PCM_24")


def test_dataset_matches_processed_audio_and_manifest(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _corpus(src)
    report = prep(src, out, PrepSettings(**SMALL), jobs=1)
    assert report["run"]["processed"] == 4 and not report["run"]["skipped"]

    lines = read_manifest(out / "manifest.jsonl")
    assert [x["source"] for x in lines] == ["a.wav", "d.wav", "sub/b.flac", "sub/deeper/c.ogg"]
    ds = open_dataset(out)
    assert (ds.sr, ds.channels, ds.n_signal) == (SR, 1, 4096)
    assert len(ds) == sum(len(x["keys"]) for x in lines) == report["dataset"]["examples"]
    for line in lines:
        assert {"source_fingerprint", "seconds_in", "seconds_out", "steps", "dropped_seconds", "tool_version"} <= set(line)
        assert [s["name"] for s in line["steps"]] == ["decode", "channels", "resample", "trim", "normalize", "quantize"]
        audio, sr = sf.read(str(out / line["output"]), dtype="int16", always_2d=True)
        assert sr == SR and audio.shape[0] == round(line["seconds_out"] * SR)
        # The examples are the processed audio cut in order; the tail is dropped and counted.
        n = len(line["keys"])
        assert n == audio.shape[0] // 4096
        assert line["dropped_seconds"] == pytest.approx((audio.shape[0] - n * 4096) / SR, abs=1e-6)
        for i, key in enumerate(line["keys"]):
            np.testing.assert_array_equal(ds.read(key)[0], audio[i * 4096 : (i + 1) * 4096, 0])
    # The 2.5 s internal silence of a.wav was shortened to --max-silence (1 s).
    a = lines[0]
    trim = next(s for s in a["steps"] if s["name"] == "trim")
    assert trim["params"]["removed_seconds"] == pytest.approx(1.5, abs=0.05)
    # Peak normalisation to -1 dBFS.
    audio, _ = sf.read(str(out / "audio" / "a.wav"))
    assert 20 * np.log10(np.abs(audio).max()) == pytest.approx(-1.0, abs=0.01)
    # The mp3/flac naming rule keeps the source extension when it differs.
    assert (out / "audio" / "sub" / "b.flac.wav").is_file()


def test_multichannel_layout_is_planar_like_acids_rave(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "st.wav", sine(1.0, SR, freq=300, channels=2), SR, subtype="FLOAT")
    prep(src, out, PrepSettings(channels=2, trim=False, normalize="none", **SMALL), jobs=1)
    items = lmdb_items(out)
    first = items[b"00000000"]
    # acids-rave's loader: frombuffer(int16).reshape(channels, -1)
    wave, sr = decode_waveform(first, channels=2)
    expected = to_int16(sine(1.0, SR, freq=300, channels=2)[:, :4096])
    np.testing.assert_array_equal(wave, expected)
    assert sr == SR


def test_same_dataset_whatever_jobs_with_augmentation(tmp_path):
    src = tmp_path / "in"
    _corpus(src, seconds=1.5)
    settings = PrepSettings(augment=True, variants=2, seed=7, **SMALL)
    r1 = prep(src, tmp_path / "o1", settings, jobs=1)
    r2 = prep(src, tmp_path / "o2", settings, jobs=2)
    assert lmdb_items(tmp_path / "o1") == lmdb_items(tmp_path / "o2")
    m1 = read_manifest(tmp_path / "o1" / "manifest.jsonl")
    assert m1 == read_manifest(tmp_path / "o2" / "manifest.jsonl")
    aug = [x for x in m1 if x["kind"] == "augmented"]
    assert len(aug) == 2 * 4 and {x["variant"] for x in aug} == {1, 2}
    assert all(x["augment"] and x["augment"][0]["name"] for x in aug)
    assert (tmp_path / "o1" / "audio" / "a.aug02.wav").is_file()
    assert r1["dataset"]["examples_augmented"] == r2["dataset"]["examples_augmented"] > 0


def test_incremental_rerun_does_only_new_changed_and_gone(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _corpus(src)
    prep(src, out, PrepSettings(**SMALL), jobs=1)
    before = {x["source"]: x for x in read_manifest(out / "manifest.jsonl")}

    again = prep(src, out, PrepSettings(**SMALL), jobs=1)
    assert again["run"]["processed"] == 0 and again["run"]["unchanged"] == 4

    write(src / "a.wav", noise(3.0, 48000, seed=9), 48000)  # changed
    write(src / "e.flac", sine(1.0, 32000), 32000)  # new
    (src / "d.wav").unlink()  # gone
    r = prep(src, out, PrepSettings(**SMALL), jobs=1)
    assert r["run"]["processed"] == 2 and r["run"]["unchanged"] == 2 and r["run"]["removed"] == ["d.wav"]
    after = {x["source"]: x for x in read_manifest(out / "manifest.jsonl")}
    assert after["sub/b.flac"]["keys"] == before["sub/b.flac"]["keys"]
    assert not (out / "audio" / "d.wav").exists()
    keys = set(lmdb_items(out))
    referenced = {k.encode() for x in after.values() for k in x["keys"]}
    assert keys == referenced  # nothing stale, nothing missing
    assert not set(before["d.wav"]["keys"]) & {k.decode() for k in keys}


def test_bad_files_are_skipped_with_reasons(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "good.wav", sine(1.0, SR), SR)
    (src / "empty.wav").write_bytes(b"")
    (src / "text.flac").write_text("not audio at all\n" * 50)
    nan = sine(1.0, SR)
    nan[0, 100] = np.nan
    write(src / "nan.wav", nan, SR, subtype="FLOAT")
    write(src / "silent.wav", silence(1.0, SR), SR)
    full = write(tmp_path / "full.wav", noise(2.0, SR), SR)
    (src / "trunc.wav").write_bytes(full.read_bytes()[:30000])
    r = prep(src, out, PrepSettings(**SMALL), jobs=1, strict=True)
    reasons = {s["source"]: s["reason"] for s in r["run"]["skipped"]}
    assert set(reasons) == {"empty.wav", "text.flac", "nan.wav", "silent.wav", "trunc.wav"}
    assert "NaN" in reasons["nan.wav"] and "silent" in reasons["silent.wav"]
    assert "truncated" in reasons["trunc.wav"]
    assert [x["source"] for x in read_manifest(out / "manifest.jsonl")] == ["good.wav"]
    leftovers = [p.name for p in (out / "audio").rglob("*") if p.is_file()]
    assert leftovers == ["good.wav"]  # nothing partial for the bad ones
    assert json.loads((out / "report.json").read_text())["run"]["skipped"] == r["run"]["skipped"]

    # Without --strict a truncated file is kept: what it holds, with a warning.
    r = prep(src, out, PrepSettings(**SMALL), jobs=1, overwrite=True)
    assert "trunc.wav" not in {s["source"] for s in r["run"]["skipped"]}
    (warning,) = [w for w in r["run"]["warnings"] if w.startswith("trunc.wav: ")]
    assert "truncated file: header declares" in warning and "kept the 0.94 s present" in warning
    kept = {x["source"]: x for x in read_manifest(out / "manifest.jsonl")}["trunc.wav"]
    assert kept["seconds_in"] == pytest.approx((30000 - 44) / 2 / SR, abs=1e-6)


def test_short_files_reported_or_padded(tmp_path):
    src = tmp_path / "in"
    write(src / "tiny.wav", sine(0.1, SR), SR)  # 1600 frames < 4096
    r = prep(src, tmp_path / "o1", PrepSettings(**SMALL), jobs=1)
    assert r["dataset"]["short_files"] == [{"source": "tiny.wav", "seconds": pytest.approx(0.1, abs=1e-3)}]
    assert r["dataset"]["examples"] == 0 and r["dataset"]["seconds_dropped"] == pytest.approx(0.1, abs=1e-3)
    r = prep(src, tmp_path / "o2", PrepSettings(pad_short=True, **SMALL), jobs=1)
    assert r["dataset"]["examples"] == 1
    example = open_dataset(tmp_path / "o2").read(0)
    assert np.abs(example[0, :1500]).max() > 0 and not example[0, 1700:].any()


def test_output_inside_input_is_never_read_back(tmp_path):
    src = tmp_path / "in"
    write(src / "x.wav", sine(1.0, SR), SR)
    prep(src, src / "dataset", PrepSettings(**SMALL), jobs=1)
    r = prep(src, src / "dataset", PrepSettings(**SMALL), jobs=1)
    assert r["run"]["files_found"] == 1 and r["run"]["unchanged"] == 1


def test_other_settings_refused_unless_overwrite(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "x.wav", sine(1.0, SR), SR)
    prep(src, out, PrepSettings(**SMALL), jobs=1)
    with pytest.raises(PrepError, match=r"other settings \(sr: 16000 -> 22050\)"):
        prep(src, out, PrepSettings(sr=22050, num_signal=2048), jobs=1)
    r = prep(src, out, PrepSettings(sr=22050, num_signal=2048), jobs=1, overwrite=True)
    assert r["run"]["processed"] == 1 and open_dataset(out).sr == 22050


def test_settings_are_validated():
    with pytest.raises(SettingsError, match="--normalize"):
        PrepSettings(normalize="rms")
    with pytest.raises(SettingsError, match="--bits"):
        PrepSettings(bits=8)
    with pytest.raises(SettingsError, match="--augment needs --variants"):
        PrepSettings(augment=True, variants=0)


def test_augment_without_variants_writes_the_default_number():
    assert PrepSettings(augment=True).n_variants == DEFAULT_VARIANTS >= 1
    assert PrepSettings().n_variants == 0 and PrepSettings().variants == 0


def test_spool_spills_to_disk_and_reads_back_the_same(tmp_path):
    blocks = [np.random.default_rng(i).standard_normal((2, 1000 + i)).astype(np.float32) for i in range(5)]
    mem, disk = Spool(2, tmp_path / "m"), Spool(2, tmp_path / "d", memory_bytes=10_000)
    for b in blocks:
        mem.append(b)
        disk.append(b)
    assert (tmp_path / "d").exists() and not (tmp_path / "m").exists()
    whole = np.concatenate(blocks, axis=1)
    for sp in (mem, disk):
        for _ in range(2):  # readable more than once (original, then variants)
            np.testing.assert_array_equal(np.concatenate(list(sp.blocks(777)), axis=1), whole)
    disk.close()
    assert not (tmp_path / "d").exists()


def test_segments_regroup_exactly():
    blocks = [np.arange(n, dtype=np.float32)[None] for n in (5, 13, 2, 9)]
    segs = list(segments(blocks, 10))
    assert [s.shape[1] for s in segs] == [10, 10, 9]
    np.testing.assert_array_equal(np.concatenate(segs, axis=1), np.concatenate(blocks, axis=1))


def test_output_names_and_quantisation():
    assert output_name("a/take.mp3", "wav") == "audio/a/take.mp3.wav"
    assert output_name("take.WAV", "wav") == "audio/take.wav"
    assert output_name("take.flac", "flac", 3) == "audio/take.aug03.flac"
    np.testing.assert_array_equal(to_int16(np.array([[-2.0, -1.0, 0.0, 0.5, 1.0]])), [[-32767, -32767, 0, 16384, 32767]])


def test_missing_input_or_unwritable_output_is_a_prep_error(tmp_path):
    with pytest.raises(PrepError, match="input folder not found"):
        prep(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "in").mkdir()
    (tmp_path / "file").write_text("x")
    # Below a regular file no folder can be made, even as root.
    with pytest.raises(PrepError, match="cannot create output folder"):
        prep(tmp_path / "in", tmp_path / "file" / "out")


def test_sources_that_would_write_the_same_output_are_reported(tmp_path):
    src = tmp_path / "in"
    write(src / "take.WAV", sine(1.0, SR), SR)
    write(src / "take.wav", sine(1.0, SR, freq=880), SR)
    r = prep(src, tmp_path / "out", PrepSettings(**SMALL), jobs=1)
    assert r["run"]["processed"] == 1
    assert r["run"]["skipped"] == [{"source": "take.wav", "reason": "its output audio/take.wav would overwrite that of take.WAV; rename one of them"}]


def test_a_write_failure_skips_that_source_only(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "ok.wav", sine(1.0, SR), SR)
    write(src / "sub" / "x.wav", sine(1.0, SR), SR)
    (out / "audio").mkdir(parents=True)
    (out / "audio" / "sub").write_text("a file where prep needs a folder")
    r = prep(src, out, PrepSettings(**SMALL), jobs=1)
    assert r["run"]["processed"] == 1
    [skip] = r["run"]["skipped"]
    assert skip["source"] == "sub/x.wav" and skip["reason"].startswith("failed: ")
    assert [x["source"] for x in read_manifest(out / "manifest.jsonl")] == ["ok.wav"]


def test_examples_of_an_uncommitted_source_are_swept_on_the_next_run(tmp_path):
    """The state a kill -9 leaves between writing a source's examples and
    committing its record: the next run removes them and redoes the source."""
    from rave_data.dataset.writer import ExampleWriter

    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "a.wav", sine(1.0, SR), SR)
    prep(src, out, PrepSettings(**SMALL), jobs=1)
    complete = lmdb_items(out)
    write(src / "b.wav", sine(1.0, SR, freq=550), SR)
    w = ExampleWriter(out, SR)  # "the killed run" got this far for b.wav
    w.append([np.zeros((1, 4096), np.int16)] * 3)
    w.close()
    r = prep(src, out, PrepSettings(**SMALL), jobs=1)
    assert r["run"]["recovered_keys"] == 3 and r["run"]["processed"] == 1
    items = lmdb_items(out)
    assert set(complete.items()) < set(items.items())
    from rave_data.dataset.codec import encode_waveform

    assert encode_waveform(np.zeros((1, 4096), np.int16), SR) not in items.values()  # the orphans are gone
    lines = read_manifest(out / "manifest.jsonl")
    assert sorted(k.encode() for x in lines for k in x["keys"]) == sorted(items)


def test_include_exclude_narrow_the_sources_and_the_dataset_follows(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _corpus(src, seconds=0.5)
    r = prep(src, out, PrepSettings(**SMALL), jobs=1, include=["*.wav"], exclude=["d.*"])
    assert [x["source"] for x in read_manifest(out / "manifest.jsonl")] == ["a.wav"]
    r = prep(src, out, PrepSettings(**SMALL), jobs=1, exclude=["sub/*"])
    assert r["run"]["unchanged"] == 1 and r["run"]["processed"] == 1
    assert [x["source"] for x in read_manifest(out / "manifest.jsonl")] == ["a.wav", "d.wav"]


def test_long_variant_is_scaled_once_not_per_segment(tmp_path):
    """A variant longer than one augmentation segment that would clip is scaled
    down as a whole: the level relation between segments survives."""
    import numpy as np

    from rave_data.augment import parse_plan
    from rave_data.prep.worker import augmented

    sr = 8000
    quiet, loud = sine(1.0, sr, amp=0.1), sine(1.0, sr, amp=0.5)  # two 1-s segments
    plan = parse_plan({"steps": [{"name": "gain", "params": {"db": [12.0, 12.0]}}]})
    chain = plan.sample(np.random.default_rng(0))
    out = np.concatenate(list(augmented(chain, [quiet, loud], False, Spool(1, tmp_path / "v.f32"), sr)), axis=1)
    assert np.abs(out).max() == pytest.approx(0.999, abs=1e-4)
    ratio = np.abs(out[:, :sr]).max() / np.abs(out[:, sr:]).max()
    assert ratio == pytest.approx(0.2, rel=1e-3)  # per-segment scaling would give 0.4


def test_output_stage_scratch_buffers_give_the_same_samples(tmp_path):
    # The worker scales and quantises into buffers reused from block to block;
    # the values must be those of the allocating path, block for block.
    spool = Spool(2, tmp_path / "s.f32")
    rng = np.random.default_rng(5)
    for n in (1000, 70000, 5, 131072, 300):  # varying block sizes, as the resampler gives
        spool.append(rng.uniform(-1.2, 1.2, (2, n)).astype(np.float32))
    scratch = Scratch()
    plain = list(scaled(spool, 0.73))
    for block, reused in zip(plain, scaled(spool, 0.73, scratch), strict=True):
        np.testing.assert_array_equal(reused, block)
        q = quantize_into(reused, scratch.get("f32", reused.shape, np.float32), scratch.get("i16", reused.shape, np.int16))
        np.testing.assert_array_equal(q, to_int16(block))
    spool.close()
