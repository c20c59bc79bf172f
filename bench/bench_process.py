"""Speed of decode and of each processing step, against a baseline in the same run.

    .venv/bin/python bench/bench_process.py [--seconds 60] [--repeat 3]

- **resample**: our streaming resampler (numpy, 131072-frame blocks) against
  torchaudio's whole-array ``functional.resample`` with the same Kaiser
  settings (the implementation it reproduces) and with torchaudio's defaults.
  Target: within 1.5x of torchaudio's time with the same settings.
- **decode**: ``open_audio(...).blocks()`` per format against ffmpeg decoding
  the same file to raw float32 through a pipe (what the ffmpeg backend does).
  Target: not slower than ffmpeg.
- **trim** and **loudness**: their cost as a fraction of decode + resample of
  the same audio (wav 44.1 kHz stereo -> 48 kHz mono). Target: each under 25 %.

Every figure is audio seconds per wall second, single thread, best of
``--repeat`` interleaved runs (the machine is shared: noisy).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rave_data.io.decode import open_audio  # noqa: E402
from rave_data.process import LoudnessMeter, SilenceTrimmer, StreamResampler, to_channels  # noqa: E402
from rave_data.process.resample import BETA, LOWPASS_FILTER_WIDTH, ROLLOFF  # noqa: E402

BLOCK = 1 << 17


def music(seconds: float, sr: int, channels: int) -> np.ndarray:
    """[channels, n] float32: two tones, noise bursts and a 3 s pause."""
    rng = np.random.default_rng(0)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 661 * t)
    x += 0.05 * rng.standard_normal(n) * (np.sin(2 * np.pi * 0.3 * t) > 0)
    x[n // 2 : n // 2 + 3 * sr] = 0.0
    return np.stack([np.roll(x, 37 * c) for c in range(channels)]).astype(np.float32)


def best_speed(fns: dict[str, Callable[[], None]], seconds: float, repeat: int) -> dict[str, float]:
    """Audio seconds per wall second of each function, best of interleaved runs."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {k: seconds / v for k, v in best.items()}


def bench_resample(seconds: float, repeat: int) -> None:
    import torch
    import torchaudio

    torch.set_num_threads(1)
    print("resample (stereo)                ours      torchaudio same   torchaudio default   ours/same time")
    for sr_in, sr_out in [(44100, 48000), (48000, 44100), (96000, 48000), (22050, 16000)]:
        x = music(seconds, sr_in, 2)
        xt = torch.from_numpy(x)

        def ours() -> None:
            rs = StreamResampler(sr_in, sr_out, 2)
            for s in range(0, x.shape[1], BLOCK):
                rs.process(x[:, s : s + BLOCK])
            rs.flush()

        def same() -> None:
            torchaudio.functional.resample(
                xt, sr_in, sr_out, lowpass_filter_width=LOWPASS_FILTER_WIDTH, rolloff=ROLLOFF,
                resampling_method="sinc_interp_kaiser", beta=BETA,
            )

        def default() -> None:
            torchaudio.functional.resample(xt, sr_in, sr_out)

        r = best_speed({"ours": ours, "same": same, "default": default}, seconds, repeat)
        ratio = r["same"] / r["ours"]
        verdict = "met" if ratio <= 1.5 else "NOT met"
        print(
            f"  {sr_in:>6} -> {sr_out:<6}            {r['ours']:7.0f}x  {r['same']:13.0f}x  {r['default']:16.0f}x"
            f"   {ratio:5.2f}x (target <= 1.5x: {verdict})"
        )


def bench_decode(folder: Path, seconds: float, repeat: int) -> None:
    ffmpeg = shutil.which("ffmpeg")
    print("decode                           ours      ffmpeg f32le pipe   ours/ffmpeg speed")
    x = music(seconds, 44100, 2)
    files = {
        "wav 16-bit": ("a.wav", "PCM_16"), "flac 24-bit": ("a.flac", "PCM_24"),
        "ogg vorbis": ("a.ogg", "VORBIS"), "mp3": ("a.mp3", "MPEG_LAYER_III"),
    }
    paths = {}
    for label, (name, subtype) in files.items():
        p = folder / name
        with sf.SoundFile(str(p), "w", 44100, 2, subtype) as f:
            for s in range(0, x.shape[1], 44100):  # libsndfile's vorbis encoder dislikes huge writes
                f.write(x[:, s : s + 44100].T)
        paths[label] = p
    if ffmpeg:
        m4a = folder / "a.m4a"
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(paths["wav 16-bit"]), "-c:a", "aac", str(m4a)], check=True)
        paths["m4a aac"] = m4a
    for label, p in paths.items():
        def ours(p: Path = p) -> None:
            with open_audio(p) as src:
                for _ in src.blocks(BLOCK):
                    pass

        fns: dict[str, Callable[[], None]] = {"ours": ours}
        if ffmpeg:
            cmd = [ffmpeg, "-v", "error", "-nostdin", "-i", str(p), "-f", "f32le", "-c:a", "pcm_f32le", "pipe:1"]
            fns["ffmpeg"] = lambda cmd=cmd: subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        r = best_speed(fns, seconds, repeat)
        if ffmpeg:
            ratio = r["ours"] / r["ffmpeg"]
            verdict = "met" if ratio >= 1.0 else "NOT met"
            print(f"  {label:<28} {r['ours']:7.0f}x  {r['ffmpeg']:15.0f}x   {ratio:6.2f}x (target >= 1: {verdict})")
            if label.startswith("m4a"):
                print("    (ours is that same ffmpeg plus an ffprobe run alongside for the exact length:"
                      " two process starts, which dominate on short files)")
        else:
            print(f"  {label:<28} {r['ours']:7.0f}x   (ffmpeg not installed)")


def bench_steps(folder: Path, seconds: float, repeat: int) -> None:
    path = folder / "steps.wav"
    sf.write(str(path), music(seconds, 44100, 2).T, 44100, subtype="PCM_16")
    with open_audio(path) as src:
        blocks = [to_channels(b, 1) for b in src.blocks(BLOCK)]
    rs = StreamResampler(44100, 48000, 1)
    mono48 = [rs.process(b) for b in blocks] + [rs.flush()]

    def base() -> None:
        with open_audio(path) as src:
            r = StreamResampler(44100, 48000, 1)
            for b in src.blocks(BLOCK):
                r.process(to_channels(b, 1))
            r.flush()

    def trim() -> None:
        t = SilenceTrimmer(48000, 1, -60.0, 1.0)
        for b in mono48:
            t.process(b)
        t.flush()

    def loud() -> None:
        m = LoudnessMeter(48000, 1)
        for b in mono48:
            m.feed(b)
        m.integrated_lufs()

    r = best_speed({"base": base, "trim": trim, "loud": loud}, seconds, repeat)
    print("steps (48 kHz mono)              speed     cost vs decode+resample (44.1k stereo wav)")
    print(f"  decode + mix + resample        {r['base']:7.0f}x")
    for name in ("trim", "loud"):
        frac = r["base"] / r[name]
        verdict = "met" if frac <= 0.25 else "NOT met"
        label = {"trim": "SilenceTrimmer", "loud": "LoudnessMeter (BS.1770)"}[name]
        print(f"  {label:<30} {r[name]:7.0f}x  {100 * frac:5.1f} % (target <= 25 %: {verdict})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each test signal")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs; the best counts")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench_decode(folder, args.seconds, args.repeat)
        bench_steps(folder, args.seconds, args.repeat)
        bench_resample(args.seconds, args.repeat)


if __name__ == "__main__":
    main()
