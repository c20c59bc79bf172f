"""``ravemodel import`` of acids-rave 2.x training runs (rave_model/imports, cli/import_.py),
without acids-rave.

Each test writes a Lightning checkpoint the way ``rave train`` lays it out
(``RUN/config.gin``, ``RUN/version_0/checkpoints/epoch-epoch=0000.ckpt``) with the
key names and shapes of a real acids-rave 2.3.1 run and that run's config.gin (the
fixtures ``import_<config>_ckpt_keys.txt`` / ``import_<config>_config.gin``, written
by bench/bench_import.py --fixtures), filled with seeded random weights. Then the
real commands run on it: ``ravemodel import``, ``export``, ``reconstruct``.
"""
from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from tests.audio import noise, sine, write  # noqa: E402
from tests.rave_model.test_import_scripted import FIXTURES, ckpt_keys  # noqa: E402

NOISE_FRAMES = {"v2_small": 8, "v1": 64, "v2": 1}  # decoder.*.target_size: the product of the noise ratios


def phase_1(fixture: str) -> int:
    """The fixture run's PHASE_1_DURATION (the bench trains them warmed up after a step or a few)."""
    return int(re.search(r"^PHASE_1_DURATION = (\d+)$", (FIXTURES / f"import_{fixture}_config.gin").read_text(), re.M).group(1))


