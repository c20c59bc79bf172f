"""Fake installed distributions for plugin tests: a module plus a ``*.dist-info``
folder with ``entry_points.txt``, exactly what pip leaves in site-packages, so
the real entry-point machinery finds them once the folder is on the path."""
from __future__ import annotations

import textwrap
from pathlib import Path


def make_dist(where: Path, dist: str, ep_name: str, module: str, code: str, version: str = "0.2") -> None:
    """``where/module.py`` + ``where/<dist>-<version>.dist-info`` declaring ``[ravedata] ep_name = module``."""
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{module}.py").write_text(textwrap.dedent(code))
    info = where / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[ravedata]\n{ep_name} = {module}\n")
