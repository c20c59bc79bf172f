"""Which augmenters are installed: built from the plugins' ``register_augmenters`` hooks.

Each plugin's hook is called on its own with a ``register`` callback bound to
that plugin, so the registry knows who registered what and can disable one
plugin whose hook raises while the others keep working.

Names. Every augmenter is addressable as ``plugin:name`` (``bitcrush:bitcrush``,
``builtin.gain:gain``). The plain ``name`` works too unless it is taken twice:

- a built-in keeps its plain name; a plugin's augmenter of the same name is
  reachable as ``plugin:name`` only;
- two plugins providing the same name: the plain name is ambiguous, and a plan
  using it is refused with both qualified names, never resolved silently.

A clash never disables anything: each clash is reported (``notes``), and the
plugins' other augmenters are untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rave_data.augment.contract import Augmenter, validate_class
from rave_data.plugins import PluginError, PluginInfo, error_line, get_plugins

#: Separates the plugin from the augmenter in a qualified name.
SEP = ":"


@dataclass(frozen=True)
class Entry:
    """One installed augmenter and the plugin it came from."""

    cls: type[Augmenter]
    plugin: str
    package: str
    version: str
    builtin: bool = False

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def qualified(self) -> str:
        return f"{self.plugin}{SEP}{self.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "qualified": self.qualified,
            "plugin": self.plugin,
            "package": self.package,
            "version": self.version,
            "description": self.cls.description or (self.cls.__doc__ or "").strip().split("\n")[0],
            "params": [p.describe() for p in self.cls.params],
        }


@dataclass
class Registry:
    #: Plain names that resolve: one provider, or a built-in.
    augmenters: dict[str, Entry] = field(default_factory=dict)
    #: Every augmenter by ``plugin:name``.
    qualified: dict[str, Entry] = field(default_factory=dict)
    #: Plain names two or more plugins provide -> their qualified names.
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    errors: list[PluginError] = field(default_factory=list)
    #: Clashes and refused registrations: one line each, for warnings.
    notes: list[str] = field(default_factory=list)

    def get(self, name: str) -> Entry:
        """The augmenter ``name`` or ``plugin:name``; ValueError saying why not otherwise."""
        if SEP in name:
            entry = self.qualified.get(name)
            if entry is None:
                raise ValueError(self.unknown_message(name))
            return entry
        if name in self.ambiguous:
            raise ValueError(
                f"augmenter name {name!r} is provided by several plugins: write one of "
                + ", ".join(repr(q) for q in self.ambiguous[name])
            )
        try:
            return self.augmenters[name]
        except KeyError:
            raise ValueError(self.unknown_message(name)) from None

    def find(self, name: str, plugin: str | None) -> Entry:
        """The augmenter a record names: by ``plugin`` when given (exactly that
        plugin's), else by plain name."""
        if not plugin:
            return self.get(name)
        entry = self.qualified.get(f"{plugin}{SEP}{name}")
        if entry is None:
            msg = self.unknown_message(name).replace(f"{name!r}", f"{name!r} of plugin {plugin!r}", 1)
            raise ValueError(msg)
        return entry

    def plan_name(self, entry: Entry) -> str:
        """What a plan writes to mean ``entry``: the plain name when it resolves to it."""
        return entry.name if self.augmenters.get(entry.name) is entry else entry.qualified

    def installed_names(self) -> list[str]:
        """Every name a plan may use to reach each augmenter once (plain where possible)."""
        return sorted(self.plan_name(e) for e in self.qualified.values())

    def unknown_message(self, name: str) -> str:
        msg = f"unknown augmenter {name!r}; installed: {', '.join(self.installed_names()) or '(none)'}"
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
        if cls.name in self.staged:
            # One plugin registering a name twice is its own bug: the first
            # class stays, the plugin's other augmenters too.
            self.reg.notes.append(
                f"plugin {self.meta.name!r} ({self.meta.package}) registers augmenter {cls.name!r} twice; "
                f"{cls.__name__} ignored"
            )
            return
        self.staged[cls.name] = Entry(cls, self.meta.name, self.meta.package, self.meta.version, self.meta.builtin)


def _add(reg: Registry, entry: Entry) -> None:
    """Add one augmenter under its qualified name, and under its plain name
    unless that clashes (see the module docstring)."""
    reg.qualified[entry.qualified] = entry
    name = entry.name
    if name in reg.ambiguous:
        reg.ambiguous[name].append(entry.qualified)
        reg.notes.append(f"augmenter name {name!r} is also provided by plugin {entry.plugin!r}; "
                         f"a plan must write one of: {', '.join(reg.ambiguous[name])}")
        return
    other = reg.augmenters.get(name)
    if other is None:
        reg.augmenters[name] = entry
        return
    if other.builtin:  # built-ins register first and keep their plain names
        reg.notes.append(
            f"augmenter {name!r} of plugin {entry.plugin!r} ({entry.package}) has a built-in's name: "
            f"{name!r} means {other.qualified!r}; write {entry.qualified!r} for the plugin's"
        )
        return
    del reg.augmenters[name]
    reg.ambiguous[name] = [other.qualified, entry.qualified]
    reg.notes.append(
        f"augmenter name {name!r} is provided by plugins {other.plugin!r} ({other.package}) and "
        f"{entry.plugin!r} ({entry.package}); a plan must write {other.qualified!r} or {entry.qualified!r}"
    )


def build_registry(refresh: bool = False) -> Registry:
    """Call every plugin's ``register_augmenters`` hook, each on its own."""
    loaded = get_plugins(refresh=refresh)
    reg = Registry(plugins=list(loaded.plugins), errors=list(loaded.errors))
    info = {p.name: p for p in loaded.plugins}

    def meta(plugin: str) -> PluginInfo:
        return info.get(plugin) or PluginInfo(plugin, "?", "?")

    # Built-ins first, then plugins by name: a third party can never take a
    # built-in's name, and the notes never depend on install order.
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
        for entry in registrar.staged.values():
            _add(reg, entry)
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
