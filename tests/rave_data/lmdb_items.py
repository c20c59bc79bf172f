"""Read a prepared dataset's LMDB directly, as acids-rave's loader would."""
from __future__ import annotations

from pathlib import Path

import lmdb


def lmdb_items(path: Path | str) -> dict[bytes, bytes]:
    """Every key and value of the LMDB in ``path``."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = {bytes(k): bytes(v) for k, v in txn.cursor()}
    env.close()
    return items
