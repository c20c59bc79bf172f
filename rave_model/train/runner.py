"""The training loop: every registered stage in order, resumable, one command.

:func:`fit` is what ``ravemodel fit`` calls. It owns what every stage shares:
the run folder, the configuration, the model, the data stream position, the
step counter, checkpoints (last + best), validation scheduling, logging, the
NaN guard and a clean Ctrl-C. Stages (see :mod:`rave_model.train.stage`) only
take steps.

Reproducibility of a resumed run (CPU): the checkpoint stores the data
position and every RNG state; each stage seeds the global RNG with
``(seed, stage index)`` before building its networks, and the DataLoader
draws its base seed from a private generator, so a run interrupted at step k
and resumed takes the same steps k+1, k+2, ... as one that never stopped.
"""
from __future__ import annotations

import math
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rave_model.train import checkpoint as ckpt_io
from rave_model.train.logging import DataWait, human_count
from rave_model.train.pending import PendingLosses
from rave_model.train.run_config import ConfigMismatch, follow_dataset, resolve_config, to_toml
from rave_model.train.stage import DataPosition, Stage, TrainContext
from rave_model.train.stages import STAGES, stage_class

__all__ = ["ConfigMismatch", "FitResult", "TrainingDiverged", "fit", "pick_device"]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class FitResult:
    run_dir: Path
    done: list[str]
    #: Stopped before the end (Ctrl-C or ``stop_after``), with a checkpoint to resume from.
    stopped: bool = False
    #: Stopped by Ctrl-C.
    interrupted: bool = False
    #: (stage, step, losses) of every step taken by this call.
    history: list[tuple[str, int, dict[str, float]]] = field(default_factory=list)
    checkpoint: Path | None = None
    #: The trained RAVE module (this process's copy), as the call left it.
    model: Any = None


