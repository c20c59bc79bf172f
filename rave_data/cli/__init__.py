"""The ``ravedata`` command: :func:`main` is its console-script entry point.

Each command lives in its own thin module whose top-level imports stay light
(no numpy, torch or pedalboard): the library is imported inside the command
function. :mod:`rave_data.cli.app` assembles them into the Typer application.

This module imports no more than ``sys``: importing it (as the console-script
launcher does, and multiprocessing does again in each ``prep`` worker, see
:func:`main`) costs next to nothing.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run ``ravedata`` with ``argv`` (default: ``sys.argv[1:]``).

    ``ravedata prep ...`` starts the workers' fork server before anything
    else, even before Typer is imported: the server is a fresh interpreter
    that imports the pipeline before it can fork the first worker, and
    started here that start-up overlaps importing Typer and parsing the
    options instead of following them (figures in docs/prep.md, "Start-up").
    The driver finds it running. Never for ``--help``; a run that then has
    nothing to do (bad options, no sources) costs the server's CPU time on
    another core, not wall time.

    multiprocessing re-runs a ``__main__`` known only by its file (the
    console-script launcher) in every worker, as ``__mp_main__``: harmless
    and cheap here, because the launcher only imports this module. So the
    launcher's ``__main__`` is left as it is (no ``__spec__`` to fake).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["prep"] and not {"--help", "-h"} & set(args):
        from rave_data.prep.pool import start_worker_server

        try:
            start_worker_server(augment="--augment" in args)
        except Exception:  # noqa: BLE001 - only a head start: the driver starts it again and reports
            pass

    from rave_data.cli.app import app

    app(args=args, prog_name="ravedata")
