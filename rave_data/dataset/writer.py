"""Write the LMDB that acids-rave reads: keys ``%08d``, AudioExample values.

The map starts small (64 MB) and doubles on ``MapFullError`` rather than
reserving a huge sparse file up front, which breaks on filesystems without
sparse files and confuses users who see a 100 GB ``data.mdb``.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

# numpy (and the codec, which needs it) only where arrays are encoded: prep's
# parent process only copies values the workers encoded, and importing numpy
# there would delay the start of the first worker.
if TYPE_CHECKING:
    import numpy as np

INITIAL_MAP_SIZE = 64 * 1024**2
#: Values buffered per write transaction: bounds the writer's memory (LMDB keeps
#: a transaction's dirty pages in RAM until commit) whatever the file length.
TXN_BYTES = 32 * 1024**2
#: Of a batch file being read, what stays mapped into memory behind the
#: reader: two transactions' worth, so values not yet written are still there.
RESIDENT_BYTES = 2 * TXN_BYTES


def write_value(f: BinaryIO, value: bytes) -> None:
    """Append one encoded example to a batch file (8-byte little-endian length + bytes).

    Workers encode their examples into such a file, in parallel; the single
    process that owns the LMDB then only copies values in (see ``prep``)."""
    f.write(len(value).to_bytes(8, "little"))
    f.write(value)


def read_values(path: Path | str) -> Iterator[memoryview]:
    """The values of a batch file written by :func:`write_value`, in order.

    Views into a read-only map of the file rather than bytes read out of it:
    the parent copies ~1 MB per audio-minute into the LMDB, and reading each
    value into a bytes object first was one more copy of all of it.

    Pages the reader has left :data:`RESIDENT_BYTES` behind are dropped from
    this process (``MADV_DONTNEED``), or mapping an hour-long source's 350 MB
    batch would keep all of it resident (counted in RSS) until the end. Only
    a residency hint: the map is of the file, so a page still in use is
    simply read back from the page cache.
    """
    import mmap

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not size:
            return
        mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    view = memoryview(mm)
    drop = getattr(mmap, "MADV_DONTNEED", None)
    dropped = pos = 0
    while pos < size:
        n = int.from_bytes(view[pos : pos + 8], "little") if pos + 8 <= size else -1
        if n < 0 or pos + 8 + n > size:
            raise ValueError(f"{path}: truncated example batch")
        yield view[pos + 8 : pos + 8 + n]
        pos += 8 + n
        upto = (pos - RESIDENT_BYTES) // mmap.PAGESIZE * mmap.PAGESIZE
        if drop is not None and upto > dropped:
            mm.madvise(drop, dropped, upto - dropped)
            dropped = upto
    # The map is released when the last view of it is (no explicit close: a
    # caller may still hold values it has not written yet).


def format_key(index: int) -> bytes:
    """LMDB key of example ``index``: 8 ASCII digits, as acids-rave writes."""
    return f"{index:08d}".encode()


class GrowingEnv:
    """An LMDB environment whose map doubles whenever a write runs out of room."""

    def __init__(self, path: Path | str, initial_map_size: int = INITIAL_MAP_SIZE) -> None:
        import lmdb

        self._lmdb = lmdb
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        # A read handle of this process would block opening; there is none
        # unless the reader was imported (not importing it spares numpy).
        reader = sys.modules.get("rave_data.dataset.reader")
        if reader is not None:
            reader.release(self.path)
        # readahead=False (MADV_RANDOM): listing keys touches the first page of
        # every value; with the kernel's readahead each touch would map ~all of
        # data.mdb into this process (314 MB resident for a 1-hour source).
        self.env = lmdb.open(str(self.path), subdir=True, map_size=initial_map_size, max_dbs=0, readahead=False)

    def write(self, puts: list[tuple[bytes, bytes]] = (), deletes: Iterable[bytes] = ()) -> None:
        """Apply ``deletes`` then ``puts`` in ONE transaction (all or nothing),
        growing the map and retrying when it is full."""
        deletes = list(deletes)
        need = sum(len(k) + len(v) for k, v in puts)
        self._reserve(need)
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key in deletes:
                        txn.delete(key)
                    for key, value in puts:
                        txn.put(key, value)
                return
            except self._lmdb.MapFullError:
                # The aborted transaction left nothing behind; retry bigger.
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def _reserve(self, need: int) -> None:
        # Growing before the write avoids most failed (and wasted) transactions:
        # pages in use plus the new data with room for B-tree overhead.
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.env.stat()["psize"]
        size = info["map_size"]
        while size < used + 2 * need + 1024**2:
            size *= 2
        if size != info["map_size"]:
            self.env.set_mapsize(size)

    def __len__(self) -> int:
        return int(self.env.stat()["entries"])

    def keys(self, start: bytes | None = None) -> list[bytes]:
        """Keys in order (from ``start`` on, when given).

        Costly on a big dataset: py-lmdb touches every page of each value a
        cursor passes (to fault it in outside the GIL), so listing the keys of
        data.mdb maps all of it into memory. Prefer :meth:`last_key` and
        ``len()``."""
        with self.env.begin() as txn:
            cursor = txn.cursor()
            if start is not None and not cursor.set_range(start):
                return []
            return list(cursor.iternext(values=False))

    def last_key(self) -> bytes | None:
        with self.env.begin() as txn:
            cursor = txn.cursor()
            return bytes(cursor.key()) if cursor.last() else None

    def get(self, key: bytes) -> bytes | None:
        with self.env.begin() as txn:
            return txn.get(key)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        with self.env.begin() as txn:
            for key, value in txn.cursor():
                yield bytes(key), bytes(value)

    def close(self) -> None:
        self.env.close()


class ExampleWriter:
    """Appends int16 examples [channels, frames] under consecutive ``%08d`` keys."""

    def __init__(self, path: Path | str, sr: int) -> None:
        self.db = GrowingEnv(path)
        self.sr = sr
        self._next = self._after_last()
        #: True when every key in the LMDB is referenced and vice versa (known after sweep()).
        self.consistent = False

    def _after_last(self) -> int:
        last = self.db.last_key()
        return int(last) + 1 if last is not None and last.isdigit() else 0

    def sweep(self, referenced: set[bytes]) -> list[bytes]:
        """Delete every key no committed source refers to (left by a run that
        was killed between writing examples and recording them); returns them.

        Keys are only ever appended above the largest key, and a source's
        keys are deleted before its record is forgotten, so the examples of an
        interrupted run all lie above the largest referenced key: only that
        range is read. If the count then disagrees (a dataset damaged some
        other way), every key is checked.
        """
        top = max(referenced, default=None)
        orphans = self.db.keys(start=format_key(int(top) + 1)) if top is not None else self.db.keys()
        self.consistent = len(self.db) - len(orphans) == len(referenced)
        if not self.consistent:
            orphans = [k for k in self.db.keys() if k not in referenced]
            self.consistent = len(self.db) - len(orphans) == len(referenced)
        if orphans:
            self.db.write(deletes=orphans)
        self._next = self._after_last()
        return orphans

    def delete(self, keys: Iterable[bytes]) -> None:
        # A key may already be gone (a crash after its source was re-written):
        # LMDB's delete of a missing key is a no-op, which is what we want.
        keys = list(keys)
        if keys:
            self.db.write(deletes=keys)

    def append(self, examples: Iterable[np.ndarray | bytes | memoryview]) -> list[str]:
        """Store ``examples`` (each int16 [channels, frames], or an already
        encoded AudioExample) and return their keys.

        Written in transactions of about :data:`TXN_BYTES` so memory stays
        bounded for hour-long sources; callers make the batch visible as a whole
        by recording the keys only after this returns (see ``pipeline``).
        """
        keys: list[str] = []
        batch: list[tuple[bytes, bytes]] = []
        size = 0
        for example in examples:
            key = format_key(self._next)
            self._next += 1
            if isinstance(example, (bytes, memoryview)):
                value = example
            else:
                from rave_data.dataset.codec import encode_waveform

                value = encode_waveform(example, self.sr)
            batch.append((key, value))
            keys.append(key.decode())
            size += len(value)
            if size >= TXN_BYTES:
                self.db.write(puts=batch)
                batch, size = [], 0
        if batch:
            self.db.write(puts=batch)
        return keys

    def close(self) -> None:
        self.db.close()
