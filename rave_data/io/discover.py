"""Find audio files: which files, in which order.

Every command that walks folders (``prep``, ``duration``) goes through
:func:`find_audio`, so they agree on what counts as audio.
"""
from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

#: Extensions (lower case, without dot) that ravedata reads.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {
        "wav", "wave", "aif", "aiff", "aifc", "flac", "ogg", "oga", "opus",
        "mp3", "m4a", "aac", "wma", "caf", "w64",
    }
)


def is_audio(path: Path | str) -> bool:
    """True when the file name has an audio extension (case-insensitive)."""
    suffix = os.path.splitext(str(path))[1]
    return suffix[1:].lower() in AUDIO_EXTENSIONS


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    # A pattern matches the path relative to its root or the bare file name, so
    # both `--exclude 'drafts/*'` and `--exclude '*.mp3'` do what users expect.
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def find_audio(
    roots: Sequence[Path | str],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip_dirs: Sequence[Path | str] = (),
    recursive: bool = True,
) -> list[Path]:
    """Audio files under ``roots``, sorted, each listed once.

    - A root may itself be a file (it is kept if it has an audio extension).
    - Hidden files and folders (name starting with ``.``) are skipped.
    - Folders in ``skip_dirs`` (e.g. the output folder when it lies inside the
      input) are never entered.
    - A broken symbolic link with an audio name is listed (readers report
      it with :func:`broken_link`'s reason); other non-files are not.
    - Symlinked folders are followed once: a folder already visited (by its
      real path) is not entered again, so symlink loops cannot hang the walk.
    - ``include`` / ``exclude`` are glob patterns on the path relative to its
      root (or the file name); with ``include`` only matching files are kept.
    """
    skip = {os.path.realpath(d) for d in skip_dirs}
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    found: list[Path] = []

    def keep(path: Path, rel: str, real: str | None = None) -> None:
        real = real or os.path.realpath(path)
        if real in seen_files:
            return
        if include and not _matches(rel, include):
            return
        if exclude and _matches(rel, exclude):
            return
        seen_files.add(real)
        found.append(path)

    for root in roots:
        root = Path(root)
        if root.is_file() or (root.is_symlink() and not root.exists()):
            if is_audio(root):
                keep(root, root.name, str(root))
            continue
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real_dir = os.path.realpath(dirpath)
            if real_dir in seen_dirs or real_dir in skip:
                dirnames[:] = []
                continue
            seen_dirs.add(real_dir)
            # Prune in place: hidden, skipped, or (non-recursive) everything.
            dirnames[:] = sorted(
                d
                for d in dirnames
                if recursive
                and not d.startswith(".")
                and os.path.realpath(os.path.join(dirpath, d)) not in skip
            )
            for name in sorted(filenames):
                if name.startswith(".") or not is_audio(name):
                    continue
                full = os.path.join(dirpath, name)
                # One lstat per file instead of realpath's lstat per path
                # component: a regular file's real path is its real folder's
                # plus its name (this walk dominated `duration` on 10k files).
                try:
                    mode = os.lstat(full).st_mode
                except OSError:
                    continue
                if stat.S_ISREG(mode):
                    real = os.path.join(real_dir, name)
                elif stat.S_ISLNK(mode) and os.path.isfile(full):
                    real = os.path.realpath(full)
                elif stat.S_ISLNK(mode) and not os.path.exists(full):
                    # A broken link named like audio is listed, so that prep
                    # and duration report it (see broken_link) instead of
                    # leaving it silently out of the count.
                    real = full
                else:  # socket, link to a folder, ...
                    continue
                path = Path(full)
                rel = path.relative_to(root).as_posix() if include or exclude else name
                keep(path, rel, real)
    return sorted(found, key=lambda p: (str(p.parent), p.name))


def broken_link(path: Path | str) -> str | None:
    """The reason ``path`` cannot be read when it is a broken symbolic link
    (naming where it points), else None."""
    if os.path.islink(path) and not os.path.exists(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"broken symbolic link (points to {target}, which does not exist)"
    return None
