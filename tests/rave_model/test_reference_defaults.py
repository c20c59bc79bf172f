"""Training follows acids-rave 2.3.1's effective behaviour: learning rates at given
steps of each stage, effective loss weights, the valid-signal crop and the prior's
window. The reference values are those of rave/model.py (configure_optimizers,
training_step), rave/core.py (valid_signal_crop) and rave/prior/model.py."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rave_model.config import PriorConfig, load_config
from rave_model.data import DataPosition, TrainData
from rave_model.model import RAVE
from rave_model.prior import build_prior
from rave_model.receptive_field import receptive_field, valid_crop
from rave_model.train.adversarial import AdversarialStage
from rave_model.train.logging import TrainLogger
from rave_model.train.prior_stage import prior_window
from rave_model.train.stage import TrainContext
from rave_model.train.vae import VAEStage
from tests.rave_model.datasets import tiny_examples, write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Eight tiny LMDB examples; the tests run on one thread, as the training tests."""
    torch.set_num_threads(1)
    return write_dataset(tmp_path_factory.mktemp("data") / "ds", tiny_examples(8))


def _ctx(dataset: Path, tmp_path: Path, overrides: list[str]) -> TrainContext:
    cfg = load_config("tiny", overrides)
    torch.manual_seed(0)
    return TrainContext(
        cfg=cfg, model=RAVE(cfg), device=torch.device("cpu"), run_dir=tmp_path,
        data=TrainData(dataset, cfg), logger=TrainLogger(tmp_path, enabled=False),
    )


@pytest.mark.parametrize("preset", ["v1", "v2", "v2_small"])
def test_presets_use_the_reference_rates_crops_and_weights(preset):
    cfg = load_config(preset)
    t = cfg.train
    assert (t.lr, t.lr_end_factor, t.disc_lr, list(t.betas)) == (1e-3, 0.1, 1e-4, [0.5, 0.9])
    assert cfg.data.n_signal == 131072  # scripts/train.py's --n_signal default, every config
    # The gin weight is applied twice by the reference: 10 (v1.gin) -> 100, 20 (v2*.gin) -> 400.
    assert t.loss_weights == {"multiband": 1.0, "fullband": 1.0, "adversarial": 1.0, "feature_matching": {"v1": 100.0, "v2": 400.0, "v2_small": 400.0}[preset]}
    assert t.valid_signal_crop is (preset != "v1")
    assert t.disc_every == {"v1": 2, "v2": 4, "v2_small": 2}[preset]
    assert t.disc_capacity == cfg.model.capacity


def test_v2_small_is_the_reference_architecture():
    m = load_config("v2_small").model
    assert (m.architecture, m.capacity, m.ratios, m.latent_size, m.n_bands) == ("v2", 48, [4, 2, 2, 2], 128, 16)
    assert (m.use_noise, m.noise_generator, m.noise_hidden, m.noise_ratios, m.noise_bands) == (True, "v2", 64, [2, 2, 2], 32)
    t = load_config("v2_small").train
    assert (t.beta_start, t.beta_end) == (0.01, 0.01)


def test_learning_rates_at_given_steps_of_each_stage(dataset, tmp_path):
    ctx = _ctx(dataset, tmp_path, ["train.vae_steps=10", "train.phase_mangle=0"])
    vae = VAEStage(ctx)
    vae.on_start()
    batches = vae.batches(DataPosition())
    seen = []
    for step in range(10):
        seen.append(vae.opt.param_groups[0]["lr"])
        vae.train_step(next(batches)[0], step)
    after = vae.opt.param_groups[0]["lr"]
    # LinearLR(start 1.0, end 0.1, total_iters = stage 1) stepped once per batch.
    expected = [1e-3 * (1 - 0.9 * k / 10) for k in range(10)]
    assert seen == pytest.approx(expected, rel=1e-9)
    assert after == pytest.approx(1e-4, rel=1e-9)
    adv = AdversarialStage(ctx)
    assert adv.gen_opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert adv.dis_opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert tuple(adv.gen_opt.param_groups[0]["betas"]) == (0.5, 0.9)


