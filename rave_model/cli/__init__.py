"""``ravemodel`` entry point. Each command lives in its own thin module; keep
their top-level imports light and import torch inside the command."""
from __future__ import annotations

from rave_model.cli.app import app

from rave_model.cli import fit, export, tools  # noqa: E402,F401
from rave_model.cli import import_  # noqa: E402,F401


def main() -> None:
    app()
