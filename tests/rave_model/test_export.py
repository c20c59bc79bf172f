"""``ravemodel export`` and the TorchScript module it writes (rave_model/export.py).

The exported files are loaded in a separate Python started with ``-I -S`` (no site
packages processed, so no editable install of this project) with only torch's own
folder on ``sys.path``, from a temporary directory: exactly what nn~ or a user
without this project has.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from rave_model.config import load_config  # noqa: E402
from rave_model.export import build_export, latent_dims  # noqa: E402
from rave_model.model import RAVE  # noqa: E402
from tests.audio import clicks, concat, noise, sine  # noqa: E402

BIN = Path(sys.executable).parent
TORCH_SITE = str(Path(torch.__file__).resolve().parents[1])
FIDELITY = [0.5, 0.7, 0.85, 0.92, 0.96, 0.98, 0.99, 1.0]  # 0.95 -> 5 dims, 0.9 -> 4


def make_run(root: Path, overrides: list[str] | None = None) -> tuple[Path, RAVE]:
    """A run folder holding a tiny model with a non-trivial PCA and a loud decoder."""
    torch.manual_seed(0)
    cfg = load_config("tiny", overrides or [])
    model = RAVE(cfg)
    with torch.no_grad():
        # Random init decodes near silence; scale the waveform head so differences show.
        model.decoder.wave_gen.parametrizations.weight.original0.mul_(200)
        q, _ = torch.linalg.qr(torch.randn(8, 8))
        model.latent_pca.copy_(q)
        model.latent_mean.copy_(torch.randn(8) * 0.1)
        model.fidelity.copy_(torch.tensor(FIDELITY))
    model.set_warmed_up(True)
    ckpt = {"format": 1, "config": cfg.to_dict(), "stage": "adversarial", "step": 7, "model": model.state_dict()}
    (root / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, root / "checkpoints" / "last.ckpt")
    return root, model.eval()


def isolated(code: str, cwd: Path) -> dict:
    """Run ``code`` in a Python that can import torch but not this project; it prints JSON."""
    prelude = (
        f"import sys; sys.path.insert(0, {TORCH_SITE!r})\n"
        "import importlib.util, json, torch\n"
        "assert importlib.util.find_spec('rave_model') is None, 'project importable'\n"
        "torch.set_num_threads(1)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([sys.executable, "-I", "-S", "-c", prelude + code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, RAVE]:
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> dict[str, Path]:
    """Both exports, written by the real CLI: streaming by default, offline on request."""
    out = tmp_path_factory.mktemp("exports")
    paths = {}
    for name, flags in (("streaming", []), ("offline", ["--offline"])):
        path = out / f"{name}.ts"
        res = subprocess.run([str(BIN / "ravemodel"), "export", str(run[0]), "-o", str(path), *flags], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert str(path) in res.stdout and "5/8 latent dims" in res.stdout
        assert f": {name} " in res.stdout
        paths[name] = path
    return paths


def test_latent_dims_follow_the_fidelity():
    f = torch.tensor(FIDELITY)
    assert [latent_dims(f, t) for t in (0.4, 0.5, 0.9, 0.95, 0.99, 1.0)] == [1, 1, 4, 5, 7, 8]


def test_nn_tilde_interface_in_a_process_without_the_project(exported, tmp_path):
    code = f"""
m = torch.jit.load({str(exported['streaming'])!r})
res = {{"methods": m.get_methods(), "attributes": m.get_attributes(), "sr": int(m.sampling_rate[0]), "sr2": m.get_sampling_rate()}}
for name in res["methods"]:
    res[name] = getattr(m, name + "_params").tolist()
    res[name + "_labels"] = [len(getattr(m, name + "_input_labels")), len(getattr(m, name + "_output_labels"))]
shapes = {{}}
for b in (1, 4):
    m = torch.jit.load({str(exported['streaming'])!r})
    x = torch.randn(b, 1, 2048)
    z = m.encode(x)
    shapes[b] = [list(z.shape), list(m.decode(z).shape), list(m.forward(x).shape)]
