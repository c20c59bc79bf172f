from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tests run the real commands from the project's venv.
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return BIN


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    # The machine has 2 cores; keep torch from oversubscribing in subprocesses.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
