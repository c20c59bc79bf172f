"""Command line entry point. Each command lives in its own thin module.

Command modules must keep their top-level imports light (no torch, no
pedalboard): import the library inside the command function.
"""
from __future__ import annotations

from rave_data.cli.app import app

# Importing a module registers its command(s) on ``app``.
from rave_data.cli import prep, duration, plugins, preview  # noqa: E402,F401


def main() -> None:
    app()
