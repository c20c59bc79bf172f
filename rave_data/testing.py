"""A testing kit for plugin authors: check an augmenter against the contract.

From a plugin's own test suite::

    from rave_data.testing import check_augmenter
    from my_plugin import MyAugmenter

    def test_contract():
        check_augmenter(MyAugmenter)                         # the declared defaults
        check_augmenter(MyAugmenter, settings={"depth": [0.1, 0.9]}, length_preserving=True)

One call runs every check ``prep`` relies on and raises
:class:`AugmenterCheckError` (an ``AssertionError``, so pytest shows it as a
failed assertion) listing *all* the failures, each with the parameters, sample
rate, channel count and length that triggered it:

- the class follows the contract (a name, ``apply``, typed ``Param`` s whose
  defaults respect their own bounds);
- ``sample(rng)`` draws every value inside the declared bounds/choices and
  inside the configured range, uses only the generator it is given (numpy's
  and Python's global random state untouched), and the same seed gives the
  same parameters;
- ``apply`` returns a numpy float32 array ``[channels, m]``, the input's
  channel count, ``m > 0``, only finite samples (silence in included), does
  not modify its input, and gives the same bytes twice for the same
  parameters; with ``length_preserving=True``, ``m == n``;
- the parameters survive the record/replay round trip (JSON, then
  ``check_params``) and the replayed output is identical; when the augmenter
  is installed, ``Chain.to_record`` / ``Chain.from_record`` replays it too;
- the host (``Chain.apply``) accepts the output.
"""
from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rave_data.augment.chain import Chain, ChainStep
from rave_data.augment.contract import AugmentError, Augmenter, validate_class

#: Input lengths tried by default: a last segment can be tiny, a file long.
DEFAULT_LENGTHS = (16, 2205, 22050)
#: Problems listed in the error (all are counted).
MAX_SHOWN = 25


class AugmenterCheckError(AssertionError):
    """The augmenter breaks the contract; ``str()`` lists every failure."""


@dataclass
class CheckReport:
    """What :func:`check_augmenter` ran: the parameters it drew and how many applies."""

    augmenter: str
    draws: list[dict[str, Any]] = field(default_factory=list)
    applies: int = 0
    replayed_through_registry: bool = False
    failures: list[str] = field(default_factory=list)


def _signal(kind: str, channels: int, n: int, sr: int) -> np.ndarray:
    """[channels, n] float32 test input: a tone with a little noise, or silence."""
    if kind == "silence":
        return np.zeros((channels, n), np.float32)
    t = np.arange(n) / sr
    rng = np.random.default_rng(1234)
    x = np.stack([0.4 * np.sin(2 * np.pi * (220.0 * (c + 1)) * t) for c in range(channels)])
    x += 0.05 * rng.standard_normal((channels, n))
    return x.astype(np.float32)


def _within(setting: Any, value: Any) -> bool:
    """``value`` lies inside a validated plan setting (fixed value, range or choices)."""
    if not isinstance(setting, tuple):
        return value == setting
    if setting and isinstance(setting[0], str):
        return value in setting
    lo, hi = setting
    return lo <= value <= hi


def _registered_as(cls: type) -> str | None:
    from rave_data.augment.registry import get_registry

    for entry in get_registry().qualified.values():
        if entry.cls is cls:
            return entry.plugin
    return None


def check_augmenter(
    cls: type[Augmenter],
    *,
    settings: Mapping[str, Any] | None = None,
    sample_rates: Sequence[int] = (44100,),
    channels: Sequence[int] = (1, 2),
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    draws: int = 3,
    seed: int = 0,
    length_preserving: bool | None = None,
) -> CheckReport:
    """Check ``cls`` against the augmenter contract (see the module docstring).

    ``settings``: plan-style settings (``{"param": [lo, hi]}`` or values) the
    augmenter is configured with; default: its declared defaults.
    ``draws`` parameter sets are sampled, each applied to every combination
    of ``sample_rates`` x ``channels`` x ``lengths`` (a tone, plus silence).
    ``length_preserving``: True to require ``m == n``, False or None to allow
    any length. Returns a :class:`CheckReport`; raises
    :class:`AugmenterCheckError` listing every failure.
    """
    report = CheckReport(getattr(cls, "name", repr(cls)))
    fail = report.failures.append
    try:
        validate_class(cls)
        aug = cls(**dict(settings or {}))
    except (ValueError, TypeError) as exc:
        raise AugmenterCheckError(f"{report.augmenter}: {exc}") from None
    name = cls.name

    # Sampling: inside the bounds, from the given generator only, repeatable.
    np_state, py_state = np.random.get_state(), random.getstate()
    params_list = []
    for d in range(draws):
        before = len(report.failures)
        try:
            p = aug.sample(np.random.default_rng([seed, d]))
            again = aug.sample(np.random.default_rng([seed, d]))
        except Exception as exc:  # noqa: BLE001 - reported, with the others
            fail(f"{name}: sample(rng) raised {type(exc).__name__}: {exc}")
            continue
        if p != again:
            fail(f"{name}: sample() with the same seed gave {p} then {again}")
        for param in cls.params:
            if param.name not in p:
                fail(f"{name}: sample() did not give parameter {param.name!r}")
                continue
            try:
                param.check_value(p[param.name])
            except ValueError as exc:
                fail(f"{name}: sample() drew a value the declaration refuses: {exc}")
                continue
            if not _within(aug.settings[param.name], p[param.name]):
                fail(f"{name}: sample() drew {param.name}={p[param.name]!r}, outside the configured "
                     f"{aug.settings[param.name]!r}")
        unknown = sorted(set(p) - {q.name for q in cls.params})
        if unknown:
            fail(f"{name}: sample() gave undeclared parameter(s) {', '.join(unknown)}")
        if len(report.failures) == before:  # apply is only tried with parameters the contract allows
            params_list.append(p)
    if not _same_state(np_state, np.random.get_state()) or py_state != random.getstate():
        fail(f"{name}: sample() used global random state (np.random.* or random.*); use the rng it is given")
    report.draws = params_list

    plugin = _registered_as(cls)
    for p in params_list:
        for sr in sample_rates:
            for c in channels:
                for n in lengths:
                    for kind in ("tone", "silence") if n == max(lengths) else ("tone",):
                        where = f"{name}({_fmt(p)}) at {sr} Hz, {c} channel(s), {n} samples of {kind}"
                        _check_apply(aug, p, _signal(kind, c, n, sr), sr, where, length_preserving, plugin, report)
    if report.failures:
        unique = list(dict.fromkeys(report.failures))
        shown = unique[:MAX_SHOWN] + ([f"... and {len(unique) - MAX_SHOWN} more"] if len(unique) > MAX_SHOWN else [])
        raise AugmenterCheckError(f"{name} breaks the augmenter contract ({len(unique)} problem(s)):\n- "
                                  + "\n- ".join(shown))
    return report


