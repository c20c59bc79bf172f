"""Real-time factor of the exported streaming model (what nn~ runs): 2048-sample
buffers, one CPU thread, 48 kHz, v1 and v2.

The signal is fed to ``forward`` buffer by buffer, like nn~ does, after a warm-up of a
few buffers. Baseline, measured in the same run on the same signal: the same streaming
model scripted with torch's own convolutions (oneDNN), i.e. without the matmul
kernels this project uses for short blocks. Target: 20x real time for v1 (acids-rave
reports 2.3x for v1 and 1.15x for v2 in this setting).

    .venv/bin/python bench/bench_streaming.py [--presets v1 v2] [--seconds 4] [--buffer 2048]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

TARGET = 20.0


def stream_rtf(module, x, buffer: int, seconds: float, repeats: int) -> float:
    import torch

    with torch.inference_mode():
        for i in range(0, 4 * buffer, buffer):  # warm-up (TorchScript profiling runs)
            module.forward(x[..., i : i + buffer])
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, x.shape[-1], buffer):
                module.forward(x[..., i : i + buffer])
            best = min(best, time.perf_counter() - t0)
    return seconds / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["v1", "v2"])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--buffer", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from rave_model.config import load_config
    from rave_model.export import ExportedRAVE, build_export, latent_dims
    from rave_model.model import RAVE

    sr = 48000
    print(f"streaming forward, {args.buffer}-sample buffers, 1 thread, {sr} Hz, {args.seconds:g} s, best of {args.repeats}")
    for preset in args.presets:
        cfg = load_config(preset, ["data.sr=48000"])
        if args.buffer % cfg.hop_length:
            raise SystemExit(f"--buffer must be a multiple of {preset}'s hop length ({cfg.hop_length})")
        torch.manual_seed(0)
        model = RAVE(cfg).eval()
        model.set_warmed_up(True)
        n = int(args.seconds * sr) // args.buffer * args.buffer
        x = torch.randn(1, cfg.data.channels, n) * 0.1
        seconds = n / sr
        ours = build_export(model, fidelity=0.95, streaming=True)
        # Baseline: identical module, torch convolutions instead of the matmul kernels.
        plain = model.folded().eval()
        plain.set_streaming(True)
        baseline = torch.jit.script(ExportedRAVE(plain, latent_dims(plain.fidelity, 0.95), True))
        base = stream_rtf(baseline, x, args.buffer, seconds, args.repeats)
        rtf = stream_rtf(ours, x, args.buffer, seconds, args.repeats)
        print(f"{preset}: baseline (oneDNN convs) {base:6.2f}x   exported {rtf:6.2f}x   ratio {rtf / base:.2f}", end="")
        print(f"   vs target {TARGET:g}x: {rtf / TARGET:.2f}" if preset == "v1" else "")


if __name__ == "__main__":
    main()
