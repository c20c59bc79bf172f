"""nn~ compatibility: exports run under the libtorch that nn~ ships, called the way nn~ calls them.

nn~ 1.6 (acids-ircam/nn_tilde) links libtorch 2.5.1 (nn~ 1.5.x links libtorch 2.0). This
script exports ``tiny``, ``v1`` and ``v2`` (untrained weights with a random PCA and
a louder waveform head, so outputs are far from silence; the speed and the
format do not depend on training), streaming and offline, with and without a
(random, small) prior, with this venv's torch. It then loads every file with
``torch.jit.load`` in a separate virtual environment holding the older torch and
replays nn~'s call pattern there: ``get_methods()``, ``get_attributes()``,
``get_sampling_rate()``, then for each method its ``<method>_params``
``[in_channels, in_ratio, out_channels, out_ratio]``, and calls on consecutive buffers
(``--buffers``, 2048 and 4096 samples) with batch 1, then 4 (``mc.nn~``), then 1 again,
under ``torch.inference_mode()``.

Checked, per model and method: no error; every output has the declared shape
``[B, out_channels, buffer / out_ratio]``; the streaming export's block-by-block output
equals the whole-signal output that this venv's torch computes from the same file
(each batch phase from a fresh module: a new batch size starts from silence), max
abs error printed; the offline export fed whole signals equals it too (its
block-by-block output clicks, which is why ``ravemodel export`` writes the streaming one
by default). The ``prior`` method samples at random: it is checked for shapes,
finiteness, and block-by-block equal to whole-signal under the same seed in the old
torch itself.

The old torch lives in its own venv (default ``/work/refvenv/torch251``). When its
python is missing the script creates it with this python's base interpreter and
``pip install torch==VERSION`` from PyPI (about 4 GB with the CUDA libraries pip
pulls in; the free disk space is checked first). By hand:

    python3.11 -m venv /work/refvenv/torch251 && /work/refvenv/torch251/bin/pip install torch==2.5.1

    .venv/bin/python bench/bench_nn_compat.py [--torch 2.5.1] [--venv DIR]
        [--models tiny v1 v2] [--buffers 2048 4096] [--frames 8] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

NEEDED_GB = 8.0  # torch + its CUDA wheels, unpacked, with some room

# Runs in the old torch's venv (python -I: nothing from this project is importable).
# argv: manifest.json results.jsonl. Writes one JSON line per export as it goes (a long
# run stopped early still leaves what it checked), prints its progress and torch's version.
CHILD = r'''
import copy, json, sys, time, warnings
import torch
warnings.simplefilter("ignore")
torch.set_num_threads(1)
manifest = json.load(open(sys.argv[1]))
optimize = manifest["optimize"]
out = open(sys.argv[2], "w")
for entry in manifest["exports"]:
    ref = torch.load(entry["reference"])
    inputs = torch.load(entry["inputs"])
    row = {"name": entry["name"], "error": None, "methods": {}}
    try:
        with torch.jit.optimized_execution(optimize):
            loaded = torch.jit.load(entry["path"])
            # Fresh copies share the loaded module's compiled methods (the graph executor
            # optimises each method once, on its first calls) but start from silence,
            # like a newly loaded nn~ object.
            pristine = copy.deepcopy(loaded)
            row["methods_listed"] = list(loaded.get_methods())
            row["attributes"] = list(loaded.get_attributes())
            row["sr"] = int(loaded.get_sampling_rate())
            for method in loaded.get_methods():
                p = [int(v) for v in getattr(loaded, method + "_params")]
                per = {}
                first = []
                for buffer in manifest["buffers"]:
                    m = copy.deepcopy(pristine)
                    fn = getattr(m, method)
                    n_in = buffer // p[1]
                    shapes_ok, err_stream, err_whole, peak, blockwise = True, 0.0, 0.0, 0.0, 0.0
                    for phase, x in enumerate(inputs[method]):
                        b = x.shape[0]
                        if method == "prior":
                            torch.manual_seed(phase)
                        outs = []
                        with torch.inference_mode():  # what nn~ runs its methods under
                            for i in range(0, x.shape[-1], n_in):
                                t0 = time.perf_counter()
                                y = fn(x[..., i:i + n_in])
                                if len(first) < 2:
                                    first.append(time.perf_counter() - t0)
                                shapes_ok &= list(y.shape) == [b, p[2], buffer // p[3]]
                                outs.append(y)
                        blocks = torch.cat(outs, -1)
                        fresh = copy.deepcopy(pristine)
                        if method == "prior":
                            torch.manual_seed(phase)
                            with torch.inference_mode():
                                whole = fresh.prior(x)
                            err_stream = max(err_stream, float((blocks - whole).abs().max()))
                            shapes_ok &= bool(torch.isfinite(blocks).all())
                            peak = max(peak, float(whole.abs().max()))
                            continue
                        target = ref[method][phase]
                        peak = max(peak, float(target.abs().max()))
                        with torch.inference_mode():
                            whole = getattr(fresh, method)(x)
                        err_whole = max(err_whole, float((whole - target).abs().max()))
                        blockwise = max(blockwise, float((blocks - target).abs().max()))
                    per[str(buffer)] = {"shapes_ok": bool(shapes_ok), "blocks_vs_ref": blockwise, "whole_vs_ref": err_whole,
                                        "prior_blocks_vs_whole": err_stream, "peak": peak}
                row["methods"][method] = {"params": p, "buffers": per, "first_calls_s": first}
    except Exception as exc:  # reported in the table, the other models still run
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"
    out.write(json.dumps(row) + "\n")
    out.flush()
    print(f"  {entry['name']}: {'checked' if row['error'] is None else row['error']}", file=sys.stderr, flush=True)
print(torch.__version__)
'''


def ensure_venv(venv: Path, version: str) -> Path:
    """The venv's python, created with ``pip install torch==version`` if missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        free = shutil.disk_usage(venv.parent if venv.parent.exists() else Path("/")).free / 1e9
        if free < NEEDED_GB:
            raise SystemExit(f"{venv}: only {free:.1f} GB free, torch {version} needs about {NEEDED_GB:g} GB")
        print(f"creating {venv} (torch {version} from PyPI, about 4 GB; {free:.0f} GB free)", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={version}"], check=True)
    found = subprocess.run([str(python), "-I", "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    if found.returncode != 0 or not found.stdout.strip().startswith(version):
        raise SystemExit(f"{venv}: expected torch {version}, got {found.stdout.strip() or found.stderr.strip()[-300:]}")
    return python


def make_model(preset: str):
    """An untrained model of ``preset`` with a random PCA, warmed up (v1's noise branch on)."""
    import torch

    from rave_model.config import load_config
    from rave_model.model import RAVE

    torch.manual_seed(0)
    cfg = load_config(preset, [])
    model = RAVE(cfg).eval()
    with torch.no_grad():
        # Random init decodes near silence: scale the waveform head so errors show.
        head = getattr(model.decoder, "wave_gen", None)
        if head is not None and hasattr(head, "parametrizations"):
            head.parametrizations.weight.original0.mul_(50)
        size = model.latent_pca.shape[0]
        q, _ = torch.linalg.qr(torch.randn(size, size))
        model.latent_pca.copy_(q)
        model.latent_mean.copy_(torch.randn(size) * 0.1)
        model.fidelity.copy_(torch.linspace(0.5, 1.0, size))
    model.set_warmed_up(True)
    return model


def phase_inputs(module, method: str, samples: int, seed: int):
    """Inputs of the three call phases (batch 1, 4, 1) of ``method``: ``samples`` audio
    samples each, at the method's input rate."""
    import torch

    p = [int(v) for v in getattr(module, f"{method}_params")]
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in (1, 4, 1):
        n = samples // p[1]
        if method == "prior":
            out.append(torch.randn(b, p[0], n, generator=g) * 0.5)  # temperature control around 1
        elif method == "decode":
            out.append(torch.randn(b, p[0], n, generator=g))  # latents ~ N(0, 1)
        else:
            t = torch.arange(samples) / 48000.0
            tone = 0.4 * torch.sin(2 * torch.pi * 220.0 * (1 + torch.arange(b).view(b, 1, 1)) * t)
            out.append((tone + 0.1 * torch.randn(b, p[0], samples, generator=g)).float())
    return out


def export_all(models: list[str], workdir: Path, samples: int) -> list[dict]:
    """Write the exports, their inputs and this torch's whole-signal outputs under ``workdir``."""
    import copy
    import warnings

    import torch

    from rave_model.export import build_export
    from rave_model.prior import LatentPrior

    warnings.simplefilter("ignore", FutureWarning)
    exports = []
    for preset in models:
        model = make_model(preset)
        for with_prior in (False, True):
            prior = None
            if with_prior:
                torch.manual_seed(1)
                k = int(build_export(model, streaming=True).latent_size)
                prior = LatentPrior(k, resolution=16, hidden_size=32, skip_size=16, n_layers=4, cycle_size=2).eval()
            for streaming in (True, False):
                name = f"{preset}_{'streaming' if streaming else 'offline'}{'_prior' if with_prior else ''}"
                path = workdir / f"{name}.ts"
                t0 = time.perf_counter()
                build_export(model, fidelity=0.95, streaming=streaming, prior=prior).save(str(path))
                module = torch.jit.load(str(path))
                inputs, reference = {}, {}
                # The reference needs no graph optimisation (the same arithmetic, minutes
                # less on big graphs); copies of the fresh module start from silence.
                with torch.jit.optimized_execution(False):
                    for i, method in enumerate(module.get_methods()):
                        inputs[method] = phase_inputs(module, method, samples, seed=i)
                        if method == "prior":
                            continue
                        reference[method] = []
                        for x in inputs[method]:
                            with torch.inference_mode():
                                reference[method].append(getattr(copy.deepcopy(module), method)(x))
                torch.save(inputs, workdir / f"{name}.inputs.pt")
                torch.save(reference, workdir / f"{name}.reference.pt")
                size = path.stat().st_size / 1e6
                print(f"  exported {name}: {size:.1f} MB, reference computed ({time.perf_counter() - t0:.0f} s)", flush=True)
                exports.append({"name": name, "path": str(path), "inputs": str(workdir / f"{name}.inputs.pt"),
                                "reference": str(workdir / f"{name}.reference.pt"), "size_mb": size})
    return exports


def table(version: str, rows: list[dict], exports: list[dict], buffers: list[int]) -> bool:
    """Print the results; True when every export was checked and passed."""
    import torch

    ok_all = len(rows) == len(exports)
    sizes = {e["name"]: e["size_mb"] for e in exports}
    print(f"\ntorch {version} (old venv) against torch {torch.__version__} (this venv), max abs errors:")
    print("blocks-ref: buffer by buffer in the old torch vs whole signal here (prior: vs whole signal, same seed, old torch);")
    print("whole-ref: whole signal in both; 1st calls: seconds of the first two calls (graph optimisation)")
    head = (f"{'export':24} {'MB':>6} {'method':8} {'params':16} {'buffer':>6} {'shapes':6} {'blocks-ref':>10} "
            f"{'whole-ref':>10} {'peak':>8} {'1st calls':>10}  verdict")
    print(head)
    print("-" * len(head))
    for row in rows:
        if row["error"]:
            print(f"{row['name']:24} {sizes[row['name']]:6.1f} ERROR {row['error']}")
            ok_all = False
            continue
        streaming = "_streaming" in row["name"]
        for method, info in row["methods"].items():
            for buffer in buffers:
                r = info["buffers"][str(buffer)]
                tol = 1e-4 * max(r["peak"], 1.0)
                if method == "prior":
                    blocks, whole = r["prior_blocks_vs_whole"], float("nan")
                    ok = r["shapes_ok"] and blocks <= tol
                else:
                    blocks, whole = r["blocks_vs_ref"], r["whole_vs_ref"]
                    # Offline: whole signals must match; block by block it clicks (expected).
                    ok = r["shapes_ok"] and whole <= tol and (blocks <= tol if streaming else True)
                ok_all &= ok
                verdict = "ok" if ok else "FAIL"
                if not streaming and method != "prior":
                    verdict += " (blocks click: offline)" if blocks > tol else ""
                first = "+".join(f"{t:.1f}" for t in info["first_calls_s"]) if buffer == buffers[0] else ""
                print(f"{row['name']:24} {sizes[row['name']]:6.1f} {method:8} {str(info['params']):16} {buffer:6d} "
                      f"{'yes' if r['shapes_ok'] else 'NO':6} {blocks:10.2e} {whole:10.2e} {r['peak']:8.3f} {first:>10}  {verdict}")
    return ok_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", default="2.5.1", help="torch version of the old venv (nn~ 1.6: 2.5.1; nn~ 1.5: 2.0.1)")
    parser.add_argument("--venv", type=Path, default=None, help="old venv [default: /work/refvenv/torch<version digits>]")
    parser.add_argument("--models", nargs="+", default=["tiny", "v1", "v2"])
    parser.add_argument("--buffers", nargs="+", type=int, default=[2048, 4096])
    parser.add_argument("--frames", type=int, default=4, help="buffers of the largest size per call phase")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the exports here [default: a temporary folder]")
    parser.add_argument("--no-optimize", action="store_true",
                        help="run the old torch without TorchScript's graph optimisation (faster; nn~ runs with it)")
    args = parser.parse_args()
    venv = args.venv or Path(f"/work/refvenv/torch{args.torch.replace('.', '')[:3]}")
    python = ensure_venv(venv, args.torch)

    import torch

    torch.set_num_threads(1)
    samples = max(args.buffers) * args.frames
    for b in args.buffers:
        if samples % b:
            raise SystemExit(f"--buffers: {b} does not divide {samples}")
    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="nn_compat_")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"exporting with torch {torch.__version__}: {', '.join(args.models)}; phases of {samples} samples (batch 1, 4, 1)", flush=True)
        exports = export_all(args.models, workdir, samples)
        manifest = {"exports": exports, "buffers": args.buffers, "optimize": not args.no_optimize}
        (workdir / "manifest.json").write_text(json.dumps(manifest))
        (workdir / "child.py").write_text(CHILD)
        opt = "without" if args.no_optimize else "with"
        print(f"running them with {python} ({opt} graph optimisation) ...", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        results = workdir / "results.jsonl"
        res = subprocess.run([str(python), "-I", str(workdir / "child.py"), str(workdir / "manifest.json"), str(results)],
                             cwd=workdir, env=env, stdout=subprocess.PIPE, text=True)
        rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
        if res.returncode != 0:
            print(f"the torch {args.torch} run failed (exit status {res.returncode}) after {len(rows)} exports")
        version = res.stdout.strip().splitlines()[-1] if res.returncode == 0 else args.torch
        ok = table(version, rows, exports, args.buffers)
        print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
        if not ok:
            sys.exit(1)
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
