"""The state of an exported model: every tensor it computes with is a parameter or a
buffer, so ``.to(device)`` (nn~ calls ``to("cuda")`` when its gpu flag is on) and
``.to(dtype)`` move all of it, and the file holds each weight once.

The exports are written to real files and read back with ``torch.jit.load``: what nn~
loads. A CPU-only machine proves the moves with a dtype (float64: ``.to`` converts
parameters and buffers alike, whatever the target); the CUDA test runs where a GPU is
present.
"""
from __future__ import annotations

import collections
import functools
import io
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from rave_model.config import load_config  # noqa: E402
from rave_model.export import build_export  # noqa: E402
from rave_model.model import RAVE  # noqa: E402
from rave_model.prior import LatentPrior  # noqa: E402

# A v1 small enough to export in seconds but whose weights (4.6 MB) outweigh the
# archive's code, with layers wide enough for the Winograd kernels.
V1_SMALL = ["model.capacity=16", "model.latent_size=8"]


class _Saved:
    """A module object of a TorchScript archive's ``data.pkl``: its attributes."""

    def __setstate__(self, state) -> None:
        self.attributes = state


_TENSOR = object()  # a tensor of the archive (its values are not read)


def saved_tensor_names(path: Path) -> list[str]:
    """Every tensor attribute the archive at ``path`` saves, by dotted name, whether or not
    it is a parameter or a buffer: ``torch.jit`` pickles each module object with all its
    attributes into ``data.pkl``, which is read here with ``pickle`` alone."""

    class Reader(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if module.split(".")[0] == "__torch__":
                return type(name, (_Saved,), {})
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return lambda *args: _TENSOR
            if module == "torch.jit._pickle":  # typed containers: restore_type_tag(value, type), build_*list(value)
                return (lambda value, _type: value) if name == "restore_type_tag" else (lambda value: value)
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if module == "torch" and name.endswith("Storage"):
                return name
            raise pickle.UnpicklingError(f"{path}: unexpected {module}.{name} in data.pkl")

        def persistent_load(self, pid):
            return None

    with zipfile.ZipFile(path) as zf:
        data = next(n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1)
        root = Reader(io.BytesIO(zf.read(data))).load()
    names: list[str] = []

    def walk(obj: _Saved, prefix: str) -> None:
        for key, value in obj.attributes.items():
            if value is _TENSOR:
                names.append(prefix + key)
            elif isinstance(value, _Saved):
                walk(value, f"{prefix}{key}.")

    walk(root, "")
    return names


def tensor_attributes(module, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the module loaded from ``path`` under every name its archive saves
    (:func:`saved_tensor_names`), read from the live module (after any ``.to``)."""
    return {name: functools.reduce(getattr, name.split("."), module) for name in saved_tensor_names(path)}


def load(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))


def make_model(overrides: list[str], warmed_up: bool = True) -> RAVE:
    torch.manual_seed(0)
    model = RAVE(load_config("v1", overrides))
    with torch.no_grad():
        # Random init decodes near silence; scale the waveform head so differences show.
        model.decoder.wave_gen.parametrizations.weight.original0.mul_(200)
        q, _ = torch.linalg.qr(torch.randn(8, 8))
        model.latent_pca.copy_(q)
        model.latent_mean.copy_(torch.randn(8) * 0.1)
        model.fidelity.copy_(torch.linspace(0.3, 1.0, 8))
    model.set_warmed_up(warmed_up)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> RAVE:
    return make_model(V1_SMALL)


@pytest.fixture(scope="module")
def files(model, tmp_path_factory) -> dict[str, Path]:
    """Streaming and offline exports, with a prior, saved to disk."""
    out = tmp_path_factory.mktemp("exports")
    prior = LatentPrior(5, resolution=8, hidden_size=8, skip_size=8, n_layers=2, cycle_size=2).eval()
    paths = {}
    for name, streaming in (("streaming", True), ("offline", False)):
        paths[name] = out / f"{name}.ts"
        build_export(model, fidelity=0.95, streaming=streaming, prior=prior).save(str(paths[name]))
    return paths


def audio(seconds: float = 0.4, sr: int = 44100) -> torch.Tensor:
    """``[1, 1, T]``: a sine, then noise (T a multiple of 2048). Made with torch alone, so
    this module also runs where only torch and numpy are installed (a GPU machine)."""
    n = int(seconds * sr) // 2048 * 2048
    t = torch.arange(n // 2) / sr
    noise = 0.3 * torch.randn(n - n // 2, generator=torch.Generator().manual_seed(0))
    return torch.cat([0.5 * torch.sin(2 * torch.pi * 220.0 * t), noise]).view(1, 1, n)


@pytest.mark.parametrize("kind", ["streaming", "offline"])
def test_every_tensor_is_a_parameter_or_a_buffer(files, kind):
    m = load(files[kind])
    state = dict(m.named_parameters()) | dict(m.named_buffers())
    attrs = tensor_attributes(m, files[kind])
    assert len(attrs) > 50  # the walk reaches the layers' own tensors
    plain = sorted(set(attrs) - set(state))
    assert plain == [], f"tensors outside the module's state: {plain[:10]}"
    # The prepared kernels' weights are part of it (offline: the Winograd layers' own taps
    # and transform, per-tap weights elsewhere).
    names = {n.rsplit(".", 1)[-1] for n, t in state.items() if t.numel()}
    assert ({"weight", "winograd_g", "weight_taps"} <= names) if kind == "offline" else ("weight" in names)
    if kind == "offline":
        # The transformed taps are derived at the first call, into the state too.
        assert all(t.numel() == 0 for n, t in state.items() if n.endswith("winograd_u"))
        with torch.no_grad():
            m.forward(audio(0.1))
        buffers = dict(m.named_buffers())
        winograd = [n[: -len("winograd_g")] for n, t in buffers.items() if n.endswith("winograd_g") and t.numel()]
        assert len(winograd) >= 10 and all(buffers[n + "winograd_u"].numel() for n in winograd)


@pytest.mark.parametrize("kind", ["streaming", "offline"])
def test_to_moves_every_tensor(files, kind):
    m = load(files[kind])
    x = audio()
    with torch.no_grad():
        ref = m.forward(x)  # also fills the streaming caches: they must move too
        z = m.prior(torch.zeros(1, 1, 4))
    m.to(torch.float64)
    for name, t in tensor_attributes(m, files[kind]).items():
        assert not t.is_floating_point() or t.dtype == torch.float64, name
    # Computing in float64 after the move gives the float32 output (a fresh state).
    m = load(files[kind]).to(torch.float64)
    with torch.no_grad():
        y = m.forward(x.double())
        z64 = m.prior(torch.zeros(1, 1, 4, dtype=torch.float64))
    assert y.dtype == torch.float64 and z64.shape == z.shape
    assert (y.float() - ref).abs().max() < 1e-4 * float(ref.abs().max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["streaming", "offline"])
def test_cuda_model_computes_on_the_gpu(files, kind, monkeypatch):
    # Full float32 on the GPU too (TF32 would round convolutions to 10-bit mantissas).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    x = audio()
    z = torch.randn(1, 5, x.shape[-1] // 2048, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = load(files[kind])
        want = {"forward": ref.forward(x), "decode": ref.decode(z)}
        m = load(files[kind]).to("cuda")
        assert {t.device.type for t in tensor_attributes(m, files[kind]).values()} == {"cuda"}
        got = {"forward": m.forward(x.cuda()).cpu(), "decode": m.decode(z.cuda()).cpu()}
    for name, y in got.items():
        assert (y - want[name]).abs().max() < 1e-4 * float(want[name].abs().max()) + 1e-7, name


def test_files_hold_each_weight_once(model, files):
    """Each file holds only what its kernels read, in its state, each weight once: the offline
    file neither the original weights beside re-laid ones, nor Winograd's transformed taps
    (derived when first called), nor prepared ones outside the state."""
    weights = sum(p.numel() * p.element_size() for p in model.folded().parameters())
    assert weights > 4_000_000  # large enough for the archive's code not to dominate
    for kind in ("streaming", "offline"):
        m = load(files[kind])
        state = sum(t.numel() * t.element_size() for t in m.state_dict().values())
        size = files[kind].stat().st_size
        assert state <= 1.05 * weights, (kind, state, weights)
        # The file is its state plus code and metadata (under 1 MB), nothing stored twice.
        assert size <= state + 1_000_000, (kind, size, state)


def test_offline_export_equals_the_training_model():
    """The offline kernels (Winograd, per-tap BLAS, polyphase) keep the eager model's
    output; noise branch off, as the two draw their noise differently."""
    model = make_model(V1_SMALL, warmed_up=False)
    x = audio()
    scripted = build_export(model, fidelity=1.0, streaming=False)
    with torch.no_grad():
        ref = model(x)
        y = scripted.forward(x)
    assert y.shape == ref.shape and float(ref.abs().max()) > 1e-3
    assert (y - ref).abs().max() < 1e-4 * float(ref.abs().max())
