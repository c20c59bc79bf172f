"""One source file from start to finish, as a worker process runs it.

decode -> channels -> resample -> trim silence -> (measure) -> normalise ->
write the processed audio + cut LMDB examples -> (each augmented variant).

Everything streams in blocks; the only whole-file state is the :class:`Spool`
that holds the processed stream (on disk beyond 64 MB) until the
normalisation gain is known. The worker never touches the LMDB: it leaves each
output's examples (encoded) in a batch file under ``out/.ravedata/work-PID`` and the
parent commits them in a fixed order (see :func:`rave_data.prep.pool.start_order`),
so keys do not depend on ``--jobs``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rave_data import __version__
from rave_data.dataset.codec import encode_waveform
from rave_data.dataset.writer import write_value
from rave_data.prep.blocks import BLOCK_FRAMES, Scratch, quantize_into, scaled, segments
from rave_data.prep.job import OutputResult, SourceJob, SourceResult, output_name, tail_path
from rave_data.prep.settings import PrepSettings
from rave_data.prep.spool import Spool

#: Augmentation is applied per segment of this many seconds so memory stays
#: bounded on hour-long files (effects with tails restart at each boundary).
AUGMENT_SEGMENT_SECONDS = 60.0


class _Examples:
    """Cuts an int16 stream into [channels, frames] examples, encoded as
    AudioExample values into a batch file (the encoding runs here, in the
    parallel workers); the tail that does not fill a whole example is counted,
    not written."""

    def __init__(self, path: Path, channels: int, frames: int, sr: int) -> None:
        self.path = path
        self.frames = frames
        self.sr = sr
        self.count = 0
        self._buf = np.zeros((channels, frames), np.int16)
        self._fill = 0
        self._file = open(path, "wb")

    def feed(self, q: np.ndarray) -> None:
        pos = 0
        while pos < q.shape[1]:
            n = min(self.frames - self._fill, q.shape[1] - pos)
            self._buf[:, self._fill : self._fill + n] = q[:, pos : pos + n]
            self._fill += n
            pos += n
            if self._fill == self.frames:
                write_value(self._file, encode_waveform(self._buf, self.sr))
                self.count += 1
                self._fill = 0

    def finish(self, pad_short: bool, tail_path: Path | None = None) -> int:
        """Close the file; returns the tail (frames in no example of this
        output). With ``tail_path`` (``--pack``) the tail is written there,
        raw int16 [channels, frames], for :mod:`rave_data.prep.pack`."""
        dropped = self._fill
        if tail_path is not None and self._fill:
            np.ascontiguousarray(self._buf[:, : self._fill]).tofile(tail_path)
        if pad_short and self.count == 0 and self._fill:
            # Zero-pad a file shorter than one example into one example.
            self._buf[:, self._fill :] = 0
            write_value(self._file, encode_waveform(self._buf, self.sr))
            self.count, dropped = 1, 0
        self._file.close()
        return dropped


@functools.cache
def _unsynced_soundfile() -> type:
    """``soundfile.SoundFile`` whose ``close()`` does not fsync.

    soundfile's close() calls flush(), which is libsndfile's sf_write_sync, an
    fsync: every worker would wait for its output file to reach the disk
    (its cost is in docs/prep.md, "Worker output stage"). Nothing relies on it: a killed
    run never leaves a half-written file under its real name (temp name +
    rename), the header is still written by sf_close, and the dataset proper
    (data.mdb) is committed with LMDB's own sync."""
    import soundfile as sf

    class UnsyncedSoundFile(sf.SoundFile):
        def flush(self) -> None:
            pass

    return UnsyncedSoundFile


