"""The LMDB dataset layer: writer (map growth, keys), reader, manifest store."""
from __future__ import annotations

import multiprocessing as mp
import pickle

import lmdb
import numpy as np
import pytest
import yaml

from rave_data.dataset.codec import encode_waveform
from rave_data.dataset.manifest import ManifestStore, manifest_lines, read_manifest, referenced_keys, write_manifest
from rave_data.dataset.metadata import dataset_metadata, write_metadata
from rave_data.dataset.reader import DatasetError, open_dataset
from rave_data.dataset.writer import ExampleWriter, GrowingEnv


def _examples(n: int, channels: int, frames: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-32768, 32767, (channels, frames), dtype=np.int16) for _ in range(n)]


def test_writer_grows_map_and_reader_round_trips(tmp_path):
    # 12 stereo examples of 2 x 65536 frames = 6 MB; start with a 1 MB map so it
    # has to double several times.
    examples = _examples(12, 2, 2 * 65536)
    writer = ExampleWriter(tmp_path, sr=48000)
    writer.db.env.set_mapsize(1024**2)
    keys = writer.append(examples)
    writer.close()
    assert keys == [f"{i:08d}" for i in range(12)]
    write_metadata(tmp_path, dataset_metadata(sr=48000, channels=2, num_signal=65536, n_examples=12, tool_version="t"))

    ds = open_dataset(tmp_path)
    assert (ds.sr, ds.channels, ds.n_signal, len(ds)) == (48000, 2, 131072, 12)
    assert ds.seconds == pytest.approx(12 * 131072 / 48000)
    for i in (0, 5, 11):
        np.testing.assert_array_equal(ds.read(i), examples[i])
    np.testing.assert_array_equal(ds.read("00000003"), examples[3])
    assert yaml.safe_load((tmp_path / "metadata.yaml").read_text())["lazy"] is False


def test_map_full_error_is_retried_with_bigger_map(tmp_path):
    env = GrowingEnv(tmp_path, initial_map_size=64 * 1024)
    env._reserve = lambda need: None  # force the MapFullError path
    value = b"x" * (1024 * 1024)
    env.write(puts=[(b"a", value), (b"b", value)])
    assert env.get(b"b") == value
    assert env.env.info()["map_size"] >= 2 * 1024 * 1024


def test_sweep_removes_unreferenced_keys_and_next_key_follows(tmp_path):
    w = ExampleWriter(tmp_path, sr=8000)
    first = w.append(_examples(3, 1, 512))
    orphan = w.append(_examples(2, 1, 512, seed=1))
    swept = w.sweep({k.encode() for k in first})
    assert sorted(swept) == [k.encode() for k in orphan]
    assert w.append(_examples(1, 1, 512)) == ["00000003"]
    w.close()


def test_reader_reads_acids_rave_style_dataset(tmp_path):
    """acids-rave: planar channels, shape written in bytes, no sr in metadata."""
    x = _examples(2, 2, 1000)
    env = lmdb.open(str(tmp_path), map_size=16 * 1024**2)
    with env.begin(write=True) as txn:
        for i, ex in enumerate(x):
            value = encode_waveform(ex, 44100)
            txn.put(f"{i:08d}".encode(), value)
    env.close()
    (tmp_path / "metadata.yaml").write_text(yaml.safe_dump({"lazy": False, "channels": 2, "n_seconds": 1.0}))
    ds = open_dataset(tmp_path)
    assert (ds.sr, ds.channels, ds.n_signal, len(ds)) == (44100, 2, 1000, 2)
    np.testing.assert_array_equal(ds.read(1), x[1])


def test_reader_refuses_folder_without_data(tmp_path):
    with pytest.raises(DatasetError, match="no data.mdb"):
        open_dataset(tmp_path)


def _child_reads(ds, i, q):
    q.put(ds.read(i).sum(dtype=np.int64))


def test_reader_is_fork_safe_and_picklable(tmp_path):
    examples = _examples(4, 1, 2048)
    w = ExampleWriter(tmp_path, sr=16000)
    w.append(examples)
    w.close()
    ds = open_dataset(tmp_path)
    ds.read(0)  # opens the env in the parent first
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.read(2), examples[2])
    q: mp.Queue = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=_child_reads, args=(ds, 3, q))
    p.start()
    p.join(30)
    assert q.get(timeout=5) == examples[3].sum(dtype=np.int64)


def test_manifest_store_round_trip(tmp_path):
    store = ManifestStore(tmp_path / "state")
    assert store.settings() is None
    store.set_settings({"sr": 48000})
    line = {"source": "b.wav", "kind": "original", "keys": ["00000000", "00000001"]}
    store.commit({"source": "b.wav", "fingerprint": "1:2:ab", "outputs": [line]})
    store.commit({"source": "a.wav", "fingerprint": "3:4:cd", "outputs": [dict(line, source="a.wav", keys=[])]})
    records = store.records()
    assert store.settings() == {"sr": 48000}
    assert referenced_keys(records) == {b"00000000", b"00000001"}
    assert [x["source"] for x in manifest_lines(records)] == ["a.wav", "b.wav"]
    store.forget(["b.wav"])
    assert list(store.records()) == ["a.wav"]
    write_manifest(tmp_path / "m.jsonl", manifest_lines(store.records()))
    assert read_manifest(tmp_path / "m.jsonl")[0]["source"] == "a.wav"
    store.close()


