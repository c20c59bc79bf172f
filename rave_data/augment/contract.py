"""The augmenter contract every plugin (ours included) follows.

An augmenter is a class with

- a stable ``name`` (what plans and manifests refer to),
- typed ``params``: each a :class:`Param` with a default, bounds and a doc line,
- ``sample(rng) -> params``: draws concrete values from the ranges the plan
  configured, using only the generator it is given (never global state),
- ``apply(audio, sr, **params) -> audio``: deterministic given ``params``;
  audio is ``[channels, n]`` float32, the output ``[channels, m]`` (the length
  may change, the channel count and sample rate never do).

Keeping sampling apart from applying means every applied chain can be written
to the manifest as ``{name, plugin, params}`` and replayed exactly.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import numpy as np

#: A concrete parameter value.
Value = Union[float, int, str, bool]
#: What a plan may give for a parameter: a value, or a range/choices to sample from.
Setting = Union[Value, tuple[Value, ...]]


class AugmentError(Exception):
    """An augmenter failed or misbehaved. ``str()`` names the plugin and the augmenter.

    Raised by :meth:`Chain.apply`, which also fills in the chain being applied
    (``chain``: its record, ``step``: the index of the failing step) and, when
    the augmenter raised, the full traceback (``traceback``): everything
    :meth:`debug_text` prints for ``--traceback``.
    """

    def __init__(self, plugin: str, augmenter: str, reason: str) -> None:
        super().__init__(f"augmenter {augmenter!r} (plugin {plugin!r}): {reason}")
        self.plugin = plugin
        self.augmenter = augmenter
        self.reason = reason
        self.chain: list[dict[str, Any]] | None = None
        self.step: int | None = None
        self.traceback: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes, details included
        return (AugmentError, (self.plugin, self.augmenter, self.reason), self.__dict__)

    def debug_text(self) -> str:
        """Several lines: the sampled chain with the failing step marked, then
        the augmenter's traceback (when it raised)."""
        lines = [str(self)]
        if self.chain is not None:
            lines.append("sampled chain:" if self.chain else "sampled chain: (empty)")
            for i, s in enumerate(self.chain):
                params = ", ".join(f"{k}={v!r}" for k, v in s.get("params", {}).items())
                mark = ">" if i == self.step else " "
                tail = "   <- failed here" if i == self.step else ""
                lines.append(f"{mark} {i + 1}. {s.get('plugin')}:{s.get('name')}({params}){tail}")
        if self.traceback:
            lines.append(self.traceback.rstrip("\n"))
        return "\n".join(lines)


@dataclass(frozen=True)
class Param:
    """One typed parameter.

    ``kind`` is ``float``, ``int``, ``bool`` or ``str``. ``default`` is a value
    (always used) or, for numbers, a ``(lo, hi)`` range sampled per variant, or
    for strings a tuple of choices. ``lo``/``hi`` bound what a plan may ask for;
    ``choices`` lists a string's allowed values. ``log`` samples numbers
    log-uniformly (right for frequencies).
    """

    name: str
    default: Setting
    kind: type = float
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    log: bool = False
    doc: str = ""

    def check_value(self, v: Any) -> Value:
        kind = self.kind
        if kind is str:
            if not isinstance(v, str) or (self.choices and v not in self.choices):
                raise ValueError(f"{self.name}: {v!r} is not one of {list(self.choices)}")
            return v
        if kind is bool:
            if not isinstance(v, bool):
                raise ValueError(f"{self.name}: expected true or false, got {v!r}")
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{self.name}: expected a number, got {v!r}")
        if kind is int and float(v) != int(v):
            raise ValueError(f"{self.name}: expected an integer, got {v!r}")
        v = int(v) if kind is int else float(v)
        if not math.isfinite(v):
            raise ValueError(f"{self.name}: {v!r} is not finite")
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise ValueError(f"{self.name}: {v!r} is outside the allowed range {self.bounds_text()}")
        return v

    def bounds_text(self) -> str:
        if self.choices:
            return "{" + ", ".join(self.choices) + "}"
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"[{lo}, {hi}]"

    def validate(self, setting: Any) -> Setting:
        """A plan setting (value, ``[lo, hi]`` range, or list of choices) checked and normalised."""
        if isinstance(setting, (list, tuple)):
            if self.kind is str:
                if not setting:
                    raise ValueError(f"{self.name}: empty list of choices")
                return tuple(self.check_value(v) for v in setting)
            if self.kind is bool or len(setting) != 2:
                raise ValueError(f"{self.name}: a range is written [low, high], got {list(setting)!r}")
            lo, hi = (self.check_value(v) for v in setting)
            if lo > hi:  # type: ignore[operator]
                raise ValueError(f"{self.name}: range [{lo}, {hi}] has low > high")
            if self.log and lo <= 0:  # type: ignore[operator]
                raise ValueError(f"{self.name}: a log-scaled range must be positive")
            return (lo, hi)
        return self.check_value(setting)

    def sample(self, setting: Setting, rng: np.random.Generator) -> Value:
        """Draw one concrete value from a validated setting."""
        if not isinstance(setting, tuple):
            return setting
        if self.kind is str:
            return setting[int(rng.integers(len(setting)))]
        lo, hi = setting
        if self.kind is int:
            return int(rng.integers(int(lo), int(hi) + 1))
        if self.log:
            return float(math.exp(rng.uniform(math.log(float(lo)), math.log(float(hi)))))
        return float(rng.uniform(float(lo), float(hi)))

    def describe(self) -> dict[str, Any]:
        """JSON-able description for ``ravedata plugins --json``."""
        default = list(self.default) if isinstance(self.default, tuple) else self.default
        return {
            "name": self.name,
            "type": self.kind.__name__,
            "default": default,
            "min": self.lo,
            "max": self.hi,
            "choices": list(self.choices) or None,
            "log": self.log,
            "doc": self.doc,
        }


