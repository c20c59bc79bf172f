"""``prep --pack``: short files and the tails of longer ones, packed into whole examples.

Without packing, an output keeps only the whole examples it fills: a file
shorter than one example (2 x num_signal frames) gives none,
and so a folder of one-shots, sentences or samples gives an empty dataset.
With ``--pack`` each output's leftover frames (all of a short file, the tail
of a longer one) are kept as a *piece* (``out/.ravedata/tails/``), and after
every run the pieces of the whole dataset are laid end to end into examples:

- in a fixed order (sources sorted by path, each original before its
  variants), so the packed examples depend on the sources alone, never on
  ``--jobs`` or on the order workers finish in;
- joined with an equal-power crossfade of :data:`CROSSFADE_SECONDS` (shorter
  for pieces under twice that), so no example holds a click at a join;
- whole examples only: what is left after the last one is counted in
  ``report.json`` (``seconds_pack_left``), not written.

Every packed example has a manifest line (``kind: "packed"``) naming each
piece in it: ``source``, ``output``, ``offset`` (first frame of the piece in
that output file), ``frames`` and ``at`` (its first frame in the example).
The packed examples are rebuilt whenever a run changed the dataset; their
keys follow those of the sources.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Length of the crossfade at each join (equal-power): long enough to hide
#: a click, short enough to leave a one-shot's attack mostly intact.
CROSSFADE_SECONDS = 0.005

def tail_name(output: str) -> str:
    """File name of an output's piece under ``out/.ravedata/tails/``."""
    return hashlib.sha1(output.encode()).hexdigest() + ".i16"


@dataclass(frozen=True)
class Piece:
    source: str
    output: str
    offset: int  # first frame of the piece in its output file
    frames: int
    path: Path  # raw int16 [channels, frames], C order


def pieces(records: dict[str, dict[str, Any]], tails: Path) -> list[Piece]:
    """The pieces of every committed output, in packing order."""
    out: list[Piece] = []
    for source in sorted(records):
        for line in records[source]["outputs"]:
            n = int(line.get("tail_frames") or 0)
            if n:
                total = int(round(line["seconds_out"] * line["sr"]))
                out.append(Piece(source, line["output"], total - n, n, tails / tail_name(line["output"])))
    return out


class Packer:
    """Lays pieces end to end into examples; after :meth:`examples` is
    exhausted, :attr:`left` holds the frames that filled no whole example."""

    def __init__(self, channels: int, example_frames: int, sr: int) -> None:
        self.channels = channels
        self.example_frames = example_frames
        self.fade = max(1, int(round(CROSSFADE_SECONDS * sr)))
        self.left = 0

    def examples(self, items: list[Piece]) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
        """Yield (int16 [channels, example_frames], provenance of its pieces)
        for each whole example the pieces fill."""
        size = self.example_frames
        buf = np.zeros((self.channels, size), np.float32)
        fill = 0
        prov: list[dict[str, Any]] = []
        prev = 0  # frames of the previous piece in this example (0: none)
        for item in items:
            x = np.fromfile(item.path, np.int16).reshape(self.channels, -1).astype(np.float32)
            if x.shape[1] != item.frames:
                raise ValueError(f"{item.path}: holds {x.shape[1]} frames, the manifest says {item.frames}")
            pos = 0  # frames of x used
            while pos < x.shape[1]:
                first = pos
                if prev and fill:
                    # Overlap the start of this piece with the end of the last one.
                    f = min(self.fade, fill, prev // 2, (x.shape[1] - pos) // 2)
                    if f > 0:
                        ramp = np.sin(0.5 * np.pi * (np.arange(f, dtype=np.float32) + 0.5) / f)
                        buf[:, fill - f : fill] *= np.sqrt(1.0 - ramp * ramp)
                        buf[:, fill - f : fill] += x[:, pos : pos + f] * ramp
                        pos += f
                at = fill - (pos - first)
                n = min(size - fill, x.shape[1] - pos)
                buf[:, fill : fill + n] = x[:, pos : pos + n]
                fill, pos = fill + n, pos + n
                prev = fill - at
                prov.append({"source": item.source, "output": item.output, "offset": item.offset + first,
                             "frames": prev, "at": at})
                if fill == size:
                    np.clip(np.rint(buf), -32767, 32767, out=buf)
                    yield buf.astype(np.int16), prov
                    fill, prov, prev = 0, [], 0
        self.left = fill
