"""A training process for tests/rave_model/test_distributed.py: what ``ravemodel fit``
runs in each process, plus what the tests compare between ranks.

    python dist_worker.py DATASET RUN OUT [--set KEY=VALUE ...] [--max-steps N]
                          [--fail-rank R --fail-step S] [--rank1-dataset PATH] [--nproc N]

Each rank calls :func:`rave_model.train.runner.fit` and saves its final model state
to ``OUT/rank<R>.pt``. Started by torchrun, or with ``--nproc N`` by itself through
:func:`rave_model.train.launch.run_local`, as ``ravemodel fit --nproc N`` starts its
processes. ``--fail-rank``/``--fail-step``: that rank raises at that step (from its
logger's per-step call). ``--rank1-dataset``: rank 1 reads another dataset, as a
machine with a different copy would.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from rave_model.train.distributed import ranks_from_env
from rave_model.train.launch import exit_with_error, leave, run_local


def train(a: argparse.Namespace) -> None:
    import torch

    from rave_model.train.logging import TrainLogger
    from rave_model.train.runner import fit

    rank = ranks_from_env()[0]

    class Logger(TrainLogger):
        def step(self, step: int, losses: dict[str, float]) -> None:
            if rank == a.fail_rank and step == a.fail_step:
                raise RuntimeError(f"injected failure at step {step}")
            super().step(step, losses)

    dataset = a.rank1_dataset if rank == 1 and a.rank1_dataset else a.dataset
    logger = Logger(a.run, enabled=rank == 0)
    result = fit(dataset, a.run, preset="tiny", overrides=a.set, device="cpu", stop_after=a.max_steps, logger=logger)
    a.out.mkdir(parents=True, exist_ok=True)
    torch.save({"model": result.model.state_dict(), "done": result.done}, a.out / f"rank{rank}.pt")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", type=Path)
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--fail-rank", type=int, default=-1)
    ap.add_argument("--fail-step", type=int, default=-1)
    ap.add_argument("--rank1-dataset", type=Path)
    ap.add_argument("--nproc", type=int, default=1)
    a = ap.parse_args()
    if a.nproc > 1:
        argv = sys.argv[1:]
        i = argv.index("--nproc")
        sys.exit(run_local(a.nproc, [__file__, *argv[:i], *argv[i + 2 :]]))
    try:
        train(a)
    except ValueError as exc:
        exit_with_error(str(exc), 2)
    except Exception as exc:
        exit_with_error(f"{type(exc).__name__}: {exc}", 1, traceback.format_exc())
    leave(0)


if __name__ == "__main__":
    main()
