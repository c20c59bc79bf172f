"""Precision, compilation and the step contract of stages 1 and 2 (CPU, tiny models).

Each precision trains a few steps with finite losses; bf16 and float32 agree at
step 0; a compiled stage neither breaks its graphs nor recompiles after warm-up;
stages return device tensors (the runner converts them at log steps only); the
NaN guard still names the step where a loss went bad; the loader's worker count
and its bottleneck warning.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rave_model.config import load_config
from rave_model.data import DataPosition, TrainData, auto_workers, phase_mangle
from rave_model.model import RAVE
from rave_model.train import precision as prec
from rave_model.train.adversarial import AdversarialStage
from rave_model.train.logging import DataWait, TrainLogger, data_wait_advice
from rave_model.train.pending import PendingLosses
from rave_model.train.runner import TrainingDiverged, fit
from rave_model.train.stage import TrainContext
from rave_model.train.vae import VAEStage


pytestmark = pytest.mark.usefixtures("one_thread")


# The tiny preset with the v2 architecture (no noise branch): what v2 and v2_small compile.
TINY_V2 = ['model.architecture="v2"', "model.use_noise=false", "model.dilations=[[1],[1],[1]]"]


def make_ctx(dataset: Path, tmp_path: Path, overrides: list[str]) -> TrainContext:
    cfg = load_config("tiny", ["train.num_workers=0", *overrides])
    torch.manual_seed(0)
    return TrainContext(cfg=cfg, model=RAVE(cfg), device=torch.device("cpu"), run_dir=tmp_path, data=TrainData(dataset, cfg),
                        logger=TrainLogger(tmp_path, enabled=False))


# -- precision -------------------------------------------------------------------------------


def test_resolve_precision():
    cpu = torch.device("cpu")
    assert prec.resolve_precision("auto", cpu) == "32"
    assert [prec.resolve_precision(p, cpu) for p in ("32", 32, "bf16", "16-mixed")] == ["32", "32", "bf16", "16-mixed"]
    with pytest.raises(ValueError, match="train.precision must be auto, 32, bf16, 16-mixed; got 'fp8'"):
        prec.resolve_precision("fp8", cpu)


@pytest.mark.parametrize("precision", ["32", "bf16", "16-mixed"])
def test_each_precision_trains_both_stages_with_finite_float32_losses(dataset, tmp_path, precision):
    ctx = make_ctx(dataset, tmp_path, [f'train.precision="{precision}"'])
    for cls, steps in ((VAEStage, 3), (AdversarialStage, 4)):
        stage = cls(ctx)
        stage.on_start()
        batches = stage.batches(DataPosition())
        for step in range(steps):
            losses = stage.train_step(next(batches)[0], step)
            tensors = {k: v for k, v in losses.items() if isinstance(v, torch.Tensor)}
            # The contract: detached 0-d float32 tensors, converted by the runner later.
            assert tensors and all(v.dim() == 0 and v.dtype == torch.float32 and not v.requires_grad for v in tensors.values())
            assert all(math.isfinite(float(v)) for v in losses.values()), (precision, cls.name, step, losses)
        assert (stage.scaler if cls is VAEStage else stage.gen_scaler) is not None if precision == "16-mixed" else True
    params = torch.cat([p.detach().flatten() for p in ctx.model.parameters()])
    assert bool(torch.isfinite(params).all())


def test_bf16_and_float32_losses_agree_at_step_0(dataset, tmp_path):
    """The same weights, batch and noise: bf16 networks move each loss by well
    under 2% (measured: under 0.5%); float16 likewise."""
    first = {}
    for precision in ("32", "bf16", "16-mixed"):
        ctx = make_ctx(dataset, tmp_path, [f'train.precision="{precision}"', "train.phase_mangle=0"])
        stage = VAEStage(ctx)
        stage.on_start()
        batch = next(stage.batches(DataPosition()))[0]
        torch.manual_seed(1)  # the posterior's sampling noise
        first[precision] = {k: float(v) for k, v in stage.train_step(batch, 0).items()}
    for precision in ("bf16", "16-mixed"):
        for key in ("multiband", "fullband", "kl", "loss"):
            assert first[precision][key] == pytest.approx(first["32"][key], rel=0.02), (precision, key, first)
        # Not trivially equal: the networks did run in the lower precision.
        assert first[precision]["loss"] != first["32"]["loss"]


def test_optimizer_state_moves_between_kernels(tmp_path):
    """A checkpoint's Adam state (fused on a GPU) loads into this device's kernel."""
    w = torch.nn.Parameter(torch.ones(4))
    fused = torch.optim.Adam([w], lr=0.1, fused=True)
    w.grad = torch.ones(4)
    fused.step()
    state = fused.state_dict()
    v = torch.nn.Parameter(torch.ones(4))
    here = prec.adam([v], 0.1, (0.5, 0.9), torch.device("cpu"))
    prec.load_optimizer_state(here, state)
    assert here.param_groups[0]["foreach"] is True and not here.param_groups[0]["fused"]
    assert torch.equal(here.state[v]["exp_avg"], fused.state[w]["exp_avg"])
    v.grad = torch.ones(4)
    here.step()


# -- compilation ------------------------------------------------------------------------------


def test_compiled_stages_do_not_break_or_recompile_after_warm_up(dataset, tmp_path, monkeypatch):
    """Dynamo's graph and graph-break counts stop growing once each step kind
    (stage 1; stage 2's discriminator and decoder steps) ran once. The eager
    backend: the same tracing, guards and recompiles, without code generation."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(prec, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    counters.clear()
    ctx = make_ctx(dataset, tmp_path, ["train.compile=true", *TINY_V2])
    seen = []
    for cls, steps, warm in ((VAEStage, 3, 1), (AdversarialStage, 5, 2)):
        stage = cls(ctx)
        stage.on_start()
        batches = stage.batches(DataPosition())
        for step in range(steps):
            losses = stage.train_step(next(batches)[0], step)
            assert all(math.isfinite(float(v)) for v in losses.values())
            if step == warm - 1:
                after_warm_up = (counters["stats"]["unique_graphs"], sum(counters["graph_break"].values()))
        seen.append(after_warm_up)
        assert (counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())) == after_warm_up, cls.name
    assert seen[0][0] >= 2  # the encoder and the decoder were compiled
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert not counters.get("recompiles")
    # Validation uses the plain modules: it does not touch the compiled graphs.
    before = counters["stats"]["unique_graphs"]
    stage.validate()
    assert counters["stats"]["unique_graphs"] == before


