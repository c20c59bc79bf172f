"""Infer our :class:`~rave_model.config.Config` from the modules of an acids-rave export.

Scripted convolutions keep ``in_channels``, ``out_channels``, ``kernel_size``,
``stride`` and ``dilation``; offline ones also their padding ``_pad = (left, right)``,
streaming ones their ``cumulative_delay``. That is enough to recover every model key
of the reference's v1 and v2 families (see :func:`infer_config`). A module the
reference can be configured with but ravemodel has no counterpart for (a recurrent
layer, keep_dim, noise augmentation, ...) is refused by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rave_model.imports.errors import ImportFailure

_CONVS = ("Conv1d", "CachedConv1d", "ConvTranspose1d", "CachedConvTranspose1d")


@dataclass
class Conv:
    """The shape of one scripted convolution."""

    name: str
    transposed: bool
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    dilation: int
    groups: int
    pad: tuple[int, int] | None  # offline exports only
    delay: int  # streaming exports: samples of delay this layer adds (0 when causal)


def _conv(name: str, module: Any) -> Conv:
    c = module._c

    def get(attr: str, default: Any = None) -> Any:
        return c.getattr(attr) if c.hasattr(attr) else default

    def first(v: Any) -> int:
        return int(v[0]) if isinstance(v, (tuple, list)) else int(v)

    pad = get("_pad")
    return Conv(
        name=name,
        transposed="Transpose" in module.original_name,
        in_ch=int(get("in_channels")),
        out_ch=int(get("out_channels")),
        kernel=first(get("kernel_size")),
        stride=first(get("stride", 1)),
        dilation=first(get("dilation", 1)),
        groups=int(get("groups", 1)),
        pad=(int(pad[0]), int(pad[1])) if pad is not None else None,
        delay=int(get("cumulative_delay", 0) or 0),
    )


def _is_conv(module: Any) -> bool:
    return getattr(module, "original_name", "") in _CONVS


def _children(mods: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
    """Direct children of ``prefix`` in order (``net.0``, ``net.1``, ...)."""
    root = mods.get(prefix)
    if root is None:
        return []
    return [(f"{prefix}.{n}", m) for n, m in root.named_children()]


def _convs_under(mods: dict[str, Any], prefix: str) -> list[Conv]:
    return [_conv(n, m) for n, m in mods.items() if n.startswith(prefix + ".") and _is_conv(m)]


class _Reader:
    """Walks the export's module tree; every refusal names the file and the module."""

    def __init__(self, path: Path, mods: dict[str, Any]) -> None:
        self.path, self.mods = path, mods

    def fail(self, what: str) -> ImportFailure:
        return ImportFailure(f"{self.path}: unsupported acids-rave configuration: {what}")

    def sequence(self, prefix: str) -> list[tuple[str, Any]]:
        seq = _children(self.mods, prefix)
        if not seq:
            raise self.fail(f"no module {prefix}")
        return seq

    def residual_conv(self, name: str) -> Conv:
        """The dilated convolution of a residual unit (reference ``DilatedUnit``: lrelu, conv_d, lrelu, conv1x1)."""
        convs = _convs_under(self.mods, name)
        if len(convs) != 2 or convs[1].kernel != 1:
            raise self.fail(f"{name} is not a dilated residual unit")
        return convs[0]

    def kind(self, name: str, module: Any) -> str:
        orig = getattr(module, "original_name", "")
        if _is_conv(module):
            return "conv"
        if orig == "LeakyReLU":
            return "act"
        if orig == "BatchNorm1d":
            return "norm"
        if name + ".aligned" in self.mods:  # cached_conv's Residual wraps the branch in `aligned`
            return "residual"
        raise self.fail(f"{name} is a {orig or type(module).__name__}, which ravemodel has no counterpart for")


