"""acids-rave 2.x (``rave``, github acids-ircam/RAVE) configurations and weights as ours.

Two functions, the basis of ``ravemodel import`` and of bench/bench_parity.py:

``config_from_gin(text, include_dirs=()) -> Config``
    Parse the subset of gin that acids-rave's configs use (``v1.gin``, ``v2.gin``,
    ``v2_small.gin``, ``causal.gin``, ``noise.gin`` and the operative ``config.gin``
    that ``rave train`` writes in its run folder) and return the equivalent
    :class:`~rave_model.config.Config`. ``text`` may hold several files one after the
    other (later bindings win, as with ``rave train --config v2 --config causal``);
    ``include "configs/v1.gin"`` lines are looked up in ``include_dirs`` (acids-rave's
    ``rave/configs`` folder: its parent and itself are both searched). Supported:
    the VariationalEncoder with ``Encoder`` (v1) or ``EncoderV2``, ``Generator`` (v1:
    loudness + NoiseGenerator) or ``GeneratorV2`` (with or without NoiseGeneratorV2),
    weight normalisation or none, centred or causal padding, PQMF input and output,
    the multi-scale and multi-period discriminators, AudioDistanceV1, hinge loss.
    Anything else (another encoder, a recurrent layer, ``keep_dim``, AdaIN, snake
    activations, noise augmentation, mel input, a spectral discriminator, ...) raises
    ValueError naming the binding. Training keys follow the reference's effective
    behaviour: the feature-matching weight is squared (acids-rave applies it twice),
    phase_1_duration gives ``train.vae_steps``. The crop length is not in a gin file
    (``rave train --n_signal``, 131072 by default): ``data.n_signal`` is 131072.

``state_dict_from_reference(ref_state, cfg) -> dict``
    Map a reference ``state_dict`` (a Lightning checkpoint's ``state_dict``: keys such
    as ``encoder.encoder.net.0.weight_g``; weight-normalised convolutions as
    ``weight_g`` / ``weight_v``, as ``parametrizations.weight.original0/1``, or folded
    into a plain ``weight``) to the ``state_dict`` of our ``RAVE(cfg)``: every key of
    ours is filled (weight normalisation split or folded as our model needs), the
    PQMF filters (``pqmf.hk``) and the latent PCA buffers included. The discriminator
    and the reference's derived buffers (``pqmf.h``, ``pqmf.forward_conv``,
    ``receptive_field``, ``target_size``, ...) are ignored. Raises KeyError naming the
    first reference tensor it needs and cannot find, ValueError on a shape mismatch.

Known deviation (causal.gin): offline, the reference's transposed convolutions keep
``padding = r // 2`` even in causal mode, while ours crop nothing when ``model.causal`` is
true (so that our causal models stream with no latency); a causal acids-rave model maps
and runs, but its up-sampling layers are then shifted by ``r // 2`` output samples.
bench/bench_parity.py checks v1, v2 and v2_small (centred padding).

``discriminator_state_from_reference(ref_state, cfg) -> dict``
    The same for our :class:`~rave_model.discriminator.Discriminator`.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from rave_model.config import Config, load_config

__all__ = ["GinConfig", "parse_gin", "config_from_gin", "state_dict_from_reference", "discriminator_state_from_reference"]

# Module aliases of the selectors acids-rave's configs use (raw configs write
# ``rave.RAVE`` and ``cc.get_padding``, the operative config ``model.RAVE`` and
# ``convs.get_padding``).
_MODULE_ALIASES = {
    "rave": "model",
    "rave.model": "model",
    "model": "model",
    "cached_conv": "cc",
    "cached_conv.convs": "cc",
    "convs": "cc",
    "cc": "cc",
    "torch.nn": "nn",
    "nn": "nn",
    "rave.blocks": "blocks",
    "rave.core": "core",
    "rave.pqmf": "pqmf",
    "rave.discriminator": "discriminator",
    "rave.dataset": "dataset",
}


def _canonical(name: str) -> str:
    """``rave.RAVE`` -> ``model.RAVE``; ``cached_conv.get_padding`` -> ``cc.get_padding``."""
    module, _, obj = name.rpartition(".")
    return f"{_MODULE_ALIASES.get(module, module)}.{obj}" if module else obj


class Ref:
    """A gin reference ``@scope/name`` (``call``: ``@name()``, evaluated)."""

    def __init__(self, text: str) -> None:
        self.call = text.endswith("()")
        text = text[:-2] if self.call else text
        self.scope, _, name = text.rpartition("/")
        self.name = _canonical(name)

    def __repr__(self) -> str:
        scope = f"{self.scope}/" if self.scope else ""
        return f"@{scope}{self.name}{'()' if self.call else ''}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and (self.scope, self.name, self.call) == (other.scope, other.name, other.call)

    def __hash__(self) -> int:
        return hash((self.scope, self.name, self.call))


class _Macro:
    def __init__(self, name: str) -> None:
        self.name = name


_TOKEN = re.compile(r"@([\w./]+(?:\(\))?)|%([\w./]+)")


def _literal(text: str, where: str) -> Any:
    """A gin value: a Python literal with ``@references`` and ``%MACROS``."""
    found: list[Any] = []

    def repl(m: re.Match) -> str:
        found.append(Ref(m.group(1)) if m.group(1) else _Macro(m.group(2)))
        return f"'\\x00{len(found) - 1}'"

    code = _TOKEN.sub(repl, text)
    try:
        value = ast.literal_eval(code.strip())
    except (ValueError, SyntaxError):
        raise ValueError(f"{where}: cannot parse the value {text.strip()!r}") from None

    def restore(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("\x00"):
            return found[int(v[1:])]
        if isinstance(v, list):
            return [restore(x) for x in v]
        if isinstance(v, tuple):
            return tuple(restore(x) for x in v)
        if isinstance(v, dict):
            return {restore(k): restore(x) for k, x in v.items()}
        return v

    return restore(value)


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _balance(text: str) -> int:
    return sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")


def _statements(text: str) -> Iterable[tuple[int, str, int]]:
    """``(indent, statement, line number)``, joining continued and bracketed lines."""
    buf, indent, start = "", 0, 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).rstrip()
        if not buf:
            if not line.strip():
                continue
            indent, start = len(line) - len(line.lstrip()), number
            buf = line.strip()
        else:
            buf += " " + line.strip()
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip()
            continue
        if _balance(buf) > 0:
            continue
        yield indent, buf, start
        buf = ""
    if buf:
        raise ValueError(f"line {start}: unterminated statement {buf[:60]!r}")


class GinConfig:
    """Bindings of a parsed gin text: ``(scope, "module.Configurable", param) -> value``
    and macros. :meth:`get` resolves macros and falls back from a scope to the
    unscoped binding, as gin does."""

    def __init__(self) -> None:
        self.bindings: dict[tuple[str, str, str], Any] = {}
        self.macros: dict[str, Any] = {}

    def parse(self, text: str, include_dirs: Iterable[Path | str] = (), origin: str = "gin") -> GinConfig:
        block: str | None = None
        block_indent = 0
        for indent, stmt, line in _statements(text):
            where = f"{origin}:{line}"
            if block is not None and indent > block_indent:
                name, sep, value = stmt.partition("=")
                if not sep:
                    raise ValueError(f"{where}: expected 'parameter = value' inside {block}:")
                self._bind(f"{block}.{name.strip()}", value, where)
                continue
            block = None
            if stmt.startswith(("import ", "from ")):
                continue
            if stmt.startswith("include "):
                self._include(_literal(stmt[len("include "):], where), include_dirs, where)
                continue
            if stmt.endswith(":") and "=" not in stmt:
                block, block_indent = stmt[:-1].strip(), indent
                continue
            name, sep, value = stmt.partition("=")
            if not sep:
                raise ValueError(f"{where}: unsupported gin statement {stmt[:60]!r}")
            name = name.strip()
            if re.fullmatch(r"[A-Za-z_]\w*", name):
                self.macros[name] = _literal(value, where)
            else:
                self._bind(name, value, where)
        return self

    def _bind(self, selector: str, value: str, where: str) -> None:
        scope, _, rest = selector.strip().rpartition("/")
        target, _, param = rest.rpartition(".")
        if not target or not param:
            raise ValueError(f"{where}: unsupported gin binding {selector!r}")
        self.bindings[(scope, _canonical(target), param)] = _literal(value, where)

    def _include(self, name: str, include_dirs: Iterable[Path | str], where: str) -> None:
        dirs = [Path(d) for d in include_dirs]
        for d in dirs:
            for candidate in (d / name, d / Path(name).name):
                if candidate.is_file():
                    self.parse(candidate.read_text(), dirs, origin=str(candidate))
                    return
        searched = ", ".join(str(d) for d in dirs) or "no folder given"
        raise ValueError(f"{where}: include {name!r} not found (searched: {searched}); pass acids-rave's configs folder")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, _Macro):
            if value.name not in self.macros:
                raise ValueError(f"undefined gin macro %{value.name}")
            return self.resolve(self.macros[value.name])
        if isinstance(value, Ref) and value.call:
            if value.name == "core.get_augmented_latent_size":
                latent = self.get("core.get_augmented_latent_size", "latent_size", scope=value.scope)
                extra = self.get("core.get_augmented_latent_size", "noise_augmentation", 0, scope=value.scope)
                if extra:
                    raise ValueError(f"noise_augmentation = {extra} (latent noise augmentation) is not supported")
                return latent
            raise ValueError(f"unsupported gin call {value!r}")
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    _MISSING = object()

    def get(self, target: str, param: str, default: Any = _MISSING, scope: str = "") -> Any:
        target = _canonical(target)
        for s in ([scope] if scope else []) + [""]:
            if (s, target, param) in self.bindings:
                return self.resolve(self.bindings[(s, target, param)])
        if default is GinConfig._MISSING:
            raise ValueError(f"the config does not set {target}.{param}")
        return default

    def has(self, target: str, param: str, scope: str = "") -> bool:
        target = _canonical(target)
        return any((s, target, param) in self.bindings for s in {scope, ""})

    def set_params(self, target: str, scope: str = "") -> dict[str, Any]:
        """Every parameter bound for ``target`` (scoped ones override)."""
        target = _canonical(target)
        out = {p: v for (s, t, p), v in self.bindings.items() if t == target and s == ""}
        if scope:
            out.update({p: v for (s, t, p), v in self.bindings.items() if t == target and s == scope})
        return {p: self.resolve(v) for p, v in out.items()}


def parse_gin(text: str, include_dirs: Iterable[Path | str] = ()) -> GinConfig:
    """Parse gin text into a :class:`GinConfig` (no mapping to ours)."""
    return GinConfig().parse(text, include_dirs)


def _refuse(cond: bool, what: str) -> None:
    if cond:
        raise ValueError(f"unsupported acids-rave setting: {what}")


def _refuse_set(g: GinConfig, target: str, params: Mapping[str, Any], scope: str = "") -> None:
    """Refuse parameters that change the architecture away from what we implement."""
    for name, ok in params.items():
        value = g.get(target, name, None, scope=scope)
        if value is not None and value != ok and not (isinstance(ok, tuple) and value in ok):
            raise ValueError(f"unsupported acids-rave setting: {target}.{name} = {value!r}")


def _ref_name(value: Any) -> str:
    return value.name if isinstance(value, Ref) else repr(value)


def config_from_gin(text: str, include_dirs: Iterable[Path | str] = ()) -> Config:
    """Our Config for an acids-rave gin config (see the module docstring)."""
    g = parse_gin(text, include_dirs)
    R = "model.RAVE"
    for key, ok in (("input_mode", "pqmf"), ("output_mode", "pqmf"), ("is_mel_input", None), ("spectrogram", None),
                    ("balancer", None), ("warmup_quantize", None)):
        value = g.get(R, key, ok)
        _refuse(value != ok, f"RAVE.{key} = {value!r}")
    _refuse(g.get(R, "enable_pqmf_encode", None) is False or g.get(R, "enable_pqmf_decode", None) is False,
            "RAVE without PQMF (enable_pqmf_encode/decode = False)")
    pqmf_ref = g.get(R, "pqmf", None)
    _refuse(pqmf_ref is None or pqmf_ref.name not in ("pqmf.CachedPQMF", "pqmf.PQMF"), f"RAVE.pqmf = {pqmf_ref!r}")

    enc = g.get(R, "encoder")
    _refuse(enc.name != "blocks.VariationalEncoder", f"RAVE.encoder = @{enc.name} (only the VariationalEncoder)")
    inner = g.get("blocks.VariationalEncoder", "encoder", scope=enc.scope)
    dec = g.get(R, "decoder")
    _refuse(dec.name not in ("blocks.Generator", "blocks.GeneratorV2"), f"RAVE.decoder = @{dec.name}")
    beta = g.get("blocks.VariationalEncoder", "beta", 1.0, scope=enc.scope)
    _refuse(beta != 1.0, f"VariationalEncoder.beta = {beta}")

    v1 = inner.name == "blocks.Encoder"
    _refuse(inner.name not in ("blocks.Encoder", "blocks.EncoderV2"), f"VariationalEncoder.encoder = @{inner.name}")
    _refuse(v1 != (dec.name == "blocks.Generator"), f"encoder @{inner.name} with decoder @{dec.name}")
    cfg = load_config("v1" if v1 else "v2")
    m, t, d = cfg.model, cfg.train, cfg.data
    es = inner.scope

    def E(param: str, default: Any = GinConfig._MISSING) -> Any:
        return g.get(inner.name, param, default, scope=es)

    def D(param: str, default: Any = GinConfig._MISSING) -> Any:
        return g.get(dec.name, param, default, scope=dec.scope)

    d.sr = int(g.get(R, "sampling_rate"))
    d.n_signal = 131072
    n_bands = int(g.get("pqmf.CachedPQMF", "n_band", None) or g.get("pqmf.PQMF", "n_band"))
    m.n_bands = n_bands
    m.pqmf_attenuation = float(g.get("pqmf.CachedPQMF", "attenuation", None) or g.get("pqmf.PQMF", "attenuation", 100))
    _refuse(g.get("pqmf.CachedPQMF", "polyphase", True) is not True, "CachedPQMF.polyphase = False")
    m.latent_size = int(g.get(R, "latent_size"))
    for name, value in (("encoder data_size", E("data_size", n_bands)), ("decoder data_size", D("data_size", n_bands))):
        _refuse(value not in (n_bands, None), f"{name} {value} != PQMF bands {n_bands}")
    _refuse(int(E("latent_size")) != m.latent_size or int(D("latent_size")) != m.latent_size,
            "encoder/decoder latent_size differs from RAVE.latent_size")
    _refuse(E("n_out", 2) != 2, "encoder n_out != 2")
    m.capacity = int(E("capacity"))
    _refuse(int(D("capacity")) != m.capacity, "encoder and decoder capacities differ")
    m.ratios = [int(r) for r in E("ratios")]
    _refuse([int(r) for r in D("ratios")] != m.ratios, "encoder and decoder ratios differ")
    for target, scope in ((inner.name, es), (dec.name, dec.scope)):
        _refuse_set(g, target, {"recurrent_layer": None, "keep_dim": False, "adain": None, "spectrogram": None}, scope)
        act = g.get(target, "activation", None, scope=scope)
        _refuse(act is not None, f"{target}.activation = {act!r} (only LeakyReLU(0.2))")
    mode = g.get("blocks.normalization", "mode", "identity")
    _refuse(mode not in ("identity", "weight_norm"), f"normalization.mode = {mode!r}")
    m.weight_norm = mode == "weight_norm"
    padding = g.get("cc.get_padding", "mode", "centered")
    _refuse(padding not in ("centered", "causal"), f"get_padding.mode = {padding!r}")
    m.causal = padding == "causal"

    if v1:
        m.architecture = "v1"
        _refuse(E("sample_norm", False) is not False, "Encoder.sample_norm = True")
        m.encoder_repeat = int(E("repeat_layers", 1))
        kernels = g.get("blocks.ResidualStack", "kernel_sizes")
        _refuse(len(kernels) != 1, f"ResidualStack.kernel_sizes = {kernels} (one kernel size only)")
        m.kernel_size = int(kernels[0])
        m.dilations = [[int(x) for x in ds] for ds in g.get("blocks.ResidualStack", "dilations_list")]
        m.loud_stride = int(D("loud_stride"))
        m.use_noise = bool(D("use_noise"))
        m.noise_generator = "v1"
        if m.use_noise:
            m.noise_ratios = [int(r) for r in g.get("blocks.NoiseGenerator", "ratios")]
            m.noise_bands = int(g.get("blocks.NoiseGenerator", "noise_bands"))
        m.amplitude_modulation = False
    else:
        m.architecture = "v2"
        m.kernel_size = int(E("kernel_size"))
        _refuse(int(D("kernel_size")) != m.kernel_size, "encoder and decoder kernel sizes differ")
        dil = E("dilations")
        dil = [dil for _ in m.ratios] if isinstance(dil[0], int) else dil
        m.dilations = [[int(x) for x in ds] for ds in dil]
        ddil = D("dilations")
        ddil = [ddil for _ in m.ratios] if isinstance(ddil[0], int) else ddil
        _refuse([[int(x) for x in ds] for ds in ddil] != m.dilations, "encoder and decoder dilations differ")
        m.amplitude_modulation = bool(D("amplitude_modulation", False))
        noise = D("noise_module", None)
        m.use_noise = noise is not None
        if noise is not None:
            _refuse(noise.name != "blocks.NoiseGeneratorV2", f"GeneratorV2.noise_module = @{noise.name}")
            ns = noise.scope

            def N(param: str, default: Any = GinConfig._MISSING) -> Any:
                return g.get("blocks.NoiseGeneratorV2", param, default, scope=ns)

            _refuse(N("data_size", n_bands) != n_bands, "NoiseGeneratorV2.data_size != PQMF bands")
            m.noise_generator = "v2"
            m.noise_hidden = int(N("hidden_size"))
            m.noise_ratios = [int(r) for r in N("ratios")]
            m.noise_bands = int(N("noise_bands"))
            _refuse(N("activation", None) is not None, "NoiseGeneratorV2.activation")

    _map_training(g, cfg)
    try:
        cfg.validate()
    except ValueError as exc:
        raise ValueError(f"the mapped config is not valid here: {exc}") from None
    return cfg


def _convnet(g: GinConfig, ref: Ref, two_d: bool) -> tuple[int, int]:
    """(capacity, n_layers) of a discriminator ConvNet, refusing what ours does not build."""
    s = ref.scope
    conv = g.get("discriminator.ConvNet", "conv", scope=s)
    want = "nn.Conv2d" if two_d else "nn.Conv1d"
    _refuse(_ref_name(conv) != want, f"{s}/ConvNet.conv = {conv!r}")
    k = g.get("discriminator.ConvNet", "kernel_size", scope=s)
    want_k = (5, 1) if two_d else 15
    _refuse((tuple(k) if isinstance(k, (list, tuple)) else k) != want_k, f"{s}/ConvNet.kernel_size = {k!r} (ours: {want_k})")
    stride = g.get("discriminator.ConvNet", "stride", scope=s)
    _refuse(stride != 4, f"{s}/ConvNet.stride = {stride!r} (ours: 4)")
    _refuse(g.get("discriminator.ConvNet", "in_size", 1, scope=s) != 1 or g.get("discriminator.ConvNet", "out_size", 1, scope=s) != 1,
            f"{s}/ConvNet in_size/out_size != 1")
    return int(g.get("discriminator.ConvNet", "capacity", scope=s)), int(g.get("discriminator.ConvNet", "n_layers", scope=s))


def _map_training(g: GinConfig, cfg: Config) -> None:
    """The training keys (``cfg.model`` already mapped)."""
    R = "model.RAVE"
    t = cfg.train
    t.vae_steps = int(g.get(R, "phase_1_duration"))
    gan = g.get(R, "gan_loss")
    names = {"core.hinge_gan": "hinge", "core.ls_gan": "lsgan"}
    _refuse(_ref_name(gan) not in names, f"RAVE.gan_loss = {gan!r}")
    t.gan_loss = names[_ref_name(gan)]
    t.valid_signal_crop = bool(g.get(R, "valid_signal_crop"))
    t.fm_skip_features = int(g.get(R, "num_skipped_features"))
    t.disc_every = int(g.get(R, "update_discriminator_every", 2))
    weights = dict(g.get(R, "weights", None) or g.get(R, "loss_weights", None) or {})
    unknown = set(weights) - {"feature_matching", "adversarial", "audio_distance", "multiband_audio_distance"}
    _refuse(bool(unknown), f"RAVE.weights keys {sorted(unknown)}")
    for key in ("adversarial", "audio_distance", "multiband_audio_distance"):
        _refuse(float(weights.get(key, 1.0)) != 1.0, f"RAVE.weights[{key!r}] = {weights.get(key)} (only 1 is supported)")
    # The reference multiplies by this weight when it builds the loss and again when it sums it.
    t.loss_weights["feature_matching"] = float(weights.get("feature_matching", 20)) ** 2
    fm = g.get(R, "feature_matching_fun")
    _refuse(_ref_name(fm) != "core.mean_difference", f"RAVE.feature_matching_fun = {fm!r}")
    norm = g.get("core.mean_difference", "norm", "L1", scope=fm.scope)
    _refuse(norm != "L1", f"feature matching norm {norm!r}")
    # ``rave train`` writes its operative config before training starts, when the
    # feature-matching function has not been called yet, so config.gin never records
    # its ``relative``: every shipped v2-family config sets it, v1 does not.
    v2_family = cfg.model.architecture == "v2"
    t.fm_relative = bool(g.get("core.mean_difference", "relative", v2_family, scope=fm.scope))
    for key in ("audio_distance", "multiband_audio_distance"):
        ref = g.get(R, key)
        _refuse(_ref_name(ref) != "core.AudioDistanceV1", f"RAVE.{key} = {ref!r}")
    eps = g.get("core.AudioDistanceV1", "log_epsilon")
    _refuse(abs(float(eps) - 1e-7) > 1e-12, f"AudioDistanceV1.log_epsilon = {eps}")
    stft = g.get("core.AudioDistanceV1", "multiscale_stft")
    _refuse(_ref_name(stft) != "core.MultiScaleSTFT", f"AudioDistanceV1.multiscale_stft = {stft!r}")
    t.stft_scales = [int(s) for s in g.get("core.MultiScaleSTFT", "scales")]
    _refuse(g.get("core.MultiScaleSTFT", "magnitude", True) is not True or g.get("core.MultiScaleSTFT", "normalized", False)
            or g.get("core.MultiScaleSTFT", "num_mels", None) is not None, "MultiScaleSTFT other than linear magnitudes")
    b = "model.BetaWarmupCallback"
    t.beta_start = float(g.get(b, "initial_value", 0.2))
    t.beta_end = float(g.get(b, "target_value", 0.2))
    t.beta_warmup_steps = int(g.get(b, "warmup_len", 1))
    _refuse(g.get(b, "log", True) is not True, "BetaWarmupCallback.log = False (linear warm-up)")

    disc = g.get(R, "discriminator")
    parts = [disc]
    if _ref_name(disc) == "discriminator.CombineDiscriminators":
        parts = g.get("discriminator.CombineDiscriminators", "discriminators", scope=disc.scope)
    scales, periods, caps, layers, order = 0, [], set(), set(), []
    for part in parts:
        name = _ref_name(part)
        if name == "discriminator.MultiScaleDiscriminator":
            scales = int(g.get(name, "n_discriminators", scope=part.scope))
            cap, n = _convnet(g, g.get(name, "convnet", scope=part.scope), two_d=False)
        elif name == "discriminator.MultiPeriodDiscriminator":
            periods = [int(p) for p in g.get(name, "periods", scope=part.scope)]
            cap, n = _convnet(g, g.get(name, "convnet", scope=part.scope), two_d=True)
        else:
            raise ValueError(f"unsupported acids-rave setting: discriminator @{name}")
        caps.add(cap)
        layers.add(n)
        order.append(name)
    _refuse(len(caps) != 1 or len(layers) != 1, "sub-discriminators of different capacities or depths")
    if len(order) == 2:
        _refuse(order[0] != "discriminator.MultiPeriodDiscriminator", "CombineDiscriminators with scales before periods")
    t.disc_scales, t.disc_periods = scales, periods
    t.disc_capacity, t.disc_layers = caps.pop(), layers.pop()


# -- weights -------------------------------------------------------------------------

_WN_SUFFIXES = {
    "weight_g": "g",
    "weight_v": "v",
    "parametrizations.weight.original0": "g",
    "parametrizations.weight.original1": "v",
    "weight": "w",
}


def _split_param(key: str) -> tuple[str, str] | None:
    for suffix, kind in _WN_SUFFIXES.items():
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], kind
    return None


def _weights_by_module(ref_state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{module path: {"g"|"v"|"w"|"bias"|<buffer>: tensor}}``."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in ref_state.items():
        split = _split_param(key)
        if split is None:
            module, _, leaf = key.rpartition(".")
            split = (module, leaf)
        out.setdefault(split[0], {})[split[1]] = value
    return out


def _norm_except_0(w: torch.Tensor) -> torch.Tensor:
    return w.flatten(1).norm(dim=1).view(-1, *([1] * (w.dim() - 1)))


def _fill(ours: dict[str, torch.Tensor], target: dict[str, torch.Tensor], ref_module: str, our_module: str,
          ref: dict[str, dict[str, torch.Tensor]]) -> None:
    """Copy one module's weight (and bias, BatchNorm buffers) from ``ref_module`` to ``our_module``."""
    src = ref.get(ref_module)
    if src is None:
        raise KeyError(f"the reference state has no module {ref_module!r} (for our {our_module})")
    wn_key = f"{our_module}.parametrizations.weight.original0"
    if wn_key in target:
        if "g" in src and "v" in src:
            g, v = src["g"], src["v"]
        elif "w" in src:
            g, v = _norm_except_0(src["w"]), src["w"]
        else:
            raise KeyError(f"{ref_module}: no weight (weight_g/weight_v or weight)")
        ours[wn_key] = g
        ours[f"{our_module}.parametrizations.weight.original1"] = v
    elif f"{our_module}.weight" in target:
        if "w" in src:
            ours[f"{our_module}.weight"] = src["w"]
        elif "g" in src and "v" in src:
            ours[f"{our_module}.weight"] = src["g"] * src["v"] / _norm_except_0(src["v"])
        else:
            raise KeyError(f"{ref_module}: no weight")
    for leaf in ("bias", "running_mean", "running_var", "num_batches_tracked"):
        if f"{our_module}.{leaf}" in target:
            if leaf not in src:
                raise KeyError(f"{ref_module}.{leaf}")
            ours[f"{our_module}.{leaf}"] = src[leaf]


