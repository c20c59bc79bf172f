"""The configuration of a run: new (preset + overrides), resumed (the
checkpoint's own config + overrides that may change only training keys), and
adapted to the dataset (sample rate, channels)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rave_model.train import checkpoint as ckpt_io


class ConfigMismatch(ValueError):
    """Overrides on resume that would change the trained networks."""


def resolve_config(run_dir: Path, preset: str | Path, overrides: Sequence[str]) -> tuple[Any, dict[str, Any] | None]:
    """The run's config: from its last checkpoint when resuming (overrides
    applied on top, e.g. more steps), else from the preset + overrides."""
    from rave_model.config import Config, load_config

    try:
        path = ckpt_io.find_checkpoint(run_dir)
    except FileNotFoundError:
        return load_config(preset, list(overrides)), None
    ckpt = ckpt_io.load(path)
    saved = Config.from_dict(ckpt["config"])
    cfg = apply_overrides(saved, overrides)
    changed = [k for k in ("data", "model") if cfg.to_dict()[k] != saved.to_dict()[k]]
    if changed:
        raise ConfigMismatch(
            f"{path}: the run was trained with other {'/'.join(changed)} settings; "
            f"only train/prior keys may change on resume (use a new --run folder)"
        )
    return cfg, ckpt


def apply_overrides(cfg: Any, overrides: Sequence[str]) -> Any:
    """Config with ``key=value`` overrides applied (validated by load_config)."""
    import tempfile

    from rave_model.config import load_config

    if not overrides:
        return cfg
    # load_config validates and coerces overrides against a preset file; write
    # the saved config as one so the same rules apply on resume.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resume.toml"
        path.write_text(to_toml(cfg.to_dict()))
        return load_config(path, list(overrides))


def to_toml(d: Mapping[str, Any]) -> str:
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
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


def follow_dataset(cfg: Any, source: Any, overrides: Sequence[str]) -> list[str]:
    """A new run adopts the dataset's sample rate and channel count when the
    preset differs and the user did not set them (``--set data.sr=...``, in
    which case :meth:`TrainData.check` refuses the mismatch). Neither changes
    the architecture's shape beyond its input width, and a model at the
    dataset's own rate is what the user has the audio for. Returns the notes to print."""
    given = {o.partition("=")[0].strip() for o in overrides}
    notes = []
    for key, have in (("sr", int(source.sr)), ("channels", int(source.channels))):
        want = int(getattr(cfg.data, key))
        if have != want and f"data.{key}" not in given:
            setattr(cfg.data, key, have)
            notes.append(
                f"note: the dataset has {key}={have}, the preset {key}={want}: training at {key}={have} "
                f"(re-run `ravedata prep --{key} {want}` for the preset's value)"
            )
    cfg.validate()
    return notes
