"""Benchmark ``ravedata prep`` against its limit, acids-rave's ``rave preprocess`` and an ffmpeg pipeline.

    .venv/bin/python bench/bench_prep.py [--layout mixed|wav|compressed] [--minutes M] [--jobs N] [--sr 48000]
        [--rave /path/to/venv/bin/rave] [--no-hour] [--breakdown] [--decoders] [--workdir DIR]

In one run, on the same generated corpus (``mixed``: wav, flac 24-bit 96 kHz,
mp3, ogg, m4a; mono and stereo. ``compressed``: Vorbis, Opus, MP3 and AAC
(m4a), 44.1/48 kHz stereo, 20 minutes of each by default), it measures:

- **prep**: the real command, ``ravedata prep corpus/ out/ --sr SR --jobs N``;
- **(a) limit**: decode + mix + resample of the same files with the same
  libraries (rave_data.io.decode with its fastest decoder per format,
  process.channels, process.resample) in a pool of N processes, output
  discarded: what prep cannot beat;
- **acids-rave** (opt-in: ``--rave PATH`` or ``$RAVE_BIN``): the reference's own
  ``rave preprocess`` on the same corpus, ``--channels 1`` at the same rate.
  acids-rave is never a dependency of this project: install it in a venv of
  its own (``python3 -m venv /opt/rave && /opt/rave/bin/pip install
  acids-rave==2.3.1``) and pass ``--rave /opt/rave/bin/rave``. It shells out
  to ffmpeg, so that run needs ``ffmpeg`` on PATH (ravedata itself does not);
- **(b) ffmpeg pipeline** of the kind acids-rave's preprocess uses: one ffmpeg
  process per file decoding to s16le at the target rate, read in chunks of
  2 x num_signal samples, each written to LMDB as an AudioExample; N files at
  a time.

``--breakdown`` also times (a) and prep's per-source pipeline file by file in
one process, which separates prep's per-file work from its start-up,
scheduling and commit costs.

``--decoders`` prints the per-format decoder table instead (docs/prep.md,
"Decoders"): every decoder that reads each format, one process, best of 3,
in real-time multiples, with the frames each gives.

It prints audio seconds per wall second for each, the ratios against the
targets (prep <= 1.5 x the time of (a); prep >= 3 x faster than (b)), and the
peak memory (RSS of the process tree, polled) of prep on a single 1-hour file
(target < 500 MB). Times are wall-clock on a shared machine: noisy, which is
why every figure is measured in the same run.

``--layout wav`` uses a WAV-only corpus (16 minutes by default), the kind of
input the reference acids-rave measurement used (``rave preprocess`` on 16 min
of WAV on this machine: 5.8 s, 647 MB); prep's wall time, peak RSS and
dataset size are printed next to that reference, which is a figure recorded
earlier, not re-measured in this run (acids-rave is not installed here).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NUM_SIGNAL = 131072


# --- corpus -------------------------------------------------------------------


def _signal(seconds: float, sr: int, channels: int, seed: int) -> np.ndarray:
    """Music-like test audio [n, channels]: tones, noise bursts, some silence."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f = rng.uniform(80, 800)
    x = 0.3 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(2 * np.pi * 3.01 * f * t)
    x += 0.05 * rng.standard_normal(n) * (np.sin(2 * np.pi * 0.3 * t) > 0)
    x[int(0.5 * n) : int(0.5 * n) + 3 * sr] = 0.0  # a pause for the trimmer
    out = np.stack([np.roll(x, 37 * c) for c in range(channels)], axis=1)
    return out.astype(np.float32)


#: (name, sr, channels, subtype, minutes share)
LAYOUT = [
    ("take01.wav", 44100, 2, "PCM_16", 3.0),
    ("album/track01.flac", 96000, 2, "PCM_24", 3.0),
    ("readings/poem.mp3", 44100, 1, None, 3.0),
    ("field/wind.ogg", 48000, 2, None, 3.0),
    ("interviews/talk.m4a", 48000, 1, None, 3.0),
    ("take02.wav", 48000, 1, "PCM_24", 3.0),
    ("album/track02.flac", 44100, 2, "PCM_16", 3.0),
]


