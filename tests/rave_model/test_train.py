"""Training stages 1 and 2 on the tiny preset: losses, the loop, checkpoints,
resume reproducibility, the NaN guard, Ctrl-C, and the real `ravemodel fit`."""
from __future__ import annotations

import math
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from rave_model.config import load_config
from rave_model.losses import SpectralDistance, adversarial_losses, beta_schedule, hinge_gan, ls_gan
from rave_model.train import checkpoint as ckpt_io
from rave_model.train.pca import dims_for_fidelity, principal_components
from rave_model.train.runner import ConfigMismatch, TrainingDiverged, fit
from rave_model.data import DataPosition
from rave_model.train.vae import VAEStage
from tests.rave_model.datasets import tiny_examples, write_dataset

# Few steps, no prior (its own tests cover it), validation and checkpoints often.
FAST = ["train.vae_steps=4", "train.adversarial_steps=4", "train.val_every=2", "train.ckpt_every=2", "prior.steps=0"]


pytestmark = pytest.mark.usefixtures("one_thread")


# -- losses and PCA ------------------------------------------------------------------------


def test_spectral_distance_is_zero_for_identical_and_grows_with_error():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4096)
    dist = SpectralDistance([512, 256, 128])
    assert float(dist(x, x)) == pytest.approx(0.0, abs=1e-6)
    small, large = float(dist(x, x + 0.01 * torch.randn_like(x))), float(dist(x, x + 0.5 * torch.randn_like(x)))
    assert 0 < small < large
    # Scales longer than a short multiband signal are skipped, not an error.
    assert math.isfinite(float(SpectralDistance([2048, 128])(x[..., :256], x[..., :256] * 0.5)))


def test_beta_schedule_and_gan_losses():
    assert beta_schedule(0, 100, 1e-6, 5e-2) == pytest.approx(1e-6)
    assert beta_schedule(50, 100, 1e-6, 5e-2) == pytest.approx(math.sqrt(1e-6 * 5e-2))
    assert beta_schedule(500, 100, 1e-6, 5e-2) == 5e-2
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    dis, gen = hinge_gan(real, fake)
    assert float(dis) == pytest.approx((0 + 0.5 + 0 + 1) / 2) and float(gen) == pytest.approx(1.0)
    dis, gen = ls_gan(real, fake)
    assert float(dis) == pytest.approx((1 + 0.25 + 4 + 0) / 2) and float(gen) == pytest.approx((9 + 1) / 2)
    feats = [[torch.ones(1, 2, 4), torch.full((1, 1, 4), 2.0)]]
    out = adversarial_losses(feats, [[torch.zeros(1, 2, 4), torch.zeros(1, 1, 4)]])
    assert float(out["feature_matching"]) == pytest.approx((1 + 2) / 2)


def test_beta_warm_up_follows_the_reference_callback(dataset, tmp_path):
    """acids-rave's BetaWarmupCallback counts the batch, then computes beta: batch k
    (from 0) trains with ratio (k + 1) / warmup_len, the target from batch warmup_len - 1 on."""
    from rave_model.data import TrainData
    from rave_model.model import RAVE
    from rave_model.train.logging import TrainLogger
    from rave_model.train.stage import TrainContext

    start, end, warmup = 1e-6, 5e-2, 4
    cfg = load_config("tiny", [f"train.beta_start={start}", f"train.beta_end={end}", f"train.beta_warmup_steps={warmup}"])
    ctx = TrainContext(cfg=cfg, model=RAVE(cfg), device=torch.device("cpu"), run_dir=tmp_path, data=TrainData(dataset, cfg),
                       logger=TrainLogger(tmp_path, enabled=False))
    stage = VAEStage(ctx)
    batches = stage.batches(DataPosition())
    seen = [stage.train_step(next(batches)[0], k)["beta"] for k in range(warmup + 1)]

    def reference(batch: int) -> float:
        steps = batch + 1
        if steps >= warmup:
            return end
        ratio = steps / warmup
        return math.exp(math.log(start) * (1 - ratio) + math.log(end) * ratio)

    assert seen == pytest.approx([reference(k) for k in range(warmup + 1)], rel=1e-12)
    assert seen[0] > start and seen[warmup - 1] == end


