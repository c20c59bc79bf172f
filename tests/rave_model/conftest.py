"""Fixtures shared by the training tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.rave_model.datasets import tiny_examples, write_dataset


@pytest.fixture
def one_thread():
    """Training steps on one torch thread: the 2-core CI machine runs subprocesses beside them."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Ten tiny LMDB examples, written once per test module."""
    return write_dataset(tmp_path_factory.mktemp("data") / "ds", tiny_examples(10))