def _emit(
    stream: Iterable[np.ndarray], audio_path: Path, examples_path: Path, s: PrepSettings
) -> tuple[int, int, int]:
    """Write ``stream`` ([channels, n] float32 blocks, already normalised) as the
    output audio file and as examples. Returns (frames, examples, dropped frames).

    The audio goes to a hidden temp name and is renamed into place only when
    complete, so a crash never leaves a half-written file under its real name.
    """
    audio_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = audio_path.with_name(f".{audio_path.name}.{os.getpid()}.tmp")
    cutter = _Examples(examples_path, s.channels, s.example_frames, s.sr)
    scratch = Scratch()
    frames = 0
    try:
        subtype = "PCM_16" if s.bits == 16 else "PCM_24"
        with _unsynced_soundfile()(str(tmp), "w", s.sr, s.channels, subtype, format=s.format.upper()) as f:
            for block in stream:
                # q lives in scratch until the next block: the cutter copies it, f writes it now.
                q = quantize_into(block, scratch.get("f32", block.shape, np.float32), scratch.get("i16", block.shape, np.int16))
                cutter.feed(q)
                # 16-bit: the exact samples the LMDB holds; 24-bit: finer, from the float.
                f.write(q.T if s.bits == 16 else np.clip(block, -1.0, 1.0).T)
                frames += block.shape[1]
        dropped = cutter.finish(s.pad_short, tail_path(examples_path) if s.pack else None)
        os.replace(tmp, audio_path)
    except BaseException:
        cutter.finish(False)
        tmp.unlink(missing_ok=True)
        examples_path.unlink(missing_ok=True)
        tail_path(examples_path).unlink(missing_ok=True)
        raise
    return frames, cutter.count, dropped


def _decode_and_process(job: SourceJob, spool: Spool) -> tuple[Any, list[dict[str, Any]], float, float, list[str]]:
    """Phase 1: decode, mix, resample and trim into ``spool``, measuring as it
    goes. Returns (AudioInfo, steps so far, gain, trimmed seconds, what the
    decode had to make good)."""
    from rave_data.io.decode import open_audio
    from rave_data.process.channels import to_channels
    from rave_data.process.loudness import LoudnessMeter, PeakMeter
    from rave_data.process.normalize import db_to_gain, normalize_gain
    from rave_data.process.resample import StreamResampler
    from rave_data.process.trim import SilenceTrimmer

    s = job.settings
    peak = PeakMeter()
    loud = LoudnessMeter(s.sr, s.channels) if s.normalize == "loudness" else None
    with open_audio(job.path, strict=job.strict) as src:
        info = src.info
        rs = StreamResampler(info.sr, s.sr, s.channels)
        trimmer = SilenceTrimmer(s.sr, s.channels, s.silence_db, s.max_silence, True) if s.trim else None

        def keep(y: np.ndarray) -> None:
            if trimmer is not None:
                y = trimmer.process(y)
            peak.feed(y)
            if loud is not None:
                loud.feed(y)
            spool.append(y)

        for block in src.blocks(BLOCK_FRAMES):
            keep(rs.process(to_channels(block, s.channels)))
        keep(rs.flush())
        decoders, shortfall, notes = src.decoders, src.shortfall_seconds, src.warnings
    if trimmer is not None:
        tail = trimmer.flush()
        peak.feed(tail)
        if loud is not None:
            loud.feed(tail)
        spool.append(tail)

    if peak.peak < db_to_gain(s.silence_db):
        raise _Skip(f"silent: no sample above {s.silence_db:g} dBFS")
    trimmed = trimmer.removed_frames / s.sr if trimmer is not None else 0.0
    lufs = loud.integrated_lufs() if loud is not None else float("nan")
    gain = normalize_gain(s.normalize, peak.peak, lufs, s.target_lufs, s.peak_db)
    decode: dict[str, Any] = {"backend": info.backend, "format": info.format, "sr": info.sr, "channels": info.channels}
    if len(decoders) > 1:
        decode["decoders"] = decoders  # a decoder failed and the next took over
    if shortfall:
        decode["shortfall_seconds"] = round(shortfall, 6)
    steps: list[dict[str, Any]] = [
        {"name": "decode", "params": decode},
        {"name": "channels", "params": {"from": info.channels, "to": s.channels}},
        {"name": "resample", "params": {"sr_in": info.sr, "sr_out": s.sr}},
    ]
    if trimmer is not None:
        steps.append({"name": "trim", "params": {"silence_db": s.silence_db, "max_silence": s.max_silence, "removed_seconds": round(trimmed, 6)}})
    norm: dict[str, Any] = {"mode": s.normalize, "gain_db": round(20 * math.log10(gain), 4), "peak_before": round(peak.peak, 6)}
    if s.normalize == "peak":
        norm["peak_db"] = s.peak_db
    elif s.normalize == "loudness":
        norm.update(target_lufs=s.target_lufs, peak_db=s.peak_db, measured_lufs=round(lufs, 3))
    steps.append({"name": "normalize", "params": norm})
    return info, steps, gain, trimmed, notes