def test_pca_finds_the_used_dimensions():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(8, 8, generator=g))[0][:, :2]  # a 2-d subspace of 8-d
    z = torch.randn(4000, 2, generator=g) * torch.tensor([3.0, 1.0]) @ basis.T + 5.0
    mean, comps, cum = principal_components(z)
    assert torch.allclose(mean, torch.full((8,), 5.0, dtype=torch.float64), atol=0.2)
    assert torch.allclose(comps @ comps.T, torch.eye(8, dtype=torch.float64), atol=1e-6)
    assert dims_for_fidelity(cum, 0.95) == 2 and dims_for_fidelity(cum, 0.5) == 1
    assert cum[-1] == pytest.approx(1.0)


# -- the loop -------------------------------------------------------------------------------


def test_stage1_loss_falls_on_a_repeated_batch(dataset, tmp_path):
    from rave_model.data import TrainData
    from rave_model.model import RAVE
    from rave_model.train.logging import TrainLogger
    from rave_model.train.stage import TrainContext

    cfg = load_config("tiny", ["train.phase_mangle=0", "train.lr=3e-3", "train.vae_steps=1000"])
    torch.manual_seed(0)
    data = TrainData(dataset, cfg)
    ctx = TrainContext(cfg=cfg, model=RAVE(cfg), device=torch.device("cpu"), run_dir=tmp_path, data=data, logger=TrainLogger(tmp_path, enabled=False))
    stage = VAEStage(ctx)
    stage.on_start()
    batch, _ = next(stage.batches(DataPosition()))
    losses = [float(stage.train_step(batch, step)["loss"]) for step in range(40)]  # 0-d tensors: the stage contract
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.6 * losses[0], losses


def test_fit_runs_both_stages_and_writes_a_complete_checkpoint(dataset, tmp_path):
    run = tmp_path / "run"
    result = fit(dataset, run, preset="tiny", overrides=[*FAST, "train.log_every=2"], device="cpu")
    assert result.done[:2] == ["vae", "adversarial"] and not result.stopped
    stages = [h[0] for h in result.history]
    assert stages == ["vae"] * 4 + ["adversarial"] * 4
    assert all(math.isfinite(v) for _, _, losses in result.history for v in losses.values())
    # Stage 2 alternates discriminator and decoder updates.
    assert "dis" in result.history[4][2] and "feature_matching" in result.history[5][2]

    ckpt = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert (ckpt.stage, ckpt.step, ckpt.done, ckpt.world_size) == ("adversarial", 4, ["vae", "adversarial"], 1)
    assert ckpt.config.train.vae_steps == 4 and ckpt.rng is not None and ckpt.provenance is not None
    # On disk: a plain dictionary that torch's weights-only loader reads.
    raw = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert raw["format"] == ckpt_io.FORMAT and raw["data"]["world_size"] == 1 and raw["provenance"]["dataset"] == str(dataset.resolve())
    # best.ckpt restarts its comparison with each stage: now it holds stage 2.
    best = ckpt_io.load(run / "checkpoints" / "best.ckpt")
    assert best.stage == "adversarial" and best.step in (2, 4) and math.isfinite(best.best)
    assert "discriminator" in best.stage_state
    # The PCA after stage 1 filled the model's buffers and recorded the dimension count.
    pca = ckpt.info["vae"]
    assert 1 <= pca["pca_dims"] <= 8 and pca["fidelity"] == 0.95
    fid = ckpt.model["fidelity"]
    assert fid[-1] == pytest.approx(1.0) and bool((fid[1:] >= fid[:-1]).all())
    assert not torch.equal(ckpt.model["latent_pca"], torch.eye(8))
    assert dims_for_fidelity(fid, 0.95) == pca["pca_dims"]
    assert not list((run / "checkpoints").glob("*.tmp"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "audio": 0})
    events.Reload()
    tags = events.Tags()
    assert {"vae/loss", "vae/kl", "vae/validation/spectral_distance", "adversarial/feature_matching", "adversarial/validation/spectral_distance"} <= set(tags["scalars"])
    # Logged steps 2 and 4 are decoder steps; the discriminator's loss is logged too.
    assert [e.step for e in events.Scalars("adversarial/dis")] == [2, 4]
    assert [e.step for e in events.Scalars("vae/loss")] == [2, 4]
    assert {"vae/reconstruction", "adversarial/reconstruction"} <= set(tags["audio"])

    # The checkpoint rebuilds the model, which reconstructs audio of the right shape.
    model, cfg, _ = ckpt_io.load_model(run)
    x = torch.randn(1, 1, 4096) * 0.1
    with torch.no_grad():
        assert model(x).shape == (1, 1, 4096)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = ckpt_io.load(path)
    out = {f"model.{k}": v for k, v in ckpt.model.items()}
    for k, v in ckpt.stage_state.get("discriminator", {}).items():
        out[f"disc.{k}"] = v
    return out


