"""Reading acids-rave exported .ts files (rave_model/imports/scripted.py, architecture.py)
without acids-rave: a TorchScript file with the module tree of a real export.

The fixtures ``import_<config>_ts_modules.jsonl`` list every module of a real
``rave export`` file (acids-rave 2.3.1, made by bench/bench_import.py --fixtures): its
name, TorchScript class, convolution attributes and tensor shapes. The tests rebuild
that tree with stand-in modules of the same class names and attributes (random
weights), script and save it, and read it back like a real export.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Optional

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
Tensor = torch.Tensor

FIXTURES = Path(__file__).parent / "fixtures"


# -- stand-ins: the class names acids-rave's export has; forward is never called ------


class Node(nn.Module):
    """Any container (CachedSequential, Branches, Residual, ...)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class LeakyReLU(Node):
    pass


class Conv1d(nn.Conv1d):
    def __init__(self, a: dict[str, Any], weight: list[int]) -> None:
        super().__init__(a["in_channels"], a["out_channels"], a["kernel_size"][0], a["stride"][0],
                         dilation=a["dilation"][0], groups=a["groups"], bias=False)
        self._pad: tuple[int, int] = tuple(a["_pad"]) if "_pad" in a else (0, 0)
        self.cumulative_delay: int = int(a.get("cumulative_delay", 0))

    def forward(self, x: Tensor) -> Tensor:
        return x


class ConvTranspose1d(nn.ConvTranspose1d):
    def __init__(self, a: dict[str, Any], weight: list[int]) -> None:
        super().__init__(a["in_channels"], a["out_channels"], a["kernel_size"][0], a["stride"][0], bias=False)
        self.cumulative_delay: int = int(a.get("cumulative_delay", 0))

    def forward(self, x: Tensor) -> Tensor:
        return x


class BatchNorm1d(nn.BatchNorm1d):
    def forward(self, x: Tensor) -> Tensor:
        return x


def _named(name: str) -> type:
    """A container class called ``name`` (TorchScript keeps the Python class name).
    Defined by exec so its forward has source code for the compiler."""
    namespace: dict[str, Any] = {"Node": Node}
    exec(f"class {name}(Node):\n    pass\n", namespace)
    return namespace[name]


class CachedPQMF(Node):
    def __init__(self, n_band: int) -> None:
        super().__init__()
        self.n_band = n_band


class VariationalScriptedRAVE(nn.Module):
    def __init__(self, attrs: dict[str, Any], kind: str) -> None:
        super().__init__()
        self.sr: int = attrs["sr"]
        self.n_channels: int = attrs["n_channels"]
        self.full_latent_size: int = attrs["full_latent_size"]
        self.latent_size: int = attrs["latent_size"]
        self.input_mode: str = attrs["input_mode"]
        self.output_mode: str = attrs["output_mode"]
        self.is_using_adain: bool = attrs["is_using_adain"]
        self._has_prior: bool = attrs["_has_prior"]
        self.resampler: Optional[int] = attrs.get("resampler")

    def forward(self, x: Tensor) -> Tensor:
        return x


def build_export(fixture: str, path: Path, edit: Any = None, top_class: str = "VariationalScriptedRAVE") -> Path:
    """Script the module tree of ``import_<fixture>_ts_modules.jsonl`` to ``path``;
    ``edit(rows)`` may change the rows first."""
    lines = [json.loads(line) for line in (FIXTURES / f"import_{fixture}_ts_modules.jsonl").read_text().splitlines() if not line.startswith("#")]
    if edit is not None:
        edit(lines)
    top = lines[0]
    cls = VariationalScriptedRAVE if top_class == "VariationalScriptedRAVE" else type(top_class, (VariationalScriptedRAVE,), {})
    root = cls(top["attrs"], top["class"])
    gen = torch.Generator().manual_seed(0)
    for name, shape in top["attrs"]["buffers"].items():
        root.register_buffer(name, torch.randn(shape, generator=gen))
    made: dict[str, nn.Module] = {"": root}
    classes: dict[str, type] = {}
    for row in lines[1:]:
        a, kind, tensors = row["attrs"], row["class"], row.get("tensors", {})
        if kind in ("Conv1d", "CachedConv1d"):
            m: nn.Module = Conv1d(a, tensors["weight"])
        elif kind in ("ConvTranspose1d", "CachedConvTranspose1d"):
            m = ConvTranspose1d(a, tensors["weight"])
        elif kind == "BatchNorm1d":
            m = BatchNorm1d(tensors["weight"][0])
        elif kind == "LeakyReLU":
            m = LeakyReLU()
        elif kind == "CachedPQMF":
            m = CachedPQMF(a["n_band"])
        else:
            m = classes.setdefault(kind, _named(kind))()
        for tname, shape in tensors.items():
            if not hasattr(m, tname) or getattr(m, tname) is None:
                m.register_buffer(tname, torch.zeros(shape, dtype=torch.long) if not shape else torch.randn(shape, generator=gen))
        with torch.no_grad():
            for p in m.parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=gen))
        parent, _, leaf = row["name"].rpartition(".")
        made[parent].add_module(leaf, m)
        made[row["name"]] = m
    root.encoder.warmed_up.fill_(1)  # a run past its phase 1
    torch.jit.script(root).save(str(path))
    return path


