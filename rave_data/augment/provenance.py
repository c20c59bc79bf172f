"""Which plugin code made each augmented output, and what a re-run must redo.

``prep`` stamps every variant's manifest line with the identity of each plugin
in its chain (:func:`chain_plugins`: package, version and, for an editable
install, a hash of the plugin's modules) and keeps a record of every variant
that failed (:func:`failure_record`). On the next run :func:`stale_variants`
compares those with the plugins installed now: a variant made by a plugin that
changed, or one that failed, is made again; the source's other outputs stay.

A worker process that dies while augmenting (a plugin crashing the
interpreter) cannot report anything, so before each step it leaves a marker
file naming the step (:class:`StepMarker`); the parent reads it
(:func:`crash_reason`) to name the augmenter and plugin in the skip reason.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rave_data.augment.chain import Chain
from rave_data.augment.contract import AugmentError


def current_identities() -> dict[str, dict[str, Any]]:
    """``{plugin name: identity}`` of every loaded plugin (:func:`rave_data.plugins.plugin_identity`)."""
    from rave_data.augment.registry import get_registry
    from rave_data.plugins import plugin_identity

    return {p.name: plugin_identity(p) for p in get_registry().plugins}


def chain_plugins(chain: Chain, identities: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The identities of the plugins ``chain`` runs, by plugin name (sorted)."""
    names = sorted({s.plugin for s in chain.steps})
    return {n: identities.get(n, {"package": "?", "version": "?", "hash": None}) for n in names}


def failure_record(variant: int, exc: AugmentError) -> dict[str, Any]:
    """What report.json and the state keep of a failed variant: the chain
    sampled for it, the failing step, the error and its traceback."""
    return {
        "variant": variant,
        "augmenter": exc.augmenter,
        "plugin": exc.plugin,
        "step": exc.step,
        "error": str(exc),
        "chain": exc.chain,
        "traceback": exc.traceback,
    }


def format_failure(source: str, failure: dict[str, Any]) -> str:
    """Several lines for ``--traceback``: the failure, its chain, its traceback."""
    err = AugmentError(failure.get("plugin") or "?", failure.get("augmenter") or "?", "")
    err.chain, err.step, err.traceback = failure.get("chain"), failure.get("step"), failure.get("traceback")
    body = err.debug_text().split("\n", 1)
    head = f"{source}: variant {failure['variant']}: {failure['error']}"
    return head + ("\n" + body[1] if len(body) > 1 else "")


def stale_variants(record: dict[str, Any], current: dict[str, dict[str, Any]], n_variants: int) -> dict[int, str]:
    """``{variant: why}`` for the variants of a committed source to make again:
    those made by a plugin whose identity changed since, those that failed,
    and any missing from the record."""
    from rave_data.plugins import identity_change

    why: dict[int, str] = {}
    present = set()
    for line in record["outputs"]:
        v = line.get("variant")
        if line.get("kind") != "augmented" or v is None:
            continue
        present.add(v)
        # A line written before plugins were recorded has none: left as it is.
        for plugin, old in sorted((line.get("plugins") or {}).items()):
            change = identity_change(old, current.get(plugin))
            if change is not None:
                why[v] = f"plugin {plugin!r} changed: {change}"
                break
    for failure in record.get("failed_variants") or []:
        why.setdefault(failure["variant"], f"failed last run: {failure['error']}")
    for v in range(1, n_variants + 1):
        if v not in present:
            why.setdefault(v, "not written last run")
    return dict(sorted(why.items()))


def marker_path(work_dir: str | Path, rel: str) -> Path:
    """Where the worker processing source ``rel`` marks the step it runs."""
    return Path(work_dir) / f"{hashlib.sha1(rel.encode()).hexdigest()[:16]}.step.json"


class StepMarker:
    """``Chain.apply(on_step=...)`` callback: writes which variant, step,
    augmenter and plugin are about to run. Written in place (a few hundred
    bytes); a torn write only loses the name, never the skip."""

    def __init__(self, path: Path, variant: int, chain: Chain) -> None:
        self.path, self.variant, self.chain = path, variant, chain.to_record()

    def __call__(self, index: int, plugin: str, name: str) -> None:
        data = {"variant": self.variant, "step": index, "plugin": plugin, "augmenter": name, "chain": self.chain}
        self.path.write_text(json.dumps(data))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def crash_reason(path: Path) -> tuple[str, dict[str, Any]] | None:
    """(skip reason, failure record) from a marker a dead worker left, or
    None when it died outside augmentation (no marker)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    reason = (f"worker process died in augmenter {data['augmenter']!r} (plugin {data['plugin']!r}) "
              f"while writing variant {data['variant']}")
    failure = {"variant": data["variant"], "augmenter": data["augmenter"], "plugin": data["plugin"],
               "step": data["step"], "error": reason, "chain": data["chain"], "traceback": None}
    return reason, failure


def remove_outputs(out_dir: str | Path, names: list[str]) -> None:
    """Delete output files (``names`` relative to out/) and the hidden temp
    files a dead worker left for them (``.name.PID.tmp``)."""
    for name in names:
        (Path(out_dir) / name).unlink(missing_ok=True)
    remove_temp_audio(out_dir, names)


def remove_temp_audio(out_dir: str | Path, names: list[str]) -> None:
    """Delete the hidden temp files (``.name.PID.tmp``) a killed worker left
    while writing the outputs ``names`` (relative to out/)."""
    for name in names:
        path = Path(out_dir) / name
        if path.parent.is_dir():
            for tmp in path.parent.glob(f".{path.name}.*.tmp"):
                tmp.unlink(missing_ok=True)