class _Skip(Exception):
    """The source is skipped; ``str()`` is the reason."""


def _line(job: SourceJob, out_rel: str, seconds_in: float, frames: int, dropped: int, steps: list[dict[str, Any]],
          kind: str, variant: int | None, augment: list[dict[str, Any]] | None, n_examples: int) -> dict[str, Any]:
    s = job.settings
    return {
        "source": job.rel,
        "source_fingerprint": job.fingerprint,
        "output": out_rel,
        "kind": kind,
        "variant": variant,
        "augment": augment,
        "seconds_in": round(seconds_in, 6),
        "seconds_out": round(frames / s.sr, 6),
        "sr": s.sr,
        "channels": s.channels,
        "format": s.format,
        "bits": s.bits,
        "steps": steps,
        "keys": [],
        "examples": n_examples,
        "dropped_seconds": round(dropped / s.sr, 6),
        **({"tail_frames": dropped} if s.pack else {}),  # handed to rave_data.prep.pack
        "tool_version": __version__,
    }


def process_source(job: SourceJob) -> SourceResult:
    """Process one source completely. Never raises for a bad file: the reason
    comes back in :attr:`SourceResult.skipped` and nothing of it is left."""
    from rave_data.io.audioinfo import DecodeError
    from rave_data.prep.fingerprint import fingerprint

    s = job.settings
    if job.fingerprint is None:
        # Before reading any audio: a file changed while it is processed then
        # differs from its record, and the next run does it again.
        try:
            job = dataclasses.replace(job, fingerprint=fingerprint(job.path))
        except OSError as exc:
            return SourceResult(job.rel, None, skipped=f"cannot read: {exc.strerror or exc}")
    result = SourceResult(job.rel, job.fingerprint)
    work = Path(job.work_dir)
    tag = hashlib.sha1(job.rel.encode()).hexdigest()[:16]
    spool = Spool(s.channels, work / f"{tag}.spool.f32")
    try:
        try:
            info, steps, gain, trimmed, notes = _decode_and_process(job, spool)
        except DecodeError as exc:
            result.skipped = exc.reason
            return result
        except _Skip as exc:
            result.skipped = str(exc)
            return result
        except MemoryError:
            result.skipped = "out of memory while decoding"
            return result
        except OSError as exc:
            result.skipped = f"cannot read: {exc.strerror or exc}"
            return result
        result.seconds_in = info.seconds
        result.trimmed_seconds = trimmed
        result.warnings.extend(f"{job.rel}: {note}" for note in notes)
        steps = steps + [{"name": "quantize", "params": {"bits": s.bits, "lmdb": "int16"}}]

        result.variants = job.variants
        if job.variants is None:  # else only some variants are made again, the original is kept
            out_rel = output_name(job.rel, s.format)
            ex_path = work / f"{tag}.orig.examples"
            frames, n_ex, dropped = _emit(scaled(spool, gain, Scratch()), Path(job.out_dir) / out_rel, ex_path, s)
            result.short = frames < s.example_frames
            result.outputs.append(OutputResult(
                _line(job, out_rel, info.seconds, frames, dropped, steps, "original", None, None, n_ex),
                str(ex_path), n_ex))

        if s.n_variants:
            _variants(job, spool, gain, info.seconds, steps, result, tag)
        return result
    except Exception as exc:  # noqa: BLE001 - one bad file must never abort the batch
        # Unexpected (a bug, a full disk): skip the source, drop what it wrote.
        for out in result.outputs:
            (Path(job.out_dir) / out.line["output"]).unlink(missing_ok=True)
            if out.examples_path:
                Path(out.examples_path).unlink(missing_ok=True)
        first = (str(exc).strip().splitlines() or [""])[0]
        return SourceResult(job.rel, job.fingerprint, skipped=f"failed: {type(exc).__name__}: {first}")
    finally:
        spool.close()


