"""rave_model.train.distributed and .launch: shares of an epoch, the process group,
DDP weights, rank-0-only side effects, stop flags, failures naming their rank, and
resuming a run with a different number of processes.

The multi-process tests start real processes (gloo on the CPU, file rendezvous on
loopback) running tests/rave_model/dist_worker.py, a toy training loop that uses the
helpers exactly as the training loop does.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rave_model.data import ResumableBatchSampler
from rave_model.train import distributed as dist
from rave_model.train.stage import DataPosition
from rave_model.train.failures import first_failure
from rave_model.train.launch import launch_local, relaunch, strip_option

WORKER = Path(__file__).with_name("dist_worker.py")


# --- each rank's share of an epoch (the training sampler) ---------------------------


def _epoch(n: int, rank: int, world: int, batch: int, epoch: int = 0, offset: int = 0) -> list[int]:
    """The example indices ``rank`` reads in (the rest of) ``epoch``."""
    sampler = ResumableBatchSampler(np.arange(n), batch, seed=3, start=DataPosition(epoch, offset), rank=rank, world_size=world)
    per_epoch = sampler.batches_per_epoch
    out: list[int] = []
    for draws in itertools.islice(iter(sampler), per_epoch - offset // batch):
        assert all(d[1] == epoch for d in draws)
        out += [d[0] for d in draws]
    return out


@pytest.mark.parametrize("n,world,batch", [(24, 1, 4), (24, 2, 4), (24, 3, 2), (25, 4, 3)])
def test_ranks_read_disjoint_equal_shares_of_each_epoch(n: int, world: int, batch: int) -> None:
    shares = [_epoch(n, r, world, batch) for r in range(world)]
    assert len({len(s) for s in shares}) == 1, "every rank takes the same number of steps"
    flat = [i for s in shares for i in s]
    # Disjoint (the padding of a ragged epoch wraps around, never within a step).
    assert len(flat) == len(set(flat)) or n % world
    if n % (world * batch) == 0:
        assert sorted(flat) == list(range(n))
    # Deterministic, and another epoch is another order.
    assert shares[0] == _epoch(n, 0, world, batch)
    assert shares[0] != _epoch(n, 0, world, batch, epoch=1)


@pytest.mark.parametrize("before,after", [(2, 1), (2, 3), (1, 4), (4, 2)])
def test_a_position_saved_by_n_ranks_resumes_with_m_without_skipping(before: int, after: int) -> None:
    n, batch_before = 48, 12 // before
    steps_done = 2
    offset = steps_done * batch_before  # where each of the `before` ranks stood
    used = {i for r in range(before) for i in _epoch(n, r, before, batch_before)[:offset]}
    batch_after = 12 // after
    new = dist.rescale_offset(offset, before, after, batch_after)
    assert new % batch_after == 0
    rest = [i for r in range(after) for i in _epoch(n, r, after, batch_after, offset=new)]
    # Together the resumed ranks read everything the first run had not, and at
    # most one global batch of what it had.
    assert used | set(rest) == set(range(n))
    assert len(used & set(rest)) < 12
    assert dist.rescale_offset(7, 2, 2, 4) == 7


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
    # 3 steps of 6 examples per rank, no example read twice.
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


@pytest.mark.parametrize("resume_nproc", [1])
def test_checkpoint_of_two_processes_resumes_with_another_count(
    two_procs_3_steps: Path, one_proc_6_steps: Path, tmp_path: Path, resume_nproc: int
) -> None:
    """2 processes for 3 steps, then `resume_nproc` for 3 more (crossing an epoch
    boundary), equals one process for 6 steps: the epoch order does not depend on the
    number of processes, the saved position is rescaled, and the toy keeps the global
    batch constant."""
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


def test_workers_do_not_relaunch_and_torchrun_refuses_nproc(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["fit", "data", "--nproc", "2", "--run", "r", "--nproc=3", "--set", "train.seed=1"]
    assert strip_option(argv, "--nproc") == ["fit", "data", "--run", "r", "--set", "train.seed=1"]
    said: list[str] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert relaunch(2, ["ravemodel", *argv], said.append) == 1
    assert said and "under torchrun leave it out" in said[0]


# --- the real `ravemodel fit --nproc 2` -----------------------------------------------

# tiny preset, a few steps of every stage (vae 2, adversarial 2, prior 3).
FIT_SETS = ["train.vae_steps=2", "train.adversarial_steps=2", "prior.steps=3", "train.val_every=2", "train.ckpt_every=2"]


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    """Nested state dicts hold bitwise equal tensors."""
    import torch

    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs between ranks"
    else:
        assert a == b, where


@pytest.mark.slow
def test_ravemodel_fit_nproc_2_keeps_ranks_identical_through_every_stage_and_resumes_alone(
    tmp_path: Path, bin_dir: Path
) -> None:
    import torch

    from rave_model.train import checkpoint as ckpt_io
    from tests.rave_model.datasets import tiny_examples, write_dataset

    ds = write_dataset(tmp_path / "ds", tiny_examples(12))
    run, dump = tmp_path / "run", tmp_path / "dump"
    sets = [a for s in FIT_SETS for a in ("--set", s)]
    cmd = [str(bin_dir / "ravemodel"), "fit", str(ds), "--preset", "tiny", "--run", str(run), "--device", "cpu", *sets]
    env = {**os.environ, "RAVE_DIST_DUMP": str(dump)}

    # Two processes: the whole VAE and adversarial stages, then 1 of the prior's 3 steps.
    first = subprocess.run([*cmd, "--nproc", "2", "--max-steps", "5"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("stopped at prior step 1/3") == 1, first.stderr  # rank 0 alone logs
    for tag in ("vae", "adversarial", "final"):
        r0 = torch.load(dump / f"{tag}.rank0.pt", weights_only=False)
        r1 = torch.load(dump / f"{tag}.rank1.pt", weights_only=False)
        # The ranks read different examples; only synchronised gradients keep the
        # model, the discriminator, the prior and every optimizer state equal.
        _assert_same(r0, r1, tag)
    adversarial = torch.load(dump / "adversarial.rank1.pt", weights_only=False)
    assert adversarial["stage"]["discriminator"], "the discriminator was compared"
    final1 = torch.load(dump / "final.rank1.pt", weights_only=False)
    ckpt = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert (ckpt["stage"], ckpt["step"], ckpt["done"]) == ("prior", 1, ["vae", "adversarial"])
    assert ckpt["data"]["world_size"] == 2
    # Rank 0's checkpoint holds what rank 1 holds.
    _assert_same(ckpt["model"], final1["model"], "model")
    _assert_same(ckpt["stage_state"]["prior"], final1["stage"]["prior"], "prior")
    # Only rank 0 wrote TensorBoard events.
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1

    # One process resumes the checkpoint of two and finishes the prior.
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr and "stage prior, step 1" in second.stderr
    assert "training complete: vae, adversarial, prior" in second.stdout
    done = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert done["done"] == ["vae", "adversarial", "prior"] and done["data"]["world_size"] == 1


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_the_same_command_runs_under_torchrun_as_two_nodes(tmp_path: Path, bin_dir: Path) -> None:
    """Two torchrun "machines" (static rendezvous, one process each) run the unchanged
    command; only node 0 holds the run folder, and resuming works because rank 0
    reads the checkpoint for everyone."""
    import torch

    from rave_model.train import checkpoint as ckpt_io
    from tests.rave_model.datasets import tiny_examples, write_dataset

    ds = write_dataset(tmp_path / "ds", tiny_examples(12))
    dump = tmp_path / "dump"
    sets = [a for s in FIT_SETS for a in ("--set", s)]

    def node(rank: int, port: int) -> subprocess.Popen:
        # `--` keeps torchrun from reading our options (it would take --run for its --run-path).
        cmd = [str(bin_dir / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
               "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "rave_model", "--",
               "fit", str(ds), "--preset", "tiny", "--run", str(tmp_path / f"run-node{rank}"), "--device", "cpu",
               *sets, "--max-steps", "1"]
        env = {**os.environ, "RAVE_DIST_DUMP": str(dump)}
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    for attempt in (1, 2):  # a fresh run, then the same command resumes it
        port = _free_port()
        procs = [node(0, port), node(1, port)]
        outs = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert outs[0][1].count(f"stopped at vae step {attempt}/2") == 1, outs[0][1]
        r0, r1 = (torch.load(dump / f"final.rank{r}.pt", weights_only=False) for r in (0, 1))
        # Stopped mid-stage: BatchNorm running statistics are each rank's own since
        # the last forward (DDP copies rank 0's at the start of each forward, the
        # runner at each stage end; rank 0's are checkpointed). All else is equal.
        for r in (r0, r1):
            r["model"] = {k: v for k, v in r["model"].items() if "running_" not in k}
        _assert_same(r0, r1, f"attempt {attempt}")
    ckpt = ckpt_io.load(tmp_path / "run-node0" / "checkpoints" / "last.ckpt")
    assert ckpt["step"] == 2 and ckpt["data"]["world_size"] == 2
    assert not list((tmp_path / "run-node1").rglob("*.ckpt")), "rank 1 wrote no checkpoint"


def test_ravemodel_fit_nproc_reports_bad_input_once_naming_a_rank(tmp_path: Path, bin_dir: Path) -> None:
    from tests.rave_model.datasets import tiny_examples, write_dataset

    ds = write_dataset(tmp_path / "ds", tiny_examples(6))
    run = tmp_path / "run"
    cmd = [str(bin_dir / "ravemodel"), "fit", str(ds), "--preset", "tiny", "--run", str(run),
           "--device", "cpu", "--nproc", "2", "--set", "train.batch_size=4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    # 2 processes x 4 examples need 9: every rank refuses, the launcher says it once.
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: rank ") and "too small for batch size 4: need at least 9" in lines[0]
    assert not run.exists()


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_rank_with_a_checkpoint(tmp_path: Path, bin_dir: Path) -> None:
    """A scheduler ending the job: the launcher passes SIGTERM on as Ctrl-C, the ranks
    agree to stop after the same step, rank 0 saves, and nothing is left running."""
    import signal

    import psutil

    from rave_model.train import checkpoint as ckpt_io
    from tests.rave_model.datasets import tiny_examples, write_dataset

    ds = write_dataset(tmp_path / "ds", tiny_examples(12))
    run = tmp_path / "run"
    cmd = [str(bin_dir / "ravemodel"), "fit", str(ds), "--preset", "tiny", "--run", str(run), "--device", "cpu",
           "--nproc", "2", "--set", "train.vae_steps=1000", "--set", "train.log_every=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:  # wait until training runs
            lines.append(line)
            if "vae step 3/1000" in line:
                break
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2, lines
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted; the last checkpoint is kept" in err
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    ckpt = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert ckpt["stage"] == "vae" and ckpt["step"] >= 3
    assert f"stopped at vae step {ckpt['step']}/1000" in err


def test_ranks_that_bring_different_data_are_refused(tmp_path: Path) -> None:
    res = _run(tmp_path / "differ", 2, "--steps", "1", "--differ")
    assert res.failure is not None
    assert "the toy data differs between processes: rank 0 has 48, rank 1 has 49" in res.failure.describe()


def test_a_ranks_crops_are_drawn_as_one_process_would_at_that_place_of_the_epoch(tmp_path: Path) -> None:
    """Ranks at the same step must not crop/augment alike: rank r's draw at its
    position p is the single-process draw at global position p*W + r."""
    from rave_model.data import CropDataset, ExampleSource
    from tests.rave_model.datasets import tiny_examples, write_dataset

    src = ExampleSource(write_dataset(tmp_path / "ds", tiny_examples(3, frames=16384)))
    one = CropDataset(src, 4096, seed=5)
    r0, r1 = (CropDataset(src, 4096, seed=5, rank=r, world_size=2) for r in (0, 1))
    x0, x1 = r0[(2, 1, 3)][0], r1[(2, 1, 3)][0]
    assert not np.array_equal(x0, x1)
    assert np.array_equal(x0, one[(2, 1, 6)][0]) and np.array_equal(x1, one[(2, 1, 7)][0])
