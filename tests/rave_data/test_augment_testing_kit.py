"""rave_data.testing.check_augmenter: passes what follows the contract, names
each way of breaking it, and is what the plugin packages' own tests use."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rave_data.augment import Augmenter, Param, get_registry
from rave_data.testing import AugmenterCheckError, check_augmenter

ROOT = Path(__file__).resolve().parents[2]


class Good(Augmenter):
    name = "kit_good"
    params = (Param("g", (0.1, 0.9), lo=0.0, hi=1.0), Param("mode", ("a", "b"), kind=str, choices=("a", "b")))

    def apply(self, audio, sr, g=0.5, mode="a"):
        return (audio * np.float32(g if mode == "a" else -g)).astype(np.float32)


def _bad(name: str, **overrides) -> type[Augmenter]:
    return type(name, (Good,), overrides)


def _in_place(self, audio, sr, g=0.5, mode="a"):
    audio *= np.float32(g)
    return audio


def _global_rng(self, rng):
    return {"g": float(np.random.uniform(0.1, 0.9)), "mode": random.choice(["a", "b"])}


def _numpy_scalar(self, rng):
    return {"g": np.float32(rng.uniform(0.1, 0.9)), "mode": "a"}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("overrides,settings,kwargs,needle", [
    ({"sample": _global_rng}, None, {}, "sample() used global random state"),
    ({"sample": lambda self, rng: {"g": 1.5, "mode": "a"}}, None, {}, "g: 1.5 is outside the allowed range [0, 1]"),
    ({"sample": lambda self, rng: {"g": 0.9, "mode": "a"}}, {"g": [0.1, 0.2]}, {}, "drew g=0.9, outside the configured (0.1, 0.2)"),
    ({"sample": _numpy_scalar}, None, {}, "do not survive the record round trip"),
    ({"apply": _in_place}, None, {}, "modified its input in place"),
    ({"apply": lambda self, audio, sr, g=0.5, mode="a": audio * g}, None, {}, "pass"),  # float32 * float: float32
    ({"apply": lambda self, audio, sr, g=0.5, mode="a": audio.astype(np.float64)}, None, {}, "returned dtype float64, expected float32"),
    ({"apply": lambda self, audio, sr, g=0.5, mode="a": audio[:1]}, None, {"channels": (2,)}, "changed the channel count from 2 to 1"),
    ({"apply": lambda self, audio, sr, g=0.5, mode="a": audio / np.abs(audio).max()}, None, {}, "NaN or infinite samples"),
    ({"apply": lambda self, audio, sr, g=0.5, mode="a": (audio + np.random.default_rng().normal(0, 1e-3, audio.shape)).astype(np.float32)},
     None, {}, "not deterministic"),
    ({"apply": lambda self, audio, sr, g=0.5, mode="a": audio[:, :-1].copy()}, None, {"length_preserving": True},
     "changed the length from 16 to 15"),
    ({"apply": lambda self, audio, sr, g=0.5, mode="a": audio[:, 16:].copy()}, None, {}, "16 samples of tone: apply() returned empty audio"),
    ({"apply": lambda self, audio, sr, g=0.5, mode="a": audio.tolist()}, None, {}, "returned list, expected a numpy array"),
])
def test_each_breach_of_the_contract_is_named(overrides, settings, kwargs, needle):
    cls = _bad("Bad", **overrides)
    if needle == "pass":
        report = check_augmenter(cls, settings=settings, **kwargs)
        assert report.applies > 0
        return
    with pytest.raises(AugmenterCheckError) as e:
        check_augmenter(cls, settings=settings, **kwargs)
    assert isinstance(e.value, AssertionError)
    assert needle in str(e.value), str(e.value)
    assert str(e.value).startswith("kit_good breaks the augmenter contract (")


def test_a_class_that_is_not_an_augmenter_is_refused_at_once():
    with pytest.raises(AugmenterCheckError, match="not a subclass of rave_data.augment.Augmenter"):
        check_augmenter(dict)
    with pytest.raises(AugmenterCheckError, match="unknown parameter"):
        check_augmenter(Good, settings={"nope": 1})


def test_a_good_augmenter_passes_and_installed_ones_replay_through_the_registry():
    report = check_augmenter(Good, settings={"g": [0.2, 0.3]}, length_preserving=True)
    assert len(report.draws) == 3 and all(0.2 <= d["g"] <= 0.3 for d in report.draws)
    assert report.applies == 3 * 2 * 4 and not report.replayed_through_registry  # not installed
    installed = check_augmenter(get_registry().get("gain").cls, length_preserving=True)
    assert installed.replayed_through_registry


def test_every_builtin_passes_the_kit():
    for entry in get_registry().qualified.values():
        if entry.builtin:
            check_augmenter(entry.cls, lengths=(16, 2205), draws=2,
                            length_preserving=entry.name != "time_stretch")


@pytest.mark.slow
@pytest.mark.parametrize("package", ["examples/custom-augmenter", "plugins/ravedata-roomverb"])
def test_the_plugin_packages_own_tests_use_the_kit_and_pass(package):
    folder = ROOT / package
    tests = sorted((folder / "tests").glob("test_*.py"))
    assert tests and all("check_augmenter" in t.read_text() for t in tests[:1])
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=folder,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert " passed" in r.stdout and "failed" not in r.stdout
