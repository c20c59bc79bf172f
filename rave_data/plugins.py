"""The plugin manager: third-party plugins first, then our built-ins, one path.

Plugins come from the ``ravedata`` entry-point group. Each is imported on its
own, so one that fails to import (or implements a misspelt hook) is recorded
with its name and the reason while the others keep working. Our built-in
augmenter modules are then registered through the same ``pm.register`` call.

``RAVEDATA_DISABLE_PLUGINS=name1,name2`` skips plugins by name (entry-point
name, or a built-in's name such as ``builtin.reverb``) before they are imported.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass
from functools import lru_cache

import pluggy

from rave_data import __version__, hookspecs

#: Entry-point group and pluggy project name.
GROUP = "ravedata"
#: Comma-separated plugin names that are not loaded.
DISABLE_ENV = "RAVEDATA_DISABLE_PLUGINS"
#: Our built-ins, each an ordinary hookimpl module; plugin name = "builtin.<module>".
BUILTIN_MODULES: tuple[str, ...] = (
    "gain", "polarity", "pitch", "stretch", "compress", "noise", "eq", "filter", "reverb",
)
BUILTIN_PACKAGE = "ravedata"


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin: its registered name and the distribution shipping it."""

    name: str
    package: str
    version: str
    builtin: bool = False


@dataclass(frozen=True)
class PluginError:
    """A plugin that could not be used, and why (one line for the user)."""

    plugin: str
    package: str
    reason: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.package}) disabled: {self.reason}"


@dataclass
class LoadedPlugins:
    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    errors: list[PluginError]


def disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message``: one line for a user, never a traceback."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Register, and refuse a plugin whose hooks no spec knows (a typo must fail loudly)."""
    pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        pm.unregister(plugin)
        raise


def load_plugins() -> LoadedPlugins:
    """A fresh plugin manager with every enabled plugin registered."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    skip = disabled_names()
    plugins: list[PluginInfo] = []
    errors: list[PluginError] = []

    # Sorted by name so registration order (hence duplicate-name resolution) is
    # the same on every machine and in every worker process.
    eps = sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name)
    for ep in eps:
        dist = getattr(ep, "dist", None)
        package = dist.metadata["Name"] if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        if ep.name in skip or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
            _register(pm, plugin, ep.name)
        except Exception as exc:  # any import-time failure disables only this plugin
            errors.append(PluginError(ep.name, f"{package} {version}", error_line(exc)))
            continue
        plugins.append(PluginInfo(ep.name, package, version))

    for module in BUILTIN_MODULES:
        name = f"builtin.{module}"
        if name in skip:
            continue
        plugin = importlib.import_module(f"rave_data.augment.builtin.{module}")
        _register(pm, plugin, name)
        plugins.append(PluginInfo(name, BUILTIN_PACKAGE, __version__, builtin=True))
    return LoadedPlugins(pm, plugins, errors)


@lru_cache(maxsize=1)
def _cached() -> LoadedPlugins:
    return load_plugins()


def get_plugins(refresh: bool = False) -> LoadedPlugins:
    """The process-wide plugin set (loaded once; ``refresh`` reloads, e.g. in tests)."""
    if refresh:
        _cached.cache_clear()
    return _cached()
