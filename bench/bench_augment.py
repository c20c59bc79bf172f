"""Augmentation throughput, against audiomentations, and prep --augment scaling.

Run: .venv/bin/python bench/bench_augment.py [--seconds 30] [--variants 24] [--no-prep]

1. The default plan (what `prep --augment` applies) in audio seconds per wall
   second on ONE core, and audiomentations (PitchShift + TimeStretch + Gain,
   same ranges and probabilities) on the same audio in the same run. Target:
   ratio >= 1. A second line applies pitch + stretch + gain always (p = 1) on
   both sides: the like-for-like cost of the three shared effects.
2. `ravedata prep --augment` with --jobs 2 vs --jobs 1 on the same input.
   Target: >= 1.7x (needs two idle cores; the figure is noisy on a busy machine).

audiomentations is a bench-only dependency (`pip install -e ".[bench]"`).
"""
from __future__ import annotations

import os

# One core for the library comparison; set before numpy/pedalboard load.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rave_data.augment import default_plan, parse_plan, variant_rng  # noqa: E402
from tests.audio import concat, noise, write  # noqa: E402

SR = 44100


def voice_like(seconds: float, sr: int = SR) -> np.ndarray:
    """[1, n] a sung-vowel stand-in: harmonics with vibrato, breaths of noise between phrases."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 180.0 * (1 + 0.02 * np.sin(2 * np.pi * 5.5 * t)) * (1 + 0.2 * np.sin(2 * np.pi * 0.1 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum((0.5 / k) * np.sin(k * phase) for k in range(1, 12))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * t) ** 2
    x = (0.4 * x * env).astype(np.float32)[None]
    return concat(x, noise(0.5, sr, amp=0.02))


def rates(fns: list, x: np.ndarray, n: int) -> list[float]:
    """Audio seconds (of input) per wall second of each function over ``n`` calls.

    Calls are interleaved (a, b, a, b, ...) so that load from other processes
    on a shared machine weighs on both sides alike.
    """
    spent = [0.0] * len(fns)
    for fn in fns:
        fn(x, 0)  # warm-up: imports, plugin load, FFT plans
    for i in range(n):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn(x, i + 1)
            spent[k] += time.perf_counter() - t
    return [n * x.shape[1] / SR / s for s in spent]


def bench_library(seconds: float, variants: int) -> None:
    from audiomentations import Compose, Gain, PitchShift, TimeStretch

    x = voice_like(seconds)
    plan = default_plan()
    forced = parse_plan({"steps": [
        {"name": "pitch_shift", "params": {"semitones": [-2.0, 2.0]}},
        {"name": "time_stretch", "params": {"rate": [0.9, 1.1]}},
        {"name": "gain", "params": {"db": [-6.0, 3.0]}},
    ]})
    prob = {s.name: s.probability for s in plan.steps}

    def theirs(p_pitch: float, p_stretch: float, p_gain: float):
        aug = Compose([
            PitchShift(min_semitones=-2.0, max_semitones=2.0, p=p_pitch),
            TimeStretch(min_rate=0.9, max_rate=1.1, leave_length_unchanged=False, p=p_stretch),
            Gain(min_gain_db=-6.0, max_gain_db=3.0, p=p_gain),
        ])

        def run(a: np.ndarray, i: int) -> np.ndarray:
            random.seed(i)  # audiomentations draws from the global generators
            np.random.seed(i)
            return aug(samples=a, sample_rate=SR)
        return run

    def ours(p):
        return lambda a, i: p.sample(variant_rng(0, "bench", i)).apply(a, SR)

    print(f"augmentation throughput, {seconds:g} s mono at {SR} Hz x {variants} variants, one core "
          f"(audio s / wall s; target ratio >= 1)")
    for label, mine, base in (
        ("default plan vs audiomentations (same probabilities)", ours(plan),
         theirs(prob["pitch_shift"], prob["time_stretch"], prob["gain"])),
        ("pitch + stretch + gain always (p = 1), both sides", ours(forced), theirs(1.0, 1.0, 1.0)),
    ):
        a, b = rates([mine, base], x, variants)
        print(f"  {label}:\n    ravedata {a:8.1f}   audiomentations {b:8.1f}   ratio {a / b:5.2f}x")


def bench_prep(files: int, seconds: float, variants: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_augment_"))
    try:
        rng = np.random.default_rng(0)
        for i in range(files):
            write(tmp / "in" / f"take{i:02d}.wav", voice_like(seconds * rng.uniform(0.8, 1.2)), SR)
        walls, cpus = {}, {}
        for jobs in (1, 2):
            out = tmp / f"out{jobs}"
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run([str(Path(sys.executable).parent / "ravedata"), "prep", str(tmp / "in"), str(out),
                            "--sr", str(SR), "--augment", "--variants", str(variants), "--jobs", str(jobs), "--quiet"],
                           check=True)
            walls[jobs] = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[jobs] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        audio = files * seconds * (1 + variants)
        print(f"prep --augment, {files} files x ~{seconds:g} s, {variants} variants ({audio:.0f} s of output audio); "
              f"target speed-up >= 1.7x")
        for jobs, w in walls.items():
            print(f"  --jobs {jobs}: {w:6.1f} s wall, {cpus[jobs]:6.1f} s CPU, {audio / w:6.1f} audio s / wall s")
        print(f"  speed-up --jobs 2 / --jobs 1: {walls[1] / walls[2]:.2f}x  (cpu count {os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f})")
        # On a shared machine wall time measures the neighbours; CPU time shows
        # the parallel overhead: 2 x wall1 / CPU2 is the speed-up two idle cores would give.
        print(f"  CPU overhead of --jobs 2: {cpus[2] / cpus[1]:.2f}x; speed-up on two idle cores <= "
              f"{2 * cpus[1] / cpus[2]:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the test signal")
    ap.add_argument("--variants", type=int, default=24, help="chains applied per side")
    ap.add_argument("--no-prep", action="store_true", help="skip the prep --jobs scaling run")
    ap.add_argument("--prep-files", type=int, default=8)
    ap.add_argument("--prep-seconds", type=float, default=20.0)
    ap.add_argument("--prep-variants", type=int, default=4)
    args = ap.parse_args()
    bench_library(args.seconds, args.variants)
    if not args.no_prep:
        bench_prep(args.prep_files, args.prep_seconds, args.prep_variants)


if __name__ == "__main__":
    main()
