"""Start N training processes on this machine (``ravemodel fit --nproc N``).

What torchrun does for one machine, without its network rendezvous: each process is
the same command with torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``) set, so the training code cannot tell the two apart. The
processes meet through a file (``RAVE_DIST_STORE``, a torch FileStore) and gloo/NCCL
are told to use the loopback interface: nothing listens beyond this machine.

When one process fails, the others are stopped (they would otherwise wait in a
collective for the dead peer, NCCL for a long time), and the failure that came
first, with its rank, is reported. Checkpoints are written atomically by rank 0, so
the last good one survives the stop.

This module does not import torch: the parent only starts and watches processes.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rave_model.train.distributed import STORE_ENV, launched
from rave_model.train.failures import ERROR_DIR_ENV, INTERRUPTED, RankFailure, first_failure


@dataclass(frozen=True)
class LaunchResult:
    returncode: int  # 0 when every rank finished cleanly
    failure: RankFailure | None = None
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM, checkpoint saved


def worker_env(rank: int, nproc: int, store: Path, error_dir: Path, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of local process ``rank`` of ``nproc``: torchrun's variables
    plus the file rendezvous and the loopback-only network settings."""
    env = dict(base)
    env.update(
        RANK=str(rank),
        WORLD_SIZE=str(nproc),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(nproc),
        GROUP_RANK="0",
        MASTER_ADDR="127.0.0.1",
        **{STORE_ENV: str(store), ERROR_DIR_ENV: str(error_dir)},
    )
    # gloo and NCCL's bootstrap bind their sockets to this interface's address only.
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    # N processes share the cores: one torch thread pool each the size of its share,
    # unless the user chose (torchrun does the same with OMP_NUM_THREADS=1).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def _stop(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM the processes still running, SIGKILL those still there after ``grace_s``."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        left = max(0.0, deadline - time.monotonic())
        try:
            p.wait(timeout=left)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch_local(
    cmd: Sequence[str],
    nproc: int,
    env: Mapping[str, str] | None = None,
    peer_grace_s: float = 10.0,
    kill_grace_s: float = 10.0,
    poll_s: float = 0.05,
) -> LaunchResult:
    """Run ``cmd`` as ``nproc`` cooperating processes on this machine and wait for them.

    When a process fails, its peers get ``peer_grace_s`` to fail on their own (gloo
    notices a dead peer at once and they record why), then are terminated. Ctrl-C
    reaches every process of the terminal's group; the parent waits for them to save
    and leave, and stops any that linger. SIGTERM (a scheduler ending the job) is
    passed on to the workers as SIGINT, so they save too. A worker that exits with
    status 130 was interrupted, which is not a failure.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, not {nproc}")
    base = dict(os.environ if env is None else env)
    tmp = Path(tempfile.mkdtemp(prefix="ravemodel-dist-"))
    error_dir = tmp / "errors"
    error_dir.mkdir()
    store = tmp / "store"  # created and removed by the workers' FileStore
    procs: list[subprocess.Popen] = []
    exits: dict[int, tuple[float, int]] = {}

    def forward_term(signum: int, frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, forward_term)
    try:
        for rank in range(nproc):
            procs.append(subprocess.Popen(list(cmd), env=worker_env(rank, nproc, store, error_dir, base)))
        failed_at: float | None = None
        grace = peer_grace_s
        while len(exits) < nproc:
            for rank, p in enumerate(procs):
                if rank not in exits and (rc := p.poll()) is not None:
                    exits[rank] = (time.monotonic(), rc)
                    if rc != 0 and failed_at is None:
                        failed_at = time.monotonic()
                        # An interrupted rank: the others are saving and leaving at
                        # the same step; give rank 0 time to write a large checkpoint.
                        grace = peer_grace_s * (6 if rc == INTERRUPTED else 1)
            if failed_at is not None and time.monotonic() - failed_at > grace:
                _stop(procs, kill_grace_s)
                for rank, p in enumerate(procs):
                    exits.setdefault(rank, (time.monotonic(), p.returncode))
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        # The workers got the same SIGINT: give them time to write their checkpoint.
        deadline = time.monotonic() + peer_grace_s + kill_grace_s
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(poll_s)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _stop(procs, kill_grace_s)
        failure = first_failure(error_dir, exits)
        shutil.rmtree(tmp, ignore_errors=True)
    if failure is not None:
        return LaunchResult(failure.returncode if failure.returncode > 0 else 1, failure)
    if any(rc == INTERRUPTED for _, rc in exits.values()):
        return LaunchResult(INTERRUPTED, interrupted=True)
    return LaunchResult(0)


def strip_option(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (the workers must not relaunch)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def relaunch(nproc: int, argv: Sequence[str], say: Callable[[str], None] | None = None) -> int:
    """Run this ``ravemodel`` command line (``sys.argv``) as ``nproc`` local processes.

    Returns the exit status for the parent. A failure is told in one line naming its
    rank (with the traceback when it was not an expected error such as bad input).
    """
    say = say or (lambda line: print(line, file=sys.stderr))
    if launched():
        say("error: --nproc starts processes itself; under torchrun leave it out "
            "(torchrun's --nproc-per-node sets the number)")
        return 1
    cmd = [sys.executable, "-m", "rave_model", *strip_option(argv[1:], "--nproc")]
    try:
        result = launch_local(cmd, nproc)
    except KeyboardInterrupt:
        say("interrupted; the last checkpoint is kept")
        return INTERRUPTED
    if result.interrupted:
        say("interrupted; the last checkpoint is kept")
        return INTERRUPTED
    if result.failure is not None:
        f = result.failure
        if f.traceback and not f.expected:
            say(f.traceback.rstrip())
        say(f"error: {f.describe()}")
    return result.returncode