def ckpt_keys(fixture: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (FIXTURES / f"import_{fixture}_ckpt_keys.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape, _dtype = line.split("\t")
        keys[key] = tuple(int(s) for s in shape.split(",") if s)
    return keys


@pytest.mark.parametrize("fixture", ["v2_small", "v2", "v1"])
def test_config_and_checkpoint_keys_from_an_export(fixture, tmp_path):
    """The architecture read from the scripted modules is the one the run was trained
    with, and the weights come back under exactly the keys (and shapes) of that run's
    checkpoint: weight-normalised convolutions as weight_g / weight_v."""
    from rave_model.config import load_config
    from rave_model.imports.scripted import read_export

    ref = read_export(build_export(fixture, tmp_path / "m.ts"))
    cfg = ref.config
    preset = load_config(fixture)
    for key in ("architecture", "capacity", "latent_size", "ratios", "n_bands", "kernel_size", "dilations", "use_noise",
                "noise_generator", "noise_ratios", "noise_bands", "amplitude_modulation", "causal", "loud_stride", "encoder_repeat"):
        assert getattr(cfg.model, key) == getattr(preset.model, key), key
    if fixture == "v2_small":
        assert cfg.model.noise_hidden == 64
    assert (cfg.data.sr, cfg.data.channels) == (44100, 1)  # the reference's rate, not our preset's 48 kHz
    assert cfg.train.disc_capacity == cfg.model.capacity
    assert ref.warmed_up and not ref.streaming
    expected = {k: v for k, v in ckpt_keys(fixture).items()
                if k.split(".")[0] in ("pqmf", "encoder", "decoder", "latent_pca", "latent_mean", "fidelity")}
    assert {k: tuple(v.shape) for k, v in ref.state.items()} == expected
    # weight_norm(dim=0) recomposes the exported weight: g * v / |v| == weight.
    up = {"v2_small": "decoder.net.2", "v2": "decoder.net.2", "v1": "decoder.net.1.net.1"}[fixture]  # a transposed conv: dim 0 = inputs
    g, v = ref.state[f"{up}.weight_g"], ref.state[f"{up}.weight_v"]
    w = g * v / v.flatten(1).norm(dim=1).reshape(-1, 1, 1)
    torch.testing.assert_close(w, v, rtol=1e-6, atol=1e-6)


def test_causal_export_is_read_as_causal(tmp_path):
    def causal(rows: list[dict[str, Any]]) -> None:
        for row in rows[1:]:
            pad = row["attrs"].get("_pad")
            if pad is not None:
                row["attrs"]["_pad"] = [pad[0] + pad[1], 0]

    from rave_model.imports.scripted import read_export

    assert read_export(build_export("v2_small", tmp_path / "c.ts", causal)).config.model.causal


def _refused(tmp_path: Path, bin_dir: Path, ts: Path, *needles: str) -> None:
    out = subprocess.run([str(bin_dir / "ravemodel"), "import", str(ts), str(tmp_path / "run")], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and str(ts) in out.stderr
    for needle in needles:
        assert needle in out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unsupported_exports_are_refused_by_name(tmp_path, bin_dir):
    """A .ts we cannot map: exit status 2, one line naming the file and what is missing."""

    def recurrent(rows: list[dict[str, Any]]) -> None:
        i = next(i for i, r in enumerate(rows) if r["name"] == "decoder.net.1")
        rows.insert(i, {"name": "decoder.net.gru", "class": "GRU", "attrs": {}, "tensors": {}})

    def keep_dim(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row["name"] == "encoder.encoder.net.5":
                row["attrs"]["out_channels"] = 48
                row["tensors"]["weight"][0] = 48

    _refused(tmp_path, bin_dir, build_export("v2_small", tmp_path / "gru.ts", recurrent), "decoder.net.gru is a GRU")
    _refused(tmp_path, bin_dir, build_export("v2_small", tmp_path / "kd.ts", keep_dim), "encoder.encoder.net.5", "48 -> 48 channels")
    _refused(tmp_path, bin_dir, build_export("v2_small", tmp_path / "d.ts", top_class="DiscreteScriptedRAVE"), "discrete")


def test_a_ravemodel_export_is_not_taken_for_an_acids_rave_one(tmp_path, bin_dir):
    from rave_model.config import load_config
    from rave_model.export import build_export as ours
    from rave_model.model import RAVE

    path = tmp_path / "ours.ts"
    ours(RAVE(load_config("tiny")), streaming=False).save(str(path))
    _refused(tmp_path, bin_dir, path, "ravemodel export")
