"""Model, training and prior configuration: dataclasses, TOML presets, overrides.

A run is described by one :class:`Config` made of four sections. Presets are TOML
files shipped in ``rave_model/presets`` (``v1``, ``v2``, ``v2_small``, ``small``, ``tiny``); a
preset only has to name the keys it changes, every other key takes the dataclass
default below. :func:`apply_overrides` sets keys from ``"section.key=value"`` strings
(values are parsed as TOML, so ``model.ratios=[4,4,2]`` and ``train.lr=1e-4`` work) or
from a mapping. Unknown keys are refused with the closest valid one, and every value
is coerced to the field's type and checked, so a typo never silently trains the wrong
model.

Adding a key: add a typed field with a default to the right dataclass (and, if a
preset needs another value, to that preset). Nothing else has to change. A
``dict[str, float]`` field (``train.loss_weights``) is a table whose entries are
keys of their own (``train.loss_weights.feature_matching``); its default names
every entry it accepts.

The defaults are acids-rave 2.3.1's v1 configuration where it fixes them, with its
effective values (docs/training.md lists every deliberate difference).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

PRESETS = ("v1", "v2", "v2_small", "small", "tiny")


@dataclass
class DataConfig:
    """What the model hears."""

    sr: int = 48000
    """Sampling rate in Hz; the dataset is resampled to it when loaded."""
    channels: int = 1
    """Audio channels the model encodes and decodes (1 = mono)."""
    n_signal: int = 65536
    """Training crop length in samples; a multiple of the model's hop length."""


@dataclass
class ModelConfig:
    """Architecture. ``hop_length = n_bands * prod(ratios)`` samples per latent frame."""

    architecture: str = "v1"
    """"v1": the paper's encoder (BatchNorm) and decoder (waveform x loudness + filtered
    noise); "v2": acids-rave v2's dilated residual units, amplitude modulation."""
    capacity: int = 64
    """Channel width of the first encoder layer / last decoder layer; doubles per ratio."""
    latent_size: int = 128
    """Latent dimensions (before the fidelity crop of the export)."""
    ratios: list[int] = field(default_factory=lambda: [4, 4, 4, 2])
    """Down-sampling ratio of each encoder stage (mirrored by the decoder)."""
    n_bands: int = 16
    """PQMF sub-bands (a power of two; 1 disables the multiband decomposition)."""
    pqmf_attenuation: float = 100.0
    """Stop-band attenuation of the PQMF prototype filter, in dB."""
    kernel_size: int = 3
    """Kernel of the residual convolutions."""
    dilations: list[list[int]] = field(default_factory=lambda: [[1, 1], [3, 1], [5, 1]])
    """v1: one list per residual layer of the decoder's residual stacks (the dilation of
    each of its convolutions). v2: one list per ratio, one dilated unit per entry."""
    encoder_repeat: int = 1
    """v1 only: convolutions per encoder stage (acids-rave's repeat_layers)."""
    loud_stride: int = 1
    """v1 only: stride of the loudness branch."""
    use_noise: bool = True
    """Add the filtered-noise branch to the decoder output."""
    noise_ratios: list[int] = field(default_factory=lambda: [4, 4, 4])
    """Strides of the noise branch; their product is the noise frame length in samples
    (at the sub-band rate)."""
    noise_bands: int = 5
    """Frequency bands of each noise filter."""
    noise_generator: str = "v1"
    """"v1": acids-rave's NoiseGenerator (kernel-3 strided convolutions of the decoder's
    width); "v2": its NoiseGeneratorV2 (kernel 2r, ``noise_hidden`` channels, no weight
    normalisation), as configs/v2_small.gin and noise.gin use."""
    noise_hidden: int = 128
    """Hidden channels of the "v2" noise generator."""
    amplitude_modulation: bool = False
    """v2 only: the waveform head also predicts a sigmoid amplitude envelope."""
    weight_norm: bool = True
    """Weight-normalise the convolutions while training (folded away at export)."""
    causal: bool = False
    """Train with causal padding: the streaming export is then exactly the trained model
    with no added latency. Non-causal models still stream (their padding is moved to the
    past at export), with a small fixed latency and a small loss of quality."""


