"""One writer per output folder: an advisory ``fcntl`` lock file.

The kernel drops an ``flock`` when its process dies (even by ``kill -9``), so a
crashed run never leaves a stale lock behind, unlike a pid file.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType


class LockedError(RuntimeError):
    """Another process holds the lock; ``str()`` says which folder and pid."""


class FolderLock:
    """Exclusive, non-blocking lock on ``path`` (created if missing).

    Use as a context manager; raises :class:`LockedError` at once when another
    process holds it rather than waiting behind a run that may take hours.
    """

    def __init__(self, path: Path | str, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise LockedError(f"{self.what}: another ravedata prep (pid {holder}) is writing here; wait for it to finish") from None
        # The pid is only informative (for the message above); the flock is the lock.
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
