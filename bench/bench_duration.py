"""Benchmark ``ravedata duration`` against a decode-every-file count.

Generates N short WAV files (default 10,000, in 20 folders), then times, in
the same run and on the same (warm) files:

- ours: the real command ``ravedata duration DIR --json`` in a subprocess,
  start-up included (best of ``--repeat`` runs);
- baseline: what the old tool did, ``soundfile.read`` every file and sum
  ``len / sr`` (one pass, in this process, so no start-up is charged to it).

Prints audio-seconds per wall-second for both, the speed-up and the targets
(>= 50x faster, < 3 s in all). Both must agree on the total duration.

Why the files' length matters: the baseline's cost grows with the audio in
each file, ours does not (it reads 44-byte headers). ``--seconds`` sets the
length of each file, so the crossover can be measured:

    .venv/bin/python bench/bench_duration.py                 # 10,000 x 5 s
    .venv/bin/python bench/bench_duration.py --seconds 1     # shorter files
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RAVEDATA = Path(sys.executable).parent / "ravedata"
TARGET_SPEEDUP = 50.0
TARGET_SECONDS = 3.0


def generate(folder: Path, files: int, seconds: float, sr: int, seed: int = 0) -> float:
    """Write ``files`` mono PCM_16 WAVs of about ``seconds`` each (lengths
    vary by +-20 % so the histogram has something to show); returns the total."""
    rng = np.random.default_rng(seed)
    # One noise buffer sliced per file: generation must not dominate the bench.
    longest = int(seconds * 1.2 * sr) + 1
    pool = (0.1 * rng.standard_normal(longest)).astype(np.float32)
    lengths = (seconds * sr * rng.uniform(0.8, 1.2, files)).astype(int)
    for i, n in enumerate(lengths):
        path = folder / f"set{i % 20:02d}" / f"take{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), pool[:n], sr, subtype="PCM_16")
    return float(lengths.sum()) / sr


def run_ours(folder: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = subprocess.run([str(RAVEDATA), "duration", str(folder), "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"ravedata duration failed: {out.stderr.strip()}")
    return wall, json.loads(out.stdout)


def run_baseline(folder: Path) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    total, n = 0.0, 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if name.endswith(".wav"):
                data, sr = sf.read(os.path.join(dirpath, name))
                total += len(data) / sr
                n += 1
    return time.perf_counter() - t0, n, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0, help="mean length of each file")
    ap.add_argument("--sr", type=int, default=44100)
    ap.add_argument("--repeat", type=int, default=3, help="runs of ours; the best counts")
    ap.add_argument("--dir", type=Path, default=None, help="keep the files here (reused when present)")
    args = ap.parse_args()

    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_duration_")
        folder = Path(tmp.name)
    else:
        folder = args.dir
    marker = folder / f".generated-{args.files}-{args.seconds}-{args.sr}"
    t0 = time.perf_counter()
    if marker.exists():
        expected = float(marker.read_text())
    else:
        expected = generate(folder, args.files, args.seconds, args.sr)
        marker.write_text(repr(expected))
    print(f"files: {args.files} x ~{args.seconds:g} s at {args.sr} Hz = {expected:.0f} s of audio "
          f"(ready in {time.perf_counter() - t0:.1f} s)")

    ours_walls = []
    for _ in range(args.repeat):
        wall, data = run_ours(folder)
        ours_walls.append(wall)
    ours = min(ours_walls)
    base, n, base_total = run_baseline(folder)

    assert data["found"] == n == args.files, (data["found"], n)
    assert abs(data["total_seconds"] - base_total) < 1e-6 * base_total + 1e-3, (data["total_seconds"], base_total)
    speedup = base / ours
    print(f"ours     (ravedata duration, subprocess): {ours:6.3f} s  "
          f"{expected / ours:12,.0f} audio-s/s   runs: {', '.join(f'{w:.3f}' for w in ours_walls)}")
    print(f"baseline (soundfile.read every file)    : {base:6.3f} s  {expected / base:12,.0f} audio-s/s")
    print(f"speed-up: {speedup:.1f}x (target >= {TARGET_SPEEDUP:g}x: {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}); "
          f"ours in all: {ours:.2f} s (target < {TARGET_SECONDS:g} s: {'met' if ours < TARGET_SECONDS else 'NOT met'})")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
