"""The reference side of bench/bench_parity.py: runs INSIDE acids-rave 2.3.1's venv.

Builds acids-rave's RAVE from one of its gin configs (``v1``, ``v2``, ``v2_small``) with
a fixed seed and ``torch.save``s, for the same fixed batches, everything our side
recomputes:

- ``config``: the operative gin config (what ``rave train`` writes as config.gin) and
  ``init``: the initial ``state_dict`` (discriminator included);
- ``batches``: ``[B, 1, n_signal]`` crops (sines, noise bursts, clicks; deterministic);
- ``receptive_field``: ``rave.core.get_rave_receptive_field`` (what validation_epoch_end
  stores and training_step crops by when ``valid_signal_crop``);
- ``outputs``: encoder output, decoder output (sub-bands and audio) on the latent mean,
  the v1 decoder with its noise branch on, every discriminator feature map of
  ``cat([x, decoded])``;
- ``stage1`` / ``stage2``: per step, the loss dict ``training_step`` builds (and
  ``loss_dis``, ``pred_real``, ``pred_fake``), computed by the genuine
  ``RAVE.training_step`` with Lightning's optimisers stood in for (Adam 1e-3 with the
  LinearLR over ``phase_1_duration``, Adam 1e-4 for the discriminator); the state
  after each stage;
- ``draws``: every ``torch.randn_like`` / ``torch.rand_like`` result of each section,
  in order, so our side replays the same posterior samples and noise.

``PHASE_1_DURATION`` is bound to the number of stage-1 steps, so the learning rate of
stage 2 is the reference's phase-2 rate (1e-4), as after a full phase 1.

Usage (bench_parity.py does this): REFVENV/bin/python bench/parity_ref_dump.py
--config v2_small --out dump.pt [--batch 2 --n-signal 131072 --steps 2 --steps2 4]
"""
from __future__ import annotations

import argparse
import math
import warnings

import torch


