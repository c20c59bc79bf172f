"""``ravemodel import`` against acids-rave 2.3.1: the same input through the reference
model and through ours imported from it, for v1, v2 and v2_small.

    .venv/bin/python bench/bench_import.py [--ref-venv /path/to/venv] [--work DIR]
        [--configs v1,v2,v2_small] [--fixtures tests/rave_model/fixtures]

Opt-in (not a test, not in CI): it needs acids-rave and takes about 20 minutes on a
2-core CPU (training, then six ``rave export`` runs). ``--ref-venv`` (default
``/work/refvenv/rave``) is a virtual environment with acids-rave 2.3.1; make one with

    python3 -m venv REFVENV
    REFVENV/bin/pip install torch torchaudio acids-rave==2.3.1 "setuptools<81"

(acids-rave imports ``pkg_resources``, gone from setuptools 81). acids-rave is only
ever imported by that interpreter: in ``rave preprocess / train / export`` and in
bench_import_ref.py.

What runs, under ``--work`` (default: ``rave-import-bench`` in the system temporary
folder; anything already there is reused):

1. Data: 10 minutes of seeded synthetic tones, ``rave preprocess`` (44.1 kHz, mono).
2. Reference runs: ``rave train --config C --max_steps 2 --batch 4 --n_signal 131072
   --val_every 2`` (acids-rave writes a checkpoint after each validation). v1 and
   v2_small with ``PHASE_1_DURATION=1``, so their second step is adversarial and the
   run is "warmed up" (v1's noise branch on, a discriminator in the checkpoint); v2
   with its own 1M, so the import marks only stage 1 done.
3. ``rave export --run CKPT`` and ``--streaming``: two .ts files per config.
4. ``ravemodel import`` of the run folder, of the offline .ts and of the streaming .ts.
5. bench_import_ref.py (reference venv) runs a fixed 1.5 s chirp through the
   reference: the encoder's mean, and the decoder on that mean, from the checkpoint
   (rebuilt from config.gin as ``rave export`` does) and from the offline .ts.
6. Ours: the same from each imported run (our RAVE rebuilt from its checkpoint), and
   the encoder of ``ravemodel export --offline`` of the run import.

Noise: the decoders are compared twice: with their noise branches left out on both
sides, and with them, torch's global seed set to the same value just before each
decode (both noise modules draw ``torch.rand`` once, of the same shape, in training
mode; our export uses its own streaming-safe generator instead, so its noise is not
compared). v2 has no noise branch, and v1's is on once warmed up.

Printed: for each config and source, the largest absolute difference and that over
the largest reference magnitude ("rel"), for the encoder mean, the decoder on the
same latent, and forward (decode of each side's own encoding); the largest difference
between the weights imported from the .ckpt and from each .ts. Target: 1e-4.

``--fixtures DIR`` also writes the CI fixtures of tests/rave_model/test_import*.py
from these real runs: ``import_C_ckpt_keys.txt`` (state_dict keys, shapes, dtypes),
``import_C_config.gin`` and ``import_C_ts_modules.jsonl`` (the module tree of the
offline export).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OURS = Path(sys.executable).parent / "ravemodel"
STEPS = 2
N_SIGNAL = 131072
PHASE_1 = {"v1": 1, "v2": None, "v2_small": 1}
SEED = 1234  # as bench_import_ref.py


def sh(cmd: list[str], log: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run a command; its output goes to ``log`` (or through). Stops the bench on failure."""
    t0 = time.time()
    print("$", " ".join(map(str, cmd)), flush=True)
    with open(log, "w") if log else open(os.devnull, "w") as out:
        proc = subprocess.run(list(map(str, cmd)), stdout=out if log else None, stderr=subprocess.STDOUT if log else None, env=env)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}) after {time.time() - t0:.0f} s: {' '.join(map(str, cmd))}" + (f"; see {log}" if log else ""))


def make_data(work: Path, ref_bin: Path) -> Path:
    db = work / "db"
    if (db / "data.mdb").exists():
        return db
    import soundfile as sf

    audio = work / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    sr = 44100
    t = np.arange(sr * 100) / sr
    for i in range(6):  # 6 x 100 s: 96 examples, 2 of them held out (enough latent frames for the PCA)
        f = 110 * (i + 1)
        x = 0.3 * np.sin(2 * np.pi * f * t * (1 + 0.1 * np.sin(2 * np.pi * 0.3 * (i + 1) * t))) + 0.05 * rng.standard_normal(t.size)
        sf.write(str(audio / f"tone{i}.wav"), x.astype(np.float32), sr)
    sh([ref_bin / "rave", "preprocess", "--input_path", audio.resolve(), "--output_path", db.resolve(), "--channels", "1",
        "--num_signal", N_SIGNAL, "--sampling_rate", sr], work / "preprocess.log")
    return db