def test_fit_compiled_resumes_from_an_uncompiled_checkpoint(dataset, tmp_path, monkeypatch):
    """The compiled wrappers share the model's parameters: checkpoints keep the plain
    names, so a run can switch --compile (or --precision) on resume."""
    monkeypatch.setattr(prec, "COMPILE_BACKEND", "eager")
    run = tmp_path / "run"
    fast = ["train.vae_steps=4", "train.adversarial_steps=2", "train.val_every=2", "train.ckpt_every=2", "prior.steps=0", *TINY_V2]
    first = fit(dataset, run, preset="tiny", overrides=fast, device="cpu", stop_after=2)
    assert first.stopped
    resumed = fit(dataset, run, preset="tiny", overrides=[*fast, "train.compile=true", 'train.precision="bf16"'], device="cpu")
    assert resumed.done[:2] == ["vae", "adversarial"]
    assert [s for _, s, _ in resumed.history] == [3, 4, 1, 2]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # tensors and plain data only
    assert not any("_orig_mod" in k for k in ckpt["model"])


# -- the step contract and the NaN guard ------------------------------------------------------


def test_pending_losses_come_back_in_step_order_in_one_copy():
    pending = PendingLosses()
    pending.add(1, {"a": torch.tensor(1.5), "beta": 0.1})
    pending.add(2, {"a": torch.tensor(float("nan")), "b": torch.tensor(3.0)})
    assert len(pending) == 2
    out = pending.flush()
    assert out[0] == (1, {"a": 1.5, "beta": 0.1})
    assert out[1][0] == 2 and math.isnan(out[1][1]["a"]) and out[1][1]["b"] == 3.0
    assert len(pending) == 0 and pending.flush() == []


