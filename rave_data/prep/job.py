"""What the driver hands a worker and what comes back.

The parent process builds :class:`SourceJob` s, names outputs and reads
:class:`SourceResult` s, but never touches audio: these types live apart from
:mod:`rave_data.prep.worker` (numpy, the codec) so that the driver and the
pool can plan and submit work without importing numpy, and the first worker
starts sooner.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rave_data.prep.settings import PrepSettings


@dataclass
class SourceJob:
    """What a worker needs to process one source (picklable)."""

    path: str
    rel: str  # POSIX path relative to in/
    fingerprint: str | None  # None: not taken yet (a new source), the worker takes it
    out_dir: str
    work_dir: str
    settings: PrepSettings
    #: --strict: a file that decodes short of its header is skipped, not kept.
    strict: bool = False
    #: None: the whole source. A list: only these augmented variants (their
    #: plugin changed, or they failed); the original and the others are kept.
    variants: list[int] | None = None


@dataclass
class OutputResult:
    """One output file of a source: its manifest line (``keys`` filled in by
    the parent at commit) and where its examples wait."""

    line: dict[str, Any]
    examples_path: str | None
    n_examples: int


@dataclass
class SourceResult:
    source: str
    fingerprint: str | None  # None only when skipped before it could be taken
    seconds_in: float = 0.0
    outputs: list[OutputResult] = field(default_factory=list)
    skipped: str | None = None  # reason the source was skipped
    warnings: list[str] = field(default_factory=list)  # e.g. a failed variant
    trimmed_seconds: float = 0.0
    short: bool = False  # shorter than one example: nothing went into the LMDB
    variants: list[int] | None = None  # the job's variants (None: the whole source)
    #: Variants that could not be made (rave_data.augment.provenance.failure_record).
    failed_variants: list[dict[str, Any]] = field(default_factory=list)


def output_name(rel: str, fmt: str, variant: int | None = None) -> str:
    """Output path (relative to out/) for source ``rel``: the input tree
    mirrored under ``audio/``. The source extension is kept when it differs
    from ``fmt`` (``take.mp3`` -> ``audio/take.mp3.wav``) so ``take.mp3`` and
    ``take.flac`` never write the same file; variants add ``.augNN``."""
    p = PurePosixPath(rel)
    stem, ext = p.stem, p.suffix[1:]
    name = stem if ext.lower() == fmt else f"{stem}.{ext}"
    if variant is not None:
        name += f".aug{variant:02d}"
    return str(PurePosixPath("audio") / p.parent / f"{name}.{fmt}")


def tail_path(examples_path: Path | str) -> Path:
    """Where a worker leaves an output's tail for packing (next to its examples)."""
    return Path(f"{examples_path}.tail")