res["shapes"] = shapes
res["names"] = [n for n, _ in m.named_buffers() if n in ("latent_pca", "latent_mean", "fidelity")]
res["wn"] = [n for n, _ in m.named_parameters() if "parametrizations" in n]
print(json.dumps(res))
"""
    res = isolated(code, tmp_path)
    assert res["methods"] == ["encode", "decode", "forward"]
    assert res["attributes"] == []
    assert res["sr"] == res["sr2"] == 16000
    assert res["encode"] == [1, 1, 5, 64]
    assert res["decode"] == [5, 64, 1, 1]
    assert res["forward"] == [1, 1, 1, 1]
    assert res["encode_labels"] == [1, 5] and res["decode_labels"] == [5, 1]
    assert res["shapes"]["1"] == [[1, 5, 32], [1, 1, 2048], [1, 1, 2048]]
    assert res["shapes"]["4"] == [[4, 5, 32], [4, 1, 2048], [4, 1, 2048]]
    assert sorted(res["names"]) == ["fidelity", "latent_mean", "latent_pca"]
    assert res["wn"] == []  # weight norm folded away


def test_streaming_blocks_equal_whole_signal_without_the_project(exported, tmp_path):
    sr = 16000
    audio = concat(sine(0.5, sr, 330.0), noise(0.5, sr, 0.3), clicks(0.5, sr, 0.1))[:, : 2048 * 10]
    torch.save(torch.from_numpy(audio).unsqueeze(0), tmp_path / "x.pt")
    code = f"""
x = torch.load("x.pt")
out = {{}}
for name, path in (("streaming", {str(exported['streaming'])!r}), ("offline", {str(exported['offline'])!r})):
    for method in ("forward", "encode"):
        m = torch.jit.load(path); torch.manual_seed(3)
        whole = getattr(m, method)(x)
        m = torch.jit.load(path); torch.manual_seed(3)
        blocks = torch.cat([getattr(m, method)(x[..., i:i + 2048]) for i in range(0, x.shape[-1], 2048)], -1)
        out[name + "_" + method] = [float((whole - blocks).abs().max()), float(whole.abs().max())]
print(json.dumps(out))
"""
    res = isolated(code, tmp_path)
    for method in ("forward", "encode"):
        diff, peak = res[f"streaming_{method}"]
        assert peak > 0.05, "the test model is too quiet to show anything"
        assert diff < 1e-4, (method, diff)
    # The --offline model starts every block from silence: it clicks at the block edges.
    diff, peak = res["offline_forward"]
    assert diff > 1e-2 * peak


def test_nn_tilde_batch_pattern_starts_each_batch_size_afresh(exported):
    """nn~ (mc.nn~) may call with batch 1, then 4, then 1 again: each new batch size
    starts from silence and from the first noise frame, so each phase streamed in
    buffers equals a fresh model's output on that phase's whole signal."""
    from rave_model.listen import load_listener

    m = load_listener(exported["streaming"]).module
    torch.manual_seed(5)
    phases = [torch.randn(b, 1, 2048 * 4) * 0.3 for b in (1, 4, 1)]
    for x in phases:
        blocks = torch.cat([m.forward(x[..., i : i + 2048]) for i in range(0, x.shape[-1], 2048)], -1)
        whole = load_listener(exported["streaming"]).module.forward(x)
        assert whole.abs().max() > 0.05
        assert (blocks - whole).abs().max() < 1e-4, x.shape


def test_pca_round_trip_matches_the_model(run):
    """Exported encode -> decode at full fidelity equals the model's own encode/decode."""
    _, model = run
    x = torch.from_numpy(concat(sine(0.3, 16000, 200.0), noise(0.3, 16000, 0.2))).unsqueeze(0)[..., :4096]
    model.set_warmed_up(False)  # no noise branch: the two decoders draw their noise differently
    try:
        scripted = build_export(model, fidelity=1.0, streaming=False)
        with torch.no_grad():
            z = scripted.encode(x)
            mean = model.encode(x)[:, :8]
            decoded, reference = scripted.decode(z), model.decode(mean)
    finally:
        model.set_warmed_up(True)
    assert z.shape == (1, 8, 64)
    # Latents are the PCA projection of the centred mean, and decode undoes it.
    assert torch.allclose(z, torch.einsum("ij,bjt->bit", model.latent_pca, mean - model.latent_mean[:, None]), atol=1e-5)
    assert torch.allclose(decoded, reference, atol=1e-4)