#: WAV only, as the acids-rave reference measurement: 44.1/48 kHz, 16/24-bit, mono/stereo.
LAYOUT_WAV = [
    ("session1/take01.wav", 44100, 2, "PCM_16", 4.0),
    ("session1/take02.wav", 48000, 1, "PCM_16", 4.0),
    ("session2/take03.wav", 44100, 1, "PCM_24", 4.0),
    ("session2/take04.wav", 48000, 2, "PCM_16", 4.0),
]
#: Compressed only, equal parts of each codec: (name, sr, channels, codec, share).
LAYOUT_COMPRESSED = [
    *[(f"vorbis/track{i}.ogg", 44100, 2, "VORBIS", 1.0) for i in range(4)],
    *[(f"opus/track{i}.opus", 48000, 2, "libopus", 1.0) for i in range(4)],
    *[(f"mp3/track{i}.mp3", 44100, 2, "MPEG_LAYER_III", 1.0) for i in range(4)],
    *[(f"aac/track{i}.m4a", 44100, 2, "aac", 1.0) for i in range(4)],
]
#: One 2-minute 44.1 kHz stereo file per format and codec, for --decoders.
LAYOUT_DECODERS = [
    ("pcm16.wav", 44100, 2, "PCM_16", 1.0), ("pcm24.wav", 44100, 2, "PCM_24", 1.0),
    ("float.wav", 44100, 2, "FLOAT", 1.0), ("pcm16.aiff", 44100, 2, "PCM_16", 1.0),
    ("pcm16.w64", 44100, 2, "PCM_16", 1.0), ("pcm16.flac", 44100, 2, "PCM_16", 1.0),
    ("pcm24.flac", 44100, 2, "PCM_24", 1.0), ("vorbis.ogg", 44100, 2, "VORBIS", 1.0),
    ("libopus.opus", 48000, 2, "libopus", 1.0), ("lame.mp3", 44100, 2, "MPEG_LAYER_III", 1.0),
    ("aac.m4a", 44100, 2, "aac", 1.0), ("wmav2.wma", 44100, 2, "wmav2", 1.0),
]
LAYOUTS = {"mixed": LAYOUT, "wav": LAYOUT_WAV, "compressed": LAYOUT_COMPRESSED}
DEFAULT_MINUTES = {"mixed": 21.0, "wav": 16.0, "compressed": 80.0}
#: acids-rave ``rave preprocess`` on 16 min of WAV on this machine (recorded, not re-run).
ACIDS_WAV_16MIN = {"seconds": 5.8, "mb": 647.0}


def make_corpus(folder: Path, minutes: float, layout: list[tuple[str, int, int, str | None, float]] = LAYOUT) -> float:
    """Write the corpus (if not there already); returns its total seconds."""
    share = minutes / sum(x[4] for x in layout)
    total = 0.0
    for i, (name, sr, ch, subtype, m) in enumerate(layout):
        seconds = m * share * 60
        path = folder / name
        total += seconds
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        x = _signal(seconds, sr, ch, i)
        if path.suffix in (".m4a", ".opus", ".wma") and (subtype is None or subtype.islower()):
            _encode(path, x, sr, subtype)
        else:
            _write_blocks(path, x, sr, subtype)
    return total


def _encode(path: Path, x: np.ndarray | Iterator[np.ndarray], sr: int, codec: str | None) -> None:
    """Through PyAV's encoders (what the tests use): AAC in m4a, libopus in
    ogg. ``x`` is [n, channels], or an iterator of [channels, n] blocks."""
    sys.path.insert(0, str(ROOT))
    from tests.rave_data.media import encode

    encode(path, x if not isinstance(x, np.ndarray) else np.ascontiguousarray(x.T), sr, codec=codec)


def _write_blocks(path: Path, x: np.ndarray, sr: int, subtype: str | None) -> None:
    # One-second writes: libsndfile's vorbis encoder segfaults on one huge write.
    with sf.SoundFile(str(path), "w", sr, x.shape[1], subtype) as f:
        for start in range(0, len(x), sr):
            f.write(x[start : start + sr])


# --- (a) the limit: decode + resample only ------------------------------------------


def _decode_resample(path: str, sr: int, channels: int) -> int:
    from rave_data.io.decode import open_audio
    from rave_data.prep.blocks import BLOCK_FRAMES
    from rave_data.process.channels import to_channels
    from rave_data.process.resample import StreamResampler

    frames = 0
    with open_audio(path) as src:
        rs = StreamResampler(src.info.sr, sr, channels)
        for block in src.blocks(BLOCK_FRAMES):
            frames += rs.process(to_channels(block, channels)).shape[1]
        frames += rs.flush().shape[1]
    return frames


