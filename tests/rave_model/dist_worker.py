"""A toy training worker for tests/rave_model/test_distributed.py.

It uses rave_model.train.distributed as the real training loop does: set-up from the
environment, DDP wrapping, the training sampler's per-rank slices (rescaled when a
checkpoint of N processes resumes with M), metric all-reduce, a stop flag,
rank-0-only checkpoints (atomic), and failure recording. Each rank also dumps what the test checks: the indices it read, its final
weights, the reduced metrics, and the addresses it listens on.

    python dist_worker.py OUT --steps 6 [--resume CKPT] [--fail-rank 1 --fail-step 3]
                                        [--stop-rank 1 --stop-step 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from rave_model.data import ResumableBatchSampler
from rave_model.train import distributed as dist
from rave_model.train.failures import worker_errors
from rave_model.train.stage import DataPosition

N_EXAMPLES = 48
GLOBAL_BATCH = 12


def listening_addresses() -> list[str]:
    import psutil

    conns = psutil.Process().net_connections(kind="inet")
    return sorted({c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN})


def train(out: Path, steps: int, resume: Path | None, fail_rank: int, fail_step: int,
          stop_rank: int = -1, stop_step: int = -1, differ: bool = False) -> None:
    ctx = dist.setup("cpu")
    # The data each rank brings must agree (a rank-dependent size when asked to differ).
    dist.require_same("the toy data", N_EXAMPLES + (ctx.rank if differ else 0))
    # Different initial weights per rank: DDP must copy rank 0's to all.
    torch.manual_seed(1000 + ctx.rank)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step, epoch, offset, saved_world = 0, 0, 0, 1
    if resume is not None:
        state = torch.load(resume, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, epoch, offset, saved_world = state["step"], state["epoch"], state["offset"], state["world_size"]
    ddp = dist.wrap_model(model)

    g = torch.Generator().manual_seed(0)
    xs = torch.randn(N_EXAMPLES, 3, generator=g)
    ys = (xs**2).sum(1, keepdim=True)
    # Per-process batch chosen so the global batch stays GLOBAL_BATCH: then any
    # number of processes takes the same optimisation steps as one.
    batch = GLOBAL_BATCH // ctx.world_size
    offset = dist.rescale_offset(offset, saved_world, ctx.world_size, batch)
    sampler = ResumableBatchSampler(np.arange(N_EXAMPLES), batch, seed=7, start=DataPosition(epoch, offset),
                                    rank=ctx.rank, world_size=ctx.world_size)
    per_epoch = sampler.batches_per_epoch * batch
    seen: list[int] = []
    metrics: list[dict[str, float]] = []
    for draws in sampler:
        if step >= steps:
            break
        idx = [d[0] for d in draws]
        seen.extend(idx)
        if ctx.rank == fail_rank and step == fail_step:
            raise RuntimeError(f"injected failure at step {step}")
        loss = torch.nn.functional.mse_loss(ddp(xs[idx]), ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        epoch, offset = draws[-1][1], draws[-1][2] + 1
        if offset >= per_epoch:
            epoch, offset = epoch + 1, 0
        metrics.append(dist.reduce_mean({"loss": loss.item(), "rank": float(ctx.rank)}))
        if dist.is_main():
            ckpt = {"model": dist.unwrap_model(ddp).state_dict(), "opt": opt.state_dict(),
                    "step": step, "epoch": epoch, "offset": offset, "world_size": ctx.world_size}
            tmp = out / "ckpt.pt.tmp"
            torch.save(ckpt, tmp)
            os.replace(tmp, out / "ckpt.pt")  # atomic: a killed run keeps the last good one
            (out / f"main_only.{ctx.rank}").write_text(str(step))
        # One rank asks to stop (as Ctrl-C would); all must leave at the same step.
        if dist.any_rank(ctx.rank == stop_rank and step == stop_step):
            break

    flat = torch.cat([p.detach().flatten() for p in dist.unwrap_model(ddp).parameters()])
    (out / f"rank{ctx.rank}.json").write_text(json.dumps({
        "seen": seen, "weights": flat.tolist(), "metrics": metrics,
        "listening": listening_addresses(), "world_size": ctx.world_size, "step": step,
    }))
    dist.teardown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--resume", type=Path)
    ap.add_argument("--fail-rank", type=int, default=-1)
    ap.add_argument("--fail-step", type=int, default=-1)
    ap.add_argument("--stop-rank", type=int, default=-1)
    ap.add_argument("--stop-step", type=int, default=-1)
    ap.add_argument("--differ", action="store_true")
    a = ap.parse_args()
    try:
        with worker_errors():
            train(a.out, a.steps, a.resume, a.fail_rank, a.fail_step, a.stop_rank, a.stop_step, a.differ)
    except Exception as e:
        print(f"error (rank {dist.current().rank}): {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
