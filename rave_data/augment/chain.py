"""A concrete chain: augmenters with their sampled parameters, applied in order.

The chain is what a variant *is*: ``to_record()`` goes into the manifest and
``Chain.from_record()`` replays it bit for bit. The host checks every step's
output, so a misbehaving plugin is named instead of corrupting the dataset.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from dataclasses import dataclass
from typing import Any

import numpy as np

from rave_data.augment.contract import Augmenter, AugmentError, Value
from rave_data.plugins import error_line

#: Peak ceiling after the chain. Gain, EQ or reverb can push a normalised file
#: past full scale; scaling the whole variant down keeps int16/24 outputs free
#: of clipping (clipping would teach the model distortion that is not in the data).
PEAK_CEILING = 0.999


@dataclass(frozen=True)
class ChainStep:
    augmenter: Augmenter
    plugin: str
    params: dict[str, Value]

    @property
    def name(self) -> str:
        return self.augmenter.name


class Chain:
    """Augmenters with concrete parameters. Picklable; holds no random state."""

    def __init__(self, steps: Sequence[ChainStep] = ()) -> None:
        self.steps: list[ChainStep] = list(steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[ChainStep]:
        return iter(self.steps)

    def __repr__(self) -> str:
        return f"Chain({self.describe()})"

    def describe(self) -> str:
        """One line for humans, e.g. ``gain(db=-2.1) -> pitch_shift(semitones=1.3)``
        (floats to 3 significant digits; :meth:`to_record` has them exactly)."""
        def fmt(v: Value) -> str:
            return f"{v:.3g}" if isinstance(v, float) else str(v)

        return " -> ".join(
            f"{s.name}({', '.join(f'{k}={fmt(v)}' for k, v in s.params.items())})" for s in self.steps
        ) or "(no augmentation)"

    def apply(self, audio: np.ndarray, sr: int, peak_ceiling: float | None = PEAK_CEILING,
              on_step: Callable[[int, str, str], None] | None = None) -> np.ndarray:
        """``audio`` [channels, n] float32 -> [channels, m] float32.

        Raises :class:`AugmentError` naming the plugin and augmenter when a
        step raises or returns something other than finite float audio with
        the input's channel count; the error carries this chain's record, the
        failing step and the traceback (:meth:`AugmentError.debug_text`).
        With ``peak_ceiling`` (default), a result whose peak exceeds it is
        scaled down as a whole. ``on_step(index, plugin, name)`` is called
        before each step runs (prep uses it to name the augmenter that was
        running when a worker process dies).
        """
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] < 1:
            raise ValueError(f"audio must be [channels, n], got shape {x.shape}")
        channels = x.shape[0]
        for index, run, plugin, name in self._passes():
            if on_step is not None:
                on_step(index, plugin, name)
            try:
                y = run(np.ascontiguousarray(x), sr)
                x = _checked(y, channels, plugin, name)
            except AugmentError as exc:
                raise self._located(exc, index) from exc.__cause__
            except Exception as exc:
                err = AugmentError(plugin, name, f"raised {error_line(exc)}")
                err.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                raise self._located(err, index) from exc
        if peak_ceiling is not None and x.size:
            peak = float(np.max(np.abs(x)))
            if peak > peak_ceiling:
                x = x * np.float32(peak_ceiling / peak)
        return x

    def _located(self, err: AugmentError, index: int) -> AugmentError:
        if err.chain is None:  # an error from a nested chain keeps its own
            err.chain, err.step = self.to_record(), index
        return err

    def _passes(self) -> Iterator[tuple[int, Callable[[np.ndarray, int], np.ndarray], str, str]]:
        """(index of the first step, function, plugin, name) per processing
        pass: adjacent steps that agree to fuse (:meth:`Augmenter.fuse`)
        become one pass."""
        i = 0
        while i < len(self.steps):
            step = self.steps[i]
            nxt = self.steps[i + 1] if i + 1 < len(self.steps) else None
            fused = nxt and step.augmenter.fuse(step.params, nxt.augmenter, nxt.params)
            if fused and nxt is not None:
                yield i, fused, f"{step.plugin}+{nxt.plugin}", f"{step.name}+{nxt.name}"
                i += 2
            else:
                yield i, partial(_call, step.augmenter, step.params), step.plugin, step.name
                i += 1

    def to_record(self) -> list[dict[str, Any]]:
        """JSON-able ``[{"name", "plugin", "params"}, ...]`` (exact floats: JSON round-trips them)."""
        return [{"name": s.name, "plugin": s.plugin, "params": dict(s.params)} for s in self.steps]

    @classmethod
    def from_record(cls, record: Sequence[dict[str, Any]]) -> Chain:
        """Replay a chain written by :meth:`to_record`: each step by its plugin
        and name (``plugin:name``), so it replays the very augmenter recorded
        even when another plugin provides the same name."""
        from rave_data.augment.registry import get_registry

        reg = get_registry()
        steps = []
        for item in record:
            entry = reg.find(item["name"], item.get("plugin"))
            params = entry.cls.check_params(item.get("params", {}))
            steps.append(ChainStep(entry.cls(), entry.plugin, params))
        return cls(steps)


def _call(augmenter: Augmenter, params: dict[str, Value], audio: np.ndarray, sr: int) -> np.ndarray:
    return augmenter.apply(audio, sr, **params)


def _checked(y: Any, channels: int, plugin: str, name: str) -> np.ndarray:
    def fail(reason: str) -> AugmentError:
        return AugmentError(plugin, name, reason)

    if not isinstance(y, np.ndarray):
        raise fail(f"returned {type(y).__name__}, expected a numpy array")
    if y.ndim != 2:
        raise fail(f"returned shape {y.shape}, expected [channels, n]")
    if y.shape[0] != channels:
        raise fail(f"changed the channel count from {channels} to {y.shape[0]}")
    if y.shape[1] == 0:
        raise fail("returned empty audio")
    if not np.issubdtype(y.dtype, np.floating):
        raise fail(f"returned dtype {y.dtype}, expected float")
    y = y.astype(np.float32, copy=False)
    if not np.isfinite(y).all():
        raise fail("returned NaN or infinite samples")
    return y
