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


def write_project(where: Path, dist: str, ep_name: str, module: str, code: str, version: str = "0.1.0") -> Path:
    """A real plugin project (pyproject.toml + one module) in ``where``, ready for pip."""
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{module}.py").write_text(textwrap.dedent(code))
    (where / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "{version}"
        dependencies = ["ravedata"]

        [project.entry-points.ravedata]
        {ep_name} = "{module}"

        [tool.setuptools]
        py-modules = ["{module}"]
        """))
    return where


def pip_install(target: Path, *projects: Path, editable: bool = False) -> None:
    """``pip install --target`` (offline, no dependencies: ravedata is the
    running one). Several projects go in one pip call. ``editable``: PEP 660
    editable installs; pip's import hook for them only runs from site-packages,
    so callers also put each project folder on PYTHONPATH."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
            "--upgrade", "--target", str(target)]
    for p in projects:
        args += ["-e", str(p)] if editable else [str(p)]
    subprocess.run(args, check=True, capture_output=True, timeout=300)
