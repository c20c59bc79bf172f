"""The latent prior (rave_model/prior.py) and stage 3 (rave_model/train/prior_stage.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rave_model.prior import LatentPrior, from_bins, load_prior, one_hot, skew, to_bins, unskew  # noqa: E402


def tiny_prior(latent: int = 3, resolution: int = 8) -> LatentPrior:
    torch.manual_seed(0)
    return LatentPrior(latent, resolution=resolution, hidden_size=16, skip_size=16, n_layers=3, cycle_size=2).eval()


def test_quantised_normal_round_trip():
    z = torch.linspace(-3, 3, 101).reshape(1, 1, -1)
    bins = to_bins(z, 16)
    assert bins.min() == 0 and bins.max() == 15
    # Equal-probability bins: a standard normal sample fills them evenly.
    counts = torch.bincount(to_bins(torch.randn(1, 1, 64000, generator=torch.Generator().manual_seed(0)), 16).flatten(), minlength=16)
    assert counts.min() > 3500 and counts.max() < 4500
    # Decoding lands in the same bin, dithered or not.
    assert torch.equal(to_bins(from_bins(bins, 16, dither=True), 16), bins)
    assert torch.equal(to_bins(from_bins(bins, 16, dither=False), 16), bins)
    hot = one_hot(bins, 16)
    assert hot.shape == (1, 16, 101) and torch.equal(hot.sum(1), torch.ones(1, 101))


def test_skew_shifts_each_dimension_and_unskew_inverts():
    z = torch.arange(4 * 10).reshape(1, 4, 10).float()
    s = skew(z)
    assert s.shape == (1, 4, 7)
    for d in range(4):
        assert torch.equal(s[0, d], z[0, d, 3 - d : 10 - d])
    assert torch.equal(unskew(s), z[..., 3:7])


def test_step_by_step_equals_whole_sequence():
    p = tiny_prior()
    x = one_hot(to_bins(torch.randn(2, 3, 30), 8), 8)
    whole = p(x)
    p.reset()
    parts = torch.cat([p.step(x[..., :1]), p.step(x[..., 1:13]), p.step(x[..., 13:])], -1)
    assert (whole - parts).abs().max() < 1e-5


def test_loss_falls_when_learning_a_pattern():
    # A repeating pattern is fully predictable: the loss must fall far below
    # chance (log 8 = 2.08 nats) within a few dozen steps.
    torch.manual_seed(0)
    p = tiny_prior().train()
    pattern = torch.tensor([-1.5, -0.5, 0.5, 1.5]).repeat(10)
    z = torch.stack([pattern, pattern.roll(1), -pattern]).unsqueeze(0).repeat(4, 1, 1)
    opt = torch.optim.Adam(p.parameters(), lr=1e-2)
    first = float(p.loss(z))
    for _ in range(60):
        loss = p.loss(z)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 1.5
    assert float(p.loss(z)) < 0.3 * first
    # Most likely continuation of a primed pattern repeats it.
    p.eval()
    out = p.sample(8, temperature=0.0, prime=z[:1, :, :12])
    assert torch.equal(to_bins(out[..., 12:], 8), to_bins(z[:1, :, 12:20], 8))


def test_sample_is_seeded_and_keeps_the_prime():
    p = tiny_prior()
    torch.manual_seed(5)
    a = p.sample(20, batch=2)
    torch.manual_seed(5)
    b = p.sample(20, batch=2)
    torch.manual_seed(6)
    c = p.sample(20, batch=2)
    assert a.shape == (2, 3, 20) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    prime = torch.randn(1, 3, 9)
    out = p.sample(5, prime=prime)
    assert out.shape == (1, 3, 14) and torch.equal(out[..., :9], prime)
    with pytest.raises(ValueError, match="latent dimensions"):
        p.sample(5, prime=torch.randn(1, 4, 9))


def test_temperature_narrows_sampling():
    p = tiny_prior()
    torch.manual_seed(0)
    cold = to_bins(p.sample(200, temperature=0.05), 8)
    hot = to_bins(p.sample(200, temperature=3.0), 8)
    # Distinct bins visited per dimension: a cold sampler sticks to few.
    def spread(bins):
        return sum(len(torch.unique(bins[0, d])) for d in range(bins.shape[1]))
    assert spread(cold) < spread(hot)


def test_scripted_prior_streams_in_a_fresh_process(tmp_path):
    p = tiny_prior()
    scripted = torch.jit.script(p)
    z = scripted.prior(torch.zeros(1, 1, 6))
    assert z.shape == (1, 3, 6) and torch.isfinite(z).all()
    z = scripted.prior(torch.zeros(4, 1, 5))  # a new batch size starts a new sequence
    assert z.shape == (4, 3, 5)
    path = tmp_path / "prior.ts"
    scripted.save(str(path))
    code = (
        "import sys, torch; m = torch.jit.load(sys.argv[1]); torch.manual_seed(0);"
        "a = torch.cat([m.prior(torch.zeros(2, 1, 4)) for _ in range(3)], -1);"
        "m.reset(); torch.manual_seed(0); b = m.prior(torch.zeros(2, 1, 12));"
        "assert a.shape == (2, 3, 12), a.shape; assert torch.isfinite(a).all();"
        # Blocks of 4 frames continue one sequence: the same as one call of 12.
        "assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max(); print('ok')"
    )
    # -I: isolated mode, the project is not importable; only torch is needed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-I", "-c", code, str(path)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_load_prior_from_a_checkpoint():
    from rave_model.config import load_config
    from rave_model.train.checkpoint import Checkpoint

    p = tiny_prior()
    args = {"latent_size": 3, "resolution": 8, "hidden_size": 16, "skip_size": 16, "n_layers": 3, "cycle_size": 2, "kernel_size": 3}
    cfg = load_config("tiny")
    q = load_prior(Checkpoint(config=cfg, stage="prior", step=5, model={}, stage_state={"args": args, "prior": p.state_dict()}))
    assert q is not None and q.latent_size == 3
    x = one_hot(to_bins(torch.randn(1, 3, 10), 8), 8)
    assert torch.equal(p(x), q(x))
    assert load_prior(Checkpoint(config=cfg, stage="adversarial", step=5, model={})) is None


# --- stage 3 through the real runner ---------------------------------------------------------

#: A few steps per stage: enough to pass through all three, in seconds.
FAST = ["train.vae_steps=4", "train.adversarial_steps=2", "prior.steps=10", "train.val_every=5", "train.ckpt_every=5"]
BEFORE_PRIOR = 6  # vae + adversarial steps above


def prior_losses(result) -> list[float]:
    return [losses["prior_loss"] for stage, _, losses in result.history if stage == "prior"]


def test_prior_stage_trains_and_resumes_exactly(dataset, tmp_path):
    from rave_model.train.checkpoint import load
    from rave_model.train.runner import fit

    torch.set_num_threads(1)
    whole = fit(dataset, tmp_path / "whole", preset="tiny", overrides=FAST, device="cpu")
    assert whole.done == ["vae", "adversarial", "prior"]
    losses = prior_losses(whole)
    assert len(losses) == 10 and all(np.isfinite(losses))

    # Interrupted 4 steps into the prior, then the same call again.
    first = fit(dataset, tmp_path / "split", preset="tiny", overrides=FAST, device="cpu", stop_after=BEFORE_PRIOR + 4)
    assert first.stopped and prior_losses(first) == losses[:4]
    ckpt = load(tmp_path / "split" / "checkpoints" / "last.ckpt")
    assert (ckpt.stage, ckpt.step) == ("prior", 4)
    cache = tmp_path / "split" / "prior" / "latents.pt"
    made = cache.stat().st_mtime_ns
    second = fit(dataset, tmp_path / "split", preset="tiny", overrides=FAST, device="cpu")
    assert second.done == ["vae", "adversarial", "prior"]
    assert cache.stat().st_mtime_ns == made  # the latent cache was reused, not recomputed
    np.testing.assert_allclose(prior_losses(second), losses[4:], rtol=0, atol=1e-6)

    # The finished run carries a prior with the weights of the uninterrupted one.
    a = load_prior(load(tmp_path / "whole" / "checkpoints" / "last.ckpt"))
    b = load_prior(load(tmp_path / "split" / "checkpoints" / "last.ckpt"))
    assert a is not None and b is not None
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name


def test_a_stale_latent_cache_is_recomputed(dataset, tmp_path):
    from rave_model.train.runner import fit

    torch.set_num_threads(1)
    run = tmp_path / "run"
    (run / "prior").mkdir(parents=True)
    # A cache left by another model (wrong fingerprint) must not be trained on.
    torch.save({"fingerprint": "another model", "train": torch.zeros(2, 16, 3), "val": torch.zeros(1, 16, 3)}, run / "prior" / "latents.pt")
    result = fit(dataset, run, preset="tiny", overrides=FAST, device="cpu")
    assert result.done[-1] == "prior"
    cached = torch.load(run / "prior" / "latents.pt", weights_only=True)
    assert cached["fingerprint"] != "another model"
    assert cached["train"].shape[:2] == (9, 16)  # 9 training examples, 2 x 8 latent params
    assert cached["train"].abs().sum() > 0


def test_prior_stage_skipped_with_zero_steps(dataset, tmp_path):
    from rave_model.train.checkpoint import load
    from rave_model.train.runner import fit

    torch.set_num_threads(1)
    result = fit(dataset, tmp_path / "run", preset="tiny", overrides=FAST[:2] + ["prior.steps=0"], device="cpu")
    assert prior_losses(result) == [] and "prior" in result.done
    assert load_prior(load(tmp_path / "run" / "checkpoints" / "last.ckpt")) is None
