"""Training data: both dataset layouts, the split, resumable and worker-independent
crops, online augmentation, and refusals of unusable datasets."""
from __future__ import annotations

import subprocess
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from rave_model.config import load_config
from rave_model.data import DataPosition, DatasetError, ExampleSource, ResumableBatchSampler, TrainData, load_augment_plan, split_indices
from tests.audio import concat, sine, write
from tests.rave_model.datasets import tiny_examples, write_dataset


def tiny(**over) -> object:
    return load_config("tiny", [f"{k}={v}" for k, v in over.items()])


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ours") / "ds", tiny_examples(10))


@pytest.fixture(scope="module")
def acids(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("acids") / "ds", tiny_examples(10), layout="acids")


def take(data: TrainData, start: DataPosition, n: int) -> list[tuple[torch.Tensor, DataPosition]]:
    return list(islice(data.train_batches(start, "cpu"), n))


@pytest.mark.parametrize("layout", ["ours", "acids"])
def test_both_layouts_load_and_crop(layout, request):
    path = request.getfixturevalue(layout)
    src = ExampleSource(path)
    assert (len(src), src.sr, src.channels, src.example_length) == (10, 16000, 1, 8192)
    expected = tiny_examples(10)
    for i in (0, 9):
        np.testing.assert_array_equal(src.read(i), expected[i])
    data = TrainData(path, tiny())
    data.check()
    (x, pos), = take(data, DataPosition(), 1)
    assert x.shape == (4, 1, 4096) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.abs().max() <= 1.01
    assert x.std() > 0.05  # real audio, not silence
    assert pos == DataPosition(0, 4)