def infer_config(path: Path, module: Any, mods: dict[str, Any], state: dict[str, Any]) -> tuple[Any, set[str]]:
    """``(Config, weight-normalised conv names)`` for an acids-rave export.

    Inferred from the modules: data.sr, data.channels; model.architecture, capacity,
    latent_size, ratios, n_bands, kernel_size, dilations, encoder_repeat and
    loud_stride (v1), use_noise, noise_generator, noise_ratios, noise_bands,
    noise_hidden, amplitude_modulation, causal. Training keys: the preset of the same
    family (v1, v2, or v2_small when the model is v2_small's), with the discriminator
    sized by the capacity as the reference does.
    """
    from rave_model.config import load_config

    r = _Reader(path, mods)
    n_bands = int(getattr(module.pqmf, "n_band", 1))
    channels = int(module.n_channels)
    latent = int(module.full_latent_size)
    data_size = n_bands * channels
    taps = state.get("pqmf.h")
    if taps is not None and n_bands > 1 and taps.numel() != _prototype_taps(n_bands):
        raise r.fail(f"a PQMF prototype of {taps.numel()} taps (ravemodel's 100 dB prototype has {_prototype_taps(n_bands)})")
    enc = r.sequence("encoder.encoder.net")
    if any(r.kind(n, m) == "norm" for n, m in enc):
        model, normed = _v1(r, enc, data_size, latent)
        preset = "v1"
    else:
        model, normed = _v2(r, enc, data_size, latent)
        preset = "v2_small" if (model["capacity"], model["ratios"], model["noise_generator"]) == (48, [4, 2, 2, 2], "v2") else "v2"
    cfg = load_config(preset)
    for key, value in model.items():
        setattr(cfg.model, key, value)
    cfg.model.n_bands = n_bands
    cfg.model.latent_size = latent
    cfg.data.sr = int(module.sr)
    cfg.data.channels = channels
    cfg.train.disc_capacity = cfg.model.capacity
    hop = cfg.hop_length
    cfg.data.n_signal = max(hop, (cfg.data.n_signal // hop) * hop)
    try:
        cfg.validate()
    except ValueError as exc:
        raise r.fail(str(exc)) from None
    return cfg, normed


def _prototype_taps(n_bands: int) -> int:
    from rave_model.pqmf import prototype

    return len(prototype(100.0, n_bands))


def _causal(r: _Reader, stem: Conv) -> bool:
    """Offline exports pad ``(left, right)``: causal when ``right == 0``. Streaming ones
    move all padding to the past; a centred layer then reports a delay."""
    if stem.kernel <= 1:
        raise r.fail(f"{stem.name}: a first convolution of kernel 1")
    if stem.pad is not None:
        return stem.pad[1] == 0
    return stem.delay == 0


def _v2(r: _Reader, enc: list[tuple[str, Any]], data_size: int, latent: int) -> tuple[dict[str, Any], set[str]]:
    """acids-rave ``EncoderV2`` / ``GeneratorV2`` (configs v2, v2_small, ...)."""
    convs: list[tuple[Conv, list[int]]] = []  # top-level convs with the dilations of the units before them
    dilations: list[int] = []
    kernels: set[int] = set()
    for name, m in enc:
        kind = r.kind(name, m)
        if kind == "residual":
            c = r.residual_conv(name)
            dilations.append(c.dilation)
            kernels.add(c.kernel)
        elif kind == "conv":
            convs.append((_conv(name, m), dilations))
            dilations = []
        elif kind == "norm":
            raise r.fail(f"{name}: BatchNorm in a v2 encoder")
    if len(convs) < 3 or dilations:
        raise r.fail("an encoder that is not stem conv, (units, strided conv) per ratio, output conv")
    stem, down, head = convs[0][0], convs[1:-1], convs[-1][0]
    if convs[0][1]:
        raise r.fail("residual units before the encoder's first convolution")
    if len(kernels) > 1:
        raise r.fail(f"residual units with several kernel sizes {sorted(kernels)}")
    capacity = stem.out_ch
    k = kernels.pop() if kernels else (stem.kernel - 1) // 2
    if stem.in_ch != data_size:
        raise r.fail(f"{stem.name} takes {stem.in_ch} channels, the PQMF gives {data_size}")
    if stem.kernel != 2 * k + 1:
        raise r.fail(f"{stem.name}: kernel {stem.kernel} with residual kernel {k}")
    ratios, dils, dim = [], [], capacity
    for c, ds in down:
        if c.stride < 2 or c.kernel != 2 * c.stride:
            raise r.fail(f"{c.name}: a down-sampling of stride {c.stride}, kernel {c.kernel} (ravemodel: kernel 2r, r >= 2)")
        if c.in_ch != dim or c.out_ch != 2 * dim:
            raise r.fail(f"{c.name}: {c.in_ch} -> {c.out_ch} channels (keep_dim or another width rule)")
        if not ds:
            raise r.fail(f"{c.name}: a stage without residual units")
        ratios.append(c.stride)
        dils.append(ds)
        dim *= 2
    if head.out_ch != 2 * latent or head.in_ch != dim or head.kernel != k:
        raise r.fail(f"{head.name}: {head.in_ch} -> {head.out_ch} channels, kernel {head.kernel} (expected {dim} -> {2 * latent}, kernel {k})")

    # GeneratorV2: stem conv, then per ratio (reversed) lrelu, transposed conv and its
    # units; a final lrelu; the waveform conv last in `net`, or apart when there is noise.
    stages: list[tuple[Conv, list[int]]] = []
    d_stem: Conv | None = None
    wave: Conv | None = None
    for name, m in r.sequence("decoder.net"):
        kind = r.kind(name, m)
        if kind == "residual":
            if not stages:
                raise r.fail(f"{name}: a residual unit before the first up-sampling")
            stages[-1][1].append(r.residual_conv(name).dilation)
        elif kind == "conv":
            c = _conv(name, m)
            if c.transposed:
                stages.append((c, []))
            elif d_stem is None:
                d_stem = c
            elif wave is None and stages:
                wave = c
            else:
                raise r.fail(f"{name}: an unexpected convolution in the decoder")
        elif kind == "norm":
            raise r.fail(f"{name}: BatchNorm in a v2 decoder")
    noise = "decoder.noise_module" in r.mods
    if noise:
        if wave is not None or "decoder.waveform_module" not in r.mods:
            raise r.fail("a decoder with a noise module but no separate waveform module")
        wave = _conv("decoder.waveform_module", r.mods["decoder.waveform_module"])
    if d_stem is None or wave is None:
        raise r.fail("a decoder without its first or its waveform convolution")
    if d_stem.in_ch != latent:
        raise r.fail(f"{d_stem.name} takes {d_stem.in_ch} latent channels for {latent} latent dimensions (noise augmentation)")
    if d_stem.kernel != k:
        raise r.fail(f"{d_stem.name}: kernel {d_stem.kernel}, the residual units {k}")
    if [c.stride for c, _ in stages][::-1] != ratios:
        raise r.fail(f"decoder ratios {[c.stride for c, _ in stages][::-1]} differ from the encoder's {ratios}")
    if [ds for _, ds in stages][::-1] != dils:
        raise r.fail(f"decoder dilations {[ds for _, ds in stages][::-1]} differ from the encoder's {dils}")
    for c, _ in stages:
        if c.kernel != 2 * c.stride:
            raise r.fail(f"{c.name}: an up-sampling of stride {c.stride}, kernel {c.kernel}")
    if wave.kernel != 2 * k + 1:
        raise r.fail(f"{wave.name}: a waveform kernel of {wave.kernel}")
    if wave.out_ch not in (data_size, 2 * data_size):
        raise r.fail(f"{wave.name}: {wave.out_ch} output channels for {data_size} sub-bands")
    model: dict[str, Any] = {
        "architecture": "v2",
        "capacity": capacity,
        "ratios": ratios,
        "kernel_size": k,
        "dilations": dils,
        "amplitude_modulation": wave.out_ch == 2 * data_size,
        "use_noise": noise,
        "weight_norm": True,
        "causal": _causal(r, stem),
    }
    normed = {c.name for c in _convs_under(r.mods, "encoder.encoder.net")}
    normed |= {c.name for c in _convs_under(r.mods, "decoder.net")} | {wave.name}
    if noise:
        model.update(_noise_v2(r, data_size))
    else:
        model["noise_generator"] = "v1"
    return model, normed


def _noise_v2(r: _Reader, data_size: int) -> dict[str, Any]:
    """acids-rave ``NoiseGeneratorV2``: kernel-2r strided convs, hidden width, no weight norm."""
    kind = getattr(r.mods["decoder.noise_module"], "original_name", "")
    if kind != "NoiseGeneratorV2":
        raise r.fail(f"decoder.noise_module is a {kind}")
    convs = _convs_under(r.mods, "decoder.noise_module.net")
    for c in convs:
        if c.kernel != 2 * c.stride:
            raise r.fail(f"{c.name}: noise conv of stride {c.stride}, kernel {c.kernel}")
    last = convs[-1]
    if last.out_ch % data_size:
        raise r.fail(f"{last.name}: {last.out_ch} noise channels for {data_size} sub-bands")
    return {
        "noise_generator": "v2",
        "noise_ratios": [c.stride for c in convs],
        "noise_bands": last.out_ch // data_size,
        "noise_hidden": convs[0].out_ch if len(convs) > 1 else 128,
    }


def _v1(r: _Reader, enc: list[tuple[str, Any]], data_size: int, latent: int) -> tuple[dict[str, Any], set[str]]:
    """acids-rave ``Encoder`` (BatchNorm) / ``Generator`` (waveform x loudness + noise), config v1."""
    convs = [_conv(n, m) for n, m in enc if r.kind(n, m) == "conv"]
    stem, head = convs[0], convs[-1]
    if stem.in_ch != data_size or stem.kernel != 7:
        raise r.fail(f"{stem.name}: {stem.in_ch} inputs, kernel {stem.kernel} (expected {data_size}, 7)")
    ratios: list[int] = []
    repeats: list[int] = []
    for c in convs[1:-1]:
        if c.stride > 1:
            if c.kernel != 2 * c.stride + 1:
                raise r.fail(f"{c.name}: a down-sampling of stride {c.stride}, kernel {c.kernel}")
            ratios.append(c.stride)
            repeats.append(1)
        elif ratios and c.kernel == 3:
            repeats[-1] += 1
        else:
            raise r.fail(f"{c.name}: an unexpected convolution in the v1 encoder")
    if not ratios or len(set(repeats)) != 1:
        raise r.fail(f"encoder stages with {repeats} convolutions each")
    if head.groups != 2 or head.out_ch != 2 * latent or head.kernel != 5:
        raise r.fail(f"{head.name}: {head.out_ch} outputs in {head.groups} groups, kernel {head.kernel} (expected {2 * latent} in 2, kernel 5)")
    capacity = stem.out_ch

    if getattr(r.mods.get("decoder"), "original_name", "") != "Generator":
        raise r.fail(f"a v1 encoder with a {getattr(r.mods.get('decoder'), 'original_name', 'missing')} decoder")
    ups, layers, kernels = [], [], set()
    for name, m in r.sequence("decoder.net"):
        orig = getattr(m, "original_name", "")
        if orig == "UpsampleLayer":
            ups.extend(c.stride for c in _convs_under(r.mods, name))
        elif orig == "ResidualStack":
            blocks = _children(r.mods, f"{name}.net.branches")
            if len(blocks) != 1:
                raise r.fail(f"{name}: a residual stack of {len(blocks)} kernel sizes")
            stage = []
            for lname, _ in _children(r.mods, f"{blocks[0][0]}.net"):
                lconvs = _convs_under(r.mods, lname)
                stage.append([c.dilation for c in lconvs])
                kernels |= {c.kernel for c in lconvs}
            layers.append(stage)
        elif not _is_conv(m):
            raise r.fail(f"{name} is a {orig}, which ravemodel has no counterpart for")
    if ups != ratios:
        raise r.fail(f"decoder ratios {ups} differ from the encoder's {ratios}")
    if len(kernels) != 1 or any(stage != layers[0] for stage in layers):
        raise r.fail("residual stacks that differ from stage to stage")
    synth = _children(r.mods, "decoder.synth.branches")
    if len(synth) not in (2, 3):
        raise r.fail("a v1 decoder without its waveform and loudness heads")
    wave, loud = _conv(*synth[0]), _conv(*synth[1])
    if wave.out_ch != data_size or loud.out_ch != 1 or loud.kernel != 2 * loud.stride + 1:
        raise r.fail(f"{loud.name}: a loudness head of kernel {loud.kernel}, stride {loud.stride}")
    model: dict[str, Any] = {
        "architecture": "v1",
        "capacity": capacity,
        "ratios": ratios,
        "kernel_size": kernels.pop(),
        "dilations": layers[0],
        "encoder_repeat": repeats[0],
        "loud_stride": loud.stride,
        "use_noise": len(synth) == 3,
        "noise_generator": "v1",
        "amplitude_modulation": False,
        "weight_norm": True,
        "causal": _causal(r, stem),
    }
    if len(synth) == 3:
        nname = synth[2][0]
        if getattr(synth[2][1], "original_name", "") != "NoiseGenerator":
            raise r.fail(f"{nname} is a {getattr(synth[2][1], 'original_name', '')}")
        nconvs = _convs_under(r.mods, nname)
        if any(c.kernel != 3 for c in nconvs) or nconvs[-1].out_ch % data_size:
            raise r.fail(f"{nname}: noise convolutions that are not acids-rave's NoiseGenerator")
        model.update(noise_ratios=[c.stride for c in nconvs], noise_bands=nconvs[-1].out_ch // data_size)
    noise_prefix = synth[2][0] + "." if len(synth) == 3 else None
    normed = {
        c.name
        for c in _convs_under(r.mods, "decoder")
        if noise_prefix is None or not c.name.startswith(noise_prefix)
    }
    return model, normed