def test_resumed_run_reproduces_an_uninterrupted_one(dataset, tmp_path):
    straight = fit(dataset, tmp_path / "a", preset="tiny", overrides=FAST, device="cpu")
    # Stopped inside stage 1 (after step 3), then inside stage 2 (after its step 2).
    first = fit(dataset, tmp_path / "b", preset="tiny", overrides=FAST, device="cpu", stop_after=3)
    assert first.stopped and not first.interrupted and len(first.history) == 3
    second = fit(dataset, tmp_path / "b", preset="tiny", overrides=FAST, device="cpu", stop_after=3)
    assert second.history[-1][:2] == ("adversarial", 2)
    third = fit(dataset, tmp_path / "b", preset="tiny", overrides=FAST, device="cpu")
    replay = first.history + second.history + third.history
    assert [(s, n) for s, n, _ in replay] == [(s, n) for s, n, _ in straight.history]
    for (_, _, a), (_, _, b) in zip(straight.history, replay):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-6, abs=1e-6), k
    wa, wb = _weights(tmp_path / "a" / "checkpoints" / "last.ckpt"), _weights(tmp_path / "b" / "checkpoints" / "last.ckpt")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6), k


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(dataset, tmp_path, monkeypatch):
    original = VAEStage.train_step

    def poisoned(self, batch, step):
        out = original(self, batch, step)
        if step == 2:  # the third step
            out["loss"] = float("nan")
        return out

    monkeypatch.setattr(VAEStage, "train_step", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"stage vae step 3: loss loss is nan.*last good checkpoint .*last.ckpt is kept"):
        fit(dataset, run, preset="tiny", overrides=FAST, device="cpu")
    ckpt = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert (ckpt.stage, ckpt.step) == ("vae", 2)
    assert all(torch.isfinite(v).all() for v in ckpt.model.values() if v.is_floating_point())


def test_ctrl_c_saves_after_the_step_and_resumes(dataset, tmp_path, monkeypatch):
    original = VAEStage.train_step

    def interrupted(self, batch, step):
        out = original(self, batch, step)
        if step == 0:
            os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C delivers
        return out

    monkeypatch.setattr(VAEStage, "train_step", interrupted)
    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)
    result = fit(dataset, run, preset="tiny", overrides=FAST, device="cpu")
    assert result.stopped and result.interrupted
    ckpt = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert (ckpt.stage, ckpt.step) == ("vae", 1)
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    monkeypatch.setattr(VAEStage, "train_step", original)
    done = fit(dataset, run, preset="tiny", overrides=FAST, device="cpu")
    assert done.history[0][:2] == ("vae", 2) and done.done[:2] == ["vae", "adversarial"]


