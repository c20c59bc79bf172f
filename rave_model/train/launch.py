"""``ravemodel fit --nproc N``: N processes on this machine through torch's elastic
launcher (what ``torchrun --standalone --nproc-per-node N`` runs), and a failure told
in one line naming its rank.

torch's launcher starts, watches and stops the processes; a failing process stops
the others; a signal to the launcher (Ctrl-C, a scheduler's SIGTERM) reaches each
process once. What it leaves to the caller, and this module does:

- the worker side of its error files (:func:`exit_with_error`): torch's own
  ``@record`` stamps them to the second and always adds the traceback; here the
  time is exact, so the first failure is told rather than a peer's "connection
  closed" a few milliseconds later, and an error whose message says it all (bad
  input) carries no traceback;
- the parent side (:func:`run_local`): one line for the first failure instead of
  torch's multi-line summary.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from typing import Any, Callable, Mapping, NoReturn, Sequence

INTERRUPTED = 130
# How long the launcher waits for its processes to save and leave after a signal
# before it kills them (a large checkpoint on slow storage takes a while).
SHUTDOWN_S = 120


def exit_with_error(message: str, code: int, traceback: str | None = None) -> NoReturn:
    """End this process with ``code`` after telling ``message`` (one line).

    Under torch's elastic launcher (``TORCHELASTIC_ERROR_FILE`` set) the message goes
    to the error file, which the launcher reports with the rank: N processes then do
    not print N copies. Alone it is printed as ``error: MESSAGE``, after
    ``traceback`` when there is one.
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        info: dict[str, Any] = {"timestamp": time.time()}
        if traceback:
            info["py_callstack"] = traceback
        with open(path, "w") as f:
            json.dump({"message": {"message": message, "extraInfo": info}}, f)
    else:
        if traceback:
            print(traceback.rstrip(), file=sys.stderr)
        print(f"error: {message}", file=sys.stderr)
    leave(code)


def leave(code: int) -> NoReturn:
    """Exit with ``code``. One of several processes leaves with ``os._exit`` once its
    output is flushed: the caller's cleanup has run (checkpoint saved or kept,
    process group destroyed), and a gloo process sometimes aborted during
    interpreter shutdown, adding a line to a one-line report or turning a clean stop
    into a failure."""
    from rave_model.train.distributed import launched

    if not launched():
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def describe(rank: int, exitcode: int, error: Mapping[str, Any] | None) -> str:
    """One line for a failed process: its error file's message, else how it ended."""
    if error:
        return f"rank {rank}: {error['message']}"
    if exitcode < 0:
        import signal

        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"rank {rank} was killed by {name}"
    return f"rank {rank} exited with status {exitcode}"


def first_failure(failures: Mapping[int, Any]) -> tuple[int, Any]:
    """(rank, failure) that came first among torch's ``ProcessFailure`` records.

    Once one process dies its peers fail too ("connection closed by peer"), later:
    the exact time in the error file orders them. A process without one counts from
    when the launcher saw it, a time torch truncates to the whole second, so it
    could sort before the failure that caused it; one the launcher itself stopped
    (SIGTERM) is a consequence, never the cause, and comes last.
    """
    import signal

    def when(item: tuple[int, Any]) -> tuple[bool, float]:
        failure = item[1]
        message = failure.error_file_data.get("message")
        if isinstance(message, dict):
            return False, float(message.get("extraInfo", {}).get("timestamp", failure.timestamp))
        return failure.exitcode == -signal.SIGTERM, float(failure.timestamp)

    return min(failures.items(), key=when)


def run_local(nproc: int, args: Sequence[str], say: Callable[[str], None] | None = None) -> int:
    """Run ``python -u ARGS`` as ``nproc`` processes on this machine; the exit status.

    The processes meet through torch's c10d rendezvous on a free localhost port
    (``torchrun --standalone``); gloo and NCCL traffic stays on the loopback
    interface unless ``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME`` say otherwise.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    say = say or (lambda line: print(line, file=sys.stderr))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    # The processes share the cores: one torch thread pool each the size of its share.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # The launcher's log lines repeat what the one-line report says.
    logging.getLogger("torch.distributed.elastic").addHandler(logging.NullHandler())
    logging.getLogger("torch.distributed.elastic").propagate = False
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
    )
    if hasattr(config, "shutdown_timeout"):  # older torch waits a fixed 30 s
        config.shutdown_timeout = SHUTDOWN_S
    try:
        elastic_launch(config, sys.executable)("-u", *args)
    except (KeyboardInterrupt, SignalException):
        say("interrupted; the last checkpoint is kept")
        return INTERRUPTED
    except ChildFailedError as e:
        if all(f.exitcode == INTERRUPTED for f in e.failures.values()):
            say("interrupted; the last checkpoint is kept")
            return INTERRUPTED
        rank, failure = first_failure(e.failures)
        error = failure.error_file_data.get("message")
        error = error if isinstance(error, dict) else None
        trace = (error or {}).get("extraInfo", {}).get("py_callstack")
        if trace:
            say(trace.rstrip())
        say(f"error: {describe(rank, failure.exitcode, error)}")
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0
