"""Benchmark ``ravedata duration`` against a decode-every-file count.

Generates N short WAV files (default 10,000, in 20 folders), then times, in
the same run and on the same (warm) files:

- ours: the real command ``ravedata duration DIR --json`` in a subprocess,
  start-up included (best of ``--repeat`` runs);
- baseline: the straightforward count, ``soundfile.read`` every file and sum
  ``len / sr`` (one pass, in this process, so no start-up is charged to it).

Prints audio-seconds per wall-second for both, the speed-up and the targets
(>= 50x faster, < 3 s in all). Both must agree on the total duration.

Why the files' length matters: the baseline's cost grows with the audio in
each file, ours does not (it reads 44-byte headers). ``--seconds`` sets the
length of each file, so the crossover can be measured:

    .venv/bin/python bench/bench_duration.py                 # 10,000 x 5 s
    .venv/bin/python bench/bench_duration.py --seconds 1     # shorter files
    .venv/bin/python bench/bench_duration.py --seconds 30 --distinct 500   # long files, hard links
    .venv/bin/python bench/bench_duration.py --cold          # files not in the page cache

Both wall and CPU time are printed: on a shared machine the wall-clock ratio
swings with the load (reported), the CPU-time ratio much less.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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


def generate(folder: Path, files: int, seconds: float, sr: int, distinct: int, seed: int = 0) -> float:
    """Write ``files`` mono PCM_16 WAVs of about ``seconds`` each (lengths
    vary by +-20 % so the histogram has something to show); returns the total.

    Only ``distinct`` of them are written; the others are hard links to
    those (distinct paths, so both sides open and read every one of them),
    which keeps long-file runs within the disk.
    """
    rng = np.random.default_rng(seed)
    # One noise buffer sliced per file: generation must not dominate the bench.
    longest = int(seconds * 1.2 * sr) + 1
    pool = (0.1 * rng.standard_normal(longest)).astype(np.float32)
    lengths = (seconds * sr * rng.uniform(0.8, 1.2, distinct)).astype(int)
    total = 0
    for i in range(files):
        path = folder / f"set{i % 20:02d}" / f"take{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        n = lengths[i % distinct]
        if i < distinct:
            sf.write(str(path), pool[:n], sr, subtype="PCM_16")
        else:
            j = i % distinct
            os.link(folder / f"set{j % 20:02d}" / f"take{j:05d}.wav", path)
        total += int(n)
    return total / sr


def evict(folder: Path) -> None:
    """Drop the files' pages from the page cache (``--cold``): only these
    files, unlike dropping every cache on a shared machine."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_ours(folder: Path) -> tuple[float, float, dict]:
    """(wall s, CPU s, JSON) of one real ``ravedata duration`` run."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    out = subprocess.run([str(RAVEDATA), "duration", str(folder), "--json"], capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if out.returncode != 0:
        raise SystemExit(f"ravedata duration failed: {out.stderr.strip()}")
    return wall, cpu, json.loads(out.stdout)


def run_baseline(folder: Path) -> tuple[float, float, int, float]:
    """(wall s, CPU s, files, total seconds) decoding every file."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    total, n = 0.0, 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if name.endswith(".wav"):
                data, sr = sf.read(os.path.join(dirpath, name))
                total += len(data) / sr
                n += 1
    return time.perf_counter() - t0, time.process_time() - cpu0, n, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0, help="mean length of each file")
    ap.add_argument("--sr", type=int, default=44100)
    ap.add_argument("--repeat", type=int, default=3, help="runs of ours; the best counts")
    ap.add_argument("--cold", action="store_true",
                    help="evict the files from the page cache before every timed run (first-run conditions)")
    ap.add_argument("--distinct", type=int, default=None,
                    help="write only this many distinct files, hard-link the rest (default: all distinct)")
    ap.add_argument("--dir", type=Path, default=None, help="keep the files here (reused when present)")
    args = ap.parse_args()

    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_duration_")
        folder = Path(tmp.name)
    else:
        folder = args.dir
    distinct = min(args.distinct or args.files, args.files)
    marker = folder / f".generated-{args.files}-{args.seconds}-{args.sr}-{distinct}"
    t0 = time.perf_counter()
    if marker.exists():
        expected = float(marker.read_text())
    else:
        expected = generate(folder, args.files, args.seconds, args.sr, distinct)
        marker.write_text(repr(expected))
    print(f"files: {args.files} ({distinct} distinct) x ~{args.seconds:g} s at {args.sr} Hz = "
          f"{expected:.0f} s of audio (ready in {time.perf_counter() - t0:.1f} s); "
          f"page cache: {'cold' if args.cold else 'warm'}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    def prepare() -> None:
        if args.cold:
            evict(folder)

    runs = []
    for _ in range(args.repeat):
        prepare()
        runs.append(run_ours(folder))
    ours, ours_cpu, data = min(runs, key=lambda r: r[0])
    prepare()
    base, base_cpu, n, base_total = run_baseline(folder)

    assert data["found"] == n == args.files, (data["found"], n)
    assert abs(data["total_seconds"] - base_total) < 1e-6 * base_total + 1e-3, (data["total_seconds"], base_total)
    speedup = base / ours
    print(f"ours     (ravedata duration, subprocess): {ours:6.3f} s wall {ours_cpu:6.3f} s CPU "
          f"{expected / ours:12,.0f} audio-s/s   runs: {', '.join(f'{r[0]:.3f}' for r in runs)}")
    print(f"baseline (soundfile.read every file)    : {base:6.3f} s wall {base_cpu:6.3f} s CPU "
          f"{expected / base:12,.0f} audio-s/s")
    print(f"speed-up: {speedup:.1f}x wall, {base_cpu / ours_cpu:.1f}x CPU "
          f"(target >= {TARGET_SPEEDUP:g}x: {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}); "
          f"ours in all: {ours:.2f} s (target < {TARGET_SECONDS:g} s: {'met' if ours < TARGET_SECONDS else 'NOT met'})")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
