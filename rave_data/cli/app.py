"""The ``ravedata`` Typer application: one command a module, registered here.

Importing this module builds the application and does nothing else; the
console-script entry point is :func:`rave_data.cli.main`.
"""
from __future__ import annotations

import typer

from rave_data.cli.duration import duration
from rave_data.cli.plugins import plugins
from rave_data.cli.prep import prep_command
from rave_data.cli.preview import preview

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
    """Keeps Typer in sub-command mode whatever the number of commands."""


@app.command("version")
def version() -> None:
    """Print the version."""
    from rave_data import __version__

    typer.echo(f"ravedata {__version__}")


app.command("prep")(prep_command)
app.command("duration")(duration)
app.command("plugins")(plugins)
app.command("preview")(preview)
