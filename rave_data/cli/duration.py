"""``ravedata duration``: how much audio is there, in a second.

A thin wrapper over :func:`rave_data.audit.audit`; this module only turns the
result into text (rich tables) or JSON. Top-level imports stay light: the
library, rich and json are imported inside the command.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from rave_data.audit import Audit

#: Width of the longest histogram bar, in characters.
BAR_WIDTH = 40


def duration(
    paths: Optional[list[Path]] = typer.Argument(
        None,
        help="Files or folders to count (default: the current folder).",
        show_default=False,
        metavar="PATHS...",
    ),
    recursive: bool = typer.Option(
        True, "--recursive/--no-recursive", help="Look inside sub-folders (default) or only in the given folders."
    ),
    by_folder: bool = typer.Option(False, "--by-folder", help="Add a row per folder: files and duration."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as one JSON object (nothing else on stdout)."),
) -> None:
    """Count the audio in PATHS: total duration, formats, rates, shortest and
    longest files, a histogram, and any prepared dataset (LMDB) found."""
    from rave_data.audit import MissingPath, audit

    try:
        result = audit(paths or [Path(".")], recursive=recursive)
    except MissingPath as e:
        typer.echo(f"ravedata duration: error: {e}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("ravedata duration: interrupted", err=True)
        raise typer.Exit(130) from None
    if as_json:
        import json

        # Compact on purpose: json.dumps with indent falls back to the pure
        # Python encoder, much slower on large folders. Pipe to jq to read.
        typer.echo(json.dumps(result.to_dict()))
        return
    import sys

    from rich.console import Console

    # Piped output (grep, a log file) must not fold long paths across lines:
    # rich would assume 80 columns; tables only grow as wide as their cells.
    width = None if sys.stdout.isatty() else 1000
    render(result, Console(highlight=False, width=width), by_folder=by_folder)


def render(result: Audit, console: Console, by_folder: bool = False) -> None:
    """Print ``result`` for people: the two familiar lines first, then tables."""
    from rich.markup import escape
    from rich.table import Table

    from rave_data.audit import format_duration

    n = result.found
    # Plain print for the first two lines: a fixed format that scripts grep
    # (docs/duration.md), so no markup, no wrapping.
    console.print(f"Found {n} audio file{'s' if n != 1 else ''}", markup=False, soft_wrap=True)
    console.print(f"total duration: {format_duration(result.total_seconds)}", markup=False, soft_wrap=True)
    if result.unreadable:
        k = len(result.unreadable)
        console.print(f"{k} file{'s' if k != 1 else ''} could not be read (listed below)", markup=False)

    if result.files:
        table = Table(title="By format", title_justify="left")
        for col in ("format", "sample rate", "channels", "files", "duration"):
            table.add_column(col, justify="left" if col == "format" else "right")
        for g in result.groups():
            table.add_row(g.format, f"{g.sr} Hz", str(g.channels), str(g.files), format_duration(g.seconds))
        console.print(table)

        extremes = Table(title="Shortest and longest", title_justify="left")
        extremes.add_column("", justify="left")
        extremes.add_column("duration", justify="right")
        extremes.add_column("file", justify="left", overflow="fold")
        shortest = result.shortest(3)
        # With few files the two lists overlap: show each file once.
        longest = [f for f in result.longest(3) if f not in shortest]
        for label, files in (("shortest", shortest), ("longest", longest)):
            for i, f in enumerate(files):
                extremes.add_row(label if i == 0 else "", _precise(f.seconds), escape(str(f.path)))
        console.print(extremes)

        bins = result.histogram()
        most = max(b.files for b in bins)
        width = max(len(b.label) for b in bins)
        console.print("Durations of files", style="italic")
        for b in bins:
            bar = "█" * max(1 if b.files else 0, round(BAR_WIDTH * b.files / most))
            console.print(f"  {b.label:>{width}}  {bar} {b.files}", markup=False, highlight=False)

    if by_folder and result.files:
        folders = Table(title="By folder", title_justify="left")
        folders.add_column("folder", overflow="fold")
        folders.add_column("files", justify="right")
        folders.add_column("duration", justify="right")
        for d in result.folders():
            folders.add_row(escape(str(d.path)), str(d.files), format_duration(d.seconds))
        console.print(folders)

    for u in result.unreadable:
        console.print(f"unreadable: {u.path}: {u.reason}", markup=False, soft_wrap=True)

    for ds in result.datasets:
        console.print(f"Dataset {ds.path} (made by {ds.made_by})", markup=False, style="bold", soft_wrap=True)
        if ds.error:
            console.print(f"  cannot read it: {ds.error}", markup=False, soft_wrap=True)
            continue
        ch = f"{ds.channels} channel{'s' if ds.channels != 1 else ''}" if ds.channels else "? channels"
        rate = f"{ds.sr} Hz" if ds.sr else "unknown rate"
        if ds.lazy:
            console.print(f"  lazy: {ds.examples} source files referenced", markup=False)
        else:
            per = ""
            if ds.samples_per_example:
                each = f" ({ds.samples_per_example / ds.sr:.2f} s each)" if ds.sr else ""
                per = f" of {ds.samples_per_example} samples{each}"
            console.print(f"  examples: {ds.examples}{per}", markup=False)
        console.print(f"  in the LMDB: {format_duration(ds.seconds)} at {rate}, {ch}", markup=False)
        if ds.original_seconds is not None:
            total = ds.original_seconds + (ds.augmented_seconds or 0.0)
            console.print(
                f"  original {format_duration(ds.original_seconds)}, with augmentation {format_duration(total)}",
                markup=False,
            )


def _precise(seconds: float) -> str:
    # Shortest files are often under a second: whole seconds would hide them.
    return f"{seconds:.2f} s" if seconds < 60 else f"{seconds:.0f} s"