def test_resume_refuses_architecture_changes(dataset, tmp_path):
    run = tmp_path / "run"
    fit(dataset, run, preset="tiny", overrides=FAST, device="cpu", stop_after=1)
    with pytest.raises(ConfigMismatch, match="only train/prior keys may change"):
        fit(dataset, run, preset="tiny", overrides=[*FAST, "model.capacity=8"], device="cpu")
    # More steps on resume is allowed.
    result = fit(dataset, run, preset="tiny", overrides=[*FAST, "train.vae_steps=5"], device="cpu")
    assert [h[:2] for h in result.history if h[0] == "vae"] == [("vae", n) for n in range(2, 6)]


def test_a_new_run_follows_the_dataset_rate_and_channels(tmp_path, capsys):
    from rich.console import Console

    ds = write_dataset(tmp_path / "ds", tiny_examples(6, sr=22050, channels=2), sr=22050)
    result = fit(ds, tmp_path / "run", preset="tiny", overrides=["train.vae_steps=1", "train.adversarial_steps=0", "prior.steps=0"], device="cpu",
                 console=Console(stderr=True, width=200))
    assert result.done[:2] == ["vae", "adversarial"]
    cfg = ckpt_io.load(tmp_path / "run" / "checkpoints" / "last.ckpt").config.data
    assert (cfg.sr, cfg.channels) == (22050, 2)
    err = capsys.readouterr().err
    assert "note: the dataset has sr=22050, the preset sr=16000: training at sr=22050" in err
    assert "note: the dataset has channels=2, the preset channels=1" in err


def test_more_steps_reopen_the_last_finished_stage(dataset, tmp_path):
    run = tmp_path / "run"
    fit(dataset, run, preset="tiny", overrides=FAST, device="cpu")
    again = fit(dataset, run, preset="tiny", overrides=[*FAST, "train.adversarial_steps=6"], device="cpu")
    assert [h[:2] for h in again.history] == [("adversarial", 5), ("adversarial", 6)]
    ckpt = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert (ckpt.stage, ckpt.step) == ("adversarial", 6) and "adversarial" in ckpt.done
    # Stage 1 is not the checkpoint's stage any more: more VAE steps change nothing.
    assert fit(dataset, run, preset="tiny", overrides=[*FAST, "train.adversarial_steps=6", "train.vae_steps=9"], device="cpu").history == []


def test_corrupt_checkpoint_is_reported(tmp_path):
    bad = tmp_path / "run" / "checkpoints" / "last.ckpt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="last.ckpt: not a readable checkpoint"):
        ckpt_io.load_model(tmp_path / "run")


def test_files_that_are_not_our_checkpoints_are_refused_by_name(tmp_path):
    cfg = load_config("tiny")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, other)
    with pytest.raises(ValueError, match="other.ckpt: not a ravemodel checkpoint"):
        ckpt_io.load(other)
    future = tmp_path / "future.ckpt"
    torch.save({**ckpt_io.Checkpoint(config=cfg, stage="vae", step=1, model={}).to_dict(), "format": 99}, future)
    with pytest.raises(ValueError, match="future.ckpt: checkpoint format 99 is not supported"):
        ckpt_io.load(future)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({**ckpt_io.Checkpoint(config=cfg, stage="vae", step=1, model={}).to_dict(), "info": {"x": Path("/")}}, pickled)
    with pytest.raises(ValueError, match="pickled.ckpt: not a readable checkpoint"):
        ckpt_io.load(pickled)  # an object that is not plain data is never unpickled


def test_a_format_1_checkpoint_resumes_its_rng_state(tmp_path):
    """Format 1 stored numpy's RNG state as numpy's own tuple."""
    cfg = load_config("tiny")
    np.random.seed(5)
    state = {**ckpt_io.Checkpoint(config=cfg, stage="vae", step=2, model={}).to_dict(), "format": 1}
    state["rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": __import__("random").getstate()}
    expected = np.random.random_sample(3)
    torch.save(state, tmp_path / "old.ckpt")
    ckpt = ckpt_io.load(tmp_path / "old.ckpt")
    assert (ckpt.stage, ckpt.step, ckpt.data, ckpt.world_size) == ("vae", 2, DataPosition(), 1)
    ckpt_io.set_rng_state(ckpt.rng)
    assert np.array_equal(np.random.random_sample(3), expected)