def make_batch(batch: int, n: int, sr: int, seed: int) -> torch.Tensor:
    """``[batch, 1, n]``: decaying sines, a noise burst and clicks, peak about 0.5."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / sr
    out = []
    for _ in range(batch):
        x = torch.zeros(n, dtype=torch.float64)
        for _ in range(4):
            f = 80 * 2 ** (6 * torch.rand(1, generator=g).item())
            onset = int(torch.randint(0, n // 2, (1,), generator=g))
            env = torch.exp(-(t - t[onset]).clamp(min=0) * 3) * (t >= t[onset])
            x += 0.15 * env * torch.sin(2 * math.pi * f * t + 6.28 * torch.rand(1, generator=g).item())
        start = int(torch.randint(0, n - n // 8, (1,), generator=g))
        x[start : start + n // 8] += 0.05 * torch.randn(n // 8, generator=g, dtype=torch.float64)
        for p in torch.randint(0, n, (6,), generator=g):
            x[p] += 0.4
        out.append(x)
    return torch.stack(out).unsqueeze(1).float()


class Draws:
    """Records torch.randn_like / torch.rand_like results while ``section`` is set."""

    def __init__(self) -> None:
        self.sections: dict[str, list[tuple[str, torch.Tensor]]] = {}
        self.section: str | None = None
        self._randn, self._rand = torch.randn_like, torch.rand_like

        def randn_like(*a, **k):
            out = self._randn(*a, **k)
            self._keep("randn", out)
            return out

        def rand_like(*a, **k):
            out = self._rand(*a, **k)
            self._keep("rand", out)
            return out

        torch.randn_like, torch.rand_like = randn_like, rand_like

    def _keep(self, kind: str, out: torch.Tensor) -> None:
        if self.section is not None:
            self.sections.setdefault(self.section, []).append((kind, out.detach().clone()))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--n-signal", type=int, default=131072)
    p.add_argument("--steps", type=int, default=2, help="stage-1 steps (also PHASE_1_DURATION)")
    p.add_argument("--steps2", type=int, default=4, help="stage-2 steps")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    warnings.filterwarnings("ignore")

    import gin
    import rave
    import rave.core
    import rave.model

    gin.parse_config_files_and_bindings([f"{a.config}.gin"], [f"PHASE_1_DURATION = {a.steps}"])
    torch.manual_seed(a.seed)
    model = rave.RAVE(n_channels=1)
    beta_cb = rave.model.BetaWarmupCallback()
    config = gin.operative_config_str()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    n_batches = a.steps + a.steps2
    batches = [make_batch(a.batch, a.n_signal, model.sr, a.seed * 1000 + k) for k in range(n_batches)]

    lrf, rrf = rave.core.get_rave_receptive_field(model, n_channels=1)
    model.receptive_field[0], model.receptive_field[1] = lrf, rrf
    model.train()
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}  # init + receptive field
    draws = Draws()

    # -- outputs at the initial weights, in train mode (BatchNorm statistics restored after)
    outputs = {}
    m = model
    x = batches[0]
    with torch.no_grad():
        draws.section = "outputs"
        z = m.encode(x)
        mean = z[:, : z.shape[1] // 2]
        outputs["encoder"] = z
        outputs["decoder"] = m.decoder(mean)
        outputs["decoded"] = m.decode(mean)
        if hasattr(m.decoder, "synth") and m.decoder.use_noise:
            m.decoder.set_warmed_up(True)
            draws.section = "outputs_noise"
            outputs["decoder_noise"] = m.decoder(mean)
        draws.section = None
        y = outputs["decoded"][..., : x.shape[-1]]
        feats = m.discriminator(torch.cat([x, y], 0))
        outputs["disc_input"] = torch.cat([x, y], 0)
        outputs["disc_features"] = [[f.clone() for f in sub] for sub in feats]
    m.decoder.set_warmed_up(False)
    model.load_state_dict(start)

    # -- training steps through the genuine training_step
    gen_opt, dis_opt = (o["optimizer"] if isinstance(o, dict) else o for o in model.configure_optimizers())
    sched = torch.optim.lr_scheduler.LinearLR(gen_opt, start_factor=1.0, end_factor=0.1, total_iters=model.warmup)
    model.optimizers = lambda: (gen_opt, dis_opt)
    logged: dict[str, float] = {}

    def log(name, value, *args, **kwargs):
        logged[name] = float(value)

    def log_dict(d, *args, **kwargs):
        for k, v in d.items():
            logged[k] = float(v)

    model.log, model.log_dict = log, log_dict
    stages: dict[str, list[dict[str, float]]] = {"stage1": [], "stage2": []}
    states = {}
    for k in range(n_batches):
        stage = "stage1" if k < a.steps else "stage2"
        idx = k if k < a.steps else k - a.steps
        model.warmed_up = stage == "stage2"
        beta_cb.on_train_batch_start(None, model, batches[k], k)
        logged.clear()
        draws.section = f"{stage}_{idx}"
        model.training_step(batches[k].clone(), idx)
        draws.section = None
        sched.step()
        logged["lr"] = gen_opt.param_groups[0]["lr"]
        stages[stage].append(dict(logged))
        if k == a.steps - 1:
            states["stage1"] = {kk: v.detach().clone() for kk, v in model.state_dict().items()}
    states["stage2"] = {kk: v.detach().clone() for kk, v in model.state_dict().items()}

    torch.save(
        {
            "config_name": a.config,
            "config": config,
            "weights": dict(model.weights),
            "update_discriminator_every": model.update_discriminator_every,
            "init": init,
            "batches": batches,
            "receptive_field": [int(lrf), int(rrf)],
            "outputs": outputs,
            "stage1": stages["stage1"],
            "stage2": stages["stage2"],
            "states": states,
            "draws": draws.sections,
            "versions": {"torch": torch.__version__, "rave": getattr(rave, "__version__", "2.3.1")},
        },
        a.out,
    )


if __name__ == "__main__":
    main()
