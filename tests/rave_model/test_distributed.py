"""rave_model.train.distributed and .launch: shares of an epoch, the process group,
DDP weights, rank-0-only side effects, stop flags, failures naming their rank, and
resuming a run with a different number of processes.

The multi-process tests start real processes (gloo on the CPU, file rendezvous on
loopback) running tests/rave_model/dist_worker.py, a toy training loop that uses the
helpers exactly as the training loop does.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rave_model.train import distributed as dist
from rave_model.train.launch import first_failure, launch_local

WORKER = Path(__file__).with_name("dist_worker.py")


# --- shares of an epoch --------------------------------------------------------------


@pytest.mark.parametrize("n,world", [(10, 1), (10, 2), (10, 3), (7, 4), (3, 5)])
def test_shares_are_disjoint_equal_and_cover_the_epoch(n: int, world: int) -> None:
    shares = [list(dist.EpochShares(n, r, world, seed=3, epoch=1)) for r in range(world)]
    lengths = {len(s) for s in shares}
    assert lengths == {len(dist.EpochShares(n, 0, world))}, "every rank takes the same number of examples"
    flat = [i for s in shares for i in s]
    assert set(flat) == set(range(n))
    # Only the padding (at most world-1 examples) repeats.
    assert len(flat) - n == (-n) % world
    if n % world == 0:
        assert len(flat) == len(set(flat))


def test_shares_are_deterministic_and_change_with_the_epoch() -> None:
    a = dist.EpochShares(50, 1, 2, seed=5, epoch=3)
    b = dist.EpochShares(50, 1, 2, seed=5, epoch=3)
    assert list(a) == list(b)
    c = dist.EpochShares(50, 1, 2, seed=5, epoch=4)
    assert list(a) != list(c)
    assert sorted(dist.EpochShares(50, 0, 1, shuffle=False)) == list(range(50))
    assert list(dist.EpochShares(50, 0, 1, shuffle=False)) == list(range(50))


@pytest.mark.parametrize("before,after", [(2, 1), (2, 3), (1, 4), (3, 2)])
def test_resumed_shares_with_another_world_size_take_the_rest_of_the_epoch(before: int, after: int) -> None:
    n, consumed = 40, 12
    order = dist.EpochShares(n, 0, before, seed=9, epoch=2).order()
    # The order does not depend on the number of processes.
    assert np.array_equal(order, dist.EpochShares(n, 0, after, seed=9, epoch=2).order())
    rest = [i for r in range(after) for i in dist.EpochShares(n, r, after, seed=9, epoch=2, consumed=consumed)]
    # The rest of the epoch, plus the padding (from the start of the order) that
    # evens the shares out.
    expected = order[consumed:].tolist()
    pad = (-len(expected)) % after
    assert sorted(rest) == sorted(expected + order[:pad].tolist())


def test_shares_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank 2"):
        dist.EpochShares(10, 2, 2)
    with pytest.raises(ValueError, match="consumed"):
        dist.EpochShares(10, 0, 1, consumed=11)
    with pytest.raises(ValueError, match="at least one"):
        dist.EpochShares(0)


def test_global_batch_is_split_evenly_or_refused() -> None:
    assert dist.per_rank_batch(12, 3) == 4
    with pytest.raises(ValueError, match="batch size 8 cannot be split evenly across 3"):
        dist.per_rank_batch(8, 3)


# --- environment and single-process fallbacks ---------------------------------------


def test_ranks_from_env() -> None:
    assert dist.ranks_from_env({}) == (0, 1, 0, 1)
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert dist.ranks_from_env(env) == (5, 8, 1, 4)
    with pytest.raises(ValueError, match="RANK=8 is not within WORLD_SIZE=8"):
        dist.ranks_from_env({"RANK": "8", "WORLD_SIZE": "8"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        dist.ranks_from_env({"WORLD_SIZE": "two"})


def test_single_process_helpers_are_local(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    ctx = dist.setup("cpu")
    try:
        assert ctx.is_main and not ctx.distributed and ctx.backend is None and ctx.device == "cpu"
        assert dist.reduce_mean({"b": 2, "a": 1.5}) == {"a": 1.5, "b": 2.0}
        assert dist.any_rank(True) and not dist.any_rank(False)
        assert dist.broadcast_object({"x": 1}) == {"x": 1}
        m = torch.nn.Linear(2, 2)
        assert dist.wrap_model(m) is m and dist.unwrap_model(m) is m
    finally:
        dist.teardown()


def test_mps_is_refused_for_several_processes() -> None:
    with pytest.raises(ValueError, match="mps supports a single process"):
        dist.pick_device("mps", 0, 2)
    with pytest.raises(ValueError, match="unknown device"):
        dist.pick_device("tpu", 0, 1)


# --- real processes ------------------------------------------------------------------


def _run(out: Path, nproc: int, *args: str):
    out.mkdir(parents=True, exist_ok=True)
    return launch_local([sys.executable, str(WORKER), str(out), *args], nproc)


def _rank(out: Path, r: int) -> dict:
    return json.loads((out / f"rank{r}.json").read_text())


@pytest.fixture(scope="module")
def two_procs_3_steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 processes, 3 steps of a global batch of 12 (shared by several tests: each
    launch costs seconds)."""
    out = tmp_path_factory.mktemp("two")
    res = _run(out, 2, "--steps", "3")
    assert res.returncode == 0, res.failure
    return out


