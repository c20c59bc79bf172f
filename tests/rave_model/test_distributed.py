"""Training on several processes: shares of an epoch, resuming with another number
of processes, and the real thing on the CPU (gloo) through torch's elastic launcher:
``ravemodel fit --nproc 2``, two torchrun "machines" on localhost (c10d rendezvous),
a failing rank told in one line, Ctrl-C and SIGTERM saving a checkpoint.

tests/rave_model/dist_worker.py is what ``ravemodel fit`` runs in each process, plus
saving each rank's final weights for the tests to compare.
"""
from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rave_model.data import ResumableBatchSampler
from rave_model.train import distributed as dist
from rave_model.data import DataPosition

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
        assert dist.wrap_model(m) is m
    finally:
        dist.teardown()


def test_mps_is_refused_for_several_processes() -> None:
    with pytest.raises(ValueError, match="mps supports a single process"):
        dist.pick_device("mps", 0, 2)
    with pytest.raises(ValueError, match="unknown device"):
        dist.pick_device("tpu", 0, 1)


# --- how a failure is told ---------------------------------------------------------


def test_the_first_failure_is_told_not_a_peers_later_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a rank fails its peers fail too, within the same second; the report names
    the first. The error files are torch's format (its ProcessFailure reads them)."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from rave_model.train.launch import describe, exit_with_error, first_failure

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    files = {rank: tmp_path / f"rank{rank}.json" for rank in (0, 1)}
    for rank, message, code in ((1, "RuntimeError: injected", 1), (0, "RuntimeError: Connection closed by peer", 1)):
        monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(files[rank]))
        with pytest.raises(SystemExit) as leaving:
            exit_with_error(message, code, "Traceback (most recent call last): ..." if rank == 1 else None)
        assert leaving.value.code == code
    failures = {rank: ProcessFailure(rank, 100 + rank, 1, str(files[rank])) for rank in (0, 1)}
    rank, failure = first_failure(failures)
    assert rank == 1
    error = failure.error_file_data["message"]
    assert describe(rank, failure.exitcode, error) == "rank 1: RuntimeError: injected"
    assert error["extraInfo"]["py_callstack"].startswith("Traceback")
    assert "py_callstack" not in failures[0].error_file_data["message"]["extraInfo"]
    # A peer the launcher stopped has no error file and a time cut to the second,
    # which can sort before the real failure's exact time: it is never the one told.
    stopped = ProcessFailure(0, 100, -15, str(tmp_path / "none.json"))
    stopped.timestamp = int(failures[1].error_file_data["message"]["extraInfo"]["timestamp"]) - 1
    assert first_failure({0: stopped, 1: failures[1]})[0] == 1
    assert describe(2, -9, None) == "rank 2 was killed by SIGKILL"
    assert describe(3, 7, None) == "rank 3 exited with status 7"


def test_nproc_is_refused_under_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from rave_model.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    out = CliRunner().invoke(app, ["fit", str(tmp_path), "--nproc", "2"])
    assert out.exit_code == 2
    assert "error: --nproc starts processes itself; under torchrun leave it out" in out.output


# --- real processes (gloo on the CPU) -------------------------------------------------

WORKER = Path(__file__).with_name("dist_worker.py")
# tiny preset, a few steps of every stage (vae 2, adversarial 2, prior 3).
FIT_SETS = ["train.vae_steps=2", "train.adversarial_steps=2", "prior.steps=3", "train.val_every=2", "train.ckpt_every=2"]
TIMEOUT = 300


