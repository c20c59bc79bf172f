"""prep's worker processes: the fork server, the order work starts in, and a
pool that yields results in that order.

Workers are forked from a fork server: a clean, single-threaded process that
imported the pipeline once (:data:`PRELOAD`), so each worker starts with it
loaded. The server is started as early as the command knows it will have
work (:func:`start_worker_server`, from ``ravedata prep``'s entry point and
again from the driver, where it is a no-op when already running), so its
start-up overlaps the parent's own imports and planning.

This module imports neither numpy nor the pipeline: the parent only submits
:class:`~rave_data.prep.job.SourceJob` s and reads back
:class:`~rave_data.prep.job.SourceResult` s.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from rave_data.prep.job import SourceJob, SourceResult, output_name

#: Worker time per input byte relative to PCM, by extension: compressed files
#: are small for their length (the measured ratios are in docs/prep.md,
#: "Scheduling"). Only the order work starts in depends on this.
COST_PER_BYTE = {"flac": 2.5, **dict.fromkeys(("mp3", "ogg", "oga", "opus", "m4a", "aac", "wma", "mp4", "webm"), 30.0)}

#: Each of --jobs workers runs one BLAS thread: N workers x N threads would
#: oversubscribe the cores. Set in the environment the workers inherit
#: (BLAS reads it once, when numpy is first imported).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

#: Imported once by the fork server, so each worker starts already loaded.
PRELOAD = ["rave_data.prep.worker", "rave_data.io.decode", "rave_data.process.resample",
           "rave_data.process.trim", "rave_data.process.loudness", "rave_data.prep.fingerprint",
           "rave_data.io.probe", "soundfile"]
#: Added when variants are written: pedalboard is slow to import, so once in
#: the server rather than once per worker (it starts no thread on import, so
#: forking after it is safe).
PRELOAD_AUGMENT = ["pedalboard", "rave_data.augment", "rave_data.augment.plan", "rave_data.augment.chain"]
#: Added when a source decodes through PyAV first (``av`` is slow to import).
PRELOAD_PYAV = ["av", "rave_data.io.pyav_reader"]


def cores() -> int:
    """Cores this process may run on (a container or taskset may allow fewer
    than the machine has)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def work_estimate(rel: str, size: int) -> float:
    """Rough relative cost of processing a source of ``size`` bytes (PCM = 1
    per byte), for starting the longest work first."""
    return size * COST_PER_BYTE.get(rel.rpartition(".")[2].lower(), 1.0)


def start_order(todo: list[SourceJob], sizes: dict[str, int]) -> list[SourceJob]:
    """The order sources are started *and committed* in: most estimated work
    first, ties in path order (``todo`` comes sorted; the sort is stable).

    Most work first, so that a long file does not start last and run alone at
    the end. Committed in the same order because commits are sequential (each
    waits for the previous source's keys): in start order a result waits only
    for those started before it, which mostly finish sooner, where in path
    order a long file that sorts early would hold every later commit back
    until the last worker is done. The order depends on the sources alone
    (paths, sizes), so the keys are the same whatever ``--jobs``.
    """
    return sorted(todo, key=lambda j: -work_estimate(j.rel, sizes.get(j.rel, 0)))


def start_worker_server(augment: bool = False, pyav: bool = False) -> None:
    """Start the fork server now, without waiting for it: it imports the
    pipeline in the background while this process goes on (opens the LMDB,
    fingerprints the sources), so the pool is ready sooner when there is work.
    A run that then has nothing to do wastes the server's start-up CPU on
    another core, not wall time. A no-op when the server is already running."""
    with _worker_env():
        _context(PRELOAD + (PRELOAD_AUGMENT if augment else []) + (PRELOAD_PYAV if pyav else []))


