"""Training speed on this machine: steps/s of stage 1 (VAE) and stage 2
(adversarial) for the `small` preset, against `v1` at batch 8 (the paper's
model; acids-rave reports about 0.30 steps/s for it on a laptop CPU) measured
in the same run.

    .venv/bin/python bench/bench_train.py [--threads 1,2] [--steps 4] [--device cpu] [--presets small,v1]

Every number comes from this run: a synthetic LMDB dataset is written to a
temporary folder, each stage is built through the real Stage classes and
timed over ``--steps`` steps after one warm-up step (data loading included,
as in training, through the real DataLoader stream). Printed per row: steps/s,
audio-seconds trained per wall-second, CPU seconds per step, and the ratios to
the v1 row (by wall time and by CPU time: on a shared machine the CPU ratio is
the steadier one).
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


def time_stage(preset: str, stage_name: str, dataset: Path, steps: int, device: str, overrides: list[str]) -> tuple[float, float]:
    """(steps per wall second, CPU seconds per step) of ``stage_name`` for
    ``preset``, after warm-up. CPU time is what a busy shared machine does not
    inflate (other jobs delay us but do not add to our CPU time)."""
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
        t0, c0 = time.perf_counter(), time.process_time()
        for step in range(steps):
            batch, _ = next(batches)
            stage.train_step(batch, step)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return steps / (time.perf_counter() - t0), (time.process_time() - c0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="2", help="torch threads; a comma list runs each (e.g. 1,2)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", default="small,v1")
    args = ap.parse_args()

    import torch

    from rave_model.config import load_config

    threads = [int(t) for t in args.threads.split(",")]
    print(f"torch {torch.__version__}, device {args.device}, batch 8, {args.steps} timed steps per row")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        datasets = {}
        for i, preset in enumerate(args.presets.split(",")):
            cfg = load_config(preset)
            datasets[preset] = (cfg, write_dataset(Path(tmp) / f"{i}-{preset}", cfg.data.sr, 2 * cfg.data.n_signal, 10))
        for n in threads:
            torch.set_num_threads(n)
            for preset, (cfg, ds) in datasets.items():
                for stage in ("vae", "adversarial"):
                    rate, cpu = time_stage(preset, stage, ds, args.steps, args.device, ["train.batch_size=8"])
                    audio = rate * 8 * cfg.data.n_signal / cfg.data.sr
                    rows.append((n, preset, stage, rate, audio, cpu))
                    print(f"  measured {n} thr {preset:6s} {stage:12s} {rate:7.3f} steps/s  {cpu:6.2f} CPU s/step", flush=True)
    base = {(n, stage): (rate, cpu) for n, preset, stage, rate, _, cpu in rows if preset == "v1"}
    print()
    print(f"{'threads':>7s}  {'preset':8s}{'stage':13s}{'steps/s':>9s}{'audio s/s':>11s}{'CPU s/step':>12s}{'vs v1 (wall)':>14s}{'vs v1 (CPU)':>13s}")
    for n, preset, stage, rate, audio, cpu in rows:
        b = base.get((n, stage))
        wall = f"{rate / b[0]:.2f}x" if b else "-"
        cpu_ratio = f"{b[1] / cpu:.2f}x" if b else "-"
        print(f"{n:7d}  {preset:8s}{stage:13s}{rate:9.3f}{audio:11.2f}{cpu:12.2f}{wall:>14s}{cpu_ratio:>13s}")
    print("\nreference: acids-rave v1 on a laptop CPU, batch 8: about 0.30 steps/s")


if __name__ == "__main__":
    main()