def test_reader_then_writer_in_one_process(tmp_path):
    """py-lmdb refuses a second open of one folder in a process: the writer
    releases the shared read handle and the Dataset reopens it afterwards."""
    w = ExampleWriter(tmp_path, sr=8000)
    w.append(_examples(1, 1, 256))
    w.close()
    ds = open_dataset(tmp_path)
    assert len(ds) == 1
    w = ExampleWriter(tmp_path, sr=8000)
    w.append(_examples(1, 1, 256, seed=5))
    w.close()
    np.testing.assert_array_equal(open_dataset(tmp_path).read(1), _examples(1, 1, 256, seed=5)[0])
    assert ds.read(0).shape == (1, 256)


def test_sweep_checks_every_key_when_counts_disagree(tmp_path):
    w = ExampleWriter(tmp_path, sr=8000)
    keys = [k.encode() for k in w.append(_examples(4, 1, 256))]
    # Referenced: 0 and 3 and a missing 9; 1 and 2 are stray keys below the top.
    swept = w.sweep({keys[0], keys[3], b"00000009"})
    assert sorted(swept) == [keys[1], keys[2]] and not w.consistent
    assert w.sweep({keys[0], keys[3]}) == [] and w.consistent
    assert w.append(_examples(1, 1, 256)) == ["00000004"]
    w.close()


def test_reader_takes_keys_from_a_matching_manifest_only(tmp_path):
    w = ExampleWriter(tmp_path, sr=8000)
    examples = _examples(5, 1, 256)
    keys = w.append(examples)
    w.db.write(deletes=[b"00000001"])  # a gap, as incremental runs leave
    w.close()
    line = {"source": "x", "kind": "original", "keys": [k for k in keys if k != "00000001"]}
    write_manifest(tmp_path / "manifest.jsonl", [line])
    env = lmdb.open(str(tmp_path), readonly=True, lock=False)
    with env.begin() as txn:
        in_lmdb = list(txn.cursor().iternext(values=False))
    env.close()
    ds = open_dataset(tmp_path)
    assert ds.keys() == in_lmdb == [k.encode() for k in line["keys"]]
    # A stale manifest with the right count but a deleted key: the LMDB wins.
    write_manifest(tmp_path / "manifest.jsonl", [dict(line, keys=["00000000", "00000001", "00000002", "00000003"])])
    ds = open_dataset(tmp_path)
    np.testing.assert_array_equal(ds.read(1), examples[2])
    # A manifest that does not match the count is ignored.
    write_manifest(tmp_path / "manifest.jsonl", [dict(line, keys=["00000000"])])
    assert len(open_dataset(tmp_path)) == 4


def test_batch_file_round_trip_and_truncation(tmp_path):
    # Workers write encoded examples to a batch file; the parent maps it and
    # copies the values (memoryviews of the map) into the LMDB.
    from rave_data.dataset.writer import read_values, write_value

    values = [encode_waveform(np.full((1, n), n, np.int16), 16000) for n in (1, 300, 4096)]
    batch = tmp_path / "a.examples"
    with open(batch, "wb") as f:
        for v in values:
            write_value(f, v)
    assert [bytes(v) for v in read_values(batch)] == values
    writer = ExampleWriter(tmp_path / "db", 16000)
    assert writer.append(read_values(batch)) == ["00000000", "00000001", "00000002"]
    assert [writer.db.get(k.encode()) for k in ("00000000", "00000001", "00000002")] == values
    writer.close()

    (tmp_path / "empty.examples").write_bytes(b"")
    assert list(read_values(tmp_path / "empty.examples")) == []
    whole = batch.read_bytes()
    for cut in (len(whole) - 1, len(whole) - len(values[-1]) - 3):  # inside a value, inside a length
        (tmp_path / "cut.examples").write_bytes(whole[:cut])
        with pytest.raises(ValueError, match="truncated example batch"):
            list(read_values(tmp_path / "cut.examples"))


def test_batch_pages_dropped_behind_the_reader_are_still_readable(tmp_path, monkeypatch):
    # read_values drops pages it has left behind (MADV_DONTNEED) so an hour-long
    # batch is not all resident; a view a caller still holds must stay valid.
    from rave_data.dataset import writer as writer_mod

    monkeypatch.setattr(writer_mod, "RESIDENT_BYTES", 4096)
    values = [encode_waveform(np.full((2, 3000), k, np.int16), 16000) for k in range(20)]  # ~12 KB each
    batch = tmp_path / "b.examples"
    with open(batch, "wb") as f:
        for v in values:
            writer_mod.write_value(f, v)
    held = list(writer_mod.read_values(batch))  # every view kept until the end, as a write batch is
    assert [bytes(v) for v in held] == values