def pick_device(name: str = "auto") -> Any:
    """"auto" -> cuda, else mps, else cpu; an explicit name is checked."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available (use --device auto or cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps: Apple MPS is not available (use --device auto or cpu)")
    return torch.device(name)


class _StopFlag:
    """First Ctrl-C asks the loop to save and stop after the current step; a
    second one interrupts immediately (the previous checkpoint stays)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def fit(
    dataset: Path | str,
    run_dir: Path | str,
    preset: str | Path = "v2",
    overrides: Sequence[str] = (),
    device: str = "auto",
    augment_config: Path | str | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    stop_after: int | None = None,
    logger: Any = None,
    console: Any = None,
) -> FitResult:
    """Train (or resume) the run in ``run_dir`` on ``dataset`` through every stage.

    ``stop_after`` stops (with a checkpoint, like Ctrl-C) after that many steps
    of this call: tests and time-boxed jobs use it. Raises DatasetError,
    ConfigMismatch, ValueError (bad config) or TrainingDiverged with a message
    meant for the user.
    """
    from rave_model.data import TrainData, load_augment_plan, usable_cores
    from rave_model.train import distributed

    run_dir = Path(run_dir)
    # One of several processes (torchrun or --nproc): join the group first; its
    # rank and device come from the environment (see rave_model.train.distributed).
    group = distributed.setup(device) if distributed.launched() else None
    if group is not None:
        rank, world_size = group.rank, group.world_size
    # Everything that can refuse the job runs first (and before torch is
    # imported by the model), so a mistake costs a second, not a start-up.
    # Rank 0 alone reads the run folder (on a cluster it may be on its machine only).
    cfg, ckpt = distributed.main_computes(lambda: resolve_config(run_dir, preset, overrides))
    data = TrainData(dataset, cfg, augment=load_augment_plan(augment_config), rank=rank, world_size=world_size)
    src = data.source  # each machine reads its own copy: they must agree
    distributed.require_same(f"dataset {dataset}", {"examples": len(src), "sr": src.sr, "channels": src.channels, "length": src.example_length})
    notes = follow_dataset(cfg, src, overrides) if ckpt is None else []
    data.check(pca_frames_needed=int(cfg.model.latent_size), hop=int(cfg.hop_length))
    import torch

    from rave_model.model import RAVE, count_parameters
    from rave_model.train.logging import TrainLogger

    dev = torch.device(group.device) if group is not None else pick_device(device)
    is_main = rank == 0
    from rave_model.train.precision import resolve_precision

    precision = resolve_precision(cfg.train.precision, dev)  # a bad value is refused before any work
    if dev.type == "cuda":
        # Every step has the same shapes: let cuDNN pick its fastest kernels once.
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(int(cfg.train.seed))
    model = RAVE(cfg)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.to(dev)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = logger or TrainLogger(run_dir, enabled=is_main, console=console)
    ctx = TrainContext(cfg=cfg, model=model, device=dev, run_dir=run_dir, data=data, logger=log, rank=rank, world_size=world_size, is_main=is_main,
                       wrap=distributed.wrap_model)
    ctx.info.update((ckpt or {}).get("info", {}))

    counts = count_parameters(model)
    log.info(f"RAVE: {human_count(counts['total'])} parameters (encoder {human_count(counts['encoder'])}, decoder {human_count(counts['decoder'])}) on {dev}")
    log.info(f"dataset {dataset}: {len(data.train_idx)} training / {len(data.val_idx)} validation examples, {data.source.sr} Hz, {data.source.channels} ch")
    log.info(f"precision {precision}{', compiled' if cfg.train.compile else ''}; {data.workers(dev)} data loader worker(s)")
    for note in notes:
        log.info(note)
    if ckpt is not None:
        log.info(f"resuming {run_dir}: stage {ckpt['stage']}, step {ckpt['step']}, done: {', '.join(ckpt['done']) or '-'}")
        before, now = ckpt.get("provenance") or {}, provenance(ctx)
        for key, what in (("dataset", "dataset"), ("augment", "augmentation plan (--augment-config)")):
            if key in before and before[key] != now[key]:
                log.info(f"note: this run started with another {what}; continuing with the one given now")
    elif is_main:
        log.text("config", "```\n" + to_toml(cfg.to_dict()) + "\n```")

    result = FitResult(run_dir=run_dir, done=list((ckpt or {}).get("done", [])), model=model)
    if ckpt is not None:  # a finished run asked again reports its checkpoint
        result.checkpoint = ckpt_io.checkpoint_dir(run_dir) / ckpt_io.LAST
    position = DataPosition.from_dict((ckpt or {}).get("data"))
    # A checkpoint of N processes resumes with M: the same point of the epoch.
    saved_world = int(((ckpt or {}).get("data") or {}).get("world_size", world_size))
    position.offset = distributed.rescale_offset(position.offset, saved_world, world_size, data.batch_size)
    taken, stage = 0, None
    try:
        with _StopFlag() as stop:
            for index, name in enumerate(STAGES):
                # A finished stage is reopened only when it is the one the checkpoint
                # holds (its optimizer state is there) and it was given more steps.
                reopen = name in result.done and ckpt is not None and ckpt["stage"] == name
                if name in result.done and not reopen:
                    continue
                torch.manual_seed(int(cfg.train.seed) * 1000 + index)
                stage = stage_class(name)(ctx)
                total = int(stage.total_steps())
                if reopen:
                    if total <= int(ckpt["step"]):
                        continue
                    result.done.remove(name)
                    log.info(f"stage {name} reopened: {ckpt['step']} -> {total} steps")
                if total <= 0:  # a stage configured off (e.g. prior.steps=0)
                    result.done.append(name)
                    continue
                step, best = 0, None
                if ckpt is not None and ckpt["stage"] == name:
                    stage.load_state_dict(ckpt["stage_state"])
                    step, best = int(ckpt["step"]), ckpt.get("best")
                    ckpt_io.set_rng_state(ckpt.get("rng"))
                ckpt = None  # only the first stage run by this call resumes

                def save(which: str = "last", _stage: Stage = stage, _name: str = name) -> Path:
                    return _save(ctx, _stage, _name, step, result.done, position, best, which)

                stage.on_start()
                log.start_stage(name, step, total, int(cfg.train.log_every))
                batches = stage.batches(position)
                # The latest value of every loss: stage 2 alternates discriminator and
                # decoder steps, whose losses differ; displaying and logging the merged
                # view shows both (logging only the step's own would drop one side
                # whenever log_every and disc_every share a factor).
                latest: dict[str, float] = {}
                # Losses stay on the device between log steps (see pending.py): the
                # host never waits for the GPU inside a step.
                pending = PendingLosses()
                wait = DataWait()

                def settle(_name: str = name, _pending: PendingLosses = pending, _latest: dict[str, float] = latest) -> None:
                    """The pending losses to the host, averaged over the ranks, through
                    the NaN guard (at the step where a loss first went bad)."""
                    for s_, losses in _reduce_window(_pending.flush()):
                        _check_finite(_name, s_, losses, run_dir)
                        result.history.append((_name, s_, losses))
                        _latest.update(losses)

                while step < total:
                    with wait.timing():
                        batch, next_position = next(batches)
                    pending.add(step + 1, stage.train_step(batch, step))
                    step, position, taken = step + 1, next_position, taken + 1
                    logging_now = step % int(cfg.train.log_every) == 0
                    validating = step % int(cfg.train.val_every) == 0 or step == total
                    saving = step % int(cfg.train.ckpt_every) == 0
                    stopping = distributed.any_rank(stop.requested or (stop_after is not None and taken >= stop_after))
                    if logging_now or validating or saving or stopping:
                        settle()
                    if logging_now:
                        warning = wait.window_warning(data.workers(dev), cores=usable_cores())
                        if warning:
                            log.info(f"{name} step {step}: {warning}")
                    log.step(step, latest)
                    if is_main and logging_now:
                        log.scalars(name, latest, step)
                    if validating:
                        metrics = stage.validate() if is_main else {}
                        if metrics and is_main:
                            log.scalars(f"{name}/validation", metrics, step)
                            stage.log_media(step)
                            value = metrics.get("spectral_distance")
                            improved = value is not None and (best is None or value < best)
                            if improved:
                                best = value
                                result.checkpoint = save("best")
                            shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                            log.info(f"{name} step {step}: validation {shown}{'  (best)' if improved else ''}")
                    if is_main and saving:
                        result.checkpoint = save()
                    # Agreed by all ranks, so they leave at the same step.
                    if stopping:
                        result.checkpoint = save() if is_main else None
                        result.stopped, result.interrupted = True, stop.requested
                        log.end_stage()
                        log.info(f"stopped at {name} step {step}/{total}; checkpoint saved. Run the same command to resume.")
                        return result
                log.end_stage()
                # Rank 0 alone (e.g. the latent PCA), then its model state to all.
                info = distributed.main_computes(stage.on_complete)
                distributed.broadcast_module(model)
                if info:
                    ctx.info[name] = info
                result.done.append(name)
                if is_main:
                    result.checkpoint = save()
                log.info(f"stage {name} done ({total} steps)")
                del batches
    finally:
        log.close()
        if group is not None:
            distributed.teardown()
    return result