# -- the command ----------------------------------------------------------------------------


def _fit_cmd(bin_dir: Path, dataset: Path, run: Path, *extra: str) -> list[str]:
    sets = [a for s in FAST for a in ("--set", s)]
    return [str(bin_dir / "ravemodel"), "fit", str(dataset), "--preset", "tiny", "--run", str(run), "--device", "cpu", *sets, *extra]


def test_ravemodel_fit_command_trains_and_resumes(dataset, tmp_path, bin_dir):
    run = tmp_path / "run"
    plan = tmp_path / "plan.toml"  # online augmentation through the rave_data plugin registry
    plan.write_text('[[steps]]\nname = "gain"\nprobability = 0.5\nparams = { db = [-6.0, 0.0] }\n')
    first = subprocess.run(_fit_cmd(bin_dir, dataset, run, "--max-steps", "3", "--augment-config", str(plan)), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "parameters" in first.stderr and "stopped at vae step 3/4" in first.stderr
    second = subprocess.run(_fit_cmd(bin_dir, dataset, run, "--augment-config", str(plan)), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr and "stage vae, step 3" in second.stderr
    assert "note:" not in second.stderr  # same dataset and plan as the first call
    assert "training complete: vae, adversarial" in second.stdout
    ckpt = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert ckpt.done[:2] == ["vae", "adversarial"]
    made = ckpt.provenance
    assert made.dataset == str(dataset.resolve()) and made.augment["steps"][0]["name"] == "gain"
    third = subprocess.run(_fit_cmd(bin_dir, dataset, run, "--set", "train.adversarial_steps=5"), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "note: this run started with another augmentation plan" in third.stderr
    assert "training complete: vae, adversarial" in third.stdout and str(run / "checkpoints" / "last.ckpt") in third.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.no_such_key=1"], "unknown key 'train.no_such_key'"),
        (["--set", "train.batch_size=64"], "too small for batch size 64"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--set", "data.sr=8000"], "error: "),
        (["--set", "data.sr=22050"], "dataset is 16000 Hz but the preset trains at 22050 Hz"),
    ],
)
def test_ravemodel_fit_refuses_bad_input_in_one_line(dataset, tmp_path, bin_dir, args, message):
    proc = subprocess.run(_fit_cmd(bin_dir, dataset, tmp_path / "run", *args), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ravemodel_fit_missing_dataset(tmp_path, bin_dir):
    proc = subprocess.run(_fit_cmd(bin_dir, tmp_path / "nowhere", tmp_path / "run"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "nowhere: no data.mdb" in proc.stderr and "Traceback" not in proc.stderr


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    cfg = load_config("tiny")
    ckpt_io.Checkpoint(config=cfg, stage="vae", step=1, model={"w": torch.ones(3)}).save(path)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ckpt_io.Checkpoint(config=cfg, stage="vae", step=2, model={"w": torch.zeros(3)}).save(path)
    monkeypatch.undo()
    assert ckpt_io.load(path).step == 1  # the old file, intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no *.tmp left behind


def test_ctrl_c_on_the_real_command_with_loader_workers(dataset, tmp_path, bin_dir):
    """SIGINT to the whole process group (what a terminal sends) while DataLoader
    workers run: the step finishes, last.ckpt is written, exit status 130."""
    run = tmp_path / "run"
    cmd = _fit_cmd(bin_dir, dataset, run, "--set", "train.vae_steps=100000", "--set", "train.num_workers=2", "--set", "train.log_every=1")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        for line in proc.stderr:
            if line.startswith("vae step 2/"):
                break
        os.killpg(proc.pid, signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == 130, rest
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "checkpoint saved" in rest and "Traceback" not in rest
    ckpt = ckpt_io.load(run / "checkpoints" / "last.ckpt")
    assert ckpt.stage == "vae" and ckpt.step >= 2