def _leaf_modules(target: Mapping[str, torch.Tensor], prefix: str) -> list[str]:
    """Our module paths under ``prefix`` that hold weights, in state-dict order."""
    seen: dict[str, None] = {}
    for key in target:
        if not key.startswith(prefix):
            continue
        split = _split_param(key)
        module = split[0] if split else key.rpartition(".")[0]
        if key.endswith((".bias", ".running_mean", ".running_var", ".num_batches_tracked")):
            module = key.rpartition(".")[0]
        seen[module] = None
    return list(seen)


def _residual(path: str) -> str:
    """Our residual branch path -> the reference's (``Residual`` wraps ``AlignBranches``)."""
    return path.replace(".net.branch.", ".aligned.branches.0.net.")


def _decoder_map(cfg: Config, module: str) -> str:
    """Our decoder module path -> the reference's."""
    m = cfg.model
    rest = module[len("decoder."):]
    if rest == "wave_gen":
        if m.architecture == "v1":
            return "decoder.synth.branches.0"
        if m.use_noise:
            return "decoder.waveform_module"
        return f"decoder.net.{_v2_decoder_len(cfg)}"
    if rest == "loud_gen":
        return "decoder.synth.branches.1"
    if rest.startswith("noise."):
        return ("decoder.synth.branches.2." if m.architecture == "v1" else "decoder.noise_module.") + rest[len("noise."):]
    if m.architecture == "v2":
        return _residual(module)
    # v1: ours net = [conv, (lrelu, upsample, ResidualLayer * n_res) per ratio];
    # the reference's = [conv, (UpsampleLayer(lrelu, conv), ResidualStack) per ratio].
    head, _, tail = rest[len("net."):].partition(".")
    i = int(head)
    if i == 0:
        return f"decoder.net.0{'.' + tail if tail else ''}"
    n_res = len(m.dilations)
    stage, pos = divmod(i - 1, 2 + n_res)
    if pos == 1:
        return f"decoder.net.{1 + 2 * stage}.net.1" + (f".{tail}" if tail else "")
    layer = pos - 2
    inner = tail.replace("net.branch.", "net.aligned.branches.0.", 1)
    return f"decoder.net.{2 + 2 * stage}.net.branches.0.net.{layer}.{inner}"


