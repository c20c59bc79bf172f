"""``prep``: a folder of recordings -> a RAVE training set, incrementally.

The driver around :func:`rave_data.prep.worker.process_source`:

1. lock ``out/`` (one writer), check the settings it was made with;
2. recover from a killed run: sweep LMDB keys no committed source owns,
   delete temp files (:mod:`rave_data.prep.state`);
3. find the sources; fingerprint the committed ones (the workers do the new
   ones); keep the unchanged, drop the ones gone;
4. process the rest in worker processes (:mod:`rave_data.prep.pool`),
   starting the most work first, and commit the results **in that same
   order**: it depends only on the sources, never on ``--jobs``, so neither
   do the keys and the dataset;
5. derive ``manifest.jsonl``, ``metadata.yaml`` and ``report.json``
   (:mod:`rave_data.prep.report`).

A source is committed by writing its examples into ``data.mdb`` and then its
record into the manifest store (one transaction each); a kill between the two
leaves unreferenced keys that step 2 of the next run removes, so no example is
ever duplicated, partial or missing once a run completes.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rave_data import __version__
from rave_data.prep.lock import FolderLock, LockedError
from rave_data.prep.progress import Progress
from rave_data.prep.report import RunStats
from rave_data.prep.settings import PrepSettings
from rave_data.prep.state import STATE_DIR, TAILS, committed, remove_temp_audio, remove_work_dirs, wipe

# The dataset and worker modules import numpy: imported where used, after the
# worker fork server has started, so that the server's own start-up (a fresh
# interpreter importing the pipeline) overlaps this process's imports.
if TYPE_CHECKING:
    from rave_data.dataset.manifest import ManifestStore
    from rave_data.dataset.writer import ExampleWriter
    from rave_data.prep.job import SourceJob, SourceResult


class PrepError(Exception):
    """A problem with the command as a whole (missing input, locked output,
    settings mismatch); ``str()`` is one line for the user."""


def prep(
    in_dir: Path | str,
    out_dir: Path | str,
    settings: PrepSettings | None = None,
    *,
    jobs: int | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    overwrite: bool = False,
    progress: Progress | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Build or update the dataset in ``out_dir`` from the audio under ``in_dir``.

    Returns the report (also written to ``out/report.json``). Raises
    :class:`PrepError` for problems with the run as a whole; a bad source
    file never raises, it is listed under ``skipped``. A file that decodes
    short of its header is kept with a warning, or skipped with ``strict``.
    ``jobs``: worker processes (None: one per available core).
    """
    from rave_data.prep.pool import cores

    settings = settings or PrepSettings()
    progress = progress or Progress()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    t0 = time.monotonic()
    _check_folders(in_dir, out_dir)
    state = out_dir / STATE_DIR
    try:
        with FolderLock(state / "lock", str(out_dir)):
            stats = _prep_locked(in_dir, out_dir, settings, jobs or cores(), include, exclude, overwrite, progress,
                                 strict)
            import json

            from rave_data.dataset.manifest import write_atomic
            from rave_data.prep.report import build_report

            records, packed = committed(out_dir)
            report = build_report(in_dir, out_dir, settings, stats, records, time.monotonic() - t0, packed)
            write_atomic(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
            return report
    except LockedError as exc:
        raise PrepError(str(exc)) from None


def _check_folders(in_dir: Path, out_dir: Path) -> None:
    if not in_dir.exists():
        raise PrepError(f"{in_dir}: input folder not found")
    if not in_dir.is_dir():
        raise PrepError(f"{in_dir}: input is not a folder")
    if out_dir.resolve() == in_dir.resolve():
        raise PrepError(f"{out_dir}: the output folder must differ from the input folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrepError(f"{out_dir}: cannot create output folder ({exc.strerror or exc})") from None
    if not out_dir.is_dir():
        raise PrepError(f"{out_dir}: output exists and is not a folder")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise PrepError(f"{out_dir}: output folder is not writable")


def _prep_locked(
    in_dir: Path, out_dir: Path, settings: PrepSettings, jobs: int,
    include: Sequence[str], exclude: Sequence[str], overwrite: bool, progress: Progress,
    strict: bool = False,
) -> RunStats:
    from rave_data.io.discover import find_audio
    from rave_data.prep.pool import run_in_order, start_order, start_worker_server, work_estimate

    state = out_dir / STATE_DIR
    ours = (state / "state" / "data.mdb").exists()
    if overwrite:
        wipe(out_dir)
    elif (out_dir / "data.mdb").exists() and not ours:
        raise PrepError(f"{out_dir}: holds a dataset that ravedata prep did not make; use --overwrite to replace it")

    sources = find_audio([in_dir], include=include, exclude=exclude, skip_dirs=[out_dir])
    if sources:
        # Likely work: let the fork server import the pipeline while this
        # process imports numpy and LMDB and fingerprints the sources.
        from rave_data.io.decoder_choice import decoders_for

        start_worker_server(augment=bool(settings.n_variants),
                            pyav=any(decoders_for(p)[0] == "pyav" for p in sources))
    from rave_data.dataset.manifest import ManifestStore, manifest_lines, referenced_keys, write_manifest
    from rave_data.dataset.metadata import dataset_metadata, write_metadata
    from rave_data.dataset.writer import ExampleWriter

    store = ManifestStore(state / "state")
    writer = ExampleWriter(out_dir, settings.sr)
    stats = RunStats()
    try:
        stored = store.settings()
        if stored is None:
            store.set_settings(settings.to_record())
        elif stored != settings.to_record():
            diff = "; ".join(settings.differences(stored))
            raise PrepError(f"{out_dir}: was made with other settings ({diff}); use --overwrite to rebuild it")

        # Recover from a killed run: unreferenced keys, temp files.
        records = store.records()
        packed = store.packed()
        packed_keys = {k.encode() for line in (packed or {}).get("lines", []) for k in line["keys"]}
        stats.recovered_keys = len(writer.sweep(referenced_keys(records) | packed_keys))
        # One work folder per run: a worker orphaned by a killed run (it
        # finishes its file before noticing) must not write into ours.
        remove_work_dirs(state)
        work = state / f"work-{os.getpid()}"
        work.mkdir(parents=True)
        remove_temp_audio(out_dir / "audio")

        stats.found = len(sources)
        todo, sizes, seen = _plan(sources, in_dir, out_dir, work, settings, records, writer, stats, strict)

        # Sources that are gone (or no longer readable) leave the dataset.
        gone = sorted(set(records) - (seen - {s["source"] for s in stats.skipped}))
        for rel in gone:
            _drop(records.pop(rel), out_dir, store, writer)
            stats.removed.append(rel)

        todo = start_order(todo, sizes)
        # The ETA follows estimated work, not bytes: lossy files are small for their length.
        work_units = {j.rel: round(work_estimate(j.rel, sizes.get(j.rel, 0))) for j in todo}
        progress.start(len(todo), sum(work_units.values()))
        try:
            for n, result in enumerate(run_in_order(todo, jobs, lambda r: progress.advance(r, work_units.get(r.source, 0)))):
                _commit(result, settings, records, out_dir, store, writer, stats)
                if n == 0:
                    # PyYAML (for metadata.yaml) is imported while the
                    # workers run rather than after the last of them.
                    import yaml  # noqa: F401
        finally:
            progress.stop()
        shutil.rmtree(work, ignore_errors=True)

        packed = _repack(packed, records, settings, out_dir, store, writer, stats)
        n_examples = len(writer.db)
        write_manifest(out_dir / "manifest.jsonl", manifest_lines(records) + (packed or {}).get("lines", []))
        write_metadata(out_dir, dataset_metadata(
            sr=settings.sr, channels=settings.channels, num_signal=settings.num_signal,
            n_examples=n_examples, tool_version=__version__))
        return stats
    finally:
        writer.close()
        store.close()


def _plan(
    sources: list[Path], in_dir: Path, out_dir: Path, work: Path, settings: PrepSettings,
    records: dict[str, dict[str, Any]], writer: ExampleWriter, stats: RunStats, strict: bool = False,
) -> tuple[list[SourceJob], dict[str, int], set[str]]:
    """Decide what to do with each found source: (jobs to run, file sizes,
    sources seen). Unchanged ones are counted, unreadable or colliding ones
    skipped (in ``stats``)."""
    from rave_data.prep.fingerprint import fingerprint
    from rave_data.prep.job import SourceJob, output_name

    # Listing the keys maps all of data.mdb (see GrowingEnv.keys): only
    # needed when the sweep found referenced keys missing.
    existing = None if writer.consistent else set(writer.db.keys())
    todo: list[SourceJob] = []
    sizes: dict[str, int] = {}
    seen: set[str] = set()
    claimed: dict[str, str] = {}  # output file -> the source that writes it
    # Which plugin code runs in this run, to find variants made by code that changed.
    identities = None
    if settings.n_variants:
        from rave_data.augment.provenance import current_identities

        identities = current_identities()
    for path in sources:
        rel = path.relative_to(in_dir).as_posix()
        seen.add(rel)
        name = output_name(rel, settings.format).lower()  # lower: case-insensitive filesystems
        if name in claimed:
            stats.skipped.append({"source": rel, "reason": f"its output {output_name(rel, settings.format)} "
                                  f"would overwrite that of {claimed[name]}; rename one of them"})
            continue
        claimed[name] = rel
        old = records.get(rel)
        try:
            sizes[rel] = path.stat().st_size
            # Only a committed source needs its fingerprint to decide; a new
            # one is fingerprinted by its worker, so that reading its edges
            # here does not delay the first worker.
            fp = fingerprint(path) if old is not None else None
        except OSError as exc:
            from rave_data.io.discover import broken_link

            stats.skipped.append({"source": rel, "reason": broken_link(path) or f"cannot read: {exc.strerror or exc}"})
            continue
        if old is not None and old["fingerprint"] == fp and _intact(old, out_dir, existing):
            redo = _stale_variants(old, identities, settings)
            if not redo:
                stats.unchanged += 1
                continue
            stats.rerun.append({"source": rel, "variants": sorted(redo), "why": [f"variant {v}: {w}" for v, w in redo.items()]})
            todo.append(SourceJob(str(path), rel, fp, str(out_dir), str(work), settings, strict=strict,
                                  variants=sorted(redo)))
            continue
        if old is not None:
            why = "source changed" if old["fingerprint"] != fp else "output files or examples missing"
            stats.rerun.append({"source": rel, "variants": None, "why": [why]})
        todo.append(SourceJob(str(path), rel, fp, str(out_dir), str(work), settings, strict=strict))
    return todo, sizes, seen


def _stale_variants(record: dict[str, Any], identities: dict[str, Any] | None, settings: PrepSettings) -> dict[int, str]:
    """Variants of an unchanged source to make again (see rave_data.augment.provenance)."""
    if identities is None:
        return {}
    from rave_data.augment.provenance import stale_variants

    return stale_variants(record, identities, settings.n_variants)


def _intact(record: dict[str, Any], out_dir: Path, existing: set[bytes] | None) -> bool:
    """Every output file and every LMDB key of a committed source still there
    (``existing`` None: all referenced keys are known to exist)."""
    return all(
        (out_dir / line["output"]).is_file()
        and (existing is None or all(k.encode() in existing for k in line["keys"]))
        for line in record["outputs"]
    )


def _drop(record: dict[str, Any], out_dir: Path, store: ManifestStore, writer: ExampleWriter,
          keep: set[str] = frozenset()) -> None:
    """Remove a committed source: files, then its keys, then its record. A
    crash in between leaves a record whose keys are missing, which the next
    run notices (the source is redone or dropped again), never unreferenced
    keys below the largest referenced one (see ExampleWriter.sweep)."""
    for line in record["outputs"]:
        if line["output"] not in keep:
            (out_dir / line["output"]).unlink(missing_ok=True)
            _drop_tail(line, out_dir)
    writer.delete(k.encode() for line in record["outputs"] for k in line["keys"])
    store.forget([record["source"]])


def _drop_tail(line: dict[str, Any], out_dir: Path) -> None:
    if line.get("tail_frames"):
        from rave_data.prep.pack import tail_name

        (out_dir / STATE_DIR / TAILS / tail_name(line["output"])).unlink(missing_ok=True)


def _drop_variants(record: dict[str, Any], variants: list[int], out_dir: Path, writer: ExampleWriter,
                   keep: set[str]) -> list[dict[str, Any]]:
    """Remove the given variants of a committed source (files not in ``keep``,
    then keys); returns the record's other lines. Its record is rewritten
    right after: a crash in between leaves it referencing missing keys, and
    the next run redoes the whole source."""
    redo = set(variants)
    gone = [line for line in record["outputs"] if line.get("variant") in redo]
    for line in gone:
        if line["output"] not in keep:
            (out_dir / line["output"]).unlink(missing_ok=True)
            _drop_tail(line, out_dir)
    writer.delete(k.encode() for line in gone for k in line["keys"])
    return [line for line in record["outputs"] if line.get("variant") not in redo]


def _keep_tail(examples_path: str, output: str, out_dir: Path) -> None:
    """Move an output's tail from the worker's folder to where packing reads it."""
    from rave_data.prep.pack import tail_name
    from rave_data.prep.job import tail_path

    tails = out_dir / STATE_DIR / TAILS
    tails.mkdir(parents=True, exist_ok=True)
    os.replace(tail_path(examples_path), tails / tail_name(output))


def _repack(packed: dict[str, Any] | None, records: dict[str, dict[str, Any]], settings: PrepSettings,
            out_dir: Path, store: ManifestStore, writer: ExampleWriter, stats: RunStats) -> dict[str, Any] | None:
    """Rebuild the packed examples (``--pack``) when this run changed the
    dataset; returns the packed record (None without --pack). The old packed
    keys go first; the new ones are recorded once written, so a kill in
    between leaves only unreferenced keys, swept at the next start."""
    if not settings.pack:
        if packed is not None:
            writer.delete(k.encode() for line in packed["lines"] for k in line["keys"])
            store.set_packed(None)
        return None
    if packed is not None and not stats.processed and not stats.removed and writer.consistent:
        return packed
    from rave_data.prep.pack import Packer, pieces

    if packed is not None:
        writer.delete(k.encode() for line in packed["lines"] for k in line["keys"])
    items = pieces(records, out_dir / STATE_DIR / TAILS)
    packer = Packer(settings.channels, settings.example_frames, settings.sr)
    provenance: list[list[dict[str, Any]]] = []

    def examples() -> Iterator[Any]:
        for example, prov in packer.examples(items):
            provenance.append(prov)
            yield example

    keys = writer.append(examples())
    lines = [{"kind": "packed", "keys": [key], "pieces": prov, "sr": settings.sr, "channels": settings.channels,
              "tool_version": __version__} for key, prov in zip(keys, provenance)]
    packed = {"lines": lines, "left_frames": packer.left}
    store.set_packed(packed)
    return packed


def _commit(result: SourceResult, settings: PrepSettings, records: dict[str, dict[str, Any]], out_dir: Path,
            store: ManifestStore, writer: ExampleWriter, stats: RunStats) -> None:
    """Put one processed source into the dataset (replacing its old version)."""
    from rave_data.dataset.writer import read_values

    old = records.pop(result.source, None)
    stats.warnings.extend(result.warnings)
    stats.failed_variants.extend({"source": result.source, **f} for f in result.failed_variants)
    if result.skipped is not None:
        stats.skipped.append({"source": result.source, "reason": result.skipped})
        if old is not None:
            _drop(old, out_dir, store, writer)
        return
    new_outputs = {o.line["output"] for o in result.outputs}
    lines = []
    if old is not None and result.variants is not None:
        # Only some variants were made again: the source's other outputs stay.
        lines = _drop_variants(old, result.variants, out_dir, writer, keep=new_outputs)
    elif old is not None:
        # New files already replaced same-named old ones; drop the rest, old keys too.
        _drop(old, out_dir, store, writer, keep=new_outputs)
    for out in result.outputs:
        line = dict(out.line)
        try:
            line["keys"] = writer.append(read_values(out.examples_path)) if out.examples_path else []
        except (OSError, ValueError) as exc:
            # The worker's batch file is unusable (should never happen): the
            # keys written so far are unreferenced and swept next run.
            stats.skipped.append({"source": result.source, "reason": f"failed: worker output unreadable ({exc})"})
            return
        if out.examples_path:
            os.unlink(out.examples_path)
            if line.get("tail_frames"):
                _keep_tail(out.examples_path, line["output"], out_dir)
        lines.append(line)
    lines.sort(key=lambda line: line.get("variant") or 0)  # the original first, then variants in order
    if old is not None and result.variants is not None:  # the original was not redone
        result.trimmed_seconds, result.short = old.get("trimmed_seconds", 0.0), old.get("short", False)
    record = {"source": result.source, "fingerprint": result.fingerprint, "outputs": lines,
              "trimmed_seconds": round(result.trimmed_seconds, 6), "short": result.short,
              "failed_variants": result.failed_variants}
    store.commit(record)
    records[result.source] = record
    stats.processed.append(result.source)
