"""Where every output came from: the committed-source store and manifest.jsonl.

The truth lives in a small LMDB next to the dataset (``out/.ravedata/state``):
one record per committed source, holding the manifest lines of its outputs
(the original and its augmented variants) and the LMDB keys they produced.
A source counts as done only once its record is committed there, *after* its
examples are in ``data.mdb``; anything in ``data.mdb`` that no record refers to
was left by a killed run and is swept at the next start. ``manifest.jsonl`` is
derived from this store at the end of every run, so it can never disagree
with the dataset for long, and a kill -9 while writing it costs nothing.

A manifest line (one per output file) holds at least:
``source`` (path relative to in/), ``source_fingerprint`` (see
:mod:`rave_data.prep.fingerprint`), ``output`` (relative to out/), ``kind``
("original" | "augmented"), ``variant`` (int or null), ``augment`` (chain
record or null), ``seconds_in``, ``seconds_out``, ``sr``, ``channels``,
``steps`` (list of ``{"name", "params"}`` in order), ``keys``,
``dropped_seconds``, ``tool_version``.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rave_data.dataset.writer import GrowingEnv

SETTINGS_KEY = b"settings"
SOURCE_PREFIX = b"src/"
#: The packed examples (``prep --pack``, rave_data.prep.pack): their manifest lines
#: and the frames left over, one record for the whole dataset.
PACKED_KEY = b"packed"


class ManifestStore:
    """Committed sources of one ``out/`` folder, keyed by source path."""

    def __init__(self, path: Path | str) -> None:
        self.db = GrowingEnv(path, initial_map_size=8 * 1024**2)

    def settings(self) -> dict[str, Any] | None:
        raw = self.db.get(SETTINGS_KEY)
        return json.loads(raw) if raw is not None else None

    def set_settings(self, record: dict[str, Any]) -> None:
        self.db.write(puts=[(SETTINGS_KEY, json.dumps(record, sort_keys=True).encode())])

    def records(self) -> dict[str, dict[str, Any]]:
        """``{source: {"source", "fingerprint", "outputs": [manifest lines]}}``."""
        out: dict[str, dict[str, Any]] = {}
        for key, value in self.db.items():
            if key.startswith(SOURCE_PREFIX):
                rec = json.loads(value)
                out[rec["source"]] = rec
        return out

    def commit(self, record: dict[str, Any]) -> None:
        """Record one source as done (atomic: one LMDB transaction)."""
        self.db.write(puts=[(_source_key(record["source"]), json.dumps(record, sort_keys=True).encode())])

    def packed(self) -> dict[str, Any] | None:
        """``{"lines": [manifest lines of packed examples], "left_frames": n}``, or None."""
        raw = self.db.get(PACKED_KEY)
        return json.loads(raw) if raw is not None else None

    def set_packed(self, record: dict[str, Any] | None) -> None:
        if record is None:
            self.db.write(deletes=[PACKED_KEY])
        else:
            self.db.write(puts=[(PACKED_KEY, json.dumps(record, sort_keys=True).encode())])

    def forget(self, sources: Iterable[str]) -> None:
        keys = [_source_key(s) for s in sources]
        if keys:
            self.db.write(deletes=keys)

    def close(self) -> None:
        self.db.close()


def _source_key(source: str) -> bytes:
    # Hashed: LMDB keys are limited to 511 bytes and deep trees have longer paths.
    return SOURCE_PREFIX + hashlib.sha1(source.encode()).hexdigest().encode()


def referenced_keys(records: dict[str, dict[str, Any]]) -> set[bytes]:
    """LMDB keys that committed sources own."""
    return {k.encode() for rec in records.values() for line in rec["outputs"] for k in line["keys"]}


def manifest_lines(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """All output lines: sources in sorted order, each original before its variants."""
    return [line for source in sorted(records) for line in records[source]["outputs"]]


def write_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` through a temp name and ``os.replace`` so a
    reader (or a crash) never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(path: Path | str, lines: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))


def read_manifest(path: Path | str) -> list[dict[str, Any]]:
    """The lines of a ``manifest.jsonl`` (blank lines ignored)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