def augmented(chain: Any, parts: Iterable[np.ndarray], whole: bool, vspool: Spool, sr: int,
              on_step: Any = None) -> Iterator[np.ndarray]:
    """A variant's blocks: ``chain`` applied to each of ``parts`` ([channels,
    n] float32 segments of the processed stream), never clipped and never
    with level jumps.

    ``whole``: the file is one segment, and the chain scales its result down
    as a whole when it would exceed full scale. A longer file is augmented
    segment by segment into ``vspool`` first, and the whole variant is then
    scaled once by its overall peak: scaling each segment on its own would
    change the level at every segment boundary.
    """
    from rave_data.augment.chain import PEAK_CEILING

    if whole:
        yield from (chain.apply(x, sr, on_step=on_step) for x in parts)
        return
    peak = 0.0
    for x in parts:
        y = chain.apply(x, sr, peak_ceiling=None, on_step=on_step)
        if y.size:
            peak = max(peak, float(np.max(np.abs(y))))
        vspool.append(y)
    g = np.float32(PEAK_CEILING / peak) if peak > PEAK_CEILING else None
    for block in vspool.blocks(BLOCK_FRAMES):
        yield block if g is None else block * g


def _variants(job: SourceJob, spool: Spool, gain: float, seconds_in: float, steps: list[dict[str, Any]],
              result: SourceResult, tag: str) -> None:
    """Write each augmented variant of the processed audio (or those in
    ``job.variants``). A failing chain (a buggy plugin) costs that variant
    only: a warning, and a failure record (chain, step, traceback) that the
    next run retries. Each line records the plugins that made it."""
    import tomllib

    from rave_data.augment import AugmentError, parse_plan, variant_rng
    from rave_data.augment.plan import default_plan_text
    from rave_data.augment.provenance import StepMarker, chain_plugins, current_identities, failure_record, marker_path

    s = job.settings
    plan = parse_plan(tomllib.loads(s.augment_plan or default_plan_text()), source="augmentation plan")
    identities = current_identities()
    seg = max(1, int(AUGMENT_SEGMENT_SECONDS * s.sr))
    for v in job.variants if job.variants is not None else range(1, s.n_variants + 1):
        chain = plan.sample(variant_rng(s.seed, job.rel, v))
        record = chain.to_record()
        out_rel = output_name(job.rel, s.format, v)
        ex_path = Path(job.work_dir) / f"{tag}.aug{v:02d}.examples"
        vspool = Spool(s.channels, Path(job.work_dir) / f"{tag}.aug{v:02d}.spool.f32")
        marker = StepMarker(marker_path(job.work_dir, job.rel), v, chain)
        try:
            stream = augmented(chain, segments(scaled(spool, gain), seg), spool.frames <= seg, vspool, s.sr, marker)
            frames, n_ex, dropped = _emit(stream, Path(job.out_dir) / out_rel, ex_path, s)
        except AugmentError as exc:
            result.warnings.append(f"{job.rel}: variant {v} not written: {exc}")
            result.failed_variants.append(failure_record(v, exc))
            continue
        finally:
            marker.clear()
            vspool.close()
        vsteps = steps[:-1] + [{"name": "augment", "params": {"chain": record, "segment_seconds": AUGMENT_SEGMENT_SECONDS}}] + steps[-1:]
        line = _line(job, out_rel, seconds_in, frames, dropped, vsteps, "augmented", v, record, n_ex)
        line["plugins"] = chain_plugins(chain, identities)
        result.outputs.append(OutputResult(line, str(ex_path), n_ex))
