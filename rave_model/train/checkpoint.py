"""Checkpoints: atomic save, load, and the "last" and "best" files of a run.

A checkpoint is one ``torch.save`` dict that describes itself::

    {"format": 1,
     "config": Config.to_dict(),
     "stage": "vae" | "adversarial" | ...,   # the stage in progress (or last run)
     "step": int,                            # steps done in that stage
     "done": ["vae", ...],                   # stages completed
     "model": RAVE.state_dict(),             # incl. latent_pca/latent_mean/fidelity
     "stage_state": Stage.state_dict(),      # optimizers, discriminator, ...
     "data": DataPosition.to_dict(),
     "rng": {"torch": ByteTensor, "cuda": [...], "numpy": ..., "python": ...},
     "best": float | None,                   # best validation spectral distance
     "info": {"vae": {"pca_dims": ...}, ...}}

Files: ``RUN/checkpoints/last.ckpt`` (every ``ckpt_every`` steps, at each
stage end, on Ctrl-C) and ``RUN/checkpoints/best.ckpt`` (lowest validation
spectral distance of the current stage; the comparison restarts with each
stage because later stages trade distance for realism).

Why atomic: a crash or a full disk during ``torch.save`` must never leave a
truncated "last.ckpt" behind, so we write ``*.tmp`` in the same folder, fsync,
then ``os.replace`` (atomic on POSIX and Windows).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rave_model.config import Config
    from rave_model.model import RAVE

FORMAT = 1
LAST = "last.ckpt"
BEST = "best.ckpt"


def checkpoint_dir(run_dir: Path | str) -> Path:
    return Path(run_dir) / "checkpoints"


def save_atomic(obj: dict[str, Any], path: Path | str) -> None:
    """``torch.save`` to ``path`` through a temporary file + ``os.replace``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: Path | str, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint file; raise ValueError naming the file when it is not one of ours."""
    import torch

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # corrupt / not a torch file
        raise ValueError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a ravemodel checkpoint (no config/model)")
    return ckpt


def find_checkpoint(run_or_file: Path | str, which: str = "last") -> Path:
    """Resolve a run folder (or a checkpoint file) to a checkpoint path."""
    p = Path(run_or_file)
    if p.is_file():
        return p
    name = BEST if which == "best" else LAST
    for cand in (checkpoint_dir(p) / name, p / name):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{p}: no {name} checkpoint found (is this a ravemodel run folder?)")


def load_model(run_or_file: Path | str, which: str = "last", device: Any = "cpu") -> tuple[RAVE, Config, dict[str, Any]]:
    """Rebuild the RAVE model of a run: (model in eval mode, its Config, the checkpoint dict)."""
    from rave_model.config import Config
    from rave_model.model import RAVE

    ckpt = load(find_checkpoint(run_or_file, which), map_location=device)
    cfg = Config.from_dict(ckpt["config"])
    model = RAVE(cfg)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, cfg, ckpt


# -- random number generator state ----------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may touch (model noise, dropout, augmentation
    chains drawn in the main process)."""
    import numpy as np
    import torch

    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any] | None) -> None:
    import numpy as np
    import torch

    if not state:
        return
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
