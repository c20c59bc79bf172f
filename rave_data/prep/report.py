"""``out/report.json`` and the terminal summary of a ``prep`` run.

Two views: what *this run* did (found, processed, unchanged, removed, skipped
with reasons) and what the *dataset* now holds (hours in and out, original vs
augmented, trimmed silence, dropped tails, files too short for one example).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rave_data import __version__

if TYPE_CHECKING:
    from rave_data.prep.settings import PrepSettings


@dataclass
class RunStats:
    """What one run did, as the driver collects it (the dataset totals come
    from the committed records)."""

    found: int = 0
    processed: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    recovered_keys: int = 0
    #: Committed sources done again, and why: ``{"source", "variants", "why"}``
    #: (``variants`` None: the whole source; a list: only those variants).
    rerun: list[dict[str, Any]] = field(default_factory=list)
    #: Variants not written this run: ``{"source", **failure_record}``.
    failed_variants: list[dict[str, Any]] = field(default_factory=list)


def build_report(
    in_dir: Path, out_dir: Path, settings: PrepSettings, stats: RunStats,
    records: dict[str, dict[str, Any]], wall_seconds: float, packed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    example_seconds = settings.example_frames / settings.sr
    n_packed = len((packed or {}).get("lines", []))
    lines = [line for rec in records.values() for line in rec["outputs"]]
    originals = [line for line in lines if line["kind"] == "original"]
    augmented = [line for line in lines if line["kind"] != "original"]
    short = [
        {"source": rec["source"], "seconds": rec["outputs"][0]["seconds_out"]}
        for _, rec in sorted(records.items())
        if rec.get("short") and not settings.pack  # packed, not lost
    ]

    def hours(xs: list[dict[str, Any]], key: str) -> float:
        return round(sum(x[key] for x in xs) / 3600, 6)

    def lmdb_hours(xs: list[dict[str, Any]]) -> float:
        return round(sum(len(x["keys"]) for x in xs) * example_seconds / 3600, 6)

    examples = sum(len(x["keys"]) for x in lines) + n_packed
    warnings = list(stats.warnings)
    if not examples and stats.found:
        warnings.append(_empty_warning(settings, records, stats))
    return {
        "tool_version": __version__,
        "input": str(in_dir),
        "output": str(out_dir),
        "settings": settings.to_record(),
        "run": {
            "files_found": stats.found,
            "processed": len(stats.processed),
            "unchanged": stats.unchanged,
            "removed": stats.removed,
            "skipped": stats.skipped,
            "warnings": warnings,
            "recovered_keys": stats.recovered_keys,
            "rerun": stats.rerun,
            "failed_variants": stats.failed_variants,
            "wall_seconds": round(wall_seconds, 3),
        },
        "dataset": {
            "sources": len(records),
            "outputs": len(lines),
            "examples": examples,
            "examples_packed": n_packed,
            "examples_augmented": sum(len(x["keys"]) for x in augmented),
            "hours_in": hours(originals, "seconds_in"),
            "hours_out": hours(originals, "seconds_out"),
            "hours_out_augmented": hours(augmented, "seconds_out"),
            "hours_lmdb": round(lmdb_hours(lines) + n_packed * example_seconds / 3600, 6),
            "hours_lmdb_original": lmdb_hours(originals),
            "hours_lmdb_augmented": lmdb_hours(augmented),
            "seconds_trimmed": round(sum(rec.get("trimmed_seconds", 0.0) for rec in records.values()), 3),
            # With --pack the tails are packed: only what fills no packed example is dropped.
            "seconds_dropped": round((packed or {}).get("left_frames", 0) / settings.sr if settings.pack
                                     else sum(x["dropped_seconds"] for x in lines), 3),
            "short_files": short,
        },
    }


def _empty_warning(settings: PrepSettings, records: dict[str, dict[str, Any]], stats: RunStats) -> str:
    """What to do about a dataset without a single example."""
    seconds = settings.example_frames / settings.sr
    short = sum(1 for rec in records.values() if rec.get("short"))
    why = (f"{short} of {len(records)} prepared files are shorter than one example "
           f"({seconds:.2f} s = 2 x --num-signal {settings.num_signal} at {settings.sr} Hz)" if records
           else f"none of the {stats.found} files found could be used (see skipped)")
    todo = ("--pack to pack short files and tails into whole examples, --pad-short to zero-pad each short "
            "file into one, or a smaller --num-signal" if not settings.pack
            else "more audio, or a smaller --num-signal")
    return f"NO EXAMPLE in the dataset: {why}; a model cannot train on it. Use {todo}"


def _hms(hours: float) -> str:
    s = int(round(hours * 3600))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def format_summary(report: dict[str, Any]) -> str:
    """Human-readable summary (plain text, a few lines plus one per problem)."""
    run, ds = report["run"], report["dataset"]
    out = [
        f"files found {run['files_found']}: processed {run['processed']}, unchanged {run['unchanged']}, "
        f"skipped {len(run['skipped'])}, removed {len(run['removed'])}",
        f"dataset: {ds['sources']} sources, {ds['examples']} examples "
        f"({ds['examples_augmented']} augmented, {ds['examples_packed']} packed), {_hms(ds['hours_lmdb'])} in LMDB",
        f"audio in {_hms(ds['hours_in'])} -> out {_hms(ds['hours_out'])} "
        f"(+{_hms(ds['hours_out_augmented'])} augmented); silence trimmed {ds['seconds_trimmed']:.1f} s; "
        f"tails not filling an example {ds['seconds_dropped']:.1f} s",
    ]
    if not run["files_found"]:
        out.append(f"no audio files found under {report['input']} (extensions: see docs/prep.md)")
    if run["recovered_keys"]:
        out.append(f"recovered from an interrupted run: removed {run['recovered_keys']} uncommitted examples")
    for again in run.get("rerun", []):
        what = "all outputs" if again["variants"] is None else "variant(s) " + ", ".join(map(str, again["variants"]))
        out.append(f"made again: {again['source']} ({what}): {'; '.join(again['why'])}")
    for skip in run["skipped"]:
        out.append(f"skipped {skip['source']}: {skip['reason']}")
    for warning in run["warnings"]:
        out.append(f"warning: {warning}")
    for short in ds["short_files"]:
        out.append(f"too short for one example ({short['seconds']:.2f} s): {short['source']}")
    out.append(f"wrote {report['output']} in {run['wall_seconds']:.1f} s")
    return "\n".join(out)
