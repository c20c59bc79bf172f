"""Training speed: steps/s of the real training step by precision and compilation,
peak GPU memory, the data loader's own rate, and (on a GPU) the stage-1 loss
curve of bf16 against float32.

    .venv/bin/python bench/bench_train.py                      # CPU: tiny,small; 32 and bf16
    python3 bench/bench_train.py --device cuda --out DIR       # GPU: v2,v2_small; every mode; curves; loader

Every number comes from this run. A synthetic LMDB dataset (sines and noise,
int16) is written to a temporary folder; each stage is built through the real
Stage classes (:mod:`rave_model.train.vae`, ``adversarial``) and the real
precision module.

- **Step rate** (``--stages``, default stage 1 ``vae``): ``--warmup`` steps (where
  compilation happens), then ``--steps`` timed steps on one batch already on the
  device, the way the runner drives a stage: losses kept on the device and
  brought to the host every ``log_every`` (100) steps. It is the device's rate,
  without the loader (measured on its own below). Modes:

  - ``base``: float32 as acids-rave 2.3.1 trains (PyTorch's defaults: no TF32
    matmuls, the default Adam, each step's losses converted to floats every step
    (``float(loss)``, a host-device synchronisation per step, as Lightning's
    per-step logging does); the stand-in for acids-rave's rate, whose v2 is
    architecturally the same model);
  - ``32``: float32 with TF32 matmuls, fused Adam, no per-step synchronisation;
  - ``bf16``: autocast to bfloat16 (losses in float32); ``16-mixed``: float16 with
    gradient scaling;
  - ``bf16+compile``, ``32+compile``: the same with ``--compile``;
    ``bf16+compile-ro``: compiled in torch.compile's "reduce-overhead" mode (CUDA graphs).

- **Loader**: examples/s of one worker (read from LMDB, crop, phase mangle,
  dequantisation, and each again with the default online augmentation plan),
  timed in this process; then batches/s of the real DataLoader with the default
  worker count (``train.num_workers = -1``) with augmentation on.
- **Loss curve** (``--curve-steps``, GPU): stage 1 of the first preset from the
  same seed in float32 and in bf16, plus float32 from another seed (the
  run-to-run noise), through the real data stream; the table compares the
  smoothed curves.
- **No-sync check** (GPU): two more steps of each mode under
  ``torch.cuda.set_sync_debug_mode("warn")``, counting synchronising calls.

``--budget`` seconds bound the whole run: work past it is skipped and reported
as such. Results go to stdout (a table last) and, with ``--out``, to
``bench_train.json``, ``bench_train.md`` and the curves ``curves.csv``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - T0


def write_dataset(folder: Path, sr: int, frames: int, n: int) -> Path:
    import numpy as np

    from tests.rave_model.datasets import write_dataset as write

    rng = np.random.default_rng(0)
    t = np.arange(frames) / sr
    examples = []
    for i in range(n):
        x = 0.4 * np.sin(2 * np.pi * 110 * (1 + i % 5) * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * (i + 1) * t)) / 1.5
        x = x + 0.05 * rng.standard_normal(frames)
        examples.append(np.round(x * 32767).astype(np.int16)[None])
    return write(folder, examples, sr=sr)


# -- building a stage ------------------------------------------------------------------------


def build_stage(preset: str, stage_name: str, dataset: Path, device: str, mode: str, extra: list[str] = ()):
    """(stage, ctx) for ``mode`` ("base", "32", "bf16", "16-mixed", "+compile" suffix)."""
    import torch

    from rave_model.config import load_config
    from rave_model.data import TrainData
    from rave_model.model import RAVE
    from rave_model.train.logging import TrainLogger
    from rave_model.train.stage import TrainContext
    from rave_model.train.stages import stage_class

    from rave_model.train import precision as prec

    precision, _, comp = mode.partition("+")
    base = precision == "base"
    # "compile-ro": torch.compile's "reduce-overhead" mode (CUDA graphs).
    prec.COMPILE_MODE = "reduce-overhead" if comp == "compile-ro" else None
    overrides = [f'train.precision="{"32" if base else precision}"', f"train.compile={'true' if comp else 'false'}", "train.batch_size=8", *extra]
    cfg = load_config(preset, overrides)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        # PyTorch's defaults (acids-rave's): float32 matmuls in full precision,
        # cuDNN convolutions allowed TF32. The precision module turns TF32 matmuls on.
        torch.set_float32_matmul_precision("highest")
    torch.manual_seed(int(cfg.train.seed))
    run = Path(tempfile.mkdtemp())
    ctx = TrainContext(cfg=cfg, model=RAVE(cfg).to(dev), device=dev, run_dir=run, data=TrainData(dataset, cfg), logger=TrainLogger(run, enabled=False))
    if stage_name == "adversarial":
        ctx.model.set_warmed_up(True)
    stage = stage_class(stage_name)(ctx)
    if base:
        torch.set_float32_matmul_precision("highest")
        betas = tuple(float(b) for b in cfg.train.betas)
        if stage_name == "vae":
            stage.opt = torch.optim.Adam(stage.params, lr=float(cfg.train.lr), betas=betas)
            stage.sched = torch.optim.lr_scheduler.LinearLR(stage.opt, 1.0, float(cfg.train.lr_end_factor), max(1, int(cfg.train.vae_steps)))
        else:
            stage.gen_opt = torch.optim.Adam(ctx.model.decoder.parameters(), lr=1e-4, betas=betas)
            stage.dis_opt = torch.optim.Adam(stage.discriminator.parameters(), lr=1e-4, betas=betas)
    stage.on_start()
    return stage, ctx


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_mode(preset: str, stage_name: str, dataset: Path, device: str, mode: str, warmup: int, steps: int, log_every: int = 100) -> dict[str, Any]:
    """Steps/s of ``mode`` on one batch already on the device; peak memory; the
    synchronising calls of two extra steps (CUDA); dynamo's graph and recompile
    counts after warm-up (compiled modes)."""
    import torch

    from rave_model.train.pending import PendingLosses
    from rave_model.data import DataPosition

    row: dict[str, Any] = {"preset": preset, "stage": stage_name, "mode": mode}
    t_build = time.perf_counter()
    stage, ctx = build_stage(preset, stage_name, dataset, device, mode)
    dev = ctx.device
    batch = next(stage.batches(DataPosition()))[0].to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    base = mode == "base"
    pending = PendingLosses()

    def one(step: int) -> None:
        losses = stage.train_step(batch, step)
        if base:
            {k: float(v) for k, v in losses.items()}  # acids-rave's per-step logging: a sync per step
        else:
            pending.add(step, losses)
            if (step + 1) % log_every == 0:
                for _, values in pending.flush():
                    assert all(math.isfinite(v) for v in values.values()), values

    t = time.perf_counter()
    for step in range(warmup):
        one(step)
    sync(dev)
    row["warmup_s"] = round(time.perf_counter() - t, 1)
    if dev.type == "cuda":
        # After warm-up: cuDNN's autotuning tries workspaces far larger than training holds.
        torch.cuda.reset_peak_memory_stats(dev)
    graphs = _dynamo_graphs()
    t = time.perf_counter()
    for step in range(warmup, warmup + steps):
        one(step)
    sync(dev)
    wall = time.perf_counter() - t
    flushed = pending.flush()
    row["final_losses"] = flushed[-1][1] if flushed else {}
    row["finite"] = all(math.isfinite(v) for _, values in flushed for v in values.values())
    row["steps_per_s"] = steps / wall
    row["ms_per_step"] = 1000 * wall / steps
    cfg = ctx.cfg
    row["audio_s_per_s"] = row["steps_per_s"] * 8 * int(cfg.data.n_signal) / int(cfg.data.sr)
    if dev.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        row["syncs_in_2_steps"] = count_syncs(one, warmup + steps) if not base else None
    if "compile" in mode:
        row["new_graphs_after_warmup"] = _dynamo_graphs() - graphs
    row["total_s"] = round(time.perf_counter() - t_build, 1)
    del stage, ctx, batch
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _dynamo_graphs() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 - an older torch: no counter, no figure
        return 0


def count_syncs(one, start: int) -> int:
    """Synchronising CUDA calls made by two steps (torch's sync debug mode)."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            one(start)
            one(start + 1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message) for w in caught)


