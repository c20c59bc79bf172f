"""``ravemodel fit``: train a RAVE model on a ``ravedata prep`` dataset.

A thin wrapper over :func:`rave_model.train.runner.fit`; torch is imported
inside the command so ``ravemodel --help`` stays instant.
"""
from __future__ import annotations

from pathlib import Path

import typer

from rave_model.cli.app import app


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
    from rave_model.data import DatasetError
    from rave_model.train.runner import ConfigMismatch, TrainingDiverged, fit

    if run is None:
        run = Path("runs") / f"{dataset.resolve().name}-{Path(preset).stem}"
    if augment_config is not None and not augment_config.is_file():
        _fail(f"{augment_config}: no such augmentation plan")
    if precision is not None:
        if precision not in ("auto", "32", "bf16", "16-mixed"):
            typer.echo(f"error: --precision {precision}: choose auto, 32, bf16 or 16-mixed", err=True)
            raise typer.Exit(2)
        overrides = [*overrides, f'train.precision="{precision}"']
    if compile is not None:
        overrides = [*overrides, f"train.compile={'true' if compile else 'false'}"]
    if nproc > 1:
        import sys

        from rave_model.train.launch import relaunch

        raise typer.Exit(relaunch(nproc, sys.argv))
    from rave_model.train.distributed import ranks_from_env
    from rave_model.train.failures import exit_now, worker_errors

    # OSError: an unreadable dataset file, a full disk while saving (the
    # previous checkpoint stays, see checkpoint.save_atomic).
    expected = (DatasetError, ConfigMismatch, TrainingDiverged, ValueError, OSError)
    try:
        # Records a failure for the --nproc launcher (or torchrun) to name its rank.
        with worker_errors(expected):
            result = fit(dataset, run, preset=preset, overrides=overrides, device=device, augment_config=augment_config, stop_after=max_steps)
    except expected as exc:
        _fail(str(exc))
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError and its MPS/CPU cousins
        if "out of memory" not in str(exc).lower():
            raise
        _fail(f"out of memory on {device}: lower --set train.batch_size or data.n_signal (the last checkpoint is kept)")
    except KeyboardInterrupt:
        typer.echo("interrupted; the last checkpoint is kept", err=True)
        raise typer.Exit(130) from None
    rank, world = ranks_from_env()[:2]
    code = 130 if result.stopped and result.interrupted else 0
    if not result.stopped and rank == 0:
        typer.echo(f"training complete: {', '.join(result.done)} -> {result.checkpoint}")
    if world > 1:
        exit_now(code)  # everything is saved and the group torn down (see exit_now)
    if code:
        raise typer.Exit(code)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