def test_the_generator_step_sums_the_effective_weights(dataset, tmp_path):
    ctx = _ctx(dataset, tmp_path, ["train.loss_weights.feature_matching=400", "train.phase_mangle=0"])
    ctx.model.set_warmed_up(True)
    stage = AdversarialStage(ctx)
    stage.on_start()
    batch = next(stage.batches(DataPosition()))[0]
    # disc_every = 2: odd steps update the decoder; losses come back as 0-d tensors.
    out = {k: float(v) for k, v in stage.train_step(batch, 1).items()}
    assert out["feature_matching"] > 0
    total = out["multiband"] + out["fullband"] + out["adversarial"] + 400 * out["feature_matching"]
    assert out["loss"] == pytest.approx(total, rel=1e-5)


def test_receptive_field_bounds_what_the_output_sees():
    """No input sample outside the measured field changes the output sample, and the
    samples well inside it do (the far edges of the field carry gradients too small
    to show in a perturbed output, so only the middle is probed from inside)."""
    cfg = load_config("tiny", ["model.causal=false", "model.use_noise=false"])
    torch.manual_seed(0)
    model = RAVE(cfg).double().eval()
    left, right = receptive_field(model)
    assert 0 < left < 1500 and 0 < right < 1500
    n = 4096
    centre = n // 2
    torch.manual_seed(1)
    x = torch.randn(1, 1, n, dtype=torch.float64)
    outside = [*range(-left - 200, -left), *range(right, right + 200)]
    inside = [*range(-left // 2 - 20, -left // 2 + 20), *range(right // 2 - 20, right // 2 + 20)]
    offsets = outside + inside
    moved = x.repeat(len(offsets), 1, 1)
    for row, offset in enumerate(offsets):
        moved[row, 0, centre + offset] += 1.0
    with torch.no_grad():
        # Batch rows are independent in eval mode, so each row is its own experiment.
        base = model.decode(model.encode(x.repeat(len(offsets), 1, 1)).chunk(2, 1)[0])[:, 0, centre]
        y = model.decode(model.encode(moved).chunk(2, 1)[0])[:, 0, centre]
    changed = (y != base).tolist()
    assert not any(changed[: len(outside)])
    assert all(changed[len(outside) :])


def test_valid_crop_cuts_the_reference_amounts():
    bands = torch.arange(16 * 100, dtype=torch.float32).reshape(1, 16, 100)
    out = valid_crop(bands, (100, 50))
    # floor(100 / 16) = 6 on the left, ceil(50 / 16) = 4 on the right (rave.core.valid_signal_crop).
    assert out.shape == (1, 16, 90)
    assert torch.equal(out, bands[..., 6:96])
    assert valid_crop(bands, (0, 0)).shape == bands.shape


def test_stage1_multiband_loss_skips_the_edges(dataset, tmp_path):
    ctx = _ctx(dataset, tmp_path, ["train.valid_signal_crop=true", "model.causal=false", "train.phase_mangle=0"])
    stage = VAEStage(ctx)
    field = tuple(ctx.info["receptive_field"])
    assert field == receptive_field(ctx.model)
    x = next(stage.batches(DataPosition()))[0]
    torch.manual_seed(3)
    _, losses = stage.recon(x)
    torch.manual_seed(3)
    y, y_bands, _ = stage.recon.net(x)
    x_bands = ctx.model.multiband(x)
    cropped = stage.recon.multiband(valid_crop(x_bands, field), valid_crop(y_bands, field))
    whole = stage.recon.multiband(x_bands, y_bands)
    assert float(losses["multiband"]) == pytest.approx(float(cropped), rel=1e-6)
    assert not math.isclose(float(losses["multiband"]), float(whole), rel_tol=1e-4)


def test_prior_window_covers_its_receptive_field():
    args = PriorConfig()
    prior = build_prior(8, args)
    assert prior.receptive_field == 69
    assert prior_window(args.n_frames, prior.receptive_field) == 128  # acids-rave: 2^ceil(log2(rf))
    assert prior_window(0, 64) == 64 and prior_window(0, 65) == 128
    assert prior_window(16, 69) == 16  # an explicit window wins
