"""The ``ravemodel`` Typer application. Command modules decorate onto ``app``."""
from __future__ import annotations

import typer

app = typer.Typer(
    name="ravemodel",
    help="Train RAVE models (VAE, adversarial fine-tuning, prior) and export them for nn~.",
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
    from rave_model import __version__

    typer.echo(f"ravemodel {__version__}")
