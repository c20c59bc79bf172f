"""Training speed on this machine: steps/s of stage 1 (VAE) and stage 2
(adversarial) for the `small` preset, against `v1` at batch 8 (the paper's
model; acids-rave reports about 0.30 steps/s for it on a laptop CPU) measured
in the same run.

    .venv/bin/python bench/bench_train.py [--threads 2] [--steps 5] [--device cpu]

Every number comes from this run: a synthetic LMDB dataset is written to a
temporary folder, each stage is built through the real Stage classes and
timed over ``--steps`` steps after one warm-up step (data loading included,
as in training, through the real DataLoader stream). Printed per row: steps/s,
audio-seconds trained per wall-second, and the ratio to the v1 row.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_dataset(folder: Path, sr: int, frames: int, n: int) -> Path:
    import numpy as np

    from tests.rave_model.datasets import write_dataset as write

    rng = np.random.default_rng(0)
    t = np.arange(frames) / sr
    examples = []
    for i in range(n):
        x = 0.4 * np.sin(2 * np.pi * 110 * (1 + i % 5) * t) + 0.05 * rng.standard_normal(frames)
        examples.append(np.round(x * 32767).astype(np.int16)[None])
    return write(folder, examples, sr=sr)


def time_stage(preset: str, stage_name: str, dataset: Path, steps: int, device: str, overrides: list[str]) -> float:
    """Steps per second of ``stage_name`` for ``preset`` (after one warm-up step)."""
    import torch

    from rave_model.config import load_config
    from rave_model.data import TrainData
    from rave_model.model import RAVE
    from rave_model.train.logging import TrainLogger
    from rave_model.train.stage import DataPosition, TrainContext
    from rave_model.train.stages import stage_class

    cfg = load_config(preset, ["train.num_workers=0", *overrides])
    torch.manual_seed(0)
    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as run:
        ctx = TrainContext(cfg=cfg, model=RAVE(cfg).to(dev), device=dev, run_dir=Path(run), data=TrainData(dataset, cfg), logger=TrainLogger(run, enabled=False))
        stage = stage_class(stage_name)(ctx)
        stage.on_start()
        batches = stage.batches(DataPosition())
        # Warm-up, and for stage 2 one discriminator and one decoder step per pair.
        for step in range(2 if stage_name == "adversarial" else 1):
            stage.train_step(next(batches)[0], step)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for step in range(steps):
            batch, _ = next(batches)
            stage.train_step(batch, step)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", default="small,v1")
    args = ap.parse_args()

    import torch

    from rave_model.config import load_config

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}, {args.steps} timed steps per row")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            cfg = load_config(preset, ["train.batch_size=8"])
            ds = write_dataset(Path(tmp) / preset, cfg.data.sr, 2 * cfg.data.n_signal, 10)
            for stage in ("vae", "adversarial"):
                rate = time_stage(preset, stage, ds, args.steps, args.device, ["train.batch_size=8"])
                audio = rate * cfg.train.batch_size * cfg.data.n_signal / cfg.data.sr
                rows.append((preset, stage, rate, audio))
                print(f"  measured {preset:6s} {stage:12s} {rate:7.3f} steps/s", flush=True)
    base = {stage: rate for preset, stage, rate, _ in rows if preset == "v1"}
    print()
    print(f"{'preset':8s}{'stage':13s}{'steps/s':>9s}{'audio s/s':>11s}{'vs v1':>8s}")
    for preset, stage, rate, audio in rows:
        ratio = f"{rate / base[stage]:.2f}x" if stage in base else "-"
        print(f"{preset:8s}{stage:13s}{rate:9.3f}{audio:11.2f}{ratio:>8s}")
    print("\nreference: acids-rave v1 on a laptop CPU, batch 8: about 0.30 steps/s")


if __name__ == "__main__":
    main()