def train(work: Path, ref_bin: Path, db: Path, config: str) -> tuple[Path, Path]:
    """The reference run of ``config``: (its checkpoint at STEPS, its folder)."""
    out = work / "runs"

    def checkpoints() -> list[Path]:
        # rave train names its folder NAME_<10 hex digits of the gin hash>; "v2_*" alone would match v2_small's.
        return sorted(p for p in out.glob(f"{config}_*/version_*/checkpoints/epoch-*.ckpt")
                      if re.fullmatch(rf"{re.escape(config)}_[0-9a-f]{{10}}", p.parents[2].name))

    found = checkpoints()
    if not found:
        cmd = [ref_bin / "rave", "train", "--config", config, "--db_path", db.resolve(), "--name", config, "--out_path", out.resolve(),
               "--max_steps", STEPS, "--batch", 4, "--n_signal", N_SIGNAL, "--workers", 1, "--val_every", STEPS,
               "--channels", 1, "--gpu", -1, "--progress", "false"]
        if PHASE_1[config] is not None:
            cmd += ["--override", f"PHASE_1_DURATION={PHASE_1[config]}"]
        sh(cmd, work / f"train_{config}.log")
        found = checkpoints()
    if not found:
        raise SystemExit(f"rave train {config}: no checkpoint under {out}")
    return found[-1], found[-1].parents[2]


def export(work: Path, ref_bin: Path, ckpt: Path, config: str) -> dict[str, Path]:
    paths = {}
    for mode in ("offline", "streaming"):
        name = f"{config}" if mode == "offline" else f"{config}_streaming"
        path = work / "exports" / f"{name}.ts"
        if not path.exists():
            cmd = [ref_bin / "rave", "export", "--run", ckpt.resolve(), "--output", path.parent.resolve(), "--name", config]
            sh(cmd + (["--streaming"] if mode == "streaming" else []), work / f"export_{name}.log")
        paths[mode] = path
    return paths


def import_all(work: Path, config: str, run: Path, ts: dict[str, Path]) -> dict[str, Path]:
    runs = {"ckpt": (run, work / "ours" / f"{config}-ckpt")}
    runs.update({f"ts-{mode}": (path, work / "ours" / f"{config}-ts-{mode}") for mode, path in ts.items()})
    for source, dest in runs.values():
        sh([OURS, "import", source, dest, "--force"], work / f"import_{dest.name}.log")
        print("  " + (work / f"import_{dest.name}.log").read_text().strip().replace("\n", "\n  "))
    return {k: dest for k, (_, dest) in runs.items()}


def without_noise(model) -> None:
    """Leave out the decoder's noise term (the reference's is drawn from torch's global RNG)."""
    for m in model.modules():
        if hasattr(m, "use_noise"):
            m.use_noise = False