def _same_state(a: Any, b: Any) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and tuple(a[2:]) == tuple(b[2:])


def _fmt(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _check_apply(aug: Augmenter, params: dict[str, Any], x: np.ndarray, sr: int, where: str,
                 length_preserving: bool | None, plugin: str | None, report: CheckReport) -> None:
    fail = report.failures.append
    before = x.copy()
    try:
        y = aug.apply(x, sr, **params)
        report.applies += 1
    except Exception as exc:  # noqa: BLE001 - reported, with the others
        fail(f"{where}: apply() raised {type(exc).__name__}: {exc}")
        return
    if not np.array_equal(x, before):
        fail(f"{where}: apply() modified its input in place (return a new array)")
    if not isinstance(y, np.ndarray):
        fail(f"{where}: apply() returned {type(y).__name__}, expected a numpy array")
        return
    if y.ndim != 2:
        fail(f"{where}: apply() returned shape {y.shape}, expected [channels, m]")
        return
    if y.shape[0] != x.shape[0]:
        fail(f"{where}: apply() changed the channel count from {x.shape[0]} to {y.shape[0]}")
    if y.shape[1] == 0:
        fail(f"{where}: apply() returned empty audio")
    if y.dtype != np.float32:
        fail(f"{where}: apply() returned dtype {y.dtype}, expected float32")
    if np.issubdtype(y.dtype, np.number) and not np.isfinite(y).all():
        fail(f"{where}: apply() returned NaN or infinite samples")
    if length_preserving and y.shape[1] != x.shape[1]:
        fail(f"{where}: apply() changed the length from {x.shape[1]} to {y.shape[1]} (length_preserving=True)")
    # Record/replay: the parameters as the manifest holds them (JSON), validated
    # as prep replays them; applying them again also checks determinism.
    try:
        replayed = type(aug).check_params(json.loads(json.dumps(params)))
    except (TypeError, ValueError) as exc:
        fail(f"{where}: parameters do not survive the record round trip: {exc}")
        return
    if replayed != params:
        fail(f"{where}: parameters replay as {replayed}, recorded {params}")
        return
    try:
        y2 = aug.apply(before.copy(), sr, **replayed)
    except Exception as exc:  # noqa: BLE001
        fail(f"{where}: apply() raised on a second call with the same parameters: {type(exc).__name__}: {exc}")
        return
    if not _identical(y, y2):
        fail(f"{where}: apply() is not deterministic: two calls with the same (replayed) parameters differ")
    # Through the host, as prep applies it (no peak scaling: compare the raw
    # output); when installed, through the chain record as the manifest keeps it.
    chain = Chain([ChainStep(aug, plugin or "(not installed)", params)])
    if plugin is not None:
        record = json.loads(json.dumps(chain.to_record()))
        try:
            chain = Chain.from_record(record)
        except ValueError as exc:
            fail(f"{where}: Chain.from_record({record}) failed: {exc}")
            return
        report.replayed_through_registry = True
    try:
        host = chain.apply(before.copy(), sr, peak_ceiling=None)
    except AugmentError as exc:
        fail(f"{where}: the host refuses the output: {exc}")
        return
    if not np.array_equal(host, np.asarray(y, dtype=np.float32)):
        fail(f"{where}: replayed through " + ("Chain.from_record(to_record())" if plugin else "Chain.apply")
             + " it gives other audio")


def _identical(a: Any, b: Any) -> bool:
    return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape \
        and a.dtype == b.dtype and a.tobytes() == b.tobytes()