def _v2_decoder_len(cfg: Config) -> int:
    """Index of the reference GeneratorV2's waveform conv in its ``net`` (no noise module)."""
    return 1 + sum(2 + len(ds) for ds in cfg.model.dilations) + 1


def _complete(ours: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Check that ``ours`` fills every key of ``target`` with its shape; cast to its dtype."""
    missing = [k for k in target if k not in ours]
    if missing:
        raise KeyError(f"no reference tensor for {what}{missing[0]} (and {len(missing) - 1} more)")
    for key, value in target.items():
        if tuple(ours[key].shape) != tuple(value.shape):
            raise ValueError(f"{what}{key}: the reference tensor has shape {tuple(ours[key].shape)}, ours {tuple(value.shape)}")
        ours[key] = ours[key].to(value.dtype).clone()
    return ours


def state_dict_from_reference(ref_state: Mapping[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Our RAVE ``state_dict`` from an acids-rave one (see the module docstring)."""
    from rave_model.model import RAVE

    target = RAVE(cfg).state_dict()
    ref = _weights_by_module(ref_state)
    ours: dict[str, torch.Tensor] = {}
    for name in ("latent_pca", "latent_mean", "fidelity"):
        if name in ref_state:
            ours[name] = ref_state[name]
    if "pqmf.hk" in target:
        if "pqmf.hk" not in ref_state:
            raise KeyError("the reference state has no pqmf.hk (PQMF filters)")
        ours["pqmf.hk"] = ref_state["pqmf.hk"]
    if "decoder.warmed_up" in target:
        warmed = ref_state.get("decoder.warmed_up", torch.tensor(0))
        ours["decoder.warmed_up"] = torch.as_tensor(bool(int(warmed)))
    for module in _leaf_modules(target, "encoder."):
        _fill(ours, target, "encoder.encoder." + _residual(module)[len("encoder."):], module, ref)
    for module in _leaf_modules(target, "decoder."):
        if module == "decoder":
            continue
        _fill(ours, target, _decoder_map(cfg, module), module, ref)
    return _complete(ours, target, "")


def discriminator_state_from_reference(ref_state: Mapping[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Our Discriminator ``state_dict`` from the ``discriminator.*`` tensors of a reference
    checkpoint (CombineDiscriminators periods-then-scales, or a MultiScaleDiscriminator)."""
    from rave_model.discriminator import Discriminator

    target = Discriminator.from_config(cfg).state_dict()
    ref = _weights_by_module({k[len("discriminator."):]: v for k, v in ref_state.items() if k.startswith("discriminator.")})
    combined = any(k.startswith("discriminators.") for k in ref)
    ours: dict[str, torch.Tensor] = {}
    for module in _leaf_modules(target, "parts."):
        _, part, _, stack, _, layer = module.split(".")
        prefix = f"discriminators.{part}." if combined else ""
        _fill(ours, target, f"{prefix}layers.{stack}.net.{2 * int(layer)}", module, ref)
    return _complete(ours, target, "discriminator ")
