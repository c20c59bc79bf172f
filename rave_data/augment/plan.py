"""Augmentation plans: which augmenters, how likely, over which parameter ranges.

A plan file is TOML::

    min_steps = 1                 # optional: redraw until a chain has this many steps

    [[steps]]
    name = "pitch_shift"          # an installed augmenter (see `ravedata plugins`), or plugin:name
    probability = 0.5             # chance this step is in a given variant
    params = { semitones = [-2.0, 2.0] }   # [low, high] range, a fixed value, or choices

Steps run in the order written. ``Plan.sample(rng)`` turns the plan into a
concrete :class:`~rave_data.augment.chain.Chain` using only ``rng``.
"""
from __future__ import annotations

import hashlib
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rave_data.augment.chain import Chain, ChainStep
from rave_data.augment.contract import AugmentError, Augmenter
from rave_data.plugins import error_line

#: How many times sample() redraws to honour min_steps before giving up on it.
_MAX_REDRAWS = 64


@dataclass(frozen=True)
class Step:
    augmenter: Augmenter  # configured with the plan's ranges
    plugin: str
    probability: float

    @property
    def name(self) -> str:
        return self.augmenter.name


class Plan:
    """A list of steps. Picklable (plain objects), so it can go to DataLoader workers."""

    def __init__(self, steps: Sequence[Step], min_steps: int = 0, source: str = "") -> None:
        self.steps = list(steps)
        self.min_steps = min(min_steps, len(self.steps))
        self.source = source

    def __repr__(self) -> str:
        inner = ", ".join(f"{s.name}@{s.probability:g}" for s in self.steps)
        return f"Plan([{inner}], min_steps={self.min_steps})"

    def sample(self, rng: np.random.Generator) -> Chain:
        """A concrete chain drawn from ``rng`` (each step kept with its probability)."""
        chain = Chain()
        for _ in range(_MAX_REDRAWS):
            chain = Chain(
                ChainStep(s.augmenter, s.plugin, _sampled(s, rng))
                for s in self.steps
                if rng.random() < s.probability
            )
            if len(chain) >= self.min_steps:
                break
        return chain

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_steps": self.min_steps,
            "steps": [
                {
                    "name": s.name,
                    "plugin": s.plugin,
                    "probability": s.probability,
                    "params": {k: list(v) if isinstance(v, tuple) else v for k, v in s.augmenter.settings.items()},
                }
                for s in self.steps
            ],
        }


def _sampled(step: Step, rng: np.random.Generator) -> dict[str, Any]:
    """``step``'s parameters drawn from ``rng``; a plugin's failing ``sample()``
    becomes an AugmentError naming it, with its traceback."""
    try:
        return step.augmenter.sample(rng)
    except Exception as exc:
        err = AugmentError(step.plugin, step.name, f"sample() raised {error_line(exc)}")
        err.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        raise err from exc


def parse_plan(data: Mapping[str, Any], source: str = "<plan>") -> Plan:
    """Build a plan from parsed TOML/JSON data; ValueError names ``source`` and the problem."""
    from rave_data.augment.registry import get_registry

    reg = get_registry()
    unknown_keys = sorted(set(data) - {"steps", "min_steps"})
    if unknown_keys:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown_keys)} (expected steps, min_steps)")
    raw_steps = data.get("steps", [])
    if not isinstance(raw_steps, list) or not all(isinstance(s, Mapping) for s in raw_steps):
        raise ValueError(f"{source}: 'steps' must be a list of tables ([[steps]])")
    entries, problems = [], {}
    for raw in raw_steps:
        name = raw.get("name")
        try:
            if not isinstance(name, str):
                raise ValueError(reg.unknown_message(str(name)))
            entries.append(reg.get(name))
        except ValueError as exc:
            problems.setdefault(str(name), str(exc))
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems[n] for n in sorted(problems)))
    steps = []
    for i, (raw, entry) in enumerate(zip(raw_steps, entries), 1):
        where = f"{source}: step {i} ({raw['name']})"
        extra = sorted(set(raw) - {"name", "probability", "params"})
        if extra:
            raise ValueError(f"{where}: unknown key(s) {', '.join(extra)} (expected name, probability, params)")
        p = raw.get("probability", 1.0)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"{where}: probability must be a number in [0, 1], got {p!r}")
        params = raw.get("params", {})
        if not isinstance(params, Mapping):
            raise ValueError(f"{where}: params must be a table")
        try:
            aug = entry.cls(**params)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        steps.append(Step(aug, entry.plugin, float(p)))
    min_steps = data.get("min_steps", 0)
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 0:
        raise ValueError(f"{source}: min_steps must be a non-negative integer, got {min_steps!r}")
    return Plan(steps, min_steps=min_steps, source=source)


def _read_toml(text: str, source: str) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: not valid TOML: {exc}") from None


def load_plan(path: Path | str) -> Plan:
    """Read a plan file (TOML). ValueError names the file and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read plan: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    return parse_plan(_read_toml(text, str(path)), source=str(path))


def default_plan_text() -> str:
    return resources.files("rave_data.augment").joinpath("default_plan.toml").read_text(encoding="utf-8")


def default_plan() -> Plan:
    """The plan ``prep --augment`` uses without ``--augment-config`` (docs/augmentation.md)."""
    return parse_plan(_read_toml(default_plan_text(), "default plan"), source="default plan")


def variant_rng(seed: int, source_id: str, variant_index: int) -> np.random.Generator:
    """The generator for one variant of one source.

    Derived from a hash of (seed, source id, variant index) alone, so the chain
    a variant gets never depends on how many workers ran or in which order.
    """
    digest = hashlib.blake2b(f"{seed}\x00{source_id}\x00{variant_index}".encode(), digest_size=16).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest, "little")))
