"""Read an LMDB audio dataset: ours, or one acids-rave's preprocess made.

Facts come from ``metadata.yaml`` when it has them and are otherwise inferred
from the first example (acids-rave's metadata lacks ``sr``; its AudioBuffer
``shape`` may be in bytes, so the channel count comes from the metadata and
the frame count from the data length).

Safe in ``torch.utils.data.DataLoader`` workers (fork or spawn): the LMDB
environment is opened lazily, read-only and without the lock file, and is
never pickled (see :func:`_shared_env`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from rave_data.dataset.codec import decode_waveform
from rave_data.dataset.metadata import read_metadata


#: One read-only environment per folder, shared by every Dataset in the process.
#: py-lmdb refuses to open an environment twice in a process, and that includes
#: a forked DataLoader worker, which inherits its parent's handle. Inheriting is
#: safe here: the handle is read-only and opened with ``lock=False``
#: (MDB_NOLOCK), so there is no reader table or lock state to share; a read
#: transaction only reads the memory-mapped meta pages. A spawned worker starts
#: with an empty table and opens its own.
_ENVS: dict[str, Any] = {}


def _shared_env(path: Path) -> Any:
    key = os.path.realpath(path)
    env = _ENVS.get(key)
    if env is None:
        import lmdb

        env = lmdb.open(str(path), subdir=True, readonly=True, lock=False, readahead=False, max_dbs=0)
        _ENVS[key] = env
    return env


def release(path: Path | str) -> None:
    """Close this process's shared read handle on ``path`` (the writer calls it:
    py-lmdb cannot open a folder for writing while it is open for reading).
    Datasets on it reopen on their next read."""
    env = _ENVS.pop(os.path.realpath(path), None)
    if env is not None:
        env.close()


class DatasetError(Exception):
    """Not a readable dataset; ``str()`` names the folder and the reason."""


class Dataset:
    """Examples of an LMDB dataset, each int16 [channels, n_signal]."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not (self.path / "data.mdb").is_file():
            raise DatasetError(f"{self.path}: not a dataset (no data.mdb)")
        self.metadata: dict[str, Any] = read_metadata(self.path)
        self._keys: list[bytes] | None = None
        self.channels: int = int(self.metadata.get("channels", 1))
        self.sr: int = int(self.metadata.get("sr", 0))
        self.n_signal: int = int(self.metadata.get("example_frames", 0))
        if (not self.sr or not self.n_signal) and len(self):
            first, sr = self._decode(self.keys()[0])
            self.sr = self.sr or sr
            self.n_signal = self.n_signal or first.shape[1]

    # -- lazy, per-process environment ------------------------------------------

    @property
    def env(self) -> Any:
        # Looked up on every use (a dict lookup), never stored: nothing
        # unpicklable in the object, and a handle closed by release() is reopened.
        return _shared_env(self.path)

    # -- access ----------------------------------------------------------------

    def _begin(self) -> Any:
        import lmdb

        try:
            return self.env.begin()
        except lmdb.MapResizedError:
            # Another process grew the dataset since we opened it: adopt its size.
            self.env.set_mapsize(0)
            return self.env.begin()

    def keys(self) -> list[bytes]:
        """Example keys in LMDB (sorted) order; gaps are allowed.

        Taken from prep's ``manifest.jsonl`` when it lists exactly as many keys
        as the LMDB holds: walking an LMDB cursor makes py-lmdb touch every
        page of every value, i.e. read the whole dataset from disk, just to
        start training. Otherwise (acids-rave datasets), the cursor it is.
        """
        if self._keys is None:
            self._keys = self._manifest_keys() or self._cursor_keys()
        return self._keys

    def _cursor_keys(self) -> list[bytes]:
        with self._begin() as txn:
            return list(txn.cursor().iternext(values=False))

    def _manifest_keys(self) -> list[bytes] | None:
        from rave_data.dataset.manifest import read_manifest

        path = self.path / "manifest.jsonl"
        if not path.is_file():
            return None
        try:
            keys = sorted({k.encode() for line in read_manifest(path) for k in line.get("keys", ())})
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        with self._begin() as txn:
            entries = int(txn.stat(self.env.open_db())["entries"])
        return keys if len(keys) == entries else None

    def __len__(self) -> int:
        return len(self.keys())

    def _decode(self, key: bytes) -> tuple[np.ndarray, int]:
        with self._begin() as txn:
            value = txn.get(key)
        if value is None:
            raise KeyError(key.decode(errors="replace"))
        channels = int(self.metadata["channels"]) if "channels" in self.metadata else None
        return decode_waveform(value, channels)

    def read(self, item: int | str | bytes) -> np.ndarray:
        """Example ``item`` (an index into :meth:`keys`, or a key) as int16
        [channels, n]."""
        if isinstance(item, (int, np.integer)):
            try:
                return self._decode(self.keys()[int(item)])[0]
            except KeyError:
                # A manifest older than the LMDB (an interrupted prep, same
                # count by chance): list the LMDB itself and try again.
                self._keys = self._cursor_keys()
                return self._decode(self.keys()[int(item)])[0]
        key = item.encode() if isinstance(item, str) else bytes(item)
        return self._decode(key)[0]

    @property
    def seconds(self) -> float:
        """Audio seconds held (every example assumed ``n_signal`` long)."""
        return len(self) * self.n_signal / self.sr if self.sr else 0.0

    def close(self) -> None:
        """Close the shared read handle on this folder (reopened on next use)."""
        release(self.path)


def open_dataset(path: Path | str) -> Dataset:
    """Open the dataset in folder ``path`` (raises :class:`DatasetError`)."""
    import lmdb

    try:
        return Dataset(path)
    except lmdb.Error as exc:
        raise DatasetError(f"{path}: cannot open LMDB ({exc})") from None
