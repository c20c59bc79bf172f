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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rave_model.config import to_toml
from rave_model.data import DataPosition
from rave_model.train import checkpoint as ckpt_io
from rave_model.train import distributed
from rave_model.train.checkpoint import Checkpoint, Provenance
from rave_model.train.logging import DataWait, human_count
from rave_model.train.pending import PendingLosses
from rave_model.train.run_config import ConfigMismatch, follow_dataset, resolve_config
from rave_model.train.stage import Stage, TrainContext
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
    #: The RAVE model as this call left it (this rank's copy, on its device).
    model: Any = None


@dataclass
class Run:
    """One call of :func:`fit`: what every stage shares."""

    ctx: TrainContext
    result: FitResult
    #: The data stream's position, carried from stage to stage.
    position: DataPosition
    #: The checkpoint this call continues from; the first stage it runs takes it.
    resume: Checkpoint | None = None
    #: Steps taken by this call (for ``stop_after``).
    taken: int = 0


@dataclass
class StageRun:
    """One stage of a run and how far it got."""

    name: str
    stage: Stage
    total: int
    step: int = 0
    #: Best validation spectral distance of this stage so far.
    best: float | None = None


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
    # One of several processes (torchrun or --nproc): join the group first; its
    # rank and device come from the environment (see rave_model.train.distributed).
    group = distributed.setup(device) if distributed.launched() else None
    if group is not None:
        rank, world_size = group.rank, group.world_size
    run = open_run(dataset, Path(run_dir), preset, overrides, augment_config, device=group.device if group else device,
                   rank=rank, world_size=world_size, logger=logger, console=console)
    try:
        with StopRequest(stop_after) as stop:
            for stage in stages_to_run(run):
                if not run_stage(run, stage, stop):
                    break
    finally:
        run.ctx.logger.close()
        if group is not None:
            distributed.teardown()
    return run.result


def open_run(
    dataset: Path | str, run_dir: Path, preset: str | Path = "v2", overrides: Sequence[str] = (),
    augment_config: Path | str | None = None, *, device: str = "auto", rank: int = 0, world_size: int = 1,
    logger: Any = None, console: Any = None,
) -> Run:
    """Everything before the first step: the config (new or resumed), the data, the
    model (with the checkpoint's weights when resuming) and the logger.

    What can refuse the job runs first, before the model is built, so a mistake
    costs a second, not a start-up."""
    from rave_model.data import TrainData, load_augment_plan

    # Rank 0 alone reads the run folder (on a cluster it may be on its machine only).
    cfg, resume = distributed.main_computes(lambda: resolve_config(run_dir, preset, overrides))
    data = TrainData(dataset, cfg, augment=load_augment_plan(augment_config), rank=rank, world_size=world_size)
    src = data.source  # each machine reads its own copy: they must agree
    distributed.require_same(f"dataset {dataset}", {"examples": len(src), "sr": src.sr, "channels": src.channels, "length": src.example_length})
    notes = follow_dataset(cfg, src, overrides) if resume is None else []
    data.check(pca_frames_needed=int(cfg.model.latent_size), hop=int(cfg.hop_length))
    import torch

    from rave_model.model import RAVE
    from rave_model.train.logging import TrainLogger
    from rave_model.train.precision import resolve_precision

    dev = pick_device(device)
    precision = resolve_precision(cfg.train.precision, dev)  # a bad value is refused before any work
    if dev.type == "cuda":
        # Every step has the same shapes: let cuDNN pick its fastest kernels once.
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(int(cfg.train.seed))
    model = RAVE(cfg)
    if resume is not None:
        model.load_state_dict(resume.model)
    model.to(dev)
    run_dir.mkdir(parents=True, exist_ok=True)
    is_main = rank == 0
    log = logger or TrainLogger(run_dir, enabled=is_main, console=console)
    ctx = TrainContext(cfg=cfg, model=model, device=dev, run_dir=run_dir, data=data, logger=log, rank=rank, world_size=world_size,
                       is_main=is_main, wrap=distributed.wrap_model)
    result = FitResult(run_dir=run_dir, done=[], model=model)
    position = DataPosition()
    if resume is not None:
        ctx.info.update(resume.info)
        result.done = list(resume.done)
        result.checkpoint = ckpt_io.run_file(run_dir)  # a finished run asked again reports it
        # A checkpoint of N processes resumes with M: the same point of the epoch.
        offset = distributed.rescale_offset(resume.data.offset, resume.world_size, world_size, data.batch_size)
        position = DataPosition(resume.data.epoch, offset)
    run = Run(ctx=ctx, result=result, position=position, resume=resume)
    _log_start(run, dataset, precision, notes)
    return run


