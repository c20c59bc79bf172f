"""The hooks a ``ravedata`` plugin may implement.

A plugin is any module or object registered under the ``ravedata`` entry-point
group (``[project.entry-points.ravedata]`` in its pyproject) whose functions are
decorated with :data:`rave_data.hookimpl`. Our own built-in augmenters are
plugins of exactly this kind (``rave_data/augment/builtin/*.py``).

Hooks receive a ``register`` callback rather than returning values so that the
host alone validates what is registered (names, parameters, duplicates) and can
name the plugin at fault.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("ravedata")


@hookspec
def register_augmenters(register: Callable[[type[Any]], None]) -> None:
    """Register augmenter classes: call ``register(MyAugmenter)`` once per class.

    Each class subclasses :class:`rave_data.augment.Augmenter` (a stable
    ``name``, typed ``params``, ``sample(rng)`` and ``apply(audio, sr, **params)``).
    Every augmenter is addressable as ``plugin:name``; a name another plugin
    also provides is not an error (see rave_data.augment.registry for how
    clashes resolve).
    """