@dataclass
class TrainConfig:
    """Stages 1 and 2 (representation learning, adversarial fine-tuning)."""

    batch_size: int = 8
    """Training crops per step."""
    lr: float = 1e-3
    """Adam learning rate of encoder and decoder at the start of stage 1 (acids-rave's 1e-3)."""
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    """Adam betas (acids-rave's 0.5, 0.9)."""
    vae_steps: int = 1_000_000
    """Stage 1 (VAE warm-up) steps."""
    adversarial_steps: int = 2_000_000
    """Stage 2 steps after the warm-up (the paper trains 3M steps in all)."""
    beta_start: float = 0.1
    """KL weight at step 0 (v1 keeps it constant)."""
    beta_end: float = 0.1
    """KL weight at the end of the beta warm-up."""
    beta_warmup_steps: int = 1
    """Steps over which beta goes (log-linearly) from beta_start to beta_end."""
    stft_scales: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128])
    """FFT sizes of the multi-scale spectral distance."""
    disc_scales: int = 3
    """Waveform discriminators at successive 2x down-samplings (multi-scale)."""
    disc_periods: list[int] = field(default_factory=list)
    """Periods of the multi-period discriminator (empty: none)."""
    disc_capacity: int = 16
    """Channels of the first discriminator layer."""
    disc_layers: int = 4
    """Strided layers per sub-discriminator."""
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"multiband": 1.0, "fullband": 1.0, "adversarial": 1.0, "feature_matching": 100.0}
    )
    """Weight of each loss term in the total a decoder step minimises, one key per term
    (``[train.loss_weights]`` in a preset, ``--set train.loss_weights.NAME=W``): the
    multiband and fullband spectral distances (stages 1 and 2), the generator's adversarial
    loss and the feature matching (stage 2). The KL term is weighted by the beta schedule
    below. ``feature_matching`` is the effective weight: acids-rave multiplies the distance
    by its ``weights['feature_matching']`` twice (when it builds the loss dict and again
    when it sums it), so v1's 10 is 100 here, v2's 20 is 400."""
    valid_signal_crop: bool = False
    """Compute the multiband distance only where the output does not see the crop's edges:
    both sub-band signals lose the model's receptive field (measured once per run, by
    gradient, as acids-rave's get_rave_receptive_field) on each side (acids-rave v2)."""
    val_every: int = 10_000
    """Steps between validations (spectral distance on held-out examples, audio logged)."""
    ckpt_every: int = 10_000
    """Steps between checkpoints (also written at each stage end and on Ctrl-C)."""
    log_every: int = 100
    """Steps between TensorBoard scalar logs."""
    num_workers: int = -1
    """Data-loading worker processes (0: load in the training process; -1: chosen from the
    device and the cores, see docs/training.md "Speed")."""
    seed: int = 0
    """Seed of every random draw of the run (crops, augmentation, initialisation)."""
    lr_end_factor: float = 0.1
    """Stage 1 learning rate decays linearly to lr * lr_end_factor (the reference's
    LinearLR); stage 2 trains the decoder at that final rate."""
    disc_lr: float = 1e-4
    """Adam learning rate of the discriminator."""
    disc_every: int = 2
    """Stage 2: one discriminator update every disc_every steps, generator updates on
    the others (the reference's update_discriminator_every)."""
    gan_loss: str = "hinge"
    """Adversarial loss: "hinge" or "lsgan"."""
    fm_skip_features: int = 0
    """Feature matching ignores each sub-discriminator's first N feature maps."""
    fm_relative: bool = False
    """Feature matching as L1 relative to the real features' mean magnitude (v2)."""
    phase_mangle: float = 0.8
    """Probability of a random all-pass phase filter on a training crop."""
    dequantize: bool = True
    """Add uniform noise of one int16 step to training crops."""
    val_fraction: float = 0.02
    """Share of the examples held out for validation (at least 1, at most val_max)."""
    val_max: int = 1000
    """Most examples held out for validation."""
    val_examples: int = 64
    """Validation examples evaluated at each validation (the first of the held-out set)."""
    pca_examples: int = 256
    """Training examples encoded for the latent PCA after stage 1."""
    fidelity: float = 0.95
    """Explained-variance share whose number of latent dimensions is reported and stored."""
    precision: str = "auto"
    """Arithmetic of the networks in stages 1 and 2: "32", "bf16" (autocast to bfloat16),
    "16-mixed" (autocast to float16 with gradient scaling) or "auto" (see docs/training.md
    "Speed"). Spectral distances, logs and the KL are computed in float32 whatever this is."""
    compile: bool = False
    """torch.compile the encoder, decoder and discriminator for the training steps."""