# -- the loader ---------------------------------------------------------------------------


def loader_rates(preset: str, dataset: Path, device: str, augment: str, batches: int) -> dict[str, Any]:
    """Batches/s of the real DataLoader with the default workers, augmentation on;
    then examples/s of one worker by stage of the pipeline, in this process.

    The DataLoader goes first: its workers fork from a process that has loaded the
    augmentation plan but not run it, as in training (see :func:`loader_in_subprocess`)."""
    import numpy as np
    import torch

    from rave_model.config import load_config
    from rave_model.data import TrainData, load_augment_plan, phase_mangle, random_crop
    from rave_model.data import DataPosition

    cfg = load_config(preset, ["train.num_workers=-1"])
    plan = load_augment_plan(augment)
    data = TrainData(dataset, cfg, augment=plan)
    out: dict[str, Any] = {"preset": preset, "augment_plan": Path(augment).name}
    dev = torch.device(device)
    workers = data.workers(dev)
    out["workers"] = workers
    out["cores"] = os.cpu_count()
    stream = data.train_batches(DataPosition(), dev)
    # Workers start and fill their prefetch queues first.
    for _ in range(max(2, 2 * workers)):
        next(stream)
    t = time.perf_counter()
    for _ in range(batches):
        next(stream)
    sync(dev)
    out["loader_batches_per_s"] = batches / (time.perf_counter() - t)
    out["loader_examples_per_s"] = out["loader_batches_per_s"] * data.batch_size
    del stream

    torch.set_num_threads(1)
    src, n, sr = data.source, int(cfg.data.n_signal), int(cfg.data.sr)
    idx = [int(i) for i in data.train_idx]
    rng = np.random.default_rng(0)
    k = 24

    def rate(fn) -> float:
        fn(0)
        t = time.perf_counter()
        for i in range(k):
            fn(i)
        return k / (time.perf_counter() - t)

    out["read"] = rate(lambda i: src.read(idx[i % len(idx)]))
    x = random_crop(src.read(idx[0]), n, rng).astype(np.float32) / 32767.0
    out["crop"] = rate(lambda i: random_crop(src.read(idx[i % len(idx)]), n, rng).astype(np.float32) / 32767.0)
    out["phase_mangle"] = rate(lambda i: phase_mangle(x, sr, rng))
    out["dequantize"] = rate(lambda i: x + rng.uniform(0.0, 1.0, x.shape).astype(np.float32) / 65536.0)
    out["augment"] = rate(lambda i: plan.sample(rng).apply(x, sr))
    ds = data.dataset
    ds.augment = None
    out["example_no_augment"] = rate(lambda i: ds[(idx[i % len(idx)], 0, i)])
    ds.augment = plan
    out["example_with_augment"] = rate(lambda i: ds[(idx[i % len(idx)], 0, i)])
    return out