def _context(preload: list[str] = PRELOAD) -> Any:
    """The multiprocessing context of the workers: forkserver where the
    platform has it, else spawn. Never plain fork: the parent may run threads
    (the progress bar). Call with :data:`WORKER_ENV` set: the server and its
    workers keep the environment it starts with."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    # Returns at once; a no-op when already running (then with the preload it
    # was started with: only a matter of speed).
    forkserver.ensure_running()
    return ctx


@contextmanager
def _worker_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` fresh, started worker processes (see :func:`_context`)."""
    with _worker_env():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context())
        # Start the workers now, while the environment is set.
        try:
            for f in [pool.submit(os.getpid) for _ in range(workers)]:
                f.result()
        except BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return pool


def run_job(job: SourceJob) -> SourceResult:
    """Process one source in a worker. The pool submits this function, by
    reference, so that the parent never imports the pipeline: the workers'
    fork server has it imported already."""
    from rave_data.prep.worker import process_source

    return process_source(job)


def run_in_order(todo: list[SourceJob], jobs: int, done: Callable[[SourceResult], None]) -> Iterator[SourceResult]:
    """Results of ``todo`` in its order, computed by ``jobs`` processes.

    Work is started in ``todo`` order and results are *yielded* in it too,
    whatever order they finish in: that is what makes the keys independent
    of ``--jobs`` (see :func:`start_order`).

    ``done`` is called as each finishes (any order) for the progress bar. A
    worker that dies (a decoder crashing the process) costs only its source:
    unfinished sources are retried one by one in a fresh pool.
    """
    # Even --jobs 1 runs in a separate worker: results must be bit-identical
    # whatever --jobs is, and BLAS (the resampler's matmul) rounds differently
    # with a different thread count, which this process may have.
    if not todo:
        return
    try:
        pool = _worker_pool(min(jobs, len(todo)))
    except BrokenProcessPool:
        # Workers cannot start at all (e.g. a __main__ read from stdin, which
        # multiprocessing cannot re-import): do the work in this process.
        for job in todo:
            result = run_job(job)
            done(result)
            yield result
        return
    ready: dict[int, SourceResult] = {}
    broken: list[int] = []
    next_i = 0
    with pool:
        futures: dict[Future[SourceResult], int] = {pool.submit(run_job, job): i for i, job in enumerate(todo)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                ready[i] = fut.result()
                done(ready[i])
            except BrokenProcessPool:
                broken.append(i)
                continue
            while next_i in ready:
                yield ready.pop(next_i)
                next_i += 1
            if broken:
                break  # finish in order below, after retrying the broken ones
    for i in sorted(broken):
        ready[i] = _isolated(todo[i])
        done(ready[i])
    for i in range(next_i, len(todo)):
        if i not in ready:  # lost when the pool broke: run it alone
            ready[i] = _isolated(todo[i])
            done(ready[i])
        yield ready.pop(i)


def _isolated(job: SourceJob) -> SourceResult:
    """Run one source in its own process; a crash skips it with a reason
    (naming the augmenter when it died augmenting) and removes every file
    the dead worker wrote for it."""
    from rave_data.augment.provenance import crash_reason, marker_path, remove_outputs, remove_temp_audio

    s = job.settings
    names = [output_name(job.rel, s.format)] + [output_name(job.rel, s.format, v) for v in range(1, s.n_variants + 1)]
    marker = marker_path(job.work_dir, job.rel)
    marker.unlink(missing_ok=True)  # left by the first, shared-pool attempt
    # The pool that broke killed its other workers mid-file: their temp files go now, not next run.
    remove_temp_audio(job.out_dir, names)
    with _worker_pool(1) as pool:
        try:
            return pool.submit(run_job, job).result()
        except BrokenProcessPool:
            remove_outputs(job.out_dir, names)
            crash = crash_reason(marker)
            marker.unlink(missing_ok=True)
            if crash is None:
                return SourceResult(job.rel, job.fingerprint, skipped="the decoder crashed (worker process died)")
            return SourceResult(job.rel, job.fingerprint, skipped=crash[0], failed_variants=[crash[1]])
