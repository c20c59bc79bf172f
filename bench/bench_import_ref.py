"""The acids-rave side of bench_import.py; runs in the reference venv (it imports ``rave``).

    REFVENV/bin/python bench/bench_import_ref.py CKPT TS OUT.npz [--seconds 1.5]

Writes the reference's outputs on one fixed input, noise branches left out, and
once more with them under a fixed seed:

- ``x`` [1, 1, T]: the input (a seeded chirp plus noise, 44.1 kHz);
- ``ckpt_mean`` [1, L, T / hop]: ``RAVE.encode(x)``'s mean, the run rebuilt from its
  config.gin and .ckpt as ``rave export`` does;
- ``ckpt_decode`` [1, 1, T]: ``RAVE.decode(ckpt_mean)``;
- ``ts_mean``, ``ts_decode``: the same from the exported ``.ts`` (its ``pqmf``,
  ``encoder``, ``decoder`` submodules; ``ScriptedRAVE.encode`` samples the posterior,
  so the mean is read before the sampling);
- ``ckpt_decode_noise``, ``ts_decode_noise``: the decoders with their noise, torch's
  global seed set to SEED just before (the noise module draws ``torch.rand`` once).
"""
from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
SEED = 1234  # torch's global seed before each decode with noise (bench_import.py uses the same)


def signal(seconds: float, sr: int, hop: int) -> torch.Tensor:
    n = int(seconds * sr) // hop * hop
    t = np.arange(n) / sr
    rng = np.random.default_rng(0)
    x = 0.4 * np.sin(2 * np.pi * (110 * t + 400 * t**2)) + 0.05 * rng.standard_normal(n)
    return torch.from_numpy(x.astype(np.float32))[None, None]


def mod_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return 2 * torch.sigmoid(x) ** 2.3 + 1e-7


def decode_without_noise(decoder, z: torch.Tensor) -> torch.Tensor:
    """The reference decoders' forward with the noise term left out."""
    kind = decoder.original_name if hasattr(decoder, "original_name") else type(decoder).__name__
    h = decoder.net(z)
    if kind == "Generator":  # v1: tanh(waveform) * mod_sigmoid(loudness) (+ noise once warmed up)
        branches = decoder.synth(h)
        wave, loud = branches[0], branches[1]
        stride = int(decoder.loud_stride)
        if stride != 1:
            loud = loud.repeat_interleave(stride, -1)
        return torch.tanh(wave) * mod_sigmoid(loud)
    if kind == "GeneratorV2":
        # With a noise module the waveform conv sits apart; without, it ends `net`.
        y = decoder.waveform_module(h) if _has(decoder, "noise_module") else h
        if bool(decoder.amplitude_modulation):
            y, amp = y.split(y.shape[1] // 2, 1)
            y = y * torch.sigmoid(amp)
        return torch.tanh(y)
    raise SystemExit(f"unsupported decoder {kind}")


def _has(module, name: str) -> bool:
    try:
        return getattr(module, name) is not None
    except Exception:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("ts")
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=1.5)
    args = ap.parse_args()

    import cached_conv as cc
    import gin
    import rave
    import rave.core

    torch.set_grad_enabled(False)
    cc.use_cached_conv(False)
    gin.parse_config_file(rave.core.search_for_config(args.ckpt))
    model = rave.RAVE()
    model.load_state_dict(torch.load(args.ckpt, map_location="cpu")["state_dict"], strict=False)
    model.eval()
    hop = int(np.prod(gin.query_parameter("%RATIOS"))) * int(gin.query_parameter("%N_BAND"))
    x = signal(args.seconds, model.sr, hop)
    latent = model.latent_size
    mean = model.encode(x)[:, :latent]
    y = decode_without_noise(model.decoder, mean)
    y = model.pqmf.inverse(y)

    torch.manual_seed(SEED)
    y_noise = model.decode(mean)

    ts = torch.jit.load(args.ts, map_location="cpu").eval()
    ts_mean = ts.encoder(ts.pqmf(x))[:, :latent]
    ts_y = ts.pqmf.inverse(decode_without_noise(ts.decoder, ts_mean))
    torch.manual_seed(SEED)
    ts_y_noise = ts.pqmf.inverse(ts.decoder(ts_mean))
    np.savez(
        args.out,
        x=x.numpy(),
        ckpt_mean=mean.numpy(),
        ckpt_decode=y.numpy(),
        ts_mean=ts_mean.numpy(),
        ts_decode=ts_y.numpy(),
        ckpt_decode_noise=y_noise.numpy(),
        ts_decode_noise=ts_y_noise.numpy(),
        hop=hop,
        sr=model.sr,
    )
    print(f"{args.out}: x {tuple(x.shape)}, latent {tuple(mean.shape)}, hop {hop}")


if __name__ == "__main__":
    main()