def loader_in_subprocess(preset: str, dataset: Path, device: str, augment: str, batches: int, timeout: float) -> dict[str, Any]:
    """:func:`loader_rates` in a fresh interpreter: the augmentation libraries then
    never run in the process that trains (and forks the loaders) here."""
    import subprocess

    cmd = [sys.executable, __file__, "--loader-only", str(dataset), "--presets", preset, "--device", device,
           "--augment", augment, "--loader-batches", str(batches)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


# -- loss curves ----------------------------------------------------------------------------


def loss_curve(preset: str, dataset: Path, device: str, mode: str, steps: int, seed: int) -> list[float]:
    """Stage-1 total loss per step from ``seed`` through the real data stream."""
    import torch

    from rave_model.train.pending import PendingLosses
    from rave_model.data import DataPosition

    stage, ctx = build_stage(preset, "vae", dataset, device, mode, [f"train.seed={seed}", "train.num_workers=-1"])
    pending = PendingLosses()
    stream = stage.batches(DataPosition())
    for step in range(steps):
        pending.add(step, {"loss": stage.train_step(next(stream)[0], step)["loss"]})
    curve = [v["loss"] for _, v in pending.flush()]
    del stage, ctx, stream
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return curve


def compare_curves(curves: dict[str, list[float]], window: int) -> dict[str, float]:
    """Mean |difference| of window-smoothed curves, relative to the reference
    curve's mean: bf16 vs float32 (same seed), and float32 seed 1 vs seed 0 (noise)."""
    import numpy as np

    def smooth(c: list[float]) -> np.ndarray:
        c = np.asarray(c, dtype=np.float64)
        return np.convolve(c, np.ones(window) / window, mode="valid")

    ref = smooth(curves["32"])
    out = {}
    for name, c in curves.items():
        if name != "32":
            s = smooth(c)
            out[name] = float(np.mean(np.abs(s - ref)) / np.mean(ref))
    # The same in the last half (after the fast initial drop).
    half = len(ref) // 2
    for name, c in curves.items():
        if name != "32":
            s = smooth(c)
            out[f"{name} (2nd half)"] = float(np.mean(np.abs(s[half:] - ref[half:])) / np.mean(ref[half:]))
    return out


# -- report ---------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    head = "| preset | stage | mode | steps/s | ms/step | audio s / s | vs base | peak GiB | syncs / 2 steps | warm-up s |\n|---|---|---|---|---|---|---|---|---|---|"
    lines = [head]
    base = {(r["preset"], r["stage"]): r["steps_per_s"] for r in rows if r.get("mode") == "base" and "steps_per_s" in r}
    for r in rows:
        if "steps_per_s" not in r:
            lines.append(f"| {r['preset']} | {r['stage']} | {r['mode']} | {r.get('error', 'skipped')} | | | | | | |")
            continue
        b = base.get((r["preset"], r["stage"]))
        ratio = f"{r['steps_per_s'] / b:.2f}x" if b else "-"
        peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "-"
        syncs = "-" if r.get("syncs_in_2_steps") is None else str(r["syncs_in_2_steps"])
        lines.append(
            f"| {r['preset']} | {r['stage']} | {r['mode']} | {r['steps_per_s']:.2f} | {r['ms_per_step']:.1f} | "
            f"{r['audio_s_per_s']:.1f} | {ratio} | {peak} | {syncs} | {r['warmup_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", default=None, help="default: v2,v2_small on CUDA, tiny,small on a CPU")
    ap.add_argument("--modes", default=None, help="default: base,32,bf16,bf16+compile on CUDA; base,32,bf16 on a CPU")
    ap.add_argument("--stages", default="vae")
    ap.add_argument("--warmup", type=int, default=None, help="default 10 on CUDA, 1 on a CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps; default 60 on CUDA, 3 on a CPU")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on a CPU")
    ap.add_argument("--curve-steps", type=int, default=0, help="stage-1 loss curve steps per run (0: none)")
    ap.add_argument("--loader-batches", type=int, default=0, help="DataLoader batches timed (0: no loader measurement)")
    ap.add_argument("--augment", default=str(ROOT / "rave_data" / "augment" / "default_plan.toml"))
    ap.add_argument("--curve-budget", type=float, default=1e9, help="seconds for the three curve runs (fewer steps if needed)")
    ap.add_argument("--extra-rows", default="", help="more rows after the rest: PRESET:STAGE:MODE,...")
    ap.add_argument("--budget", type=float, default=1e9, help="seconds; later work is skipped past it")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--loader-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loader_only:
        preset = (args.presets or "v2").split(",")[0]
        print(json.dumps(loader_rates(preset, args.loader_only, args.device, args.augment, args.loader_batches or 60)))
        return

    import torch

    cuda = args.device.startswith("cuda")
    presets = (args.presets or ("v2,v2_small" if cuda else "tiny,small")).split(",")
    modes = (args.modes or ("base,32,bf16,bf16+compile" if cuda else "base,32,bf16")).split(",")
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    steps = args.steps if args.steps is not None else (60 if cuda else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = {"torch": torch.__version__, "device": args.device, "cores": os.cpu_count()}
    if cuda:
        info["gpu"] = torch.cuda.get_device_name(0)
    print(json.dumps(info), flush=True)
    results: dict[str, Any] = {"info": info, "rows": [], "loader": None, "curves": None}

    def save() -> None:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "bench_train.json").write_text(json.dumps(results, indent=1, default=str))
            (args.out / "bench_train.md").write_text(render(results, info, args.device, warmup, steps) + "\n")

    from rave_model.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        datasets = {}
        for i, preset in enumerate(presets):
            cfg = load_config(preset)
            datasets[preset] = write_dataset(Path(tmp) / f"{i}-{preset}", int(cfg.data.sr), 2 * int(cfg.data.n_signal), 24)
        # In order of importance, for the budget: the first preset's plain modes,
        # the loader, the curves, the other presets' plain modes, then the compiled
        # modes (compilation takes a minute or more each).
        def rows_of(ps: list[str], compiled: bool) -> list[tuple[str, Any]]:
            return [("row", (p, s, m)) for p in ps for s in args.stages.split(",") for m in modes if ("compile" in m) == compiled]

        jobs = rows_of(presets[:1], False)
        jobs += [("loader", None)] if args.loader_batches else []
        jobs += [("curves", None)] if args.curve_steps else []
        jobs += rows_of(presets[1:], False) + rows_of(presets[:1], True) + rows_of(presets[1:], True)
        for extra in filter(None, args.extra_rows.split(",")):
            p, s, m = extra.split(":")
            datasets.setdefault(p, datasets.get(p) or write_dataset(Path(tmp) / f"x-{p}", int(load_config(p).data.sr), 2 * int(load_config(p).data.n_signal), 24))
            jobs.append(("row", (p, s, m)))
        for kind, job in jobs:
            if elapsed() > args.budget:
                if kind == "row":
                    results["rows"].append({"preset": job[0], "stage": job[1], "mode": job[2], "error": "skipped (time budget)"})
                print(f"[{elapsed():6.0f}s] skipped {kind} {job or ''}: past the {args.budget:.0f} s budget", flush=True)
                continue
            if kind == "row":
                preset, stage_name, mode = job
                try:
                    row = time_mode(preset, stage_name, datasets[preset], args.device, mode, warmup, steps)
                except Exception as exc:  # noqa: BLE001 - one failing mode must not lose the others
                    row = {"preset": preset, "stage": stage_name, "mode": mode, "error": f"failed: {type(exc).__name__}: {str(exc)[:300]}"}
                results["rows"].append(row)
                print(f"[{elapsed():6.0f}s] {json.dumps(row, default=str)}", flush=True)
            elif kind == "loader":
                results["loader"] = loader_in_subprocess(presets[0], datasets[presets[0]], args.device, args.augment, args.loader_batches, timeout=120)
                print(f"[{elapsed():6.0f}s] loader {json.dumps(results['loader'], default=str)}", flush=True)
            else:
                # Scale the curves to what is left of the budget (three runs).
                rate = max((r["steps_per_s"] for r in results["rows"] if r.get("preset") == presets[0] and r.get("mode") == "32" and "steps_per_s" in r), default=None)
                n = args.curve_steps
                if rate and min(args.budget, args.curve_budget) < 1e8:
                    left = min(args.budget - elapsed(), args.curve_budget)
                    n = max(50, min(n, int(left / 3 * rate * 0.8)))
                curves = {}
                for name, mode, seed in (("32", "32", 0), ("bf16", "bf16", 0), ("32 seed 1", "32", 1)):
                    t = time.perf_counter()
                    try:
                        curves[name] = loss_curve(presets[0], datasets[presets[0]], args.device, mode, n, seed)
                    except Exception as exc:  # noqa: BLE001 - report it, keep the other measurements
                        print(f"[{elapsed():6.0f}s] curve {name} failed: {type(exc).__name__}: {exc}", flush=True)
                        break
                    print(f"[{elapsed():6.0f}s] curve {name}: {n} steps in {time.perf_counter() - t:.0f} s, first {curves[name][0]:.3f} last {curves[name][-1]:.3f}", flush=True)
                if len(curves) < 3:
                    results["curves"] = {"steps": n, "window": 0, "relative_difference": {}, "error": "a curve run failed"}
                    continue
                window = max(5, n // 10)
                results["curves"] = {"steps": n, "window": window, "relative_difference": compare_curves(curves, window)}
                print(f"[{elapsed():6.0f}s] curves {json.dumps(results['curves'])}", flush=True)
                if args.out:
                    args.out.mkdir(parents=True, exist_ok=True)
                    with open(args.out / "curves.csv", "w") as f:
                        f.write("step," + ",".join(curves) + "\n")
                        for i in range(n):
                            f.write(f"{i}," + ",".join(f"{curves[k][i]:.6f}" for k in curves) + "\n")
            save()

    out = render(results, info, args.device, warmup, steps)
    print("\n" + out)
    save()


def render(results: dict[str, Any], info: dict[str, Any], device: str, warmup: int, steps: int) -> str:
    text = [f"torch {info['torch']}, {info.get('gpu', device)}, batch 8, {warmup} warm-up + {steps} timed steps per row", "", table(results["rows"])]
    ld = results["loader"]
    if ld and "error" not in ld:
        text += ["", f"loader ({ld['preset']}, one worker, examples/s): read {ld['read']:.0f}, crop {ld['crop']:.0f}, "
                 f"phase mangle {ld['phase_mangle']:.0f}, dequantise {ld['dequantize']:.0f}, augmentation plan {ld['augment']:.1f}; "
                 f"whole example {ld['example_no_augment']:.0f} without / {ld['example_with_augment']:.1f} with augmentation",
                 f"DataLoader, {ld['workers']} workers (default on this device, {ld['cores']} cores), augmentation on: "
                 f"{ld['loader_batches_per_s']:.1f} batches/s of 8 ({ld['loader_examples_per_s']:.0f} examples/s)"]
    elif ld:
        text += ["", f"loader: {ld['error']}"]
    cv = results["curves"]
    if cv:
        text += ["", f"stage-1 loss curves, {cv['steps']} steps each, smoothed over {cv['window']} steps; mean |difference| relative to float32 seed 0:"]
        text += [f"  {k}: {v:.4f}" for k, v in cv["relative_difference"].items()]
    return "\n".join(text)


if __name__ == "__main__":
    main()
