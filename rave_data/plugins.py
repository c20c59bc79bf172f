"""The plugin manager: third-party plugins first, then our built-ins, one path.

Plugins come from the ``ravedata`` entry-point group. Each is imported on its
own, so one that fails to import (or implements a misspelt hook) is recorded
with its name and the reason while the others keep working. Our built-in
augmenter modules are then registered through the same ``pm.register`` call.

``RAVEDATA_DISABLE_PLUGINS=name1,name2`` skips plugins by name (entry-point
name, or a built-in's name such as ``builtin.reverb``) before they are imported.

:func:`plugin_identity` says which code of a plugin ran: its distribution's
version and, for an editable install (where the code changes without the
version), a hash of its modules. ``prep`` records it per output and re-runs
the variants a changed plugin made.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

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
    #: Installed in editable mode (PEP 610 ``direct_url.json``): its code may
    #: change while the version stays, so its identity includes a content hash.
    editable: bool = False
    #: Top-level module or package holding the plugin's code (what is hashed).
    module: str = ""


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
        # Without a distribution nothing says which version ran: hash the code.
        editable = _is_editable(dist) if dist is not None else True
        if ep.name in skip or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
            _register(pm, plugin, ep.name)
        except Exception as exc:  # any import-time failure disables only this plugin
            errors.append(PluginError(ep.name, f"{package} {version}", error_line(exc)))
            continue
        plugins.append(PluginInfo(ep.name, package, version, editable=editable,
                                  module=ep.value.split(":")[0].split(".")[0]))

    own_editable = _own_editable()
    for module in BUILTIN_MODULES:
        name = f"builtin.{module}"
        if name in skip:
            continue
        plugin = importlib.import_module(f"rave_data.augment.builtin.{module}")
        _register(pm, plugin, name)
        # Built-ins share helpers (_board, _stretch): their identity hashes the whole builtin package.
        plugins.append(PluginInfo(name, BUILTIN_PACKAGE, __version__, builtin=True, editable=own_editable,
                                  module="rave_data.augment.builtin"))
    return LoadedPlugins(pm, plugins, errors)


def _is_editable(dist: importlib.metadata.Distribution) -> bool:
    try:
        text = dist.read_text("direct_url.json")
        return bool(text and json.loads(text).get("dir_info", {}).get("editable"))
    except (OSError, ValueError):
        return False


def _own_editable() -> bool:
    """Whether our own code runs from a source tree (an editable install or a
    checkout) rather than from an installed copy in site-packages. Decided by
    where the code is, not by distribution metadata: a checkout's stale
    ``*.egg-info`` on the path would otherwise answer for it."""
    import sysconfig

    here = Path(__file__).resolve()
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    return not any(here.is_relative_to(d) for d in installed)


def module_files(module: str) -> list[Path]:
    """The ``.py`` files of an imported top-level module or package, sorted."""
    mod = sys.modules.get(module) or importlib.import_module(module)
    roots = list(getattr(mod, "__path__", []) or [])
    if not roots:
        return [Path(mod.__file__)] if getattr(mod, "__file__", None) else []
    return sorted(p for r in roots for p in Path(r).rglob("*.py") if "__pycache__" not in p.parts)


def content_hash(files: list[Path], base: Path | None = None) -> str:
    """BLAKE2b (12 hex digits) of the files' names and bytes."""
    h = hashlib.blake2b(digest_size=6)
    for f in files:
        name = f.relative_to(base).as_posix() if base is not None else f.name
        h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=None)
def _module_hash(module: str) -> str | None:
    try:
        files = module_files(module)
    except Exception:  # noqa: BLE001 - a plugin we cannot read is identified by its version alone
        return None
    if not files:
        return None
    common = Path(os.path.commonpath([str(f.parent) for f in files]))
    try:
        return content_hash(files, common)
    except OSError:
        return None


def plugin_identity(info: PluginInfo) -> dict[str, Any]:
    """Which code of ``info`` runs: ``{"package", "version", "hash"}``;
    ``hash`` is None unless the plugin is installed in editable mode."""
    digest = _module_hash(info.module) if info.editable and info.module else None
    return {"package": info.package, "version": info.version, "hash": digest}


def identity_change(old: dict[str, Any], new: dict[str, Any] | None) -> str | None:
    """Why a recorded identity no longer holds, in words (None: unchanged)."""
    if new is None:
        return "no longer installed"
    if old.get("package") != new["package"] or old.get("version") != new["version"]:
        return f"{old.get('package')} {old.get('version')} -> {new['package']} {new['version']}"
    if old.get("hash") != new["hash"]:
        return f"code changed ({new['package']} {new['version']}, modules hash {old.get('hash')} -> {new['hash']})"
    return None


@lru_cache(maxsize=1)
def _cached() -> LoadedPlugins:
    return load_plugins()


def get_plugins(refresh: bool = False) -> LoadedPlugins:
    """The process-wide plugin set (loaded once; ``refresh`` reloads, e.g. in tests)."""
    if refresh:
        _cached.cache_clear()
    return _cached()
