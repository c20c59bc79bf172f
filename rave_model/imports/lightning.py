"""Read an acids-rave 2.x training run: its Lightning ``.ckpt`` and the ``config.gin`` beside it.

acids-rave's ``rave train`` writes ``OUT/NAME_<hash>/config.gin`` (the operative gin
config) and ``OUT/NAME_<hash>/version_N/checkpoints/*.ckpt`` (Lightning checkpoints:
``best.ckpt`` and ``epoch-epoch=NNNN.ckpt``). A checkpoint is a plain dict::

    {"epoch", "global_step", "pytorch-lightning_version",
     "state_dict": {"pqmf.*", "encoder.*", "decoder.*", "discriminator.*",
                    "latent_pca", "latent_mean", "fidelity", "receptive_field"},
     "loops", "callbacks": {"WarmupCallback": {"training_steps": N}, ...},
     "optimizer_states", "lr_schedulers"}

It holds tensors, numbers, strings and dicts only, so it is read with
``torch.load(weights_only=True)``: nothing in the file can run code here.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rave_model.imports.errors import ImportFailure

CONFIG_NAME = "config.gin"


@dataclass
class ReferenceCheckpoint:
    """What an import needs from an acids-rave run."""

    path: Path
    """The ``.ckpt`` file read."""
    gin_path: Path
    """Its ``config.gin``."""
    gin_text: str
    state: dict[str, Any]
    """The LightningModule's ``state_dict`` (reference key names, weight-normalised
    convolutions as ``weight_g`` / ``weight_v``)."""
    step: int
    """Training steps taken (the WarmupCallback's counter, else Lightning's global step)."""
    warmed_up: bool
    """Phase 2 (adversarial) had started: the encoder's ``warmed_up`` buffer is set."""
    lightning_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def find_checkpoint(source: Path) -> Path:
    """A ``.ckpt`` file as given, or the newest ``*.ckpt`` under a run folder (what
    acids-rave's ``rave export --run FOLDER`` picks: the last modified)."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise ImportFailure(f"{source}: no such file or folder")
    found = sorted(source.rglob("*.ckpt"), key=lambda p: (os.path.getmtime(p), str(p)))
    if not found:
        raise ImportFailure(f"{source}: no .ckpt file in this folder (is it an acids-rave run folder?)")
    return found[-1]


def find_config(ckpt: Path) -> Path | None:
    """``config.gin`` in the checkpoint's folder or up to two folders above it: where
    ``rave train`` puts it (``RUN/config.gin`` for ``RUN/version_0/checkpoints/x.ckpt``),
    as acids-rave's ``search_for_config`` looks."""
    folder = ckpt.parent
    for cand in (folder, folder.parent, folder.parent.parent):
        path = cand / CONFIG_NAME
        if path.is_file():
            return path
    return None


def read_checkpoint(source: Path, gin: Path | None = None) -> ReferenceCheckpoint:
    """Read a run folder or ``.ckpt`` file (and its ``config.gin``, or ``gin`` when given).

    Raises:
        ImportFailure: no checkpoint, no config.gin, an unreadable file, or a file that
            is not an acids-rave RAVE checkpoint; the message names the file.
    """
    import torch

    path = find_checkpoint(Path(source))
    gin_path = Path(gin) if gin is not None else find_config(path)
    if gin_path is None:
        raise ImportFailure(
            f"{path}: no {CONFIG_NAME} next to it or in the two folders above "
            f"(rave train writes it in the run folder); pass it with --gin"
        )
    if not gin_path.is_file():
        raise ImportFailure(f"{gin_path}: no such gin config file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # not a pickle of objects: garbage, truncated
            raise ImportFailure(f"{path}: not a readable checkpoint (not a torch file, or a damaged one)") from None
        raise ImportFailure(
            f"{path}: holds Python objects besides tensors, which are not loaded (acids-rave checkpoints hold none; "
            f"a ravemodel checkpoint needs no import: use it or its run folder directly)"
        ) from None
    except Exception as exc:  # not a torch file, truncated
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ImportFailure(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {reason[:200]})") from None
    if isinstance(ckpt, dict) and "config" in ckpt and "model" in ckpt and "state_dict" not in ckpt:
        raise ImportFailure(f"{path}: already a ravemodel checkpoint: use it (or its run folder) directly")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ImportFailure(f"{path}: not a Lightning checkpoint (no state_dict)")
    state = ckpt["state_dict"]
    if not any(k.startswith("encoder.") for k in state) or not any(k.startswith("decoder.") for k in state):
        hint = " (an acids-rave prior checkpoint? import the RAVE run it was trained on)" if any(
            k.startswith("synth.") for k in state
        ) else ""
        raise ImportFailure(f"{path}: not an acids-rave RAVE checkpoint: no encoder/decoder weights{hint}")
    try:
        gin_text = gin_path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailure(f"{gin_path}: cannot read the gin config ({exc})") from None
    callbacks = ckpt.get("callbacks") or {}
    warmup = callbacks.get("WarmupCallback") if isinstance(callbacks, dict) else None
    if isinstance(warmup, dict) and "training_steps" in warmup:
        step = int(warmup["training_steps"])
    else:
        step = int(ckpt.get("global_step") or 0)
    warmed = state.get("encoder.warmed_up")
    return ReferenceCheckpoint(
        path=path,
        gin_path=gin_path,
        gin_text=gin_text,
        state=state,
        step=step,
        warmed_up=bool(warmed.item()) if torch.is_tensor(warmed) and warmed.numel() == 1 else False,
        lightning_version=ckpt.get("pytorch-lightning_version"),
        extra={"epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step")},
    )