def stages_to_run(run: Run) -> Iterator[StageRun]:
    """The registered stages still to train, in order, each built and, for the one
    the checkpoint holds, restored. A finished stage is reopened only when it is the
    checkpoint's stage (its optimizer state is there) and it was given more steps; a
    stage configured off (e.g. prior.steps=0) is marked done."""
    import torch

    done, log = run.result.done, run.ctx.logger
    for index, name in enumerate(STAGES):
        resume = run.resume if run.resume is not None and run.resume.stage == name else None
        if name in done and resume is None:
            continue
        torch.manual_seed(int(run.ctx.cfg.train.seed) * 1000 + index)
        stage = stage_class(name)(run.ctx)
        this = StageRun(name, stage, int(stage.total_steps()))
        if resume is not None and name in done:
            if this.total <= resume.step:
                continue
            done.remove(name)
            log.info(f"stage {name} reopened: {resume.step} -> {this.total} steps")
        if this.total <= 0:
            done.append(name)
            continue
        if resume is not None:
            this.stage.load_state_dict(resume.stage_state)
            this.step, this.best = resume.step, resume.best
            ckpt_io.set_rng_state(resume.rng)
        run.resume = None
        yield this


def run_stage(run: Run, this: StageRun, stop: StopRequest) -> bool:
    """Train ``this`` stage to its last step (True) or until a stop (False); either
    way a checkpoint is written."""
    log = run.ctx.logger
    this.stage.on_start()
    log.start_stage(this.name, this.step, this.total, int(run.ctx.cfg.train.log_every))
    finished = _take_steps(run, this, stop)
    log.end_stage()
    if not finished:
        run.result.stopped, run.result.interrupted = True, stop.ctrl_c
        log.info(f"stopped at {this.name} step {this.step}/{this.total}; checkpoint saved. Run the same command to resume.")
        return False
    # Rank 0 alone (e.g. the latent PCA), then its model state to all.
    info = distributed.main_computes(this.stage.on_complete)
    distributed.broadcast_module(run.ctx.model)
    if info:
        run.ctx.info[this.name] = info
    run.result.done.append(this.name)
    if run.ctx.is_main:
        run.result.checkpoint = save(run, this)
    log.info(f"stage {this.name} done ({this.total} steps)")
    return True


def _take_steps(run: Run, this: StageRun, stop: StopRequest) -> bool:
    """The step loop of one stage: False when it stopped early (checkpoint saved)."""
    ctx, tc = run.ctx, run.ctx.cfg.train
    batches = this.stage.batches(run.position)
    losses = LossWindow(this.name, ctx.run_dir, run.result.history)
    wait = DataWait()
    while this.step < this.total:
        with wait.timing():
            batch, next_position = next(batches)
        losses.add(this.step + 1, this.stage.train_step(batch, this.step))
        this.step, run.position, run.taken = this.step + 1, next_position, run.taken + 1
        logging_now = this.step % int(tc.log_every) == 0
        validating = this.step % int(tc.val_every) == 0 or this.step == this.total
        saving = this.step % int(tc.ckpt_every) == 0
        # Agreed by all ranks, so they leave at the same step.
        stopping = distributed.any_rank(stop.requested(run.taken))
        if logging_now or validating or saving or stopping:
            losses.settle()
        if logging_now:
            _warn_if_waiting_for_data(run, this, wait)
        ctx.logger.step(this.step, losses.latest)
        if ctx.is_main and logging_now:
            ctx.logger.scalars(this.name, losses.latest, this.step)
        if validating and ctx.is_main:
            _validate(run, this)
        if ctx.is_main and (saving or stopping):
            run.result.checkpoint = save(run, this)
        if stopping:
            if not ctx.is_main:
                run.result.checkpoint = None
            return False
    return True


def save(run: Run, this: StageRun, which: str = "last") -> Path:
    """Write the run's state in ``this`` stage to ``last.ckpt`` (or ``best.ckpt``)."""
    ctx = run.ctx
    ckpt = Checkpoint(
        config=ctx.cfg,
        stage=this.name,
        step=this.step,
        model=ctx.model.state_dict(),
        done=list(run.result.done),
        stage_state=this.stage.state_dict(),
        data=run.position,
        world_size=ctx.world_size,
        rng=ckpt_io.rng_state(),
        best=this.best,
        info=dict(ctx.info),
        provenance=provenance(ctx),
    )
    return ckpt.save(ckpt_io.run_file(ctx.run_dir, which))


def provenance(ctx: TrainContext) -> Provenance:
    """This run's provenance: the versions, the dataset, the online augmentation plan."""
    plan = ctx.data.dataset.augment
    return Provenance.current(dataset=str(Path(ctx.data.source.path).resolve()), augment=plan.to_dict() if plan is not None else None)


