"""``ravedata preview FILE``: hear and see an augmentation plan before running it.

A thin wrapper over :func:`rave_data.augment.preview.preview`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def preview(
    file: Path = typer.Argument(..., help="An audio file to augment.", show_default=False),
    augment_config: Optional[Path] = typer.Option(
        None, "--augment-config", help="Plan TOML (default: the built-in plan used by prep --augment)."
    ),
    n: int = typer.Option(4, "-n", "--variants", min=1, max=99, help="How many augmented versions to write."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same variants)."),
    out: Optional[Path] = typer.Option(
        None, "-o", "--out", help="Output folder. Default: ./preview-STEM, STEM being FILE's name without "
        "its extension (voice.wav -> ./preview-voice).", show_default=False
    ),
    start: float = typer.Option(0.0, "--start", min=0.0, help="Excerpt start, in seconds."),
    seconds: float = typer.Option(20.0, "--seconds", min=0.0, help="Excerpt length in seconds (0 = whole file)."),
    show_traceback: bool = typer.Option(
        False, "--traceback", "-v", help="For a variant an augmenter failed on: its sampled chain and full traceback."
    ),
) -> None:
    """Write N augmented versions of FILE (STEM.augNN.wav, 24-bit), a
    spectrogram image (STEM.preview.png: the original on top, then each
    version in order, on one time axis in seconds, log frequency in Hz and one
    dB colour scale) and the chains applied (STEM.preview.json). A version an
    augmenter fails on is drawn as an empty labelled panel and reported (exit
    status 1); the others are still written. Exit status 2: FILE or the plan
    cannot be used."""
    from rave_data.io.audioinfo import DecodeError
    from rave_data.augment import default_plan, load_plan
    from rave_data.augment.preview import preview as run_preview
    from rave_data.augment.registry import get_registry

    reg = get_registry()
    for warning in [*map(str, reg.errors), *reg.notes]:
        typer.echo(f"ravedata preview: warning: {warning}", err=True)
    try:
        plan = load_plan(augment_config) if augment_config else default_plan()
        result = run_preview(file, plan, out or Path(f"preview-{file.stem}"), n=n, seed=seed,
                             start=start, seconds=seconds)
    except (DecodeError, ValueError, OSError) as e:
        # An unreadable FILE, a bad plan, an excerpt past the end: bad input.
        typer.echo(f"ravedata preview: error: {e}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("ravedata preview: interrupted", err=True)
        raise typer.Exit(130) from None
    failed = dict(result.failures)
    for i, (audio, chain) in enumerate(zip(result.audio, result.chains), 1):
        if audio is not None:
            typer.echo(f"{audio}: {chain.describe()}")
        else:
            typer.echo(f"variant {i:02d} not written: {chain.describe()}")
    typer.echo(f"{result.image}: spectrograms, top to bottom: original, "
               + ", ".join(f"{file.stem}.aug{i:02d}" + (" (failed)" if i in failed else "")
                           for i in range(1, len(result.chains) + 1)))
    for i, exc in result.failures:
        if show_traceback:
            typer.echo(f"ravedata preview: variant {i}: {exc.debug_text()}", err=True)
        else:
            typer.echo(f"ravedata preview: error: variant {i}: {exc}", err=True)
    if result.failures:
        if not show_traceback:
            typer.echo("ravedata preview: --traceback shows each failing chain and its traceback", err=True)
        raise typer.Exit(1)
