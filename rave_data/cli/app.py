"""The ``ravedata`` Typer application. Command modules decorate onto ``app``."""
from __future__ import annotations

import sys
from pathlib import Path


def _launched_as_command() -> bool:
    """True in the process the installed ``ravedata`` launcher (or ``python -m
    rave_data``) started; False where this module is merely imported (tests,
    a worker process: their ``__main__`` is something else)."""
    main = sys.modules.get("__main__")
    return Path(getattr(main, "__file__", None) or "").name in ("ravedata", "__main__.py") and \
        Path(sys.argv[0]).name in ("ravedata", "__main__.py")


def _prestart_prep_workers(argv: list[str]) -> None:
    """``ravedata prep ...``: start prep's worker fork server before Typer is
    even imported.

    The server is a fresh interpreter that imports the pipeline (numpy,
    soundfile, the resampler: ~0.2 s) before it can fork the first worker.
    Started here, that overlaps importing Typer and parsing the options
    (~0.15 s: Typer builds a pydantic adapter per option) instead of
    following them; prep() finds it running. Never for ``--help``. A run that
    then has nothing to do (bad options, no sources, nothing changed) wastes
    the server's start-up CPU on another core, not wall time.

    Also marks pip's launcher script as the ``rave_data.__main__`` module:
    multiprocessing re-runs a ``__main__`` known only by its file in every
    new worker (Python 3.11's fork server never preloads it: it passes the
    path under a key its ``main()`` does not read), which here means
    importing Typer and every command once per worker (~0.06 s each) for
    nothing: the launcher holds no code a worker needs. A ``__main__`` known
    by a ``*.__main__`` module name is never re-run, as with ``python -m``.
    """
    if len(argv) < 2 or argv[1] != "prep" or not _launched_as_command():
        return
    if "--help" in argv or "-h" in argv:
        return
    main = sys.modules["__main__"]
    if main.__spec__ is None:
        from importlib.machinery import ModuleSpec

        main.__spec__ = ModuleSpec("rave_data.__main__", None)
    from rave_data.prep import start_worker_server

    try:
        start_worker_server(augment="--augment" in argv)
    except Exception:  # noqa: BLE001 - only a head start: prep() starts it again and reports
        pass


_prestart_prep_workers(sys.argv)

import typer  # noqa: E402  (after the fork server is on its way)

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
