"""Which augmenters are installed: built from the plugins' ``register_augmenters`` hooks.

Each plugin's hook is called on its own with a ``register`` callback bound to
that plugin, so the registry knows who registered what, can refuse a duplicate
name with a message naming both plugins, and can disable one plugin whose hook
raises while the others keep working.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rave_data.augment.contract import Augmenter, validate_class
from rave_data.plugins import PluginError, PluginInfo, error_line, get_plugins


@dataclass(frozen=True)
class Entry:
    """One installed augmenter and the plugin it came from."""

    cls: type[Augmenter]
    plugin: str
    package: str
    version: str

    @property
    def name(self) -> str:
        return self.cls.name

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "plugin": self.plugin,
            "package": self.package,
            "version": self.version,
            "description": self.cls.description or (self.cls.__doc__ or "").strip().split("\n")[0],
            "params": [p.describe() for p in self.cls.params],
        }


@dataclass
class Registry:
    augmenters: dict[str, Entry] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    errors: list[PluginError] = field(default_factory=list)

    def get(self, name: str) -> Entry:
        """The augmenter called ``name``; ValueError listing the installed ones otherwise."""
        try:
            return self.augmenters[name]
        except KeyError:
            raise ValueError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        msg = f"unknown augmenter {name!r}; installed: {', '.join(sorted(self.augmenters)) or '(none)'}"
        if self.errors:
            msg += "; not loaded: " + ", ".join(e.plugin for e in self.errors)
        return msg


class _Registrar:
    """The ``register`` callback handed to one plugin's hook.

    Entries are staged and only added once the whole hook succeeded, so a
    plugin that fails half-way leaves nothing behind.
    """

    def __init__(self, reg: Registry, meta: PluginInfo) -> None:
        self.reg, self.meta = reg, meta
        self.staged: dict[str, Entry] = {}

    def __call__(self, cls: Any) -> None:
        validate_class(cls)
        other = self.reg.augmenters.get(cls.name) or self.staged.get(cls.name)
        if other is not None:
            raise ValueError(
                f"augmenter name {cls.name!r} is already registered by plugin {other.plugin!r} "
                f"({other.package}); refused from plugin {self.meta.name!r} ({self.meta.package})"
            )
        self.staged[cls.name] = Entry(cls, self.meta.name, self.meta.package, self.meta.version)


def build_registry(refresh: bool = False) -> Registry:
    """Call every plugin's ``register_augmenters`` hook, each on its own."""
    loaded = get_plugins(refresh=refresh)
    reg = Registry(plugins=list(loaded.plugins), errors=list(loaded.errors))
    info = {p.name: p for p in loaded.plugins}

    def meta(plugin: str) -> PluginInfo:
        return info.get(plugin) or PluginInfo(plugin, "?", "?")

    # Built-ins first, then plugins by name: a third party can never take a
    # built-in's name, and which duplicate is refused never depends on install order.
    impls = sorted(
        loaded.pm.hook.register_augmenters.get_hookimpls(),
        key=lambda i: (not meta(i.plugin_name).builtin, i.plugin_name),
    )
    for impl in impls:
        registrar = _Registrar(reg, meta(impl.plugin_name))
        try:
            impl.function(register=registrar)
        except Exception as exc:  # a faulty plugin is disabled, never the whole registry
            m = registrar.meta
            reg.errors.append(PluginError(m.name, f"{m.package} {m.version}", error_line(exc)))
            reg.plugins = [p for p in reg.plugins if p.name != m.name]
            continue
        reg.augmenters.update(registrar.staged)
    return reg


@lru_cache(maxsize=1)
def _cached() -> Registry:
    return build_registry()


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry (built once; ``refresh`` rebuilds, reloading plugins)."""
    if refresh:
        get_plugins(refresh=True)
        _cached.cache_clear()
    return _cached()