def test_prep_made_dataset_loads(tmp_path, bin_dir):
    """A dataset written by the real `ravedata prep` trains the tiny preset."""
    sr = 16000
    for i in range(3):
        write(tmp_path / "in" / f"tone{i}.wav", concat(sine(1.0, 44100, 220.0 * (i + 1)), sine(1.0, 44100, 330.0)), 44100)
    out = tmp_path / "ds"
    proc = subprocess.run(
        [str(bin_dir / "ravedata"), "prep", str(tmp_path / "in"), str(out), "--sr", str(sr), "--num-signal", "2048", "-j", "1", "-q"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    data = TrainData(out, tiny(**{"data.n_signal": 2048, "train.batch_size": 2}))
    data.check()
    assert data.source.sr == sr and len(data.source) >= 4
    (x, _), = take(data, DataPosition(), 1)
    assert x.shape == (2, 1, 2048) and x.abs().max() > 0.1


def test_split_is_deterministic_and_disjoint():
    tr1, va1 = split_indices(200, 0.02, 1000)
    tr2, va2 = split_indices(200, 0.02, 1000)
    np.testing.assert_array_equal(tr1, tr2)
    np.testing.assert_array_equal(va1, va2)
    assert len(va1) == 4 and not set(tr1) & set(va1) and len(tr1) + len(va1) == 200
    assert len(split_indices(10_000, 0.5, 7)[1]) == 7  # capped at val_max
    assert len(split_indices(5, 0.02, 1000)[1]) == 1  # at least one


def test_resumed_stream_replays_the_same_batches(ours):
    data = TrainData(ours, tiny())
    # 9 training examples, batch 4: 2 batches per epoch, so 5 batches cross 2 epoch boundaries.
    straight = take(data, DataPosition(), 5)
    resumed = take(data, straight[2][1], 2)
    for (a, pa), (b, pb) in zip(straight[3:], resumed):
        assert torch.equal(a, b) and pa == pb
    assert [p for _, p in straight] == [DataPosition(0, 4), DataPosition(1, 0), DataPosition(1, 4), DataPosition(2, 0), DataPosition(2, 4)]
    # Different epochs see different crops.
    assert not torch.equal(straight[0][0], straight[2][0])


def test_worker_processes_give_identical_batches(ours):
    single = take(TrainData(ours, tiny(**{"train.num_workers": 0})), DataPosition(), 3)
    workers = take(TrainData(ours, tiny(**{"train.num_workers": 2})), DataPosition(), 3)
    for (a, pa), (b, pb) in zip(single, workers):
        assert torch.equal(a, b) and pa == pb


def test_ranks_get_disjoint_shares():
    idx = np.arange(40)
    seen = []
    for rank in range(2):
        s = ResumableBatchSampler(idx, 4, seed=0, start=DataPosition(), rank=rank, world_size=2)
        seen.append({d[0] for batch in islice(iter(s), s.batches_per_epoch) for d in batch})
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 40


def test_validation_batches_are_fixed(ours):
    data = TrainData(ours, tiny())
    a = list(data.val_batches("cpu"))
    b = list(data.val_batches("cpu"))
    assert len(a) == 1 and a[0].shape == (1, 1, 4096) and torch.equal(a[0], b[0])


def test_online_augmentation_changes_crops(ours, tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text('[[steps]]\nname = "gain"\nprobability = 1.0\nparams = { db = [-12.0, -6.0] }\n')
    cfg = tiny(**{"train.phase_mangle": 0.0, "train.dequantize": False})
    plain = take(TrainData(ours, cfg), DataPosition(), 1)[0][0]
    augmented = take(TrainData(ours, cfg, augment=load_augment_plan(plan)), DataPosition(), 1)[0][0]
    ratio = augmented.abs().max() / plain.abs().max()
    assert 10 ** (-12 / 20) - 0.02 < ratio < 10 ** (-6 / 20) + 0.02


def test_unknown_augmenter_is_refused(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text('[[steps]]\nname = "no_such_effect"\nprobability = 1.0\n')
    with pytest.raises(ValueError, match="no_such_effect"):
        load_augment_plan(plan)


def test_too_small_dataset_is_refused(tmp_path):
    path = write_dataset(tmp_path / "small", tiny_examples(3))
    with pytest.raises(DatasetError, match=r"3 examples is too small for batch size 4.*at least 5"):
        TrainData(path, tiny()).check()


def test_pca_too_few_frames_is_refused(tmp_path):
    # 6 examples of 4096 samples at hop 64 give 64 frames each; a 512-dim latent needs more.
    path = write_dataset(tmp_path / "ds", tiny_examples(6, frames=4096))
    data = TrainData(path, tiny(**{"train.pca_examples": 2}))
    data.check(pca_frames_needed=64, hop=64)
    with pytest.raises(DatasetError, match="latent PCA needs at least 512"):
        data.check(pca_frames_needed=512, hop=64)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"data.sr": 48000}, "dataset is 16000 Hz but the preset trains at 48000 Hz"),
        ({"data.channels": 2}, "dataset has 1 channel"),
        ({"data.n_signal": 16384}, "shorter than the training crop"),
    ],
)
def test_mismatched_dataset_is_refused(ours, over, message):
    with pytest.raises(DatasetError, match=message):
        TrainData(ours, tiny(**over)).check()


def test_missing_or_lazy_dataset_is_refused(tmp_path, ours):
    with pytest.raises(DatasetError, match="no data.mdb"):
        ExampleSource(tmp_path)
    lazy = write_dataset(tmp_path / "lazy", tiny_examples(2))
    (lazy / "metadata.yaml").write_text("lazy: true\nchannels: 1\n")
    with pytest.raises(DatasetError, match="lazy"):
        ExampleSource(lazy)


@pytest.mark.parametrize("layout", ["ravedata", "acids"])
def test_stereo_examples_keep_their_channels(tmp_path, layout):
    examples = tiny_examples(6, channels=2)
    examples[5] = examples[5][:, :3000]  # a short last example is padded, never fatal
    path = write_dataset(tmp_path / "ds", examples, layout=layout)
    src = ExampleSource(path)
    assert src.channels == 2
    np.testing.assert_array_equal(src.read(0), examples[0])  # channel order preserved
    data = TrainData(path, tiny(**{"data.channels": 2, "train.val_fraction": 0.34}))
    data.check()
    (x, _), = take(data, DataPosition(), 1)
    assert x.shape == (4, 2, 4096)
    assert not torch.equal(x[:, 0], x[:, 1])  # the channels differ (detuned sines)
    val = list(data.val_batches("cpu"))
    assert sum(v.shape[0] for v in val) == 2 and all(v.shape[1:] == (2, 4096) for v in val)
