"""Training parity with acids-rave 2.3.1: the same v2_small-sized model trained the
same number of steps on the same data by both, compared on a held-out clip.

    .venv/bin/python bench/bench_parity_train.py [--steps 510] [--batch 4] [--n-signal 65536]
        [--ref-venv /path/to/venv] [--work DIR] [--files 19] [--device cpu|cuda] [--workers 1]
        [--skip-ref] [--skip-ours]

Opt-in (not a test, not in CI): it takes about 30 minutes on a 2-core CPU at the
defaults, and it needs acids-rave. ``--ref-venv`` is a virtual environment with
acids-rave 2.3.1; when the folder does not exist it is created with

    python3 -m venv REFVENV
    REFVENV/bin/pip install torch==2.14.1 torchaudio==2.11.0 acids-rave==2.3.1 "setuptools<81"

(acids-rave imports ``pkg_resources``, gone from setuptools 81). acids-rave is
only ever imported by that interpreter, in ``rave train`` and in
bench_parity_train_ref.py. On a machine without network access, where an
interpreter already has torch (numpy 2, recent scipy), bench_parity_train_shim.py
makes an equivalent folder from wheels carried there.

``--device cuda`` trains both on the GPU (acids-rave picks it by itself; on the
CPU it gets ``--gpu -1``); ``--workers`` sets both trainers' data loader processes.

What runs, in order, under ``--work`` (default: ``rave-parity-train`` in the
system temporary folder); each side runs alone, never both at once:

1. Corpus (bench_parity_train_corpus.py): ``--files`` seeded synthetic pieces
   (melody, bass, chords or pads, drums; varied timbres, vibrato, plucks) of
   11 x 2 x ``--n-signal`` + 8192 samples each (19 files: 10.4 minutes), 44.1 kHz
   mono, plus 2 held-out clips of 6 s made with other seeds and never in the
   dataset.
2. Dataset: ``ravedata prep corpus/train db --sr 44100 --num-signal N-SIGNAL``,
   one LMDB in acids-rave's layout that both trainers read (19 files give 209
   examples of 2 x N-SIGNAL samples; acids-rave's 98/2 split leaves 204 for
   training, 51 batches of 4 per epoch).
3. Reference: ``rave train --config v2_small --db_path db --max_steps STEPS
   --batch BATCH --n_signal N-SIGNAL --workers WORKERS --channels 1 --val_every STEPS``.
   acids-rave writes its checkpoint only after a validation pass, and with fewer
   training batches than ``--val_every`` it validates every ``val_every //
   batches`` epochs: so STEPS must be a multiple of the batches per epoch (or at
   most one epoch) for a checkpoint to exist at exactly STEPS; the script checks
   this before training and the checkpoint's ``global_step`` after.
   Then bench_parity_train_ref.py (in the reference venv) reconstructs the clips.
4. Ours: ``ravemodel fit db --preset v2_small --set data.sr=44100 --set
   data.n_signal=N-SIGNAL --set train.batch_size=BATCH --set train.vae_steps=STEPS
   --set train.num_workers=WORKERS --max-steps STEPS --device DEVICE`` (stage 1 only, as
   the reference's first STEPS steps are, its warm-up being 1M steps), then the
   clips are reconstructed through ``RAVE.forward`` (the latent mean) with the
   torch seed 0.

Both start from their own random initialisation (not the same weights); what is
compared is what the same number of steps on the same data achieves.

Measured, per implementation:

- **steps/s**: STEPS over the seconds of the training loop. Reference: the sum of
  PyTorch Lightning's simple profiler totals ``run_training_batch`` +
  ``[TrainingEpochLoop].train_dataloader_next`` (steps and waits for data; the
  sanity-check and end-of-run validation passes and checkpoint writes excluded).
  Ours: the rate ``ravemodel fit`` prints at the last step (steps since the stage
  started over the seconds since then; validation and checkpoint at the stage
  end come after it). Both include the first (slower) step.
- **wall s**: the whole training command (start-up, data loading, validation and
  checkpoints included).
- **CPU s/step**: CPU seconds (user + system) of the whole training command and
  the processes it waited for (its data loader worker), over STEPS. On a shared
  machine other jobs stretch wall time but add little to this figure, so it is the
  steadier speed comparison; **load** is the 1-minute load average when the
  command started and ended (2 cores here: above 2, other jobs were competing).
- **held-out distance**, one function for both (``log_spectral_distance``): for
  each clip x and its reconstruction y (same length), for each STFT size
  n in (2048, 1024, 512, 256, 128) with a Hann window of n samples, hop n/4,
  centred frames (``torch.stft``, ``center=True``, reflect padding),
  d_n = mean over frames and bins of |log(|X| + 1e-7) - log(|Y| + 1e-7)|;
  the clip's distance is the mean of d_n over the five sizes, and the figure
  printed is the mean over the held-out clips. Lower is better; 0 is identical
  magnitudes.

The table printed at the end (implementation, steps, wall s, steps/s, CPU s/step,
load, held-out distance) is followed by the two ratios the benchmark checks:
ours/reference distance (goal: <= 1) and ours/reference steps/s (goal: > 1), and
the CPU-time ratio. ``--skip-ref`` /
``--skip-ours`` reuse the other side's results from ``WORK/results.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SR = 44100
SCALES = (2048, 1024, 512, 256, 128)
EPS = 1e-7
REF_PACKAGES = ["torch==2.14.1", "torchaudio==2.11.0", "acids-rave==2.3.1", "setuptools<81"]


def log_spectral_distance(x, y) -> float:
    """Multi-scale log-magnitude distance of two float signals ``[n]`` (see the module docstring)."""
    import torch

    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"signals differ in length: {tuple(x.shape)} vs {tuple(y.shape)}")
    ds = []
    for n in SCALES:
        w = torch.hann_window(n, dtype=torch.float64)
        X = torch.stft(x, n, n // 4, window=w, center=True, return_complex=True).abs()
        Y = torch.stft(y, n, n // 4, window=w, center=True, return_complex=True).abs()
        ds.append((torch.log(X + EPS) - torch.log(Y + EPS)).abs().mean().item())
    return sum(ds) / len(ds)


def fail(msg: str, status: int = 1) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(status)


def run_logged(cmd: list[str], log: Path, cwd: Path) -> tuple[float, float]:
    """Run ``cmd`` with stdout+stderr to ``log``: (wall seconds, CPU seconds of the
    command and the processes it waited for, e.g. its data loader workers). A failure
    ends the benchmark with the log's last lines."""
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        # Its own process group: stopping the benchmark stops the trainer and its workers too.
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            raise
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        fail(f"{cmd[0]} exited with status {rc} (log: {log}):\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime


def ensure_ref_venv(venv: Path) -> Path:
    """The reference interpreter; the venv is created when the folder is missing."""
    py = venv / "bin" / "python"
    if not venv.exists():
        print(f"creating the acids-rave venv at {venv} (pip install {' '.join(REF_PACKAGES)})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", *REF_PACKAGES], check=True)
    if not (venv / "bin" / "rave").exists():
        fail(f"{venv}: no 'rave' command in this venv (install {' '.join(REF_PACKAGES)} in it, or pass another --ref-venv)", 2)
    return py


