"""How a failing training process is reported, so that the failure that came first
is told once, with its rank, however many processes there are.

Worker side: :func:`worker_errors` wraps the training call; on an exception it
writes a small JSON report (rank, time, type, message, traceback) to
``$RAVE_DIST_ERROR_DIR/rank<R>.json`` when started by our ``--nproc`` launcher, or to
torchrun's ``TORCHELASTIC_ERROR_FILE`` under torchrun.

Launcher side: :func:`first_failure` picks the earliest report (once one rank dies
its peers fail too, "connection closed by peer", later), or the earliest abnormal
exit when no report was written (a process killed by a signal).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from rave_model.train.distributed import own_rank

# Set by rave_model.train.launch: where its workers write their reports.
ERROR_DIR_ENV = "RAVE_DIST_ERROR_DIR"

# The exit status of a worker stopped by Ctrl-C after saving (128 + SIGINT).
INTERRUPTED = 130


@dataclass(frozen=True)
class RankFailure:
    """The failure that stopped a launch."""

    rank: int
    returncode: int
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    expected: bool = False  # bad input or divergence: the message says it all

    def describe(self) -> str:
        """One line: which rank failed and why."""
        if self.message is not None:
            return f"rank {self.rank} failed: {self.error_type}: {self.message}"
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"rank {self.rank} was killed by {name}"
        return f"rank {self.rank} exited with status {self.returncode}"


def _error_report(exc: BaseException, rank: int, expected: bool) -> dict[str, Any]:
    text = str(exc).strip()
    return {
        "rank": rank,
        "time": time.time(),
        "type": type(exc).__name__,
        "message": text.splitlines()[0] if text else type(exc).__name__,
        # An expected error (bad input, divergence) is explained by its message;
        # anything else is a bug, whose traceback the launcher shows.
        "expected": expected,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def record_error(exc: BaseException, expected: bool = False) -> None:
    """Write this rank's failure where the launcher looks for it.

    Under our launcher: ``$RAVE_DIST_ERROR_DIR/rank<R>.json``. Under torchrun: its
    ``TORCHELASTIC_ERROR_FILE``, so torchrun's failure summary shows our error too.
    The write is atomic, so a launcher never reads half a report.
    """
    rank = own_rank()
    err_dir = os.environ.get(ERROR_DIR_ENV)
    if err_dir:
        path = Path(err_dir) / f"rank{rank}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_error_report(exc, rank, expected)))
        os.replace(tmp, path)
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(exc)


def under_launcher() -> bool:
    """True in a process started by :func:`rave_model.train.launch.launch_local`."""
    return bool(os.environ.get(ERROR_DIR_ENV))


@contextlib.contextmanager
def worker_errors(expected: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Record any exception escaping the block (see :func:`record_error`).

    Under our launcher the process then exits with status 1 without printing: the
    launcher reports the first failure once, naming its rank, instead of N processes
    printing N errors (most of them "peer closed the connection"). Elsewhere (a
    single process, torchrun) the exception goes on to the caller's handler.
    ``expected``: error types whose one-line message says it all (no traceback).
    Ctrl-C and ``SystemExit(0)`` are not failures.
    """
    try:
        yield
    except KeyboardInterrupt:
        raise
    except SystemExit as e:
        if e.code not in (0, None):
            record_error(e, expected=True)
            if under_launcher():
                exit_now(e.code if isinstance(e.code, int) else 1)
        raise
    except BaseException as e:
        record_error(e, expected=isinstance(e, expected))
        if under_launcher():
            exit_now(1)
        raise


def exit_now(code: int) -> None:
    """End a distributed worker process without running interpreter shutdown.

    Called once the worker's own cleanup has run (the block that failed or finished
    has unwound: checkpoint saved or not needed, TensorBoard closed, loader workers
    joined, process group destroyed). Now and then a gloo worker aborted during
    interpreter shutdown ("terminate called without an active exception": a C++
    thread destroyed while joinable), which added a line to a one-line error report
    or turned a clean stop into a failure. There is nothing left for shutdown to do,
    so the worker flushes its output and leaves with ``os._exit``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _read_reports(error_dir: Path) -> list[dict]:
    reports = []
    for p in error_dir.glob("rank*.json"):
        try:
            reports.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue  # a report being written as we looked; the exit code still counts
    return reports


def first_failure(error_dir: Path, exits: Mapping[int, tuple[float, int]]) -> RankFailure | None:
    """The failure that came first: the earliest recorded error report, else the
    earliest abnormal exit. ``exits`` maps rank -> (time seen, return code).

    Once one rank dies, its peers fail too ("connection closed by peer"); those
    reports come later, so the earliest names the cause.
    """
    reports = sorted(_read_reports(error_dir), key=lambda r: r.get("time", float("inf")))
    if reports:
        r = reports[0]
        rank = int(r.get("rank", -1))
        return RankFailure(
            rank=rank,
            returncode=exits.get(rank, (0.0, 1))[1] or 1,
            error_type=r.get("type"),
            message=r.get("message"),
            traceback=r.get("traceback"),
            expected=bool(r.get("expected", False)),
        )
    bad = sorted((t, rank, rc) for rank, (t, rc) in exits.items() if rc not in (0, INTERRUPTED))
    if bad:
        _, rank, rc = bad[0]
        return RankFailure(rank=rank, returncode=rc)
    return None
