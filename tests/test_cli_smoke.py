"""Both commands exist, answer --help fast and never import torch at start-up."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module, heavy", [
    ("rave_data.cli.app", ("torch", "torchaudio", "pedalboard")),
    ("rave_model.cli", ("torch", "torchaudio")),
])
def test_help_does_not_import_torch(module, heavy):
    code = (
        f"import sys; from typer.testing import CliRunner; from {module} import app;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        f"bad = [m for m in {heavy!r} if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ravemodel_bad_usage_exits_2_with_one_line(bin_dir, tmp_path):
    for args, needle in (
        (["export", str(tmp_path / "no-run")], "no-run"),
        (["import", str(tmp_path / "no-source"), str(tmp_path / "run")], "no-source"),
        (["export", str(tmp_path), "--fidelity", "2"], "--fidelity"),
        (["no-such-command"], "no-such-command"),
    ):
        out = subprocess.run([str(bin_dir / "ravemodel"), *args], capture_output=True, text=True)
        assert out.returncode == 2, (args, out.stderr)
        assert needle in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_versions(bin_dir):
    for cmd in ("ravedata", "ravemodel"):
        out = subprocess.run([str(bin_dir / cmd), "version"], capture_output=True, text=True, check=True)
        assert out.stdout.startswith(cmd + " 0.")
