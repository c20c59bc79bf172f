"""Checkpoints: the one definition of a checkpoint file, atomic save, load, and
the "last" and "best" files of a run.

:class:`Checkpoint` is the schema (docs/training.md "Checkpoint format" describes
every field). On disk it is the plain dictionary of :meth:`Checkpoint.to_dict`
written by ``torch.save``: tensors, numbers, strings, lists and dictionaries
only, so ``torch.load(path, weights_only=True)`` reads it and loading a file
never runs code from it.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rave_model.config import Config
from rave_model.data import DataPosition

if TYPE_CHECKING:
    import torch

    from rave_model.model import RAVE

#: The format this version writes. Format 1 differs only in ``rng["numpy"]``,
#: stored as numpy's own ``get_state()`` tuple (a numpy array inside).
FORMAT = 2
#: The formats this version reads.
READABLE = (1, 2)
LAST = "last.ckpt"
BEST = "best.ckpt"


@dataclass
class Provenance:
    """How a run was made: the versions that wrote it and what it was trained
    on. Resuming compares ``dataset`` and ``augment`` with the ones given."""

    #: ``rave_model.__version__`` of the process that wrote the checkpoint.
    ravemodel: str
    #: ``torch.__version__`` of that process.
    torch: str
    #: Resolved path of the training dataset (None for an imported run).
    dataset: str | None = None
    #: The online augmentation plan (``AugmentPlan.to_dict()``), None without one.
    augment: dict[str, Any] | None = None
    #: ``ravemodel import``: the acids-rave source (kind, path, step, ...).
    imported_from: dict[str, Any] | None = None

    @classmethod
    def current(cls, **fields: Any) -> Provenance:
        """This process's versions, with ``fields`` (dataset, augment, imported_from)."""
        import torch

        from rave_model import __version__

        return cls(ravemodel=__version__, torch=str(torch.__version__), **fields)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ravemodel": self.ravemodel,
            "torch": self.torch,
            "dataset": self.dataset,
            "augment": self.augment,
            "imported_from": self.imported_from,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        return cls(
            ravemodel=str(d.get("ravemodel", "")),
            torch=str(d.get("torch", "")),
            dataset=d.get("dataset"),
            augment=d.get("augment"),
            imported_from=d.get("imported_from"),
        )