def test_nan_is_caught_at_the_log_step_and_names_its_own_step(dataset, tmp_path, monkeypatch):
    """A loss that goes bad between log steps stops the run at the next log step,
    naming the step it went bad at, before any checkpoint after it is written."""
    original = VAEStage.train_step

    def bad_at_6(self, batch, step):
        out = original(self, batch, step)
        if step == 5:
            out["kl"] = torch.tensor(float("inf"))
        return out

    monkeypatch.setattr(VAEStage, "train_step", bad_at_6)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"stage vae step 6: loss kl is inf"):
        fit(dataset, run, preset="tiny", overrides=["train.vae_steps=20", "train.log_every=4", "train.ckpt_every=4", "train.val_every=100"], device="cpu")
    from rave_model.train import checkpoint as ckpt_io

    assert ckpt_io.load(run / "checkpoints" / "last.ckpt").step == 4


# -- data loader ---------------------------------------------------------------------------------


def test_auto_workers():
    assert auto_workers(torch.device("cuda"), cores=16) == 14
    assert auto_workers(torch.device("cuda"), processes=4, cores=16) == 3
    assert auto_workers(torch.device("cuda"), cores=64) == 16
    assert auto_workers(torch.device("cuda"), cores=2) == 1
    assert auto_workers(torch.device("cpu"), cores=2) == 1
    assert auto_workers(torch.device("cpu"), cores=16) == 2


def test_phase_mangle_keeps_the_magnitude_spectrum():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16384)).astype(np.float32) * 0.1
    y = phase_mangle(x, 16000, np.random.default_rng(1))
    assert y.dtype == np.float32 and y.shape == x.shape and not np.allclose(x, y)
    # An all-pass filter: the same energy (up to the filter's transient at the start).
    assert np.sum(y[:, 4096:] ** 2) == pytest.approx(np.sum(x[:, 4096:] ** 2), rel=0.05)


def test_data_wait_warns_once_after_the_first_window():
    wait = DataWait(threshold=0.2)
    wait.waited = 100.0  # as if the step had waited far longer than it ran
    assert wait.window_warning(2, cores=16) is None  # the first window: workers starting
    wait.waited = 1e6
    text = wait.window_warning(2, cores=16)
    assert text and "the loader is the bottleneck" in text and "--set train.num_workers (now 2; this machine has 16 usable cores)" in text
    wait.waited = 1e6
    assert wait.window_warning(2, cores=16) is None  # once per stage
    assert "lighten the online augmentation" in data_wait_advice(0.5, 14, 16)
    assert "train.num_workers=N" in data_wait_advice(0.5, 0, 16)
    quiet = DataWait(threshold=0.2)
    quiet.window_warning(2, 16)
    assert quiet.window_warning(2, 16) is None  # no waiting, no warning


def test_fit_prints_the_loader_warning_when_the_step_waits_on_data(dataset, tmp_path, monkeypatch):
    """Data that arrives late (each batch delayed) produces the warning in the run
    log, with what to change. The threshold is lowered to 1% so that the test does
    not depend on how fast this machine takes a step."""
    import time as _time

    from rave_model.data import TrainData as TD
    from rave_model.train import logging as train_logging

    real = TD.train_batches

    def slow(self, position, device):
        for item in real(self, position, device):
            _time.sleep(0.1)
            yield item

    monkeypatch.setattr(TD, "train_batches", slow)
    monkeypatch.setattr(train_logging, "DATA_WAIT_WARNING", 0.01)
    lines: list[str] = []
    logger = TrainLogger(tmp_path, tensorboard=False)
    monkeypatch.setattr(logger, "info", lines.append)
    fit(dataset, tmp_path / "run", preset="tiny", overrides=["train.vae_steps=6", "train.adversarial_steps=0", "prior.steps=0", "train.log_every=2"],
        device="cpu", logger=logger)
    warned = [line for line in lines if "waited for data" in line]
    assert len(warned) == 1 and warned[0].startswith("vae step 4: warning:") and "train.num_workers" in warned[0], lines


def test_cli_rejects_an_unknown_precision(dataset, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rave_model", "fit", str(dataset), "--run", str(tmp_path / "r"), "--precision", "fp8"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "error: --precision fp8: choose auto, 32, bf16 or 16-mixed" in proc.stderr
