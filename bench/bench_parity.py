"""Numerical parity with acids-rave 2.3.1 (opt-in; not part of CI).

For each config (v1, v2, v2_small) the reference side (bench/parity_ref_dump.py, run
in acids-rave's own venv) builds acids-rave's RAVE from its gin config with a fixed
seed and dumps its weights, fixed batches, its outputs, the loss terms of its genuine
``training_step`` and its weights after a few optimiser steps of each phase. This side
maps the config (:func:`rave_model.reference.config_from_gin` on the operative config)
and the weights (:func:`rave_model.reference.state_dict_from_reference`) to ours,
recomputes the same quantities with OUR code (``RAVE``, ``Discriminator``,
``receptive_field``, and the training stages ``VAEStage`` / ``AdversarialStage``
themselves) and prints, per quantity, the largest relative difference
``max|ours - ref| / max|ref|``. Posterior samples and decoder noise are the
reference's own draws, replayed (``torch.randn_like`` / ``torch.rand``), so the noise
branch is compared too.

The reference venv: ``--refvenv`` (default /work/refvenv/rave, or $RAVE_REFVENV); when
it has no acids-rave, it is created with ``python -m venv`` and
``pip install torch==2.14.1 torchaudio==2.11.0 acids-rave==2.3.1 "setuptools<81"``.

Usage::

    .venv/bin/python bench/bench_parity.py [--configs v1 v2 v2_small] [--batch 2]
        [--steps 2 --steps2 4] [--reuse]    # --reuse: keep existing dumps in --work
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rave_model.discriminator import Discriminator  # noqa: E402
from rave_model.model import RAVE  # noqa: E402
from rave_model.receptive_field import receptive_field  # noqa: E402
from rave_model.reference import config_from_gin, discriminator_state_from_reference, state_dict_from_reference  # noqa: E402

REF_PACKAGES = ["torch==2.14.1", "torchaudio==2.11.0", "acids-rave==2.3.1", "setuptools<81"]
# Crop length per config: long enough that the multiband loss keeps STFT-sized
# signals after the valid crop (v2's receptive field is about +-27k samples).
N_SIGNAL = {"v1": 65536, "v2": 131072, "v2_small": 65536}
TARGET = 1e-5


def ensure_refvenv(path: Path) -> Path:
    """The reference venv's python, creating the venv when acids-rave is missing."""
    python = path / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import rave"], capture_output=True).returncode == 0:
        return python
    print(f"creating the reference venv at {path} ({' '.join(REF_PACKAGES)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *REF_PACKAGES], check=True)
    return python


def rel(ours: torch.Tensor | float, ref: torch.Tensor | float) -> float:
    ours, ref = torch.as_tensor(ours, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    if ours.shape != ref.shape:
        return float("inf")
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return float((ours - ref).abs().max()) / scale if scale > 0 else float((ours - ref).abs().max())


class Replay:
    """Serve the reference's random draws, in order, to ``torch.randn_like`` and
    ``torch.rand`` between :meth:`load` and :meth:`stop` (plain torch otherwise)."""

    def __init__(self) -> None:
        self.queue: dict[str, list[torch.Tensor]] | None = None
        self._randn_like, self._rand = torch.randn_like, torch.rand
        torch.randn_like = self._randn_like_replayed
        torch.rand = self._rand_replayed

    def _randn_like_replayed(self, t: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        if self.queue is None:
            return self._randn_like(t, *a, **k)
        return self._pop("randn", tuple(t.shape)).to(t)

    def _rand_replayed(self, *size: Any, dtype: Any = None, device: Any = None, **kw: Any) -> torch.Tensor:
        if self.queue is None:
            return self._rand(*size, dtype=dtype, device=device, **kw)
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)
        return self._pop("rand", shape).to(dtype=dtype or torch.float32, device=device)

    def _pop(self, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        queue = self.queue[kind]
        while queue and tuple(queue[0].shape) != shape:
            queue.pop(0)  # a draw the reference made and our code does not (v1's unused noise)
        if not queue:
            raise RuntimeError(f"no reference {kind} draw of shape {shape} left to replay")
        return queue.pop(0)

    def load(self, draws: list[tuple[str, torch.Tensor]]) -> None:
        self.queue = {"randn": [t for k, t in draws if k == "randn"], "rand": [t for k, t in draws if k == "rand"]}

    def stop(self) -> None:
        self.queue = None

    def close(self) -> None:
        torch.randn_like, torch.rand = self._randn_like, self._rand


class _Log:
    def info(self, msg: str) -> None:
        pass


def _states(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[float, str]:
    worst, where = 0.0, ""
    for key, value in ref.items():
        if not torch.is_floating_point(value):
            continue
        r = rel(ours[key], value)
        if r > worst:
            worst, where = r, key
    return worst, where


def compare(dump: dict[str, Any], run_dir: Path) -> list[tuple[str, float, str]]:
    from rave_model.train.adversarial import AdversarialStage
    from rave_model.train.stage import TrainContext
    from rave_model.train.vae import VAEStage

    rows: list[tuple[str, float, str]] = []

    def row(name: str, value: float, note: str = "") -> None:
        rows.append((name, value, note))

    cfg = config_from_gin(dump["config"])
    batches = dump["batches"]
    cfg.data.n_signal = int(batches[0].shape[-1])
    cfg.train.batch_size = int(batches[0].shape[0])
    cfg.train.num_workers = 0
    cfg.train.precision = "32"
    model = RAVE(cfg)
    init = state_dict_from_reference(dump["init"], cfg)
    model.load_state_dict(init)
    replay = Replay()
    try:
        out = dump["outputs"]
        x = batches[0]
        model.train()
        replay.load(dump["draws"].get("outputs", []))
        with torch.no_grad():
            params = model.encode(x)
            row("encoder output", rel(params, out["encoder"]))
            mean = out["encoder"][:, : params.shape[1] // 2]  # the same latent on both sides
            row("decoder output (sub-bands, latent mean)", rel(model.decoder(mean), out["decoder"]))
            row("decoded audio (latent mean)", rel(model.decode(mean), out["decoded"]))
            if "decoder_noise" in out:
                model.set_warmed_up(True)
                replay.load(dump["draws"]["outputs_noise"])
                row("v1 decoder with noise", rel(model.decoder(mean), out["decoder_noise"]))
                model.set_warmed_up(False)
        replay.stop()
        model.load_state_dict(init)  # BatchNorm statistics as before
        disc = Discriminator.from_config(cfg)
        disc.load_state_dict(discriminator_state_from_reference(dump["init"], cfg))
        with torch.no_grad():
            feats = disc(out["disc_input"])
        ref_feats = out["disc_features"]
        worst = max(rel(f, r) for sub, rsub in zip(feats, ref_feats) for f, r in zip(sub, rsub))
        n_maps = sum(len(s) for s in ref_feats)
        row(f"discriminator feature maps ({n_maps})", worst if len(feats) == len(ref_feats) else float("inf"))
        field = receptive_field(model)
        ref_field = tuple(dump["receptive_field"])
        row("receptive field (samples)", 0.0 if field == ref_field else rel(torch.tensor(field), torch.tensor(ref_field)),
            f"ours {field}, ref {ref_field}")

        # -- stage 1 through our VAEStage
        ctx = TrainContext(cfg=cfg, model=model, device=torch.device("cpu"), run_dir=run_dir, data=None, logger=_Log(),
                           info={"receptive_field": list(ref_field)})
        stage = VAEStage(ctx)
        stage.on_start()
        for k, ref in enumerate(dump["stage1"]):
            replay.load(dump["draws"][f"stage1_{k}"])
            losses = stage.train_step(batches[k], k)
            row(f"stage 1 step {k}: multiband distance", rel(losses["multiband"], ref["multiband_spectral_distance"]))
            row(f"stage 1 step {k}: fullband distance", rel(losses["fullband"], ref["fullband_spectral_distance"]))
            row(f"stage 1 step {k}: beta * KL", rel(float(losses["beta"]) * losses["kl"], ref["regularization"]))
            row(f"stage 1 step {k}: generator lr after the step", rel(stage.opt.param_groups[0]["lr"], ref["lr"]))
        replay.stop()
        ref1 = state_dict_from_reference(dump["states"]["stage1"], cfg)
        worst, where = _states(model.state_dict(), ref1)
        row(f"weights after {len(dump['stage1'])} stage-1 steps", worst, where)
        # The floor: the same steps of ours on the batches perturbed by 1e-6 (relative).
        # The log-spectral distance is ill-conditioned near silent bins and Adam's first
        # steps are sign-like, so float rounding alone moves weights by up to ~lr.
        floor_model = RAVE(cfg)
        floor_model.load_state_dict(init)
        fctx = TrainContext(cfg=cfg, model=floor_model, device=torch.device("cpu"), run_dir=run_dir, data=None,
                            logger=_Log(), info={"receptive_field": list(ref_field)})
        fstage = VAEStage(fctx)
        fstage.on_start()
        g = torch.Generator().manual_seed(1)
        for k in range(len(dump["stage1"])):
            replay.load(dump["draws"][f"stage1_{k}"])
            b = batches[k]
            fstage.train_step(b * (1 + 1e-6 * torch.randn(b.shape, generator=g)), k)
        replay.stop()
        floor, fwhere = _states(floor_model.state_dict(), model.state_dict())
        rows[-1] = (rows[-1][0], worst, f"{where}; floor (ours vs ours on 1e-6-perturbed input): {floor:.2e} ({fwhere})")
        del floor_model, fstage
        # Stage 2 starts from the reference's stage-1 weights, so its terms compare directly.
        model.load_state_dict(ref1)

        # -- stage 2 through our AdversarialStage
        n1 = len(dump["stage1"])
        stage2 = AdversarialStage(ctx)
        stage2.discriminator.load_state_dict(discriminator_state_from_reference(dump["states"]["stage1"], cfg))
        stage2.on_start()
        w_fm = float(dump["weights"].get("feature_matching", 1.0))
        every = int(dump["update_discriminator_every"])
        for k, ref in enumerate(dump["stage2"]):
            replay.load(dump["draws"][f"stage2_{k}"])
            losses = stage2.train_step(batches[n1 + k], k)
            if k % every == 0:
                row(f"stage 2 step {k} (discriminator): loss_dis", rel(losses["dis"], ref["loss_dis"]))
                row(f"stage 2 step {k} (discriminator): pred_real", rel(losses["pred_real"], ref["pred_real"]))
                row(f"stage 2 step {k} (discriminator): pred_fake", rel(losses["pred_fake"], ref["pred_fake"]))
            else:
                row(f"stage 2 step {k} (generator): multiband", rel(losses["multiband"], ref["multiband_spectral_distance"]))
                row(f"stage 2 step {k} (generator): fullband", rel(losses["fullband"], ref["fullband_spectral_distance"]))
                row(f"stage 2 step {k} (generator): adversarial", rel(losses["adversarial"], ref["adversarial"]))
                row(f"stage 2 step {k} (generator): feature matching", rel(losses["feature_matching"], ref["feature_matching"] / w_fm))
                # The reference sums v * weights.get(k, 1): feature matching weighted twice. Its
                # regularization term has no gradient here (detached latent) and ours omits it.
                total = sum(v * float(dump["weights"].get(n, 1.0)) for n, v in ref.items()
                            if n in ("multiband_spectral_distance", "fullband_spectral_distance", "feature_matching", "adversarial"))
                row(f"stage 2 step {k} (generator): total loss (effective weights)", rel(losses["loss"], total))
        replay.stop()
        ref2 = dump["states"]["stage2"]
        worst, where = _states(model.state_dict(), state_dict_from_reference(ref2, cfg))
        row(f"model weights after {len(dump['stage2'])} stage-2 steps", worst, where)
        worst, where = _states(stage2.discriminator.state_dict(), discriminator_state_from_reference(ref2, cfg))
        row(f"discriminator weights after {len(dump['stage2'])} stage-2 steps", worst, where)
    finally:
        replay.close()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["v1", "v2", "v2_small"])
    p.add_argument("--refvenv", type=Path, default=Path(os.environ.get("RAVE_REFVENV", "/work/refvenv/rave")))
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rave_parity")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="stage-1 steps")
    p.add_argument("--steps2", type=int, default=4, help="stage-2 steps")
    p.add_argument("--reuse", action="store_true", help="reuse the reference dumps already in --work")
    a = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    a.work.mkdir(parents=True, exist_ok=True)
    python = None
    failed = False
    for name in a.configs:
        dump_path = a.work / f"ref_{name}_b{a.batch}_s{a.steps}_{a.steps2}.pt"
        if not (a.reuse and dump_path.exists()):
            python = python or ensure_refvenv(a.refvenv)
            cmd = [str(python), str(ROOT / "bench" / "parity_ref_dump.py"), "--config", name, "--out", str(dump_path),
                   "--batch", str(a.batch), "--n-signal", str(N_SIGNAL.get(name, 131072)),
                   "--steps", str(a.steps), "--steps2", str(a.steps2)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(f"{name}: the reference side failed:\n{res.stderr[-3000:]}", file=sys.stderr)
                return 1
        dump = torch.load(dump_path, weights_only=False)
        with tempfile.TemporaryDirectory() as tmp:
            rows = compare(dump, Path(tmp))
        n = dump["batches"][0].shape
        print(f"\n== {name}: acids-rave 2.3.1 vs ravemodel, batch {n[0]} x {n[-1]} samples, "
              f"{len(dump['stage1'])} + {len(dump['stage2'])} steps ==")
        width = max(len(r[0]) for r in rows)
        for label, value, note in rows:
            mark = "ok" if value <= TARGET else "DIFF"
            failed |= value > TARGET
            print(f"  {label:<{width}}  {value:9.2e}  {mark}  {note}")
    print(f"\nmax relative difference target: {TARGET:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