@dataclass
class Checkpoint:
    """Everything a run needs to continue, or a tool needs to use its model."""

    #: The run's configuration.
    config: Config
    #: The stage in progress, or the last one run ("imported" for ``ravemodel import``).
    stage: str
    #: Steps done in that stage.
    step: int
    #: ``RAVE.state_dict()``, the latent PCA buffers included.
    model: dict[str, torch.Tensor]
    #: Stages completed, in order.
    done: list[str] = field(default_factory=list)
    #: ``Stage.state_dict()`` of ``stage``: optimizers, schedule, discriminator, prior.
    stage_state: dict[str, Any] = field(default_factory=dict)
    #: Where the training data stream of each rank stands.
    data: DataPosition = field(default_factory=DataPosition)
    #: Processes that trained (``data.offset`` counts one rank's examples).
    world_size: int = 1
    #: Every RNG state (:func:`rng_state`); None when there is nothing to restore.
    rng: dict[str, Any] | None = None
    #: Best validation spectral distance of ``stage`` so far.
    best: float | None = None
    #: Facts the stages recorded: ``{"vae": {"pca_dims", "fidelity", "pca_frames"},
    #: "receptive_field": [left, right], "prior": {"latent_size"}}``.
    info: dict[str, Any] = field(default_factory=dict)
    #: How the run was made.
    provenance: Provenance | None = None

    def to_dict(self) -> dict[str, Any]:
        """The plain dictionary stored on disk."""
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "stage": self.stage,
            "step": int(self.step),
            "done": list(self.done),
            "model": self.model,
            "stage_state": self.stage_state,
            "data": {**self.data.to_dict(), "world_size": int(self.world_size)},
            "rng": self.rng,
            "best": self.best,
            "info": dict(self.info),
            "provenance": self.provenance.to_dict() if self.provenance is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Any, source: Path | str = "checkpoint") -> Checkpoint:
        """Inverse of :meth:`to_dict`; ValueError naming ``source`` when ``d`` is not
        a ravemodel checkpoint or has a format this version does not read."""
        if not isinstance(d, Mapping) or not {"format", "config", "model"} <= set(d):
            raise ValueError(f"{source}: not a ravemodel checkpoint (no format/config/model)")
        if d["format"] not in READABLE:
            raise ValueError(
                f"{source}: checkpoint format {d['format']!r} is not supported (this ravemodel reads "
                f"formats {', '.join(map(str, READABLE))}); use the ravemodel version that wrote it"
            )
        try:
            config = Config.from_dict(d["config"])
        except ValueError as exc:
            raise ValueError(f"{source}: its config is not valid here: {exc}") from None
        data = d.get("data") or {}
        rng = d.get("rng")
        if rng and isinstance(rng.get("numpy"), tuple):
            rng = {**rng, "numpy": _numpy_state_to_plain(rng["numpy"])}
        best = d.get("best")
        return cls(
            config=config,
            stage=str(d.get("stage", "")),
            step=int(d.get("step", 0)),
            model=d["model"],
            done=list(d.get("done") or []),
            stage_state=dict(d.get("stage_state") or {}),
            data=DataPosition.from_dict(data),
            world_size=int(data.get("world_size", 1)),
            rng=rng,
            best=float(best) if best is not None else None,
            info=dict(d.get("info") or {}),
            provenance=Provenance.from_dict(d["provenance"]) if d.get("provenance") else None,
        )

    def save(self, path: Path | str) -> Path:
        """Write atomically to ``path``; returns it."""
        save_atomic(self.to_dict(), path)
        return Path(path)


def checkpoint_dir(run_dir: Path | str) -> Path:
    return Path(run_dir) / "checkpoints"


def run_file(run_dir: Path | str, which: str = "last") -> Path:
    """``RUN/checkpoints/last.ckpt`` (or ``best.ckpt``)."""
    return checkpoint_dir(run_dir) / (BEST if which == "best" else LAST)


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


def load(path: Path | str, map_location: Any = "cpu") -> Checkpoint:
    """Read a checkpoint file; ValueError naming the file when it is not one of
    ours, is damaged, or has a format this version does not read."""
    import torch

    path = Path(path)
    try:
        # Format-1 files hold numpy's RNG state as a numpy array: allow exactly that.
        with torch.serialization.safe_globals(_numpy_array_globals()):
            raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, not a torch file, or holding other objects
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {reason[:200]})") from None
    return Checkpoint.from_dict(raw, source=path)


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


def load_model(run_or_file: Path | str, which: str = "last", device: Any = "cpu") -> tuple[RAVE, Config, Checkpoint]:
    """Rebuild the RAVE model of a run: (model in eval mode, its Config, the checkpoint).

    Raises FileNotFoundError (no checkpoint there) or ValueError (not a usable
    checkpoint), each naming the file.
    """
    from rave_model.model import RAVE

    ckpt = load(find_checkpoint(run_or_file, which), map_location=device)
    model = RAVE(ckpt.config)
    model.load_state_dict(ckpt.model)
    model.to(device).eval()
    return model, ckpt.config, ckpt


# -- random number generator state ----------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may touch (model noise, dropout, augmentation
    chains drawn in the main process), as tensors and numbers."""
    import numpy as np
    import torch

    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
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
    n = state["numpy"]
    np.random.set_state((n["bit_generator"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"])))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _numpy_state_to_plain(state: tuple[Any, ...]) -> dict[str, Any]:
    """numpy's ``np.random.get_state()`` tuple -> tensors and numbers."""
    import numpy as np
    import torch

    name, keys, pos, has_gauss, cached = state
    return {
        "bit_generator": str(name),
        "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _numpy_array_globals() -> list[Any]:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
