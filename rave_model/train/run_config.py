"""The configuration of a run: new (preset + overrides), resumed (the
checkpoint's own config + overrides that may change only training keys), and
adapted to the dataset (sample rate, channels)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rave_model.config import Config, apply_overrides, load_config
from rave_model.train import checkpoint as ckpt_io
from rave_model.train.checkpoint import Checkpoint


class ConfigMismatch(ValueError):
    """Overrides on resume that would change the trained networks."""


def resolve_config(run_dir: Path, preset: str | Path, overrides: Sequence[str]) -> tuple[Config, Checkpoint | None]:
    """The run's config and the checkpoint it resumes from: the last checkpoint's
    config with the overrides applied (only train/prior keys may change, e.g. more
    steps), else the preset with the overrides and no checkpoint."""
    try:
        path = ckpt_io.find_checkpoint(run_dir)
    except FileNotFoundError:
        return load_config(preset, list(overrides)), None
    ckpt = ckpt_io.load(path)
    cfg = apply_overrides(ckpt.config, overrides)
    changed = [k for k in ("data", "model") if cfg.to_dict()[k] != ckpt.config.to_dict()[k]]
    if changed:
        raise ConfigMismatch(
            f"{path}: the run was trained with other {'/'.join(changed)} settings; "
            f"only train/prior keys may change on resume (use a new --run folder)"
        )
    return cfg, ckpt


def follow_dataset(cfg: Config, source: Any, overrides: Sequence[str]) -> list[str]:
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
