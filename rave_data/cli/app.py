"""The ``ravedata`` Typer application. Command modules decorate onto ``app``."""
from __future__ import annotations

import typer

app = typer.Typer(
    name="ravedata",
    help="Prepare audio datasets for RAVE: decode, clean, augment, audit, write LMDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Docstrings are hard-wrapped at 100 columns: let the help re-flow them.
    rich_markup_mode="markdown",
)


@app.callback()
def _root() -> None:
    """Keeps Typer in sub-command mode even while only one command exists."""


@app.command("version")
def version() -> None:
    """Print the version."""
    from rave_data import __version__

    typer.echo(f"ravedata {__version__}")