@dataclass
class PriorConfig:
    """Stage 3: the autoregressive prior over latent sequences."""

    steps: int = 1_000_000
    """Prior training steps (0 skips stage 3)."""
    batch_size: int = 8
    """Latent sequences per step."""
    lr: float = 1e-4
    """Adam learning rate of the prior."""
    hidden_size: int = 512
    """Channels of the residual path of the prior's WaveNet."""
    skip_size: int = 256
    """Channels of the skip path (summed over blocks, then the output head)."""
    n_layers: int = 10
    """Gated residual blocks."""
    kernel_size: int = 3
    """Kernel of the causal convolutions."""
    cycle_size: int = 4
    """Dilations 1, 2, 4, ... restart every cycle_size blocks."""
    resolution: int = 32
    """Quantisation levels per latent dimension."""
    n_frames: int = 0
    """Latent frames per training sequence; 0: 2^ceil(log2(receptive field)) of the prior
    (128 for the default 10 layers), as acids-rave's prior chooses its window."""
    latent_size: int = 0
    """PCA dimensions the prior models; 0: as many as `fidelity` of the variance needs."""
    fidelity: float = 0.95
    """Explained-variance fraction that picks latent_size when it is 0."""


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "prior": PriorConfig}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)

    @property
    def hop_length(self) -> int:
        """Samples per latent frame (total compression ratio)."""
        n = self.model.n_bands
        for r in self.model.ratios:
            n *= r
        return n

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (TOML/JSON/pickle friendly), stored in checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; keys missing from ``d`` take their defaults, so
        checkpoints written before a key existed still load, and a key listed in
        :data:`MOVED` is read into its new place. Unknown keys are refused."""
        cfg = cls()
        flat = _flatten(d)
        _apply(cfg, {MOVED.get(k, k): v for k, v in flat.items()})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Refuse inconsistent values with a ValueError naming the key."""
        m, d = self.model, self.data
        if m.architecture not in ("v1", "v2"):
            raise ValueError(f"model.architecture must be 'v1' or 'v2', got {m.architecture!r}")
        if m.n_bands < 1 or m.n_bands & (m.n_bands - 1):
            raise ValueError(f"model.n_bands must be a power of two, got {m.n_bands}")
        if m.noise_generator not in ("v1", "v2"):
            raise ValueError(f"model.noise_generator must be 'v1' or 'v2', got {m.noise_generator!r}")
        for name in ("capacity", "latent_size", "kernel_size", "encoder_repeat", "loud_stride", "noise_bands", "noise_hidden"):
            if getattr(m, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(m, name)}")
        if not m.ratios or any(r < 1 for r in m.ratios):
            raise ValueError(f"model.ratios must be positive integers, got {m.ratios}")
        if any(r > 1 and r % 2 for r in m.ratios):
            # Transposed convolutions with kernel 2r and stride r tile exactly only for even r.
            raise ValueError(f"model.ratios must be 1 or even, got {m.ratios}")
        if m.kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size must be odd, got {m.kernel_size}")
        if m.architecture == "v2" and len(m.dilations) != len(m.ratios):
            raise ValueError(
                f"model.dilations needs one list per ratio for v2 ({len(m.ratios)}), got {len(m.dilations)}"
            )
        if any(not ds or any(x < 1 for x in ds) for ds in m.dilations):
            raise ValueError(f"model.dilations must be non-empty lists of positive integers, got {m.dilations}")
        if m.use_noise:
            noise_hop = 1
            for r in m.noise_ratios:
                noise_hop *= r
            band_hop = self.hop_length // m.n_bands
            if not m.noise_ratios or band_hop % noise_hop:
                raise ValueError(
                    f"model.noise_ratios (product {noise_hop}) must divide prod(model.ratios) = {band_hop}"
                )
        if self.prior.n_frames < 0:
            raise ValueError(f"prior.n_frames must be >= 0 (0: from the prior's receptive field), got {self.prior.n_frames}")
        if d.sr < 1 or d.channels < 1:
            raise ValueError("data.sr and data.channels must be >= 1")
        if d.n_signal % self.hop_length:
            raise ValueError(f"data.n_signal ({d.n_signal}) must be a multiple of the hop length ({self.hop_length})")


#: Keys that are not part of the configuration -> the key that holds their value. A
#: stored config (a checkpoint's) that has one is read with the value moved there; a
#: preset or an override naming one is refused with the key to use.
MOVED: dict[str, str] = {"train.feature_matching": "train.loss_weights.feature_matching"}


def valid_keys() -> list[str]:
    """Every ``section.key`` (and ``section.table.entry``) a preset or an override may set."""
    keys = []
    for section, cls in SECTIONS.items():
        defaults = cls()
        for f in dataclasses.fields(cls):
            value = getattr(defaults, f.name)
            if isinstance(value, dict):
                keys += [f"{section}.{f.name}.{entry}" for entry in value]
            else:
                keys.append(f"{section}.{f.name}")
    return keys