class StopRequest:
    """Whether to stop after the current step: Ctrl-C, or ``stop_after`` steps taken.

    The first Ctrl-C asks the loop to save and stop after the current step; a
    second one interrupts immediately (the previous checkpoint stays)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.ctrl_c = False
        self._previous: Any = None

    def requested(self, taken: int) -> bool:
        return self.ctrl_c or (self.stop_after is not None and taken >= self.stop_after)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.ctrl_c:
            raise KeyboardInterrupt
        self.ctrl_c = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class LossWindow:
    """The step losses of one stage on their way to the host and the logs.

    Losses stay on the device between settles (see pending.py): the host never
    waits for the GPU inside a step. :meth:`settle` brings them over, averaged over
    the ranks, through the NaN guard, into ``history``. ``latest`` is the latest
    value of every loss: stage 2 alternates discriminator and decoder steps, whose
    losses differ; the merged view shows both (logging only the step's own would
    drop one side whenever log_every and disc_every share a factor)."""

    def __init__(self, stage: str, run_dir: Path, history: list[tuple[str, int, dict[str, float]]]) -> None:
        self.stage, self.run_dir, self.history = stage, run_dir, history
        self.pending = PendingLosses()
        self.latest: dict[str, float] = {}

    def add(self, step: int, losses: Mapping[str, Any]) -> None:
        self.pending.add(step, losses)

    def settle(self) -> None:
        for step, losses in _reduce_window(self.pending.flush()):
            check_finite(self.stage, step, losses, self.run_dir)
            self.history.append((self.stage, step, losses))
            self.latest.update(losses)


def check_finite(stage: str, step: int, losses: Mapping[str, float], run_dir: Path) -> None:
    """The NaN guard: TrainingDiverged naming the stage, step and loss."""
    for k, v in losses.items():
        if not math.isfinite(v):
            where = ckpt_io.run_file(run_dir)
            kept = f"the last good checkpoint {where} is kept" if where.exists() else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"stage {stage} step {step}: loss {k} is {v}; training stopped and {kept}. "
                f"Lower the learning rate (--set train.lr=...) or check the dataset for broken audio"
            )


def _reduce_window(window: list[tuple[int, dict[str, float]]]) -> list[tuple[int, dict[str, float]]]:
    """Each step's losses averaged over the ranks, in one collective for the whole
    window (every rank settles at the same steps, with the same keys)."""
    flat = distributed.reduce_mean({f"{i:09d}/{k}": v for i, (_, losses) in enumerate(window) for k, v in losses.items()})
    return [(s, {k: flat[f"{i:09d}/{k}"] for k in losses}) for i, (s, losses) in enumerate(window)]


def _validate(run: Run, this: StageRun) -> None:
    """Validation metrics to the logs; a lower spectral distance writes best.ckpt."""
    metrics = this.stage.validate()
    if not metrics:
        return
    log = run.ctx.logger
    log.scalars(f"{this.name}/validation", metrics, this.step)
    this.stage.log_media(this.step)
    value = metrics.get("spectral_distance")
    improved = value is not None and (this.best is None or value < this.best)
    if improved:
        this.best = value
        run.result.checkpoint = save(run, this, "best")
    shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    log.info(f"{this.name} step {this.step}: validation {shown}{'  (best)' if improved else ''}")


def _warn_if_waiting_for_data(run: Run, this: StageRun, wait: DataWait) -> None:
    from rave_model.data import usable_cores

    warning = wait.window_warning(run.ctx.data.workers(run.ctx.device), cores=usable_cores())
    if warning:
        run.ctx.logger.info(f"{this.name} step {this.step}: {warning}")


def _log_start(run: Run, dataset: Path | str, precision: str, notes: list[str]) -> None:
    """What the run is about to do: the model, the data, the precision, and for a
    resumed run where it stands (and whether its inputs changed)."""
    from rave_model.model import count_parameters

    ctx, log, resume = run.ctx, run.ctx.logger, run.resume
    cfg, data, dev = ctx.cfg, ctx.data, ctx.device
    counts = count_parameters(ctx.model)
    log.info(f"RAVE: {human_count(counts['total'])} parameters (encoder {human_count(counts['encoder'])}, decoder {human_count(counts['decoder'])}) on {dev}")
    log.info(f"dataset {dataset}: {len(data.train_idx)} training / {len(data.val_idx)} validation examples, {data.source.sr} Hz, {data.source.channels} ch")
    log.info(f"precision {precision}{', compiled' if cfg.train.compile else ''}; {data.workers(dev)} data loader worker(s)")
    for note in notes:
        log.info(note)
    if resume is None:
        if ctx.is_main:
            log.text("config", "```\n" + to_toml(cfg.to_dict()) + "\n```")
        return
    log.info(f"resuming {ctx.run_dir}: stage {resume.stage}, step {resume.step}, done: {', '.join(resume.done) or '-'}")
    before = resume.provenance
    if before is not None and before.dataset is not None:  # a trained run (an imported one has no dataset)
        now = provenance(ctx)
        for key, what in (("dataset", "dataset"), ("augment", "augmentation plan (--augment-config)")):
            if getattr(before, key) != getattr(now, key):
                log.info(f"note: this run started with another {what}; continuing with the one given now")