def reference_state(fixture: str, warmed: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state_dict with a real run's keys and shapes; weights drawn at the scale of an
    initialised network (weight-normalised convs with unit-norm rows)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    dtypes = {line.split("\t")[0]: line.split("\t")[2] for line in (FIXTURES / f"import_{fixture}_ckpt_keys.txt").read_text().splitlines()
              if not line.startswith("#")}
    for key, shape in ckpt_keys(fixture).items():
        leaf = key.rsplit(".", 1)[-1]
        if dtypes[key] == "int64":
            value = {"warmed_up": int(warmed), "target_size": NOISE_FRAMES[fixture]}.get(leaf, 0)
            state[key] = torch.full(shape, value, dtype=torch.long) if shape else torch.tensor(value)
        elif key == "latent_pca":
            state[key] = torch.linalg.qr(torch.randn(shape, generator=gen))[0].T.contiguous()
        elif key == "fidelity":
            share = torch.rand(shape, generator=gen).sort(descending=True).values
            state[key] = (share / share.sum()).cumsum(0)
        elif leaf in ("weight_g", "running_var") or (leaf == "weight" and len(shape) == 1):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif leaf == "window":
            state[key] = torch.hann_window(shape[0])
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
    return state


def reference_run(root: Path, fixture: str, warmed: bool, steps: int, gin_text: str | None = None) -> Path:
    """``root`` laid out as ``rave train`` leaves a run; returns the run folder."""
    ckpt_dir = root / "version_0" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    (root / "config.gin").write_text(gin_text if gin_text is not None else (FIXTURES / f"import_{fixture}_config.gin").read_text())
    torch.save(
        {
            "epoch": 0,
            "global_step": 2 * steps,
            "pytorch-lightning_version": "1.9.0",
            "state_dict": reference_state(fixture, warmed),
            "loops": {},
            "callbacks": {"WarmupCallback": {"training_steps": steps}, "QuantizeCallback": {"training_steps": steps}},
            "optimizer_states": [],
            "lr_schedulers": [],
        },
        ckpt_dir / "epoch-epoch=0000.ckpt",
    )
    return root


def ravemodel(bin_dir: Path, *args: object, code: int = 0) -> subprocess.CompletedProcess:
    out = subprocess.run([str(bin_dir / "ravemodel"), *map(str, args)], capture_output=True, text=True)
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr
    return out


@pytest.fixture(scope="module")
def imported(tmp_path_factory, bin_dir) -> tuple[Path, Path]:
    """A warmed-up v2_small reference run (6 steps, phase 1 of 3) imported by the CLI."""
    root = tmp_path_factory.mktemp("import")
    src = reference_run(root / "v2s_87b2adff58", "v2_small", warmed=True, steps=6)
    out = ravemodel(bin_dir, "import", src, root / "ours")
    assert "stages done: vae, adversarial" in out.stdout
    return src, root / "ours"


def test_a_warmed_up_run_becomes_a_run_of_ours(imported):
    from rave_model.config import load_config
    from rave_model.train.checkpoint import load_model

    src, run = imported
    model, cfg, ckpt = load_model(run)
    assert ckpt.stage == "imported" and ckpt.done == ["vae", "adversarial"] and ckpt.step == 6
    preset = load_config("v2_small")
    for key in ("architecture", "capacity", "ratios", "dilations", "noise_generator", "noise_hidden", "noise_bands", "noise_ratios",
                "amplitude_modulation", "latent_size", "n_bands"):
        assert getattr(cfg.model, key) == getattr(preset.model, key), key
    assert (cfg.data.sr, cfg.data.channels) == (44100, 1)  # the gin's SAMPLING_RATE; channels from the weights
    assert cfg.train.vae_steps == phase_1("v2_small")  # the gin's PHASE_1_DURATION
    where = ckpt.provenance.imported_from
    assert where["kind"] == "acids-rave checkpoint" and where["path"].endswith("epoch-epoch=0000.ckpt")
    assert where["gin"] == str((src / "config.gin").resolve()) and where["warmed_up"] is True
    assert (run / "acids-rave-config.gin").read_text() == (src / "config.gin").read_text()
    # The latent PCA travels as trained (export crops the latent with it).
    ref = torch.load(next(src.rglob("*.ckpt")), weights_only=True)["state_dict"]
    for name in ("latent_pca", "latent_mean", "fidelity"):
        torch.testing.assert_close(getattr(model, name), ref[name], rtol=0, atol=0)
    assert bool(model.decoder.warmed_up)


def test_export_and_reconstruct_an_imported_run(imported, tmp_path, bin_dir):
    _, run = imported
    voice = write(tmp_path / "voice.wav", sine(0.5, 22050, 330.0) + noise(0.5, 22050, amp=0.05), 22050)
    ravemodel(bin_dir, "export", run, "-o", tmp_path / "m.ts")
    for model in (run, tmp_path / "m.ts"):
        out = tmp_path / f"y_{model.name}.wav"
        ravemodel(bin_dir, "reconstruct", model, voice, "-o", out)
        y, sr = sf.read(str(out), dtype="float32", always_2d=True)
        assert sr == 44100 and abs(len(y) - 0.5 * 44100) <= 512 and np.isfinite(y).all() and y.std() > 0


def test_a_run_still_in_phase_1_leaves_stage_2_to_do(tmp_path):
    """v1, 2 steps of 1M in phase 1, no PCA yet (the reference fits it at validation)."""
    from rave_model.imports import import_model
    from rave_model.train.checkpoint import load_model

    gin = re.sub(r"^PHASE_1_DURATION = \d+$", "PHASE_1_DURATION = 1000000", (FIXTURES / "import_v1_config.gin").read_text(), flags=re.M)
    src = reference_run(tmp_path / "v1_abc", "v1", warmed=False, steps=2, gin_text=gin)
    ckpt_path = next(src.rglob("*.ckpt"))
    state = torch.load(ckpt_path, weights_only=True)
    state["state_dict"]["fidelity"].zero_()
    state["state_dict"]["latent_pca"].copy_(torch.eye(128))
    torch.save(state, ckpt_path)
    report = import_model(ckpt_path, tmp_path / "ours")
    assert report.done == ["vae"] and report.step == 2
    assert any("no latent PCA" in n for n in report.notes)
    model, cfg, _ = load_model(tmp_path / "ours")
    assert cfg.model.architecture == "v1" and cfg.train.vae_steps == 1_000_000
    assert not bool(model.decoder.warmed_up)
    # A ramp: export keeps every dimension rather than one.
    assert float(model.fidelity[0]) > 0 and float(model.fidelity[-1]) == 1.0


def test_bad_sources_are_refused_with_the_file_and_the_reason(imported, tmp_path, bin_dir):
    src, run = imported
    ckpt = next(src.rglob("*.ckpt"))

    def refused(*args: object) -> str:
        return ravemodel(bin_dir, "import", *args, code=2).stderr

    err = refused(tmp_path / "nothing", tmp_path / "a")
    assert "nothing: no such file or folder" in err
    lone = tmp_path / "lone" / "x.ckpt"
    lone.parent.mkdir()
    lone.write_bytes(ckpt.read_bytes())
    err = refused(lone, tmp_path / "b")
    assert str(lone) in err and "config.gin" in err and "--gin" in err
    ravemodel(bin_dir, "import", lone, tmp_path / "b", "--gin", src / "config.gin")  # given explicitly, it imports
    junk = tmp_path / "junk" / "junk.ckpt"
    junk.parent.mkdir()
    junk.write_bytes(b"not a checkpoint")
    (junk.parent / "config.gin").write_text("")
    assert "not a readable checkpoint" in refused(junk, tmp_path / "c")
    ours = next(run.rglob("last.ckpt"))
    assert "ravemodel checkpoint" in refused(ours, tmp_path / "f", "--gin", src / "config.gin")  # used directly, not imported
    pickled = tmp_path / "pickled" / "last.ckpt"
    pickled.parent.mkdir()
    torch.save({"config": {}, "model": {}, "rng": {"numpy": np.random.get_state()}}, pickled)
    (pickled.parent / "config.gin").write_text("")
    assert "Python objects besides tensors" in refused(pickled, tmp_path / "g")  # never unpickled
    prior = tmp_path / "prior" / "prior.ckpt"
    prior.parent.mkdir()
    torch.save({"state_dict": {"synth.encoder.x": torch.zeros(1), "net.0.weight": torch.zeros(1)}}, prior)
    (prior.parent / "config.gin").write_text("")
    assert "prior checkpoint" in refused(prior, tmp_path / "d")
    err = refused(src, run)
    assert "already holds a run" in err and "--force" in err
    discrete = reference_run(tmp_path / "discrete", "v2_small", warmed=True, steps=6,
                             gin_text=(FIXTURES / "import_v2_small_config.gin").read_text().replace("@blocks.VariationalEncoder", "@blocks.DiscreteEncoder"))
    err = refused(discrete, tmp_path / "e")
    assert str(discrete / "config.gin") in err