def preset_path(name: str) -> Path:
    """Path of a packaged preset."""
    return Path(str(resources.files("rave_model") / "presets" / f"{name}.toml"))


def read_preset(preset: str | Path = "v2") -> Config:
    """The Config of a packaged preset name or a ``.toml`` file with [data], [model],
    [train], [prior] tables (keys it does not name keep their defaults)."""
    path = Path(preset)
    if isinstance(preset, str) and preset in PRESETS:
        path = preset_path(preset)
    elif not path.is_file():
        raise ValueError(f"unknown preset {str(preset)!r}: use one of {', '.join(PRESETS)} or a path to a .toml file")
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML: {e}") from None
    cfg = Config()
    _apply(cfg, _flatten(table), origin=str(path))
    cfg.validate()
    return cfg


def apply_overrides(base: Config | Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """A new Config: ``base`` (a Config or its ``to_dict()``) with ``overrides`` set.

    Args:
        overrides: ``["train.batch_size=4", "train.loss_weights.feature_matching=400", ...]``
            (each value parsed as a TOML value; a bare word that is not valid TOML is a
            string) or a mapping, flat (``{"train.batch_size": 4}``) or nested.

    Raises:
        ValueError: naming the key: an unknown key (with the closest valid one), a
            value of the wrong type, or an inconsistent configuration.
    """
    cfg = Config.from_dict(base.to_dict() if isinstance(base, Config) else base)
    if isinstance(overrides, Mapping):
        flat = _flatten(overrides)
    else:
        flat = _flatten(dict(_parse_override(o) for o in overrides))
    _apply(cfg, flat, origin="--set")
    cfg.validate()
    return cfg


def load_config(preset: str | Path = "v2", overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """A preset (:func:`read_preset`) with overrides (:func:`apply_overrides`).

    Raises:
        ValueError: unknown preset, unknown key, a value of the wrong type, or an
            inconsistent configuration; the message names the file or the key.
    """
    return apply_overrides(read_preset(preset), overrides)


def to_toml(d: Mapping[str, Any]) -> str:
    """A ``Config.to_dict()`` as TOML text (what the run log shows)."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, Mapping):
            return "{" + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + "}"
        if isinstance(v, float) and not math.isfinite(v):
            return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
        return repr(v)

    lines = []
    for section, values in d.items():
        if isinstance(values, Mapping):
            lines.append(f"[{section}]")
            lines += [f"{k} = {val(v)}" for k, v in values.items() if v is not None]
            lines.append("")
        elif values is not None:
            lines.insert(0, f"{section} = {val(values)}")
    return "\n".join(lines)


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} is not of the form section.key=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as model.architecture=v2
    return key.strip(), value


def _flatten(d: Mapping[str, Any]) -> dict[str, Any]:
    """Nested or dotted keys -> ``{"section.key": value}``, a table field's entries
    as ``"section.key.entry"``."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if k in SECTIONS and isinstance(v, Mapping):
            for kk, vv in v.items():
                flat.update(_flatten({f"{k}.{kk}": vv}))
        elif isinstance(v, Mapping) and k.count(".") == 1:
            flat.update({f"{k}.{entry}": x for entry, x in v.items()})
        else:
            flat[k] = v
    return flat


def _unknown(key: str, origin: str) -> ValueError:
    if key in MOVED:
        return ValueError(f"{origin}: unknown key {key!r}: set {MOVED[key]} instead")
    section, _, name = key.partition(".")
    known = [k for k in valid_keys() if k.startswith(section + ".")]
    close = difflib.get_close_matches(name, [k.partition(".")[2] for k in known], n=1)
    if close:
        return ValueError(f"{origin}: unknown key {key!r}; did you mean '{section}.{close[0]}'?")
    return ValueError(f"{origin}: unknown key {key!r}; valid keys: {', '.join(known or valid_keys())}")


def _apply(cfg: Config, flat: Mapping[str, Any], origin: str = "config") -> None:
    valid = set(valid_keys())
    for key, value in flat.items():
        if key not in valid:
            raise _unknown(key, origin)
        section, name, *entry = key.split(".")
        obj = getattr(cfg, section)
        hint = typing.get_type_hints(type(obj))[name]
        if entry:
            (inner,) = typing.get_args(hint)[1:]
            getattr(obj, name)[entry[0]] = _coerce(value, inner, key)
        else:
            setattr(obj, name, _coerce(value, hint, key))

def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Coerce ``value`` to the annotated type (int, float, bool, str, list[...])."""
    origin = typing.get_origin(hint)
    if origin is list:
        (inner,) = typing.get_args(hint)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, inner, key) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported config type {hint!r}")
