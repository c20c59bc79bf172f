"""``ravedata preview FILE``: hear and see an augmentation plan before running it.

A thin wrapper over :func:`rave_data.augment.preview.preview`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rave_data.cli.app import app


@app.command("preview")
def preview(
    file: Path = typer.Argument(..., help="An audio file to augment.", show_default=False),
    augment_config: Optional[Path] = typer.Option(
        None, "--augment-config", help="Plan TOML (default: the built-in plan used by prep --augment)."
    ),
    n: int = typer.Option(4, "-n", "--variants", min=1, max=99, help="How many augmented versions to write."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same variants)."),
    out: Optional[Path] = typer.Option(
        None, "-o", "--out", help="Output folder (default: ./preview-<file stem>).", show_default=False
    ),
    start: float = typer.Option(0.0, "--start", min=0.0, help="Excerpt start, in seconds."),
    seconds: float = typer.Option(20.0, "--seconds", min=0.0, help="Excerpt length in seconds (0 = whole file)."),
) -> None:
    """Write N augmented versions of FILE (STEM.augNN.wav, 24-bit), a
    spectrogram image (STEM.preview.png: the original on top, then each
    version in order) and the chains applied (STEM.preview.json)."""
    from rave_data.audioinfo import DecodeError
    from rave_data.augment import AugmentError, default_plan, load_plan
    from rave_data.augment.preview import preview as run_preview
    from rave_data.augment.registry import get_registry

    for err in get_registry().errors:
        typer.echo(f"ravedata preview: warning: {err}", err=True)
    try:
        plan = load_plan(augment_config) if augment_config else default_plan()
        result = run_preview(file, plan, out or Path(f"preview-{file.stem}"), n=n, seed=seed,
                             start=start, seconds=seconds)
    except (DecodeError, ValueError, AugmentError, OSError) as e:
        typer.echo(f"ravedata preview: error: {e}", err=True)
        raise typer.Exit(1) from None
    for audio, chain in zip(result.audio, result.chains):
        typer.echo(f"{audio}: {chain.describe()}")
    typer.echo(f"{result.image}: spectrograms, top to bottom: original, " + ", ".join(a.stem for a in result.audio))
