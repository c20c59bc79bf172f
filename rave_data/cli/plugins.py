"""``ravedata plugins``: every installed augmenter, its plugin and its parameters.

A thin wrapper over :func:`rave_data.augment.get_registry`. Fast: loading the
registry imports plugin modules but never torch or pedalboard (augmenters
import pedalboard only when applied).
"""
from __future__ import annotations

from typing import Any

import typer


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _param_line(p: dict[str, Any]) -> str:
    if p["choices"]:
        allowed = "one of " + ", ".join(p["choices"])
    elif p["min"] is not None or p["max"] is not None:
        lo = "-inf" if p["min"] is None else _fmt(p["min"])
        hi = "inf" if p["max"] is None else _fmt(p["max"])
        allowed = f"allowed [{lo}, {hi}]" + (", log scale" if p["log"] else "")
    else:
        allowed = ""
    parts = [f"{p['name']} ({p['type']})", f"default {_fmt(p['default'])}"]
    if allowed:
        parts.append(allowed)
    return "    " + "  ".join(parts) + (f"  - {p['doc']}" if p["doc"] else "")


def plugins(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (augmenters, plugins, errors, notes)."),
) -> None:
    """List installed augmenters: the name a plan uses (plugin:name when
    another plugin provides the same name), plugin package and version,
    parameters with defaults and allowed ranges. Plugins that failed to load
    and name clashes are listed with the reason (on stderr unless --json)."""
    from rave_data.augment.registry import get_registry

    reg = get_registry()
    ordered = sorted(reg.qualified.values(), key=lambda e: (e.name, e.qualified))
    entries = [{**e.describe(), "plan_name": reg.plan_name(e)} for e in ordered]
    if as_json:
        import json

        typer.echo(json.dumps({
            "augmenters": entries,
            "plugins": [
                {"name": p.name, "package": p.package, "version": p.version, "builtin": p.builtin}
                for p in reg.plugins
            ],
            "errors": [{"plugin": e.plugin, "package": e.package, "reason": e.reason} for e in reg.errors],
            "notes": reg.notes,
        }, indent=2))
        return
    for e in entries:
        typer.echo(f"{e['plan_name']}  [{e['plugin']}: {e['package']} {e['version']}]  {e['description']}")
        for p in e["params"]:
            typer.echo(_param_line(p))
    for err in reg.errors:
        typer.echo(f"ravedata plugins: warning: {err}", err=True)
    for note in reg.notes:
        typer.echo(f"ravedata plugins: warning: {note}", err=True)