def prepare(work: Path, files: int, n_signal: int) -> tuple[Path, list[Path], int]:
    """Corpus, held-out clips as .npy, and the LMDB: (db, clip .npy paths, n examples)."""
    import numpy as np
    import soundfile as sf
    import yaml

    from bench_parity_train_corpus import make_corpus

    corpus = work / "corpus"
    _, clips = make_corpus(corpus, files, 11 * 2 * n_signal + 8192, 2, 6 * SR)
    npys = []
    for c in clips:
        y, sr = sf.read(str(c), dtype="float32")
        assert sr == SR
        y = y[: len(y) // 4096 * 4096]  # a whole number of hops for both models
        npy = work / "holdout" / (c.stem + ".npy")
        npy.parent.mkdir(parents=True, exist_ok=True)
        np.save(npy, y)
        npys.append(npy)
    db = work / "db"
    if not (db / "metadata.yaml").exists():
        run_logged([sys.executable, "-m", "rave_data", "prep", str(corpus / "train"), str(db), "--sr", str(SR),
                    "--num-signal", str(n_signal), "-j", "1", "-q"], work / "prep.log", work)
    meta = yaml.safe_load((db / "metadata.yaml").read_text())
    if meta.get("num_signal") != n_signal or meta.get("sr") != SR:
        fail(f"{db}: made with num_signal={meta.get('num_signal')}, sr={meta.get('sr')}; "
             f"delete it (or use another --work) for --n-signal {n_signal}", 2)
    return db, npys, int(meta["n_examples"])


def ref_batches_per_epoch(n_examples: int, batch: int) -> int:
    """acids-rave's split_dataset(dataset, 98) then DataLoader(drop_last=True)."""
    return max((98 * n_examples) // 100, 1) // batch


def profiler_total(log: str, action: str) -> float:
    m = re.search(r"\|\s+" + re.escape(action) + r"\s+\|\s+[\d.e-]+\s+\|\s+\d+\s+\|\s+([\d.e+-]+)\s+\|", log)
    if not m:
        fail(f"no '{action}' row in the profiler report of rave train")
    return float(m.group(1))


def run_reference(py: Path, db: Path, work: Path, npys: list[Path], steps: int, batch: int, n_signal: int, device: str, workers: int) -> dict:
    import numpy as np

    runs = work / "ref_runs"
    shutil.rmtree(runs, ignore_errors=True)
    rave = py.parent / "rave"
    log = work / "ref_train.log"
    load0 = os.getloadavg()[0]
    wall, cpu = run_logged([str(rave), "train", "--config", "v2_small", "--db_path", str(db), "--name", "parity",
                       "--out_path", str(runs), "--max_steps", str(steps), "--batch", str(batch),
                       "--n_signal", str(n_signal), "--workers", str(workers), "--val_every", str(steps),
                       "--channels", "1", "--progress", "false", *(["--gpu", "-1"] if device == "cpu" else [])], log, work)
    text = log.read_text(errors="replace")
    train_s = profiler_total(text, "run_training_batch") + profiler_total(text, "[TrainingEpochLoop].train_dataloader_next")
    run_dirs = sorted(runs.glob("parity_*"))
    ckpts = sorted(runs.glob("parity_*/version_*/checkpoints/epoch-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not run_dirs or not ckpts:
        fail(f"rave train wrote no epoch checkpoint under {runs} (log: {log})")
    step = int(subprocess.run([str(py), "-c", "import sys, torch; print(torch.load(sys.argv[1], map_location='cpu', "
                               "weights_only=False)['global_step'])", str(ckpts[-1])],
                              capture_output=True, text=True, check=True).stdout.split()[-1])
    if step != steps:
        fail(f"{ckpts[-1]}: checkpoint at step {step}, not {steps}")
    out = work / "ref_recon"
    shutil.rmtree(out, ignore_errors=True)
    run_logged([str(py), str(Path(__file__).with_name("bench_parity_train_ref.py")), str(run_dirs[-1]), str(ckpts[-1]),
                *map(str, npys), "--out", str(out)], work / "ref_recon.log", work)
    dist = [log_spectral_distance(np.load(p), np.load(out / p.name)) for p in npys]
    return {"steps": step, "wall_s": wall, "train_s": train_s, "distances": dist,
            "cpu_s": cpu, "load_1min": [load0, os.getloadavg()[0]], "checkpoint": str(ckpts[-1])}


def run_ours(db: Path, work: Path, npys: list[Path], steps: int, batch: int, n_signal: int, device: str, workers: int) -> dict:
    import numpy as np
    import torch

    from rave_model.train.checkpoint import load_model

    run = work / "ours_run"
    shutil.rmtree(run, ignore_errors=True)
    log = work / "ours_train.log"
    load0 = os.getloadavg()[0]
    wall, cpu = run_logged([sys.executable, "-m", "rave_model", "fit", str(db), "--preset", "v2_small", "--run", str(run),
                            "--device", device, "--set", f"data.sr={SR}", "--set", f"data.n_signal={n_signal}",
                            "--set", f"train.batch_size={batch}", "--set", f"train.vae_steps={steps}",
                            "--set", f"train.num_workers={workers}", "--max-steps", str(steps)], log, work)
    text = log.read_text(errors="replace")
    m = re.findall(rf"vae step {steps}/{steps}\s+([\d.]+) steps/s", text)
    if not m:
        fail(f"no 'vae step {steps}/{steps} ... steps/s' line in {log}")
    rate = float(m[-1])
    model, _cfg, ckpt = load_model(run)
    if ckpt.step != steps or ckpt.stage != "vae":
        fail(f"{run}: checkpoint at {ckpt.stage} step {ckpt.step}, not vae step {steps}")
    dist = []
    out = work / "ours_recon"
    out.mkdir(exist_ok=True)
    for p in npys:
        x = torch.from_numpy(np.load(p))[None, None]
        torch.manual_seed(0)
        with torch.no_grad():
            y = model(x)[0, 0, : x.shape[-1]].numpy()
        np.save(out / p.name, y)
        dist.append(log_spectral_distance(np.load(p), y))
    return {"steps": ckpt.step, "wall_s": wall, "train_s": steps / rate, "distances": dist,
            "cpu_s": cpu, "load_1min": [load0, os.getloadavg()[0]], "checkpoint": str(run)}


def report(results: dict) -> None:
    rows = [("acids-rave 2.3.1", results.get("reference")), ("ours (ravemodel)", results.get("ours"))]
    print()
    print(f"{'implementation':<18} {'steps':>6} {'wall s':>8} {'steps/s':>8} {'CPU s/step':>10} {'load':>9} "
          f"{'held-out distance':>18}  per clip")
    for name, r in rows:
        if r is None:
            print(f"{name:<18} {'-':>6}")
            continue
        d = sum(r["distances"]) / len(r["distances"])
        clips = ", ".join(f"{v:.4f}" for v in r["distances"])
        load = "{:.1f}-{:.1f}".format(*r["load_1min"])
        print(f"{name:<18} {r['steps']:>6} {r['wall_s']:>8.1f} {r['steps'] / r['train_s']:>8.3f} "
              f"{r['cpu_s'] / r['steps']:>10.2f} {load:>9} {d:>18.4f}  {clips}")
    ref, ours = results.get("reference"), results.get("ours")
    if ref and ours:
        dr = (sum(ours["distances"]) / len(ours["distances"])) / (sum(ref["distances"]) / len(ref["distances"]))
        sr = (ours["steps"] / ours["train_s"]) / (ref["steps"] / ref["train_s"])
        cr = ref["cpu_s"] / ours["cpu_s"]
        print(f"distance ours / reference: {dr:.3f}  (goal <= 1: {'met' if dr <= 1 else 'NOT met'})")
        print(f"steps/s  ours / reference: {sr:.3f}  (goal > 1: {'met' if sr > 1 else 'NOT met'})")
        print(f"CPU s    reference / ours: {cr:.3f}  (whole commands)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=510, help="training steps of each side (default 510)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--n-signal", type=int, default=65536, help="training crop length in samples")
    ap.add_argument("--files", type=int, default=19, help="training pieces in the corpus (19: 209 examples, 51 batches of 4 per epoch)")
    ap.add_argument("--workers", type=int, default=1, help="data loader worker processes of each trainer (default 1)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where both train (reconstruction and distances always run on the CPU)")
    ap.add_argument("--ref-venv", type=Path, default=Path("/work/refvenv/rave"),
                    help="venv with acids-rave 2.3.1; created with pip when the folder is missing")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rave-parity-train")
    ap.add_argument("--skip-ref", action="store_true", help="reuse the reference's results from WORK/results.json")
    ap.add_argument("--skip-ours", action="store_true", help="reuse our results from WORK/results.json")
    a = ap.parse_args()
    if a.steps < 1 or a.batch < 1:
        fail("--steps and --batch must be positive", 2)

    work = a.work.resolve()  # rave preprocess/train want absolute paths
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    settings = {"steps": a.steps, "batch": a.batch, "n_signal": a.n_signal, "files": a.files, "device": a.device, "workers": a.workers}
    if results.get("settings") != settings:
        results = {"settings": settings}  # results of other settings are not comparable

    db, npys, n_examples = prepare(work, a.files, a.n_signal)
    per_epoch = ref_batches_per_epoch(n_examples, a.batch)
    print(f"dataset {db}: {n_examples} examples ({n_examples * 2 * a.n_signal / SR / 60:.1f} min); "
          f"reference: {per_epoch} batches per epoch; held-out: {', '.join(p.name for p in npys)}", flush=True)
    if not a.skip_ref:
        if a.steps > per_epoch and a.steps % per_epoch:
            fail(f"--steps {a.steps}: acids-rave saves checkpoints at epoch ends here ({per_epoch} batches per epoch); "
                 f"use a multiple of {per_epoch}, or change --files", 2)
        py = ensure_ref_venv(a.ref_venv)
        results["reference"] = run_reference(py, db, work, npys, a.steps, a.batch, a.n_signal, a.device, a.workers)
        results_path.write_text(json.dumps(results, indent=1))
    if not a.skip_ours:
        results["ours"] = run_ours(db, work, npys, a.steps, a.batch, a.n_signal, a.device, a.workers)
        results_path.write_text(json.dumps(results, indent=1))
    report(results)


if __name__ == "__main__":
    main()