def limit(files: list[Path], sr: int, jobs: int) -> float:
    import multiprocessing as mp

    from rave_data.prep.pool import work_estimate

    # Like prep's workers: spawned, one BLAS thread each (OMP_NUM_THREADS=1 is
    # set by main() and inherited), and started in prep's own order (most
    # estimated work first, rave_data.prep.pool.start_order), so that the ratio
    # measures prep's overhead, not a better schedule: in plain size order this
    # limit measured ~0.1 s more on the mixed corpus.
    files = sorted(files, key=lambda f: -work_estimate(f.name, f.stat().st_size))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_decode_resample, [str(f) for f in files], [sr] * len(files), [1] * len(files)))
    return time.perf_counter() - t0


# --- (b) acids-rave style: ffmpeg -> s16le -> LMDB ------------------------------------


def ffmpeg_pipeline(files: list[Path], out: Path, sr: int, jobs: int) -> float:
    import lmdb

    from rave_data.dataset.codec import encode_waveform

    chunk_bytes = 2 * NUM_SIGNAL * 2  # 2 x num_signal int16 samples, as acids-rave reads

    def decode(path: Path) -> list[bytes]:
        p = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "panic", "-i", str(path), "-ar", str(sr),
             "-f", "s16le", "-filter_complex", "channelmap=0-0", "-"],
            stdout=subprocess.PIPE,
        )
        assert p.stdout is not None
        chunks = []
        while len(chunk := p.stdout.read(chunk_bytes)) == chunk_bytes:
            chunks.append(chunk)
        p.stdout.close()
        p.wait()
        return chunks

    t0 = time.perf_counter()
    env = lmdb.open(str(out), map_size=8 * 1024**3)
    key = 0
    with ThreadPoolExecutor(jobs) as pool:
        for chunks in pool.map(decode, files):
            for chunk in chunks:
                value = encode_waveform(np.frombuffer(chunk, np.int16).reshape(1, -1), sr)
                with env.begin(write=True) as txn:
                    txn.put(f"{key:08d}".encode(), value)
                key += 1
    env.close()
    return time.perf_counter() - t0


# --- prep, and its peak memory ---------------------------------------------------------


def run_tree(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB, CPU seconds) of it and
    all its descendants, polled every 20 ms. Polling, because prep's workers are
    children of a fork server, not of prep, so rusage would not see them; a
    process's last <20 ms of CPU before it exits can be missed."""
    import psutil

    t0 = time.perf_counter()
    proc = psutil.Popen(cmd)
    peak = 0
    cpu: dict[int, float] = {}
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                procs = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                procs = []
            rss = 0
            for p in procs:
                try:
                    with p.oneshot():
                        rss += p.memory_info().rss
                        t = p.cpu_times()
                        cpu[p.pid] = t.user + t.system  # children_* would count reaped workers twice
                except psutil.Error:
                    pass
            peak = max(peak, rss)
            time.sleep(0.02)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    if rc:
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}")
    return wall, peak / 1024**2, sum(cpu.values())


def run_prep(corpus: Path, out: Path, sr: int, jobs: int) -> tuple[float, float, float]:
    """(wall, CPU seconds, peak RSS MB) of the real command."""
    shutil.rmtree(out, ignore_errors=True)
    wall, mb, cpu = run_tree([str(BIN / "ravedata"), "prep", str(corpus), str(out), "--sr", str(sr),
                              "--jobs", str(jobs), "--quiet"])
    return wall, cpu, mb


