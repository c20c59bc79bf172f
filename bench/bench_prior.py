"""Speed of the stage-3 prior on one CPU thread: can nn~'s ``prior`` keep up?

Prints, for the ``v1``/``v2`` prior size (PriorConfig defaults) and ``small``:
- latent frames per second of the TorchScript streaming ``prior`` method (batch 1)
  and of eager ``LatentPrior.sample`` (what ``ravemodel generate`` runs), ours and
  a baseline measured in the same run: the same network computed with PyTorch's
  dilated ``conv1d`` (what a straightforward WaveNet does);
- the real-time factor: frames/s divided by the frames/s real time needs
  (48 kHz / 2048 samples per frame = 23.4 frames/s); target >= 1x.

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_prior.py [--frames 64] [--dims 16]
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

from rave_model.config import load_config
from rave_model.prior import CausalConv1d, build_prior

REALTIME_FPS = 48000 / 2048


def dilated_conv1d(self: CausalConv1d, window: torch.Tensor, n: int) -> torch.Tensor:
    """Baseline: the textbook dilated convolution."""
    return F.conv1d(window, self.weight, self.bias, dilation=self.spacing)


def frames_per_second(preset: str, dims: int, frames: int, baseline: bool, scripted: bool) -> float:
    original = CausalConv1d._causal
    if baseline:
        CausalConv1d._causal = dilated_conv1d  # type: ignore[method-assign]
    try:
        torch.manual_seed(0)
        prior = build_prior(dims, load_config(preset).prior).eval()
        if not scripted:  # `ravemodel generate`: eager LatentPrior.sample
            prior.sample(4)
            t = time.perf_counter()
            prior.sample(frames - dims + 1)  # + the L-1 warm-up steps = `frames` steps
            return frames / (time.perf_counter() - t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.script(prior)
        with torch.no_grad():
            module.prior(torch.zeros(1, 1, 8))  # warm-up (TorchScript profiling runs)
            module.prior(torch.zeros(1, 1, 8))
            t = time.perf_counter()
            module.prior(torch.zeros(1, 1, frames))
            return frames / (time.perf_counter() - t)
    finally:
        CausalConv1d._causal = original  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--dims", type=int, default=16, help="latent dimensions the prior models")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"prior streaming speed, 1 thread, batch 1, {args.dims} latent dims, {args.frames} frames")
    for preset in ("v1", "small"):
        for scripted, what in ((True, "nn~ prior (TorchScript)"), (False, "generate (eager)")):
            ours = frames_per_second(preset, args.dims, args.frames, baseline=False, scripted=scripted)
            base = frames_per_second(preset, args.dims, args.frames, baseline=True, scripted=scripted)
            print(
                f"{preset:6s} {what:24s} ours {ours:7.1f} frames/s ({ours / REALTIME_FPS:5.2f}x real time) | "
                f"dilated conv1d {base:7.1f} frames/s ({base / REALTIME_FPS:5.2f}x) | ours/baseline {ours / base:4.1f}x"
            )


if __name__ == "__main__":
    main()