class Augmenter:
    """Base class for augmenters. Subclasses set ``name``, ``params``, ``apply``.

    An instance holds the plan's settings for each parameter (``self.settings``);
    it is a plain picklable object so plans travel to worker processes.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **settings: Any) -> None:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(known) or '(none)'}"
            )
        self.settings: dict[str, Setting] = {
            p.name: p.validate(settings.get(p.name, p.default)) for p in self.params
        }

    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def sample(self, rng: np.random.Generator) -> dict[str, Value]:
        """Concrete parameters for one application, drawn from ``rng`` only."""
        return {p.name: p.sample(self.settings[p.name], rng) for p in self.params}

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> dict[str, Value]:
        """Validate concrete parameters (e.g. replayed from a manifest record)."""
        known = {p.name: p for p in cls.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{cls.name}: unknown parameter(s) {', '.join(unknown)}")
        out: dict[str, Value] = {}
        for p in cls.params:
            if p.name in params:
                out[p.name] = p.check_value(params[p.name])
            elif not isinstance(p.default, tuple):
                out[p.name] = p.default
            else:
                raise ValueError(f"{cls.name}: missing parameter {p.name}")
        return out

    def apply(self, audio: np.ndarray, sr: int, **params: Any) -> np.ndarray:
        """``audio`` [channels, n] float32 -> [channels, m] float32."""
        raise NotImplementedError

    def fuse(self, params: Mapping[str, Any], other: Augmenter,
             other_params: Mapping[str, Any]) -> Callable[[np.ndarray, int], np.ndarray] | None:
        """Optional: one function doing this step then ``other`` in a single pass.

        Return None (the default) to run the steps one after the other. A chain
        fuses the same adjacent steps every time it is applied, so fusion never
        changes what a recorded chain replays to.
        """
        return None


def validate_class(cls: Any) -> None:
    """Raise ValueError when ``cls`` does not follow the contract (checked at registration)."""
    if not isinstance(cls, type) or not issubclass(cls, Augmenter):
        raise ValueError(f"{cls!r} is not a subclass of rave_data.augment.Augmenter")
    if not isinstance(cls.name, str) or not cls.name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"{cls.__name__}: name must be a non-empty word (letters, digits, _ or -), got {cls.name!r}")
    if cls.apply is Augmenter.apply:
        raise ValueError(f"{cls.__name__} ({cls.name}): apply() is not implemented")
    seen: set[str] = set()
    for p in cls.params:
        if not isinstance(p, Param):
            raise ValueError(f"{cls.name}: params must be Param objects, got {p!r}")
        if p.kind not in (float, int, bool, str):
            raise ValueError(f"{cls.name}.{p.name}: kind must be float, int, bool or str")
        if p.name in seen:
            raise ValueError(f"{cls.name}: parameter {p.name} declared twice")
        seen.add(p.name)
        p.validate(p.default)  # a default outside its own bounds is a plugin bug