def _sets(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def _fit(bin_dir: Path, dataset: Path, run: Path, *args: str) -> list[str]:
    return [str(bin_dir / "ravemodel"), "fit", str(dataset), "--preset", "tiny", "--run", str(run), "--device", "cpu", *args]


def _assert_same(a: dict, b: dict, where: str) -> None:
    """Two state dicts hold the same keys and bitwise equal tensors."""
    import torch

    assert a.keys() == b.keys(), where
    for k in a:
        assert torch.equal(a[k], b[k]), f"{where}: {k} differs"


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill a launcher and its processes (torch starts each in a session of its own)."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.rave_model.datasets import tiny_examples, write_dataset

    return write_dataset(tmp_path_factory.mktemp("dist") / "ds", tiny_examples(12))


@pytest.mark.slow
def test_ravemodel_fit_nproc_2_stops_with_a_checkpoint_that_one_process_resumes(dataset: Path, tmp_path: Path, bin_dir: Path) -> None:
    from rave_model.train import checkpoint as ckpt_io

    run = tmp_path / "run"
    cmd = _fit(bin_dir, dataset, run, *_sets(FIT_SETS))
    # Two processes: the whole VAE and adversarial stages, then 1 of the prior's 3 steps.
    first = subprocess.run([*cmd, "--nproc", "2", "--max-steps", "5"], capture_output=True, text=True, timeout=TIMEOUT)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("stopped at prior step 1/3") == 1, first.stderr  # rank 0 alone logs
    ckpt = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert (ckpt.stage, ckpt.step, ckpt.done) == ("prior", 1, ["vae", "adversarial"])
    assert ckpt.world_size == 2
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0 alone

    # One process resumes the checkpoint of two and finishes the prior.
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr and "stage prior, step 1" in second.stderr
    assert "training complete: vae, adversarial, prior" in second.stdout
    done = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert done.done == ["vae", "adversarial", "prior"] and done.world_size == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_on_localhost_train_every_stage_with_identical_weights(dataset: Path, tmp_path: Path, bin_dir: Path) -> None:
    """Two torchrun "machines" (c10d rendezvous on a localhost port, one process each)
    train every stage. The ranks read different examples: only synchronised gradients
    and the stage-end copy from rank 0 keep their weights equal."""
    import torch

    from rave_model.train import checkpoint as ckpt_io

    run, out, port = tmp_path / "run", tmp_path / "out", _free_port()
    cmd = [str(bin_dir / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "two-nodes",
           str(WORKER), str(dataset), str(run), str(out), *_sets(FIT_SETS)]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    nodes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=TIMEOUT) for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                _kill_tree(p)
    assert [p.returncode for p in nodes] == [0, 0], outs
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["done"] == r1["done"] == ["vae", "adversarial", "prior"]
    _assert_same(r0["model"], r1["model"], "rank 1 against rank 0")
    ckpt = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert ckpt.done == ["vae", "adversarial", "prior"] and ckpt.world_size == 2
    _assert_same(ckpt.model, r1["model"], "rank 1 against the checkpoint")


@pytest.mark.slow
def test_a_failing_rank_stops_the_job_in_one_line_naming_it(dataset: Path, tmp_path: Path) -> None:
    from rave_model.train import checkpoint as ckpt_io

    run, out = tmp_path / "run", tmp_path / "out"
    sets = _sets(["train.vae_steps=20", "train.ckpt_every=2", "train.val_every=100"])
    cmd = [sys.executable, str(WORKER), str(dataset), str(run), str(out), *sets, "--fail-rank", "1", "--fail-step", "3", "--nproc", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 1, proc.stderr
    # The bug's traceback once, then one line; rank 0's own failure (its peer gone) is not told.
    assert proc.stderr.rstrip().splitlines()[-1] == "error: rank 1: RuntimeError: injected failure at step 3", proc.stderr
    assert proc.stderr.count("error:") == 1 and proc.stderr.count("Traceback") == 1, proc.stderr
    assert not out.exists()  # neither rank finished
    assert ckpt_io.load(run / "checkpoints" / "last.ckpt").step == 2  # the last good one is kept


def test_bad_input_under_nproc_is_one_line_and_status_2(tmp_path: Path, bin_dir: Path) -> None:
    from tests.rave_model.datasets import tiny_examples, write_dataset

    ds = write_dataset(tmp_path / "ds", tiny_examples(6))
    run = tmp_path / "run"
    proc = subprocess.run(_fit(bin_dir, ds, run, "--nproc", "2", "--set", "train.batch_size=4"), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2, proc.stderr
    # 2 processes x 4 examples need 9: every rank refuses, the launcher says it once.
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: rank ") and "too small for batch size 4: need at least 9" in lines[0]
    assert not run.exists()


@pytest.mark.slow
def test_ranks_that_bring_different_datasets_are_refused(dataset: Path, tmp_path: Path) -> None:
    """Each machine reads its own copy of the dataset: copies that differ are refused."""
    from tests.rave_model.datasets import tiny_examples, write_dataset

    other = write_dataset(tmp_path / "other", tiny_examples(13))
    cmd = [sys.executable, str(WORKER), str(dataset), str(tmp_path / "run"), str(tmp_path / "out"),
           "--rank1-dataset", str(other), "--nproc", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "differs between processes" in lines[0], proc.stderr
    assert "'examples': 12" in lines[0] and "rank 1 has {'examples': 13" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("signal_", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_every_rank_with_a_checkpoint(dataset: Path, tmp_path: Path, bin_dir: Path, signal_: str) -> None:
    """Ctrl-C in a terminal (SIGINT to the foreground process group) or a scheduler's
    SIGTERM to the launcher: the ranks stop after the same step, rank 0 saves, nothing
    is left running. Each rank has a DataLoader worker, which must outlive the signal."""
    import psutil

    from rave_model.train import checkpoint as ckpt_io

    run = tmp_path / "run"
    cmd = _fit(bin_dir, dataset, run, "--nproc", "2", *_sets(["train.vae_steps=1000", "train.log_every=1", "train.num_workers=1"]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = []
        for line in proc.stderr:  # until training runs (or the launcher ends)
            lines.append(line)
            if "vae step 3/1000" in line:
                break
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) == 4, lines  # 2 ranks, a loader worker each
        if signal_ == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
    assert proc.returncode == 130, err
    assert err.rstrip().endswith("interrupted; the last checkpoint is kept"), err
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    ckpt = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert ckpt.stage == "vae" and ckpt.step >= 3 and ckpt.world_size == 2
    assert f"stopped at vae step {ckpt.step}/1000" in err


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