@pytest.fixture(scope="module")
def one_proc_6_steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    res = _run(out, 1, "--steps", "6")
    assert res.returncode == 0, res.failure
    return out


def test_two_processes_train_identical_weights_on_disjoint_shares(two_procs_3_steps: Path) -> None:
    out = two_procs_3_steps
    r0, r1 = _rank(out, 0), _rank(out, 1)
    assert r0["world_size"] == r1["world_size"] == 2
    # Initial weights differed per rank (seeded by rank); DDP made and kept them equal.
    assert r0["weights"] == r1["weights"]
    # 3 steps of a global batch of 12, 6 per rank, no example read twice.
    assert len(r0["seen"]) == len(r1["seen"]) == 18
    assert not set(r0["seen"]) & set(r1["seen"])
    # reduce_mean gave every rank the same mean: rank ids average to 0.5.
    assert r0["metrics"] == r1["metrics"]
    assert all(m["rank"] == 0.5 for m in r0["metrics"])
    # Rank 0 alone wrote the checkpoint and its side effects.
    assert (out / "main_only.0").read_text() == "3"
    assert not (out / "main_only.1").exists()
    assert (out / "ckpt.pt").exists() and not (out / "ckpt.pt.tmp").exists()
    # Nothing listened beyond loopback.
    for r in (r0, r1):
        assert r["listening"] and all(ip.startswith("127.") for ip in r["listening"]), r["listening"]


@pytest.mark.parametrize("resume_nproc", [1, 3])
def test_checkpoint_of_two_processes_resumes_with_another_count(
    two_procs_3_steps: Path, one_proc_6_steps: Path, tmp_path: Path, resume_nproc: int
) -> None:
    """2 processes for 3 steps, then `resume_nproc` for 3 more (crossing an epoch
    boundary), equals one process for 6 steps: the global batch and the order of the
    epoch do not depend on the number of processes."""
    resumed = tmp_path / "resumed"
    res = _run(resumed, resume_nproc, "--steps", "6", "--resume", str(two_procs_3_steps / "ckpt.pt"))
    assert res.returncode == 0, res.failure
    ref = _rank(one_proc_6_steps, 0)
    for r in range(resume_nproc):
        got = _rank(resumed, r)
        assert got["step"] == 6
        np.testing.assert_allclose(got["weights"], ref["weights"], rtol=1e-5, atol=1e-6)
    # The resumed ranks together read what the single process read in steps 4-6.
    seen = sorted(i for r in range(resume_nproc) for i in _rank(resumed, r)["seen"])
    assert seen == sorted(ref["seen"][3 * 12 :])


def test_a_stop_flag_on_one_rank_stops_all_at_the_same_step(tmp_path: Path) -> None:
    out = tmp_path / "stop"
    res = _run(out, 2, "--steps", "20", "--stop-rank", "1", "--stop-step", "2")
    assert res.returncode == 0, res.failure
    assert _rank(out, 0)["step"] == _rank(out, 1)["step"] == 2


def test_failure_in_rank_1_stops_both_names_rank_1_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    import torch

    out = tmp_path / "fail"
    res = _run(out, 2, "--steps", "20", "--fail-rank", "1", "--fail-step", "3")
    assert res.returncode != 0
    assert res.failure is not None and res.failure.rank == 1
    line = res.failure.describe()
    assert line.startswith("rank 1 failed: RuntimeError: injected failure at step 3"), line
    assert "Traceback" in res.failure.traceback
    # Neither rank finished; rank 0's last good checkpoint (step 3) is intact.
    assert not (out / "rank0.json").exists() and not (out / "rank1.json").exists()
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 3


def test_first_failure_prefers_the_earliest_report(tmp_path: Path) -> None:
    (tmp_path / "rank0.json").write_text(json.dumps(
        {"rank": 0, "time": 20.0, "type": "RuntimeError", "message": "Connection closed by peer"}))
    (tmp_path / "rank2.json").write_text(json.dumps(
        {"rank": 2, "time": 10.0, "type": "ValueError", "message": "bad input"}))
    f = first_failure(tmp_path, {0: (2.0, 1), 1: (3.0, -15), 2: (1.0, 1)})
    assert f is not None and f.rank == 2 and f.describe() == "rank 2 failed: ValueError: bad input"
    empty = tmp_path / "none"
    empty.mkdir()
    f = first_failure(empty, {0: (2.0, 0), 1: (1.0, -9)})
    assert f is not None and f.describe() == "rank 1 was killed by SIGKILL"
    assert first_failure(empty, {0: (1.0, 0)}) is None
