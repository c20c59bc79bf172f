"""Training throughput with N processes (``ravemodel fit --nproc N``) against one.

Runs the real command on a generated dataset for each process count and reads the
steps/s that rank 0's progress log reports (timed from the stage's first step, so
process start-up and the dataset check are left out):

    examples/s = steps/s * batch_size * N      (batch_size is per process)

The baseline is one process measured in the same run; the target is linear scaling
(N times the baseline's examples/s). On CPUs the processes share the cores (gloo),
so expect well under N: the number to watch there is that the overhead stays
modest; on N GPUs (``--device cuda``) it should come near N.

    python bench/bench_distributed.py [--preset tiny] [--nproc 2] [--device cpu] [--steps 40]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.rave_model.datasets import tiny_examples, write_dataset  # noqa: E402


def fit_rate(ds: Path, run: Path, preset: str, nproc: int, device: str, steps: int, batch: int) -> float:
    """Steps/s of a fresh ``ravemodel fit`` over ``steps`` steps, as rank 0's progress
    log reports it (timed from the stage's first step: start-up is left out)."""
    cmd = [
        str(Path(sys.executable).parent / "ravemodel"), "fit", str(ds), "--preset", preset, "--run", str(run),
        "--device", device, "--nproc", str(nproc), "--max-steps", str(steps),
        "--set", "train.vae_steps=100000", "--set", f"train.batch_size={batch}",
        "--set", "train.val_every=100000", "--set", "train.ckpt_every=100000", "--set", f"train.log_every={steps}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ravemodel fit failed:\n{proc.stderr}")
    rates = re.findall(r"([0-9.]+) steps/s", proc.stderr)
    if not rates:
        sys.exit(f"no steps/s in the log:\n{proc.stderr}")
    return float(rates[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4, help="per-process batch size")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--sr", type=int, default=16000, help="dataset sample rate (must match the preset)")
    ap.add_argument("--frames", type=int, default=16384, help="samples per example (at least the preset's n_signal)")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // a.nproc)))
    with tempfile.TemporaryDirectory() as tmp:
        ds = write_dataset(Path(tmp) / "ds", tiny_examples(8 * a.batch * a.nproc + 1, sr=a.sr, frames=a.frames), sr=a.sr)
        rates = {}
        for n in (1, a.nproc):
            steps_s = fit_rate(ds, Path(tmp) / f"run{n}", a.preset, n, a.device, a.steps, a.batch)
            rates[n] = steps_s * a.batch * n
            print(f"{a.preset} {a.device} x{n}: {steps_s:.2f} steps/s, {rates[n]:.1f} examples/s")
    speedup = rates[a.nproc] / rates[1]
    print(f"throughput x{a.nproc} / x1 = {speedup:.2f} (linear target {a.nproc}; {speedup / a.nproc:.0%} of it)")


if __name__ == "__main__":
    main()
