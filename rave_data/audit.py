"""How much audio is there? The library behind ``ravedata duration``.

:func:`audit` walks the given paths with :func:`rave_data.io.discover.find_audio`
(so it agrees with ``prep`` on what counts as audio), reads every file's
header with :func:`rave_data.io.probe.probe` (never its samples), and returns an
:class:`Audit`: totals, groups by format / sample rate / channels, shortest
and longest files, a histogram of durations, per-folder totals, the files it
could not read with the reason, and a section per prepared dataset (an LMDB
folder written by ``ravedata prep`` or by acids-rave's own preprocess).

:meth:`Audit.to_dict` gives all of it for machines; ``rave_data.cli.duration``
prints it for people.
"""
from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rave_data.io.audioinfo import AudioInfo, DecodeError
from rave_data.io.discover import find_audio

#: Threads reading headers. Mostly waiting (on the disk when headers are
#: not cached; PyAV's header reads of m4a/aac/wma), so more threads
#: than cores pay off; beyond this, contention for the GIL does not.
MAX_WORKERS = 8

#: Histogram bin edges in seconds; the last bin is open-ended. Human-sized
#: steps (1 s, 2 s, 5 s, ...) rather than equal widths: durations in a
#: dataset spread over orders of magnitude.
HISTOGRAM_EDGES: tuple[float, ...] = (0, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def format_duration(seconds: float) -> str:
    """``0h 12m 52s``: whole hours, then zero-padded minutes and seconds."""
    total = int(round(max(0.0, seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s"


def _short_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g}s"
    if seconds < 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"


# --- result types ---------------------------------------------------------------


@dataclass(frozen=True)
class Unreadable:
    """A file that looked like audio but whose header could not be read."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Group:
    """Files sharing one format, sample rate and channel count."""

    format: str
    sr: int
    channels: int
    files: int
    seconds: float


@dataclass(frozen=True)
class Folder:
    """Files directly inside one folder (not its sub-folders)."""

    path: Path
    files: int
    seconds: float


@dataclass(frozen=True)
class Bin:
    """Histogram bin: files with ``low <= seconds < high`` (``high`` None: no limit)."""

    low: float
    high: float | None
    files: int

    @property
    def label(self) -> str:
        if self.high is None:
            return f">= {_short_seconds(self.low)}"
        if self.low == 0:
            return f"< {_short_seconds(self.high)}"
        return f"{_short_seconds(self.low)} - {_short_seconds(self.high)}"


@dataclass
class DatasetReport:
    """What an LMDB dataset folder holds.

    ``seconds`` is counted from the LMDB itself (examples x samples per example
    / sr, or the per-file lengths of a lazy dataset); ``metadata_seconds`` is
    what metadata.yaml claims (acids-rave's figure is approximate).
    ``original_seconds`` / ``augmented_seconds`` come from prep's
    manifest.jsonl and are None without one.
    """

    path: Path
    made_by: str  # "ravedata" (has manifest.jsonl) or "acids-rave"
    examples: int = 0
    seconds: float = 0.0
    sr: int | None = None
    channels: int | None = None
    samples_per_example: int | None = None
    lazy: bool = False
    metadata_seconds: float | None = None
    original_seconds: float | None = None
    augmented_seconds: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["path"] = str(self.path)
        return d


@dataclass
class Audit:
    """Everything ``ravedata duration`` reports about some paths."""

    roots: list[Path]
    files: list[AudioInfo] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    datasets: list[DatasetReport] = field(default_factory=list)

    @property
    def found(self) -> int:
        """Audio files found, readable or not."""
        return len(self.files) + len(self.unreadable)

    @property
    def total_seconds(self) -> float:
        return sum(f.seconds for f in self.files)

    def groups(self) -> list[Group]:
        """Per (format, sr, channels), most audio first."""
        acc: dict[tuple[str, int, int], list[float]] = {}
        for f in self.files:
            acc.setdefault((f.format, f.sr, f.channels), []).append(f.seconds)
        groups = [Group(k[0], k[1], k[2], len(v), sum(v)) for k, v in acc.items()]
        return sorted(groups, key=lambda g: (-g.seconds, g.format, g.sr, g.channels))

    def folders(self) -> list[Folder]:
        """Per containing folder, in path order."""
        acc: dict[Path, list[float]] = {}
        for f in self.files:
            acc.setdefault(f.path.parent, []).append(f.seconds)
        return [Folder(p, len(v), sum(v)) for p, v in sorted(acc.items(), key=lambda kv: str(kv[0]))]

    def shortest(self, n: int = 5) -> list[AudioInfo]:
        return sorted(self.files, key=lambda f: (f.seconds, str(f.path)))[:n]

    def longest(self, n: int = 5) -> list[AudioInfo]:
        return sorted(self.files, key=lambda f: (-f.seconds, str(f.path)))[:n]

    def histogram(self) -> list[Bin]:
        """Counts per :data:`HISTOGRAM_EDGES` bin, trimmed to the occupied range."""
        edges = HISTOGRAM_EDGES
        counts = [0] * len(edges)
        for f in self.files:
            counts[bisect.bisect_right(edges, f.seconds) - 1] += 1
        bins = [
            Bin(edges[i], edges[i + 1] if i + 1 < len(edges) else None, counts[i])
            for i in range(len(edges))
        ]
        used = [i for i, c in enumerate(counts) if c]
        return bins[used[0] : used[-1] + 1] if used else []

    def to_dict(self) -> dict[str, Any]:
        """All of it, JSON-ready (paths as strings, seconds as floats)."""

        def file_dict(f: AudioInfo) -> dict[str, Any]:
            return {
                "path": str(f.path), "seconds": f.seconds, "frames": f.frames, "sr": f.sr,
                "channels": f.channels, "format": f.format, "subtype": f.subtype,
            }

        return {
            "roots": [str(r) for r in self.roots],
            "found": self.found,
            "readable": len(self.files),
            "total_seconds": self.total_seconds,
            "total": format_duration(self.total_seconds),
            "groups": [g.__dict__ for g in self.groups()],
            "shortest": [file_dict(f) for f in self.shortest()],
            "longest": [file_dict(f) for f in self.longest()],
            "histogram": [
                {"label": b.label, "min_seconds": b.low, "max_seconds": b.high, "files": b.files}
                for b in self.histogram()
            ],
            "folders": [{"path": str(d.path), "files": d.files, "seconds": d.seconds} for d in self.folders()],
            "unreadable": [{"path": str(u.path), "reason": u.reason} for u in self.unreadable],
            "datasets": [d.to_dict() for d in self.datasets],
            "files": [file_dict(f) for f in self.files],
        }


# --- scanning ---------------------------------------------------------------------


class MissingPath(FileNotFoundError):
    """A path given to :func:`audit` does not exist."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: no such file or folder")
        self.path = path


def _probe_one(path: Path) -> AudioInfo | Unreadable:
    from rave_data.io.discover import broken_link
    from rave_data.io.probe import probe

    try:
        return probe(path)
    except DecodeError as e:
        return Unreadable(path, broken_link(path) or e.reason)
    except Exception as e:  # noqa: BLE001 - one odd file must never abort the count
        return Unreadable(path, broken_link(path) or f"{type(e).__name__}: {e}")


def audit(
    paths: Sequence[Path | str] = (".",),
    recursive: bool = True,
    workers: int | None = None,
) -> Audit:
    """Scan ``paths`` (files or folders) and report on the audio in them.

    Raises :class:`MissingPath` (before reading anything) when a path does
    not exist. Unreadable files never raise: they are listed with a reason.
    ``workers`` threads read headers (default :data:`MAX_WORKERS`; 1 reads
    them all in the calling thread).
    """
    roots = [Path(p) for p in paths] or [Path(".")]
    for root in roots:
        if not os.path.lexists(root) or not root.exists():
            raise MissingPath(root)
    result = Audit(roots=roots)
    found = find_audio(roots, recursive=recursive)
    from rave_data.io.probe import AV_ONLY

    if workers is None:
        workers = MAX_WORKERS
    probed: list[AudioInfo | Unreadable | None] = [None] * len(found)

    def probe_run(indexes: Sequence[int]) -> None:
        for i in indexes:
            probed[i] = _probe_one(found[i])

    if workers <= 1:
        probe_run(range(len(found)))
    else:
        slow = [i for i, p in enumerate(found) if os.path.splitext(p.name)[1][1:].lower() in AV_ONLY]
        slow_set = set(slow)
        fast = [i for i in range(len(found)) if i not in slow_set]
        # Header reads go in a few contiguous runs, one per thread: cached
        # headers cost the same as in one thread (no per-file hand-offs),
        # and uncached ones overlap their waits on the disk instead of
        # queueing one by one. Each PyAV read (opening a demuxer, slow) is its own task.
        size = -(-len(fast) // workers) or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            tasks = [pool.submit(probe_run, fast[k : k + size]) for k in range(0, len(fast), size)]
            tasks += [pool.submit(probe_run, [i]) for i in slow]
            for task in tasks:
                task.result()
    for item in probed:
        if isinstance(item, Unreadable):
            result.unreadable.append(item)
        elif item is not None:
            result.files.append(item)

    result.datasets = [read_dataset(d) for d in find_datasets(roots, recursive=recursive)]
    return result


# --- prepared datasets ------------------------------------------------------------------


def is_dataset(folder: Path) -> bool:
    """An LMDB folder (``data.mdb``) written by ``prep`` or acids-rave.

    metadata.yaml is not required: RAVE v1's preprocess did not write one."""
    return (folder / "data.mdb").is_file()


def find_datasets(roots: Sequence[Path], recursive: bool = True) -> list[Path]:
    """Dataset folders among ``roots`` and (when ``recursive``) below them.

    A separate walk from :func:`find_audio` because an acids-rave dataset
    folder holds no audio files at all; it only lists names, so it costs a
    few milliseconds even for tens of thousands of files.
    """
    found: list[Path] = []
    seen: set[str] = set()
    for root in roots:
        if not root.is_dir():
            continue
        if not recursive:
            candidates = [root]
        else:
            candidates = []
            # followlinks=False: symlink loops cannot hang the walk.
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                if "data.mdb" in filenames:
                    candidates.append(Path(dirpath))
        for c in candidates:
            real = os.path.realpath(c)
            if real not in seen and is_dataset(c):
                seen.add(real)
                found.append(c)
    return found


def read_dataset(folder: Path | str) -> DatasetReport:
    """Report on the LMDB dataset in ``folder`` cheaply.

    Through :func:`rave_data.dataset.reader.open_dataset`: metadata.yaml, the
    keys and ONE example (samples per example), never every example. A lazy
    acids-rave dataset (one entry per source file, no audio in the LMDB) is
    summed from its entries' ``length`` metadata instead.
    Never raises: a broken dataset comes back with ``error`` set.
    """
    from rave_data.dataset.metadata import read_metadata

    folder = Path(folder)
    manifest = folder / "manifest.jsonl"
    report = DatasetReport(path=folder, made_by="ravedata" if manifest.is_file() else "acids-rave")
    try:
        meta = read_metadata(folder)
        if meta.get("n_seconds") is not None:
            report.metadata_seconds = float(meta["n_seconds"])
        report.lazy = bool(meta.get("lazy", False))
        if report.lazy:
            _read_lazy(folder, meta, report)
        else:
            from rave_data.dataset.reader import open_dataset

            ds = open_dataset(folder)
            report.examples = len(ds)
            report.sr = ds.sr or None
            report.channels = ds.channels
            report.samples_per_example = ds.n_signal or None
            report.seconds = ds.seconds
    except Exception as e:  # noqa: BLE001 - reported, never fatal for the audit
        report.error = str(e) or type(e).__name__
        return report
    if manifest.is_file():
        try:
            report.original_seconds, report.augmented_seconds = manifest_seconds(manifest)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            report.error = f"manifest.jsonl: {e}"
    return report


def _read_lazy(folder: Path, meta: dict[str, Any], report: DatasetReport) -> None:
    import lmdb

    from rave_data.dataset.codec import decode

    report.channels = int(meta["channels"]) if meta.get("channels") else None
    report.sr = int(meta["sr"]) if meta.get("sr") else None
    env = lmdb.open(str(folder), readonly=True, lock=False, subdir=True, readahead=False)
    try:
        report.examples = int(env.stat()["entries"])
        with env.begin() as txn:
            # Each value is an AudioExample with only metadata {path, length}.
            report.seconds = sum(
                float(decode(bytes(v)).metadata.get("length") or 0.0)
                for v in txn.cursor().iternext(keys=False)
            )
    finally:
        env.close()


def manifest_seconds(path: Path | str) -> tuple[float, float]:
    """(original, augmented) seconds of output listed in prep's manifest.jsonl."""
    from rave_data.dataset.manifest import read_manifest

    original = augmented = 0.0
    for entry in read_manifest(path):
        if entry.get("kind") == "packed":  # made of outputs already counted
            continue
        seconds = float(entry.get("seconds_out") or 0.0)
        if entry.get("kind") == "augmented":
            augmented += seconds
        else:
            original += seconds
    return original, augmented