def make_hour_file(path: Path, seconds: float = 3600.0, sr: int = 44100) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    block = 60 * sr
    if path.suffix == ".m4a":
        _encode(path, (_signal(block / sr, sr, 2, i).T for i in range(int(seconds // 60))), sr, "aac")
        return
    with sf.SoundFile(str(path), "w", sr, 2, "PCM_16") as f:
        for i in range(int(seconds // 60)):
            f.write(_signal(block / sr, sr, 2, i))


def _cpu() -> float:
    """CPU seconds (user + system) of this process and every child it has
    waited for, including their children: stable where wall time is not."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def measured(fn: Callable[..., float], *args: object) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``fn(*args)``, which returns its wall time."""
    c0 = _cpu()
    wall = fn(*args)
    return wall, _cpu() - c0


def per_file_breakdown(files: list[Path], corpus: Path, work: Path, sr: int) -> None:
    """Per source, in this one process (one BLAS thread): (a)'s decode + mix +
    resample against prep's whole per-source pipeline (``process_source``:
    also trim, measure, normalise, write the audio, encode the examples),
    best of 2. The gap is prep's per-file work; the rest of the wall-time gap
    is start-up, scheduling and the commits of the parent."""
    from rave_data.prep.job import SourceJob
    from rave_data.prep.worker import process_source
    from rave_data.prep.settings import PrepSettings

    out = work / "out_breakdown"
    shutil.rmtree(out, ignore_errors=True)
    (out / "work").mkdir(parents=True)
    settings = PrepSettings(sr=sr)
    total_a = total_p = 0.0
    print(f"{'per file, 1 process':28s} {'(a) s':>8s} {'prep s':>8s} {'ratio':>6s}")
    for f in files:
        rel = f.relative_to(corpus).as_posix()
        ta = tp = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            _decode_resample(str(f), sr, 1)
            t1 = time.perf_counter()
            result = process_source(SourceJob(str(f), rel, "bench", str(out), str(out / "work"), settings))
            ta, tp = min(ta, t1 - t0), min(tp, time.perf_counter() - t1)
            for o in result.outputs:
                if o.examples_path:
                    os.unlink(o.examples_path)
        total_a, total_p = total_a + ta, total_p + tp
        print(f"  {rel:26s} {ta:8.3f} {tp:8.3f} {tp / ta:5.2f}x")
    print(f"  {'total':26s} {total_a:8.3f} {total_p:8.3f} {total_p / total_a:5.2f}x")
    shutil.rmtree(out, ignore_errors=True)


def run_rave(rave: Path, corpus: Path, out: Path, sr: int, exts: list[str]) -> tuple[float, float, float]:
    """(wall, CPU seconds, peak RSS MB) of acids-rave's ``rave preprocess``
    (absolute paths: it wants them). It uses a pool of all the cores."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(rave), "preprocess", "--input_path", str(corpus.resolve()), "--output_path", str(out.resolve()),
           "--sampling_rate", str(sr), "--channels", "1", "--num_signal", str(NUM_SIGNAL),
           *[f"--ext={e}" for e in exts]]
    wall, mb, cpu = run_tree(cmd)
    return wall, cpu, mb


def decoder_table(files: list[Path], repeat: int = 3) -> None:
    """Every decoder that reads each file, in this one process: real-time
    multiple (best of ``repeat``) and the frames it gives."""
    from rave_data.io.decode import open_audio
    from rave_data.io.decoder_choice import decoders_for

    print(f"{'file':28s} {'decoder':10s} {'x real time':>12s} {'frames':>10s}  (chosen order)")
    for f in files:
        for d in ("soundfile", "pyav"):
            best, frames = float("inf"), None
            for _ in range(repeat):
                try:
                    t0 = time.perf_counter()
                    with open_audio(f, decoders=(d,)) as src:
                        n = sum(b.shape[1] for b in src.blocks(1 << 17))
                        sr, header = src.info.sr, src.info.frames
                    best, frames = min(best, time.perf_counter() - t0), n
                except Exception as e:  # noqa: BLE001 - a decoder that does not read the format
                    frames = f"-- ({type(e).__name__})"
                    break
            speed = f"{header / sr / best:10.0f}x" if best < float("inf") else ""
            print(f"{f.name:28s} {d:10s} {speed:>12s} {frames!s:>10s}  {'/'.join(decoders_for(f))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="mixed",
                    help="mixed formats, WAV only (as the acids-rave reference measurement), or compressed only")
    ap.add_argument("--minutes", type=float, default=None,
                    help="corpus length (default 21 for mixed, 16 for wav, 80 for compressed: 20 per codec)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="workers for prep, (a) and (b)")
    ap.add_argument("--sr", type=int, default=48000)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each measurement, interleaved; the best counts")
    ap.add_argument("--rave", type=Path, default=os.environ.get("RAVE_BIN"),
                    help="acids-rave's `rave` executable (its own venv): also run `rave preprocess` (opt-in)")
    ap.add_argument("--no-hour", action="store_true", help="skip the 1-hour peak-memory run")
    ap.add_argument("--workdir", type=Path, default=None, help="keep corpus and outputs here (default: temp)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time (a) and prep's per-source pipeline file by file, in one process")
    ap.add_argument("--decoders", action="store_true",
                    help="only print the per-format decoder table (one file of each kind in the corpus)")
    args = ap.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    minutes = args.minutes if args.minutes is not None else DEFAULT_MINUTES[args.layout]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_prep_"))
    if args.decoders:
        from rave_data.io.discover import find_audio

        make_corpus(work / "corpus-decoders", 2.0 * len(LAYOUT_DECODERS), LAYOUT_DECODERS)
        print(f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
        decoder_table(find_audio([work / "corpus-decoders"]))
        return
    corpus = work / ("corpus" if args.layout == "mixed" else f"corpus-{args.layout}")
    seconds = make_corpus(corpus, minutes, LAYOUTS[args.layout])
    from rave_data.io.discover import find_audio

    files = find_audio([corpus])
    print(f"corpus: {len(files)} files, {seconds / 60:.1f} min, formats {sorted({f.suffix for f in files})}; "
          f"jobs {args.jobs}, --sr {args.sr}, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")

    # Interleaved repeats, best of each: other load on the machine hits all
    # alike. CPU seconds (the whole process tree) are printed too: on a shared
    # machine they move much less than wall time.
    inf = (float("inf"), float("inf"))
    best = {"prep": inf, "a": inf, "b": inf, "rave": inf}
    prep_mb = rave_mb = 0.0
    exts = sorted({f.suffix[1:].lower() for f in files})
    for _ in range(args.repeat):
        wall, cpu, mb = run_prep(corpus, work / "out_prep", args.sr, args.jobs)
        best["prep"], prep_mb = min(best["prep"], (wall, cpu)), max(prep_mb, mb)
        best["a"] = min(best["a"], measured(limit, files, args.sr, args.jobs))
        if args.rave:
            wall, cpu, mb = run_rave(args.rave, corpus, work / "out_rave", args.sr, exts)
            best["rave"], rave_mb = min(best["rave"], (wall, cpu)), max(rave_mb, mb)
        if shutil.which("ffmpeg"):
            shutil.rmtree(work / "out_ffmpeg", ignore_errors=True)
            best["b"] = min(best["b"], measured(ffmpeg_pipeline, files, work / "out_ffmpeg", args.sr, args.jobs))
    names = {"prep": "prep", "a": "(a) decode+resample limit", "b": "(b) ffmpeg s16le pipeline",
             "rave": "acids-rave rave preprocess"}
    for key, (wall, cpu) in best.items():
        if wall < float("inf"):
            print(f"{names[key]:28s} {wall:8.2f} s wall {seconds / wall:8.1f} audio-s/s   {cpu:7.2f} CPU-s")
    (tp, cp), (ta, ca), (tb, cb), (tr, cr) = best["prep"], best["a"], best["b"], best["rave"]
    limit_target = 1.3 if args.layout == "compressed" else 1.5
    print(f"prep / (a) time      = {tp / ta:5.2f}x wall, {cp / ca:5.2f}x CPU  (target <= {limit_target}x: "
          f"{'met' if tp / ta <= limit_target else 'NOT met'})")
    if tb < float("inf"):
        print(f"(b) / prep time      = {tb / tp:5.2f}x wall, {cb / cp:5.2f}x CPU  (target >= 3x faster: "
              f"{'met' if tb / tp >= 3 else 'NOT met'})")
    if tr < float("inf"):
        print(f"rave preprocess / prep = {tr / tp:5.2f}x wall, {cr / cp:5.2f}x CPU  (target >= 2x faster: "
              f"{'met' if tr / tp >= 2 else 'NOT met'}); peak RSS rave {rave_mb:.0f} MB, prep {prep_mb:.0f} MB")
    if args.layout == "wav":
        ref = ACIDS_WAV_16MIN
        db_mb = (work / "out_prep" / "data.mdb").stat().st_size / 1024**2
        scale = seconds / (16 * 60)  # the reference is for 16 minutes
        print(f"vs acids-rave preprocess, 16 min WAV (recorded earlier, {ref['seconds']} s, {ref['mb']:.0f} MB): "
              f"prep {tp / scale:.2f} s per 16 min = {ref['seconds'] * scale / tp:.1f}x faster; "
              f"prep peak RSS {prep_mb:.0f} MB, data.mdb {db_mb / scale:.0f} MB per 16 min")

    if args.breakdown:
        per_file_breakdown(files, corpus, work, args.sr)

    if not args.no_hour:
        for sub in ("out_prep", "out_ffmpeg", "out_rave"):
            shutil.rmtree(work / sub, ignore_errors=True)
        # A compressed corpus gets a compressed hour: AAC, decoded by PyAV.
        hour = work / "hour" / ("one_hour.m4a" if args.layout == "compressed" else "one_hour.wav")
        make_hour_file(hour)
        shutil.rmtree(work / "out_hour", ignore_errors=True)
        wall, mb, _ = run_tree([str(BIN / "ravedata"), "prep", str(hour.parent), str(work / "out_hour"),
                                "--sr", str(args.sr), "--jobs", "1", "--quiet"])
        print(f"peak RSS of prep on a 1-hour 44.1 kHz stereo {hour.suffix[1:]} file: {mb:.0f} MB in {wall:.1f} s "
              f"(target < 500 MB: {'met' if mb < 500 else 'NOT met'})")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