def diff(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    if ours.shape != ref.shape:
        n = min(ours.shape[-1], ref.shape[-1])
        if ours.shape[:-1] != ref.shape[:-1]:
            return float("nan"), float("nan")
        ours, ref = ours[..., :n], ref[..., :n]
    d = float(np.abs(ours - ref).max())
    return d, d / max(float(np.abs(ref).max()), 1e-12)


def compare(config: str, runs: dict[str, Path], ref: dict[str, np.ndarray], work: Path) -> list[tuple[str, str, str, float, float]]:
    import torch

    from rave_model.train.checkpoint import load_model

    rows = []
    x = torch.from_numpy(ref["x"])
    models = {}
    for source, run in runs.items():
        model, cfg, _ = load_model(run)
        L = int(cfg.model.latent_size)
        key = "ckpt" if source == "ckpt" else "ts"
        ref_mean = torch.from_numpy(ref[f"{key}_mean"])
        with torch.no_grad():
            torch.manual_seed(SEED)  # our noise module draws torch.rand once, of the reference's shape
            noisy = model.decode(ref_mean)
        rows.append((config, source, "decode, noise (same seed)", *diff(noisy.numpy(), ref[f"{key}_decode_noise"])))
        without_noise(model)
        models[source] = model
        with torch.no_grad():
            mean = model.encode(x)[:, :L]
            dec = model.decode(ref_mean)
            fwd = model.decode(mean)
        for what, ours_out, ref_out in (("encode (mean)", mean, ref[f"{key}_mean"]), ("decode (same z)", dec, ref[f"{key}_decode"]),
                                        ("forward", fwd, ref[f"{key}_decode"])):
            rows.append((config, source, what, *diff(ours_out.numpy(), ref_out)))
    # The weights as the networks use them (weight norm folded: a .ts gives g = |w|, v = w,
    # a checkpoint the trained g and v, which compose the same weight).
    base = models["ckpt"].folded().state_dict()
    for source in [s for s in models if s != "ckpt"]:
        other = models[source].folded().state_dict()
        worst = max((diff(other[k].float().numpy(), base[k].float().numpy()) for k in base if base[k].is_floating_point() and base[k].numel()),
                    key=lambda d: d[1])
        rows.append((config, source, "weights vs ckpt import", *worst))
    # Our own export of the imported run: its encoder (deterministic) against the reference's mean in PCA space.
    out = work / "ours" / f"{config}-ckpt-offline.ts"
    sh([OURS, "export", runs["ckpt"], "-o", out, "--offline", "--fidelity", "1"], work / f"export_ours_{config}.log")
    ts = torch.jit.load(str(out))
    model = models["ckpt"]
    with torch.no_grad():
        z = ts.encode(x)
        ref_mean = torch.from_numpy(ref["ckpt_mean"])
        ref_pca = torch.einsum("ij,bjt->bit", model.latent_pca, ref_mean - model.latent_mean[None, :, None])[:, : z.shape[1]]
    rows.append((config, "ckpt", "our export encode (PCA)", *diff(z.numpy(), ref_pca.numpy())))
    return rows


def write_fixtures(dest: Path, config: str, ckpt: Path, run: Path, ts: Path) -> None:
    import torch

    dest.mkdir(parents=True, exist_ok=True)
    c = torch.load(ckpt, map_location="cpu", weights_only=True)
    with open(dest / f"import_{config}_ckpt_keys.txt", "w") as f:
        f.write(f"# state_dict of an acids-rave 2.3.1 Lightning checkpoint (pytorch-lightning {c['pytorch-lightning_version']}): key, shape, dtype\n")
        for k, v in c["state_dict"].items():
            f.write(f"{k}\t{','.join(map(str, v.shape))}\t{str(v.dtype).replace('torch.', '')}\n")
    shutil.copyfile(run / "config.gin", dest / f"import_{config}_config.gin")
    m = torch.jit.load(str(ts), map_location="cpu")
    attrs = ("in_channels", "out_channels", "kernel_size", "stride", "dilation", "groups", "_pad", "cumulative_delay", "n_band")
    with open(dest / f"import_{config}_ts_modules.jsonl", "w") as f:
        f.write("# module tree of an acids-rave 2.3.1 `rave export` file: one JSON object per module\n")
        top = {a: getattr(m, a) for a in ("sr", "n_channels", "full_latent_size", "latent_size", "target_channels", "input_mode",
                                          "output_mode", "is_using_adain", "_has_prior")}
        top["resampler"] = None
        top["buffers"] = {k: list(v.shape) for k, v in m.named_buffers(recurse=False)}
        f.write(json.dumps({"name": "", "class": m.original_name, "attrs": top}) + "\n")
        for name, sm in m.named_modules():
            if not name.startswith(("pqmf", "encoder", "decoder")):
                continue
            got = {}
            for a in attrs:
                if sm._c.hasattr(a):
                    v = sm._c.getattr(a)
                    got[a] = list(v) if isinstance(v, tuple) else v
            tensors = {k: list(v.shape) for k, v in list(sm.named_parameters(recurse=False)) + list(sm.named_buffers(recurse=False))}
            f.write(json.dumps({"name": name, "class": sm.original_name, "attrs": got, "tensors": tensors}) + "\n")
    print(f"fixtures for {config} written to {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref-venv", type=Path, default=Path("/work/refvenv/rave"))
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rave-import-bench")
    ap.add_argument("--configs", default="v1,v2,v2_small")
    ap.add_argument("--fixtures", type=Path, default=None, help="also write the CI fixtures of these runs to this folder")
    args = ap.parse_args()
    ref_bin = args.ref_venv / "bin"
    if not (ref_bin / "rave").exists():
        raise SystemExit(f"{args.ref_venv}: no acids-rave venv (see this script's docstring to make one)")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    db = make_data(work, ref_bin)
    rows = []
    for config in args.configs.split(","):
        print(f"== {config}", flush=True)
        ckpt, run = train(work, ref_bin, db, config)
        ts = export(work, ref_bin, ckpt, config)
        runs = import_all(work, config, run, ts)
        out = work / f"ref_{config}.npz"
        sh([ref_bin / "python", HERE / "bench_import_ref.py", ckpt, ts["offline"], out], work / f"ref_{config}.log")
        ref = dict(np.load(out))
        rows += compare(config, runs, ref, work)
        if args.fixtures is not None:
            write_fixtures(args.fixtures, config, ckpt, run, ts["offline"])
    print()
    print(f"{'config':9} {'source':13} {'output':26} {'max abs':>10} {'rel':>10}")
    worst = 0.0
    for config, source, what, d, rel in rows:
        print(f"{config:9} {source:13} {what:26} {d:10.2e} {rel:10.2e}")
        if rel == rel:
            worst = max(worst, rel)
    print(f"\nlargest relative difference: {worst:.2e} (target 1e-4): {'OK' if worst <= 1e-4 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
