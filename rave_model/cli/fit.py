"""``ravemodel fit``: train a RAVE model on a ``ravedata prep`` dataset.

A thin wrapper over :func:`rave_model.train.runner.fit`; torch is imported
inside the command so ``ravemodel --help`` stays instant.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Iterator

import typer

from rave_model.cli.app import app
from rave_model.cli.errors import BAD_INPUT, FAILED, INTERRUPTED


@app.command("fit")
def fit_command(
    dataset: Path = typer.Argument(..., help="Dataset folder made by `ravedata prep` (or acids-rave's preprocess)."),
    preset: str = typer.Option("v2", "--preset", help="v1, v2, v2_small, small, tiny, or a path to a .toml config."),
    run: Path = typer.Option(None, "--run", help="Run folder (checkpoints, TensorBoard). Default: runs/DATASET-PRESET."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    augment_config: Path = typer.Option(None, "--augment-config", help="rave_data augmentation plan (TOML) applied online to training crops."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: --set train.batch_size=4 (repeatable)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop (with a checkpoint) after this many steps of this call; run again to continue."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train with N processes on this machine (DDP: one GPU each with NCCL, or gloo on CPUs); --set train.batch_size is per process. Under torchrun leave it out."),
    precision: str = typer.Option(None, "--precision", help="32, bf16 or 16-mixed (float16 with gradient scaling). Default: the config's train.precision, auto (bf16 on a CUDA GPU that has it, else 32)."),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the encoder, decoder and discriminator (train.compile; pays on a GPU after a minute or two of compilation)."),
) -> None:
    """Train all stages (VAE, adversarial, then any registered later stage) in
    order; running the same command again resumes where it stopped."""
    from rave_model.train.distributed import launched

    if run is None:
        run = Path("runs") / f"{dataset.resolve().name}-{Path(preset).stem}"
    if augment_config is not None and not augment_config.is_file():
        _fail(f"{augment_config}: no such augmentation plan")
    if precision is not None:
        if precision not in ("auto", "32", "bf16", "16-mixed"):
            _fail(f"--precision {precision}: choose auto, 32, bf16 or 16-mixed")
        overrides = [*overrides, f'train.precision="{precision}"']
    if compile is not None:
        overrides = [*overrides, f"train.compile={'true' if compile else 'false'}"]
    if nproc > 1:
        if launched():
            _fail("--nproc starts processes itself; under torchrun leave it out (--nproc-per-node sets the number)")
        from rave_model.train.launch import run_local

        raise typer.Exit(run_local(nproc, ["-m", "rave_model", *_without_option(sys.argv[1:], "--nproc")]))
    with _sigterm_as_ctrl_c():
        _train(dataset, run, preset, overrides, device, augment_config, max_steps)


def _train(dataset: Path, run: Path, preset: str, overrides: list[str], device: str,
          augment_config: Path | None, max_steps: int | None) -> None:
    """This process's share of the job: :func:`rave_model.train.runner.fit`, its
    errors as one line and an exit status (2 bad input, 1 a failed job, 130
    interrupted). Under torch's launcher the error goes to the launcher, which names
    the rank (see :func:`rave_model.train.launch.exit_with_error`)."""
    import traceback

    from rave_model.train.distributed import ranks_from_env
    from rave_model.train.launch import exit_with_error, leave
    from rave_model.train.runner import TrainingDiverged, fit

    try:
        result = fit(dataset, run, preset=preset, overrides=overrides, device=device, augment_config=augment_config, stop_after=max_steps)
    except KeyboardInterrupt:
        if os.environ.get("TORCHELASTIC_ERROR_FILE") is None:
            typer.echo("interrupted; the last checkpoint is kept", err=True)
        leave(INTERRUPTED)
    # Bad input: DatasetError, ConfigMismatch and a bad config value are ValueErrors.
    except (ValueError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError) as exc:
        exit_with_error(str(exc), BAD_INPUT)
    except TrainingDiverged as exc:
        exit_with_error(str(exc), FAILED)
    except OSError as exc:  # a full disk while saving: the previous checkpoint stays
        exit_with_error(str(exc), FAILED)
    except Exception as exc:
        if "out of memory" in str(exc).lower():  # torch.cuda.OutOfMemoryError and its MPS/CPU cousins
            exit_with_error(f"out of memory on {device}: lower --set train.batch_size or data.n_signal (the last checkpoint is kept)", FAILED)
        exit_with_error(f"{type(exc).__name__}: {exc}", FAILED, traceback.format_exc())
    if not result.stopped and ranks_from_env()[0] == 0:
        typer.echo(f"training complete: {', '.join(result.done)} -> {result.checkpoint}")
    leave(INTERRUPTED if result.stopped and result.interrupted else 0)


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (a scheduler ending the job, torch's launcher passing a signal on) asks
    for the same stop as Ctrl-C: every rank saves and leaves at the same step. Later
    ones are ignored, so a process already stopping finishes saving."""
    fired = False

    def handle(signum: int, frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(BAD_INPUT)
