"""Preview a plan on one file: a few augmented versions and a before/after spectrogram.

Library side of ``ravedata preview``; callable from Python.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rave_data.augment.chain import Chain
from rave_data.augment.contract import AugmentError
from rave_data.augment.plan import Plan, variant_rng


@dataclass
class PreviewResult:
    audio: list[Path | None] = field(default_factory=list)  # one file per variant, in order (None: failed)
    image: Path | None = None
    chains: list[Chain] = field(default_factory=list)
    record: Path | None = None
    #: Variants an augmenter failed on: (variant number, the error).
    failures: list[tuple[int, AugmentError]] = field(default_factory=list)


def read_excerpt(path: Path, start: float, seconds: float) -> tuple[np.ndarray, int]:
    """[channels, n] float32 from ``start`` for ``seconds`` (0 = to the end), streamed."""
    from rave_data.io.decode import open_audio

    with open_audio(path) as src:
        sr = src.info.sr
        first = int(round(start * sr))
        want = int(round(seconds * sr)) if seconds > 0 else None
        parts, pos, got = [], 0, 0
        for block in src.blocks(1 << 16):
            lo = max(first - pos, 0)
            pos += block.shape[1]
            if lo >= block.shape[1]:
                continue
            piece = block[:, lo:]
            if want is not None:
                piece = piece[:, : want - got]
            parts.append(piece)
            got += piece.shape[1]
            if want is not None and got >= want:
                break  # a long file is not decoded past the excerpt
        channels = src.info.channels
    audio = np.concatenate(parts, axis=1) if parts else np.zeros((channels, 0), np.float32)
    return audio, sr


def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    """24-bit WAV written to a temp name then renamed. Not float: libsndfile
    stamps float WAVs with a PEAK chunk holding the time, so identical audio
    would give different files; the chain keeps peaks below full scale anyway."""
    import soundfile as sf

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, np.ascontiguousarray(audio.T), sr, subtype="PCM_24", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def preview(path: Path | str, plan: Plan, out_dir: Path | str, n: int = 4, seed: int = 0,
            start: float = 0.0, seconds: float = 20.0) -> PreviewResult:
    """Write ``n`` variants of ``path`` (``<stem>.augNN.wav``), ``<stem>.preview.png``
    (original on top, then each variant) and ``<stem>.preview.json`` (the chains).

    Variants use the same :func:`variant_rng` as ``prep`` with the file name as
    source id, so for a file at the top of ``in/``, ``prep --seed S`` draws the
    same chains as ``preview --seed S`` (prep names sources by their path in in/).
    A variant whose augmenter fails gets no audio file, an empty labelled
    panel, its error in the JSON and in ``result.failures``; the others are
    written as usual. Raises DecodeError for an unreadable file, ValueError
    for an empty excerpt.
    """
    from rave_data.augment.spectrogram import Panel, spectrogram_png

    path, out_dir = Path(path), Path(out_dir)
    x, sr = read_excerpt(path, start, seconds)
    if x.shape[1] == 0:
        raise ValueError(f"{path}: no audio at {start:g} s (the file is shorter)")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = PreviewResult()
    panels = [Panel(f"original: {path.name} ({start:g} s to {start + x.shape[1] / sr:g} s)", x)]
    variants: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        dest = out_dir / f"{path.stem}.aug{i:02d}.wav"
        chain = Chain()  # stays empty when drawing the parameters fails
        try:
            chain = plan.sample(variant_rng(seed, path.name, i))
            y = chain.apply(x, sr)
        except AugmentError as exc:
            result.chains.append(chain)
            dest.unlink(missing_ok=True)  # never leave an older run's file under this name
            result.audio.append(None)
            result.failures.append((i, exc))
            panels.append(Panel(f"aug{i:02d} FAILED: {chain.describe()}", None, str(exc)))
            variants.append({"output": None, "augment": chain.to_record(), "error": str(exc),
                             "failed_step": exc.step, "traceback": exc.traceback})
            continue
        result.chains.append(chain)
        _write_wav(dest, y, sr)
        result.audio.append(dest)
        panels.append(Panel(f"aug{i:02d}: {chain.describe()}", y))
        variants.append({"output": dest.name, "augment": chain.to_record()})
    result.image = out_dir / f"{path.stem}.preview.png"
    spectrogram_png(panels, sr, result.image)
    result.record = out_dir / f"{path.stem}.preview.json"
    record: dict[str, Any] = {
        "source": str(path), "sr": sr, "start": start, "seconds": x.shape[1] / sr, "seed": seed,
        "plan": plan.to_dict(), "variants": variants,
    }
    result.record.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return result