@pytest.mark.parametrize("overrides", [["model.causal=false"], ["model.causal=false", "model.architecture=v2", "model.dilations=[[1, 3], [1], [1]]", "model.amplitude_modulation=true"], ["data.channels=2"]], ids=["v1-noncausal", "v2-noncausal", "stereo"])
def test_streaming_export_of_other_architectures(tmp_path, overrides):
    """Non-causal models stream through delayed residual skips; stereo keeps its channels."""
    _, model = make_run(tmp_path, overrides)
    scripted = build_export(model, fidelity=0.95, streaming=True)
    c = model.n_channels
    assert scripted.forward_params.tolist() == [c, 1, c, 1]
    x = torch.from_numpy(concat(sine(0.4, 16000, 300.0, channels=c), noise(0.4, 16000, 0.3, c))).unsqueeze(0)[..., : 2048 * 5]
    with torch.no_grad():
        whole = scripted.forward(x)
        again = build_export(model, fidelity=0.95, streaming=True)
        blocks = torch.cat([again.forward(x[..., i : i + 2048]) for i in range(0, x.shape[-1], 2048)], -1)
    assert whole.shape == x.shape and whole.abs().max() > 1e-3
    assert (whole - blocks).abs().max() < 1e-4


def test_default_output_name(tmp_path):
    from rave_model.export import export_run

    root, _ = make_run(tmp_path / "my-run")
    path, info = export_run(root / "checkpoints" / "last.ckpt")
    assert path == root / "my-run.ts" and path.is_file() and info["streaming"]
    assert info["latent_dims"] == 5 and info["stage"] == "adversarial" and info["step"] == 7
    path, info = export_run(root, streaming=False)
    assert path == root / "my-run_offline.ts" and path.is_file() and not info["streaming"]


def test_cli_mode_flags(run, tmp_path):
    """No flag and --streaming write the streaming model; --offline and its alias
    --no-streaming the offline one; the default name says which."""
    root = tmp_path / "run-copy"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "last.ckpt").write_bytes((run[0] / "checkpoints" / "last.ckpt").read_bytes())
    for flags, streaming in (([], True), (["--streaming"], True), (["--offline"], False), (["--no-streaming"], False)):
        res = subprocess.run([str(BIN / "ravemodel"), "export", str(root), *flags], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        path = root / ("run-copy.ts" if streaming else "run-copy_offline.ts")
        assert res.stdout.startswith(f"{path}: {'streaming' if streaming else 'offline'} "), (flags, res.stdout)
        m = torch.jit.load(str(path))
        x = torch.randn(1, 1, 2048)
        blocks = torch.cat([m.forward(x[..., :1024]), m.forward(x[..., 1024:])], -1)
        whole = torch.jit.load(str(path)).forward(x)
        assert ((blocks - whole).abs().max() < 1e-4) == streaming, flags
        path.unlink()


def test_prior_method_is_wired_when_given(run):
    from rave_model.prior import LatentPrior

    _, model = run
    prior = LatentPrior(5, resolution=8, hidden_size=8, skip_size=8, n_layers=2, cycle_size=2).eval()
    scripted = build_export(model, fidelity=0.95, streaming=True, prior=prior)
    assert scripted.get_methods() == ["encode", "decode", "forward", "prior"]
    assert scripted.prior_params.tolist() == [1, 64, 5, 64]
    z = scripted.prior(torch.zeros(1, 1, 4))
    assert z.shape == (1, 5, 4) and torch.isfinite(z).all()
    assert scripted.decode(z).shape == (1, 1, 256)


def test_export_errors_are_one_line_and_leave_nothing(tmp_path):
    out = tmp_path / "model.ts"
    res = subprocess.run([str(BIN / "ravemodel"), "export", str(tmp_path / "missing"), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "missing" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    res = subprocess.run([str(BIN / "ravemodel"), "export", str(bad), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "broken.ckpt" in res.stderr and "Traceback" not in res.stderr
    empty = tmp_path / "empty-run"
    empty.mkdir()
    res = subprocess.run([str(BIN / "ravemodel"), "export", str(empty), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "empty-run" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = subprocess.run([str(BIN / "ravemodel"), "export", str(empty), "--checkpoint", "first"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--checkpoint" in res.stderr, res.stderr
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