def provenance(ctx: TrainContext) -> dict[str, Any]:
    """How the run was made, stored in every checkpoint: versions, the dataset,
    the online augmentation plan (or None)."""
    import torch

    from rave_model import __version__

    plan = ctx.data.dataset.augment
    return {
        "ravemodel": __version__,
        "torch": torch.__version__,
        "dataset": str(Path(ctx.data.source.path).resolve()),
        "augment": plan.to_dict() if plan is not None else None,
    }


def _reduce_window(window: list[tuple[int, dict[str, float]]]) -> list[tuple[int, dict[str, float]]]:
    """Each step's losses averaged over the ranks, in one collective for the whole
    window (every rank settles at the same steps, with the same keys)."""
    from rave_model.train import distributed

    flat = distributed.reduce_mean({f"{i:09d}/{k}": v for i, (_, losses) in enumerate(window) for k, v in losses.items()})
    return [(s, {k: flat[f"{i:09d}/{k}"] for k in losses}) for i, (s, losses) in enumerate(window)]


def _check_finite(stage: str, step: int, losses: Mapping[str, float], run_dir: Path) -> None:
    for k, v in losses.items():
        if not math.isfinite(v):
            where = ckpt_io.checkpoint_dir(run_dir) / ckpt_io.LAST
            kept = f"the last good checkpoint {where} is kept" if where.exists() else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"stage {stage} step {step}: loss {k} is {v}; training stopped and {kept}. "
                f"Lower the learning rate (--set train.lr=...) or check the dataset for broken audio"
            )


def _save(ctx: TrainContext, stage: Stage, name: str, step: int, done: list[str], position: DataPosition, best: float | None, which: str) -> Path:
    state = {
        "format": ckpt_io.FORMAT,
        "config": ctx.cfg.to_dict(),
        "stage": name,
        "step": step,
        "done": list(done),
        "model": ctx.model.state_dict(),
        "stage_state": stage.state_dict(),
        "data": {**position.to_dict(), "world_size": ctx.world_size},
        "rng": ckpt_io.rng_state(),
        "best": best,
        "info": dict(ctx.info),
        "provenance": provenance(ctx),
    }
    path = ckpt_io.checkpoint_dir(ctx.run_dir) / (ckpt_io.BEST if which == "best" else ckpt_io.LAST)
    ckpt_io.save_atomic(state, path)
    return path
