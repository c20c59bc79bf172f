"""Read an acids-rave 2.x exported TorchScript model (``rave export``, ``.ts``).

acids-rave's ``ScriptedRAVE`` keeps the trained modules as submodules (``pqmf``,
``encoder``, ``decoder``) with the reference's own names, weight normalisation
removed (plain ``weight`` tensors where the run had ``weight_g`` / ``weight_v``), plus
``latent_pca`` / ``latent_mean`` / ``fidelity`` buffers and the attributes ``sr``,
``n_channels``, ``full_latent_size``. A streaming export adds cache buffers
(``*.cache.pad`` ...) that hold no weights.

The gin config is not in the file, so the architecture is read from the modules:
every scripted convolution keeps its ``in_channels``, ``out_channels``,
``kernel_size``, ``stride``, ``dilation`` (and offline its ``_pad``), which give the
capacity, ratios, dilations, kernel size, latent size, PQMF bands, noise branch and
causality. What a .ts cannot tell (it has no discriminator, optimiser or loss) is the
training configuration: those keys come from the preset with the same architecture
(``v1``, ``v2`` or ``v2_small``), as acids-rave's own config of that name sets them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rave_model.imports.errors import ImportFailure

# The ScriptedRAVE subclasses of acids-rave's scripts/export.py and why we cannot map them.
_UNSUPPORTED_CLASSES = {
    "DiscreteScriptedRAVE": "a discrete (residual vector quantised) encoder (configs discrete.gin / discrete_v3.gin)",
    "WasserteinScriptedRAVE": "a Wasserstein encoder (config wasserstein.gin)",
    "SphericalScriptedRAVE": "a spherical encoder (config spherical.gin)",
}
_CACHE_LEAVES = ("pad", "cache")  # cached_conv's streaming buffers (no weights)


@dataclass
class ReferenceExport:
    """What an import needs from an acids-rave ``.ts``."""

    path: Path
    config: Any
    """Inferred :class:`rave_model.config.Config`."""
    state: dict[str, Any]
    """Weights under the reference's checkpoint key names (weight-normalised
    convolutions re-split into ``weight_g`` / ``weight_v``), as a ``.ckpt``'s
    ``state_dict`` has them, so one mapping serves both sources."""
    warmed_up: bool
    streaming: bool
    notes: list[str] = field(default_factory=list)
    """What the import could not carry over (e.g. an exported prior)."""


def load_scripted(path: Path) -> Any:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript deprecation notices
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise ImportFailure(f"{path}: not a loadable TorchScript file ({exc.__class__.__name__})") from None


def read_export(path: Path) -> ReferenceExport:
    """Read an acids-rave ``.ts`` and infer our Config from its modules.

    Raises:
        ImportFailure: the file is not an acids-rave RAVE export, or uses a configuration
            we cannot map; the message names the file and what is missing.
    """
    path = Path(path)
    module = load_scripted(path)
    kind = getattr(module, "original_name", type(module).__name__)
    if kind in _UNSUPPORTED_CLASSES:
        raise ImportFailure(f"{path}: unsupported acids-rave model: {_UNSUPPORTED_CLASSES[kind]}; ravemodel models are variational (VAE)")
    if kind == "ExportedRAVE":
        raise ImportFailure(f"{path}: this is a ravemodel export, not an acids-rave one: use the run folder it was exported from")
    if kind != "VariationalScriptedRAVE":
        raise ImportFailure(f"{path}: not an acids-rave RAVE export (TorchScript class {kind}, expected VariationalScriptedRAVE)")
    _refuse_unsupported(path, module)
    mods = dict(module.named_modules())
    state = {k: v for k, v in module.state_dict().items()}
    from rave_model.imports.architecture import infer_config

    cfg, weight_normed = infer_config(path, module, mods, state)
    ref_state = _checkpoint_state(state, weight_normed)
    notes = []
    if _attr(module, "_has_prior", False):
        notes.append("the export's prior was not imported (acids-rave priors are another architecture): train one with `ravemodel fit`")
    warmed = state.get("encoder.warmed_up")
    streaming = any(k.endswith(".cache.pad") for k in state)
    return ReferenceExport(
        path=path,
        config=cfg,
        state=ref_state,
        warmed_up=bool(warmed.item()) if warmed is not None else False,
        streaming=streaming,
        notes=notes,
    )


def _attr(module: Any, name: str, default: Any = None) -> Any:
    try:
        return getattr(module, name)
    except (AttributeError, RuntimeError):
        return default


def _refuse_unsupported(path: Path, module: Any) -> None:
    """Export options and configs that change what the model computes beyond our architecture."""
    missing = [a for a in ("sr", "n_channels", "full_latent_size", "pqmf", "encoder", "decoder") if _attr(module, a) is None]
    if missing:
        raise ImportFailure(f"{path}: not an acids-rave RAVE export: no {', '.join(missing)}")
    if _attr(module, "resampler") is not None:
        raise ImportFailure(
            f"{path}: unsupported: exported with --sr (a resampler to {_attr(module, 'sr')} Hz inside the model); "
            f"export the run again without --sr"
        )
    for mode in ("input_mode", "output_mode"):
        value = _attr(module, mode, "pqmf")
        if value != "pqmf":
            raise ImportFailure(f"{path}: unsupported: {mode} is {value!r} (only PQMF models map onto ravemodel's)")
    if _attr(module, "is_using_adain", False):
        raise ImportFailure(f"{path}: unsupported: adaptive instance normalisation (config adain.gin)")


def _checkpoint_state(state: dict[str, Any], weight_normed: set[str]) -> dict[str, Any]:
    """The export's tensors under a checkpoint's key names: cache buffers and nn~
    bookkeeping dropped; each weight-normalised convolution's ``weight`` split back
    into ``weight_g`` (norm over all but dim 0, as torch's ``weight_norm(dim=0)``) and
    ``weight_v`` (the weight itself), which recompose it exactly."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        head = key.split(".", 1)[0]
        if head not in ("pqmf", "encoder", "decoder", "latent_pca", "latent_mean", "fidelity"):
            continue
        if key.rsplit(".", 1)[-1] in _CACHE_LEAVES or ".paddings." in key:
            continue
        prefix = key[: -len(".weight")] if key.endswith(".weight") else None
        if prefix is not None and prefix in weight_normed:
            norm = value.flatten(1).norm(dim=1).reshape(-1, *([1] * (value.dim() - 1)))
            out[prefix + ".weight_g"] = norm.clone()
            out[prefix + ".weight_v"] = value.clone()
        else:
            out[key] = value.clone()
    return out
