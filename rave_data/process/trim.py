"""Silence trimming, streaming: drop edge silence, shorten long pauses.

Detection: the signal is cut into 10 ms frames aligned on the start of the
stream (so the result does not depend on how it was split into blocks); a
frame is silent when its RMS over all channels is below ``silence_db`` dBFS.
Runs of silent frames are "silences"; everything else is kept untouched.

- Leading and trailing silences are removed (``trim_edges=True``).
- An internal silence longer than ``max_silence`` seconds keeps
  ``max_silence / 2`` next to the sound before it and ``max_silence / 2`` next
  to the sound after it; the middle is dropped. Pauses keep their feel (a
  breath, a gap between phrases) but a recording that idles for minutes does
  not fill the dataset with nothing.
- With ``trim_edges=False`` the edges are treated like one side of an internal
  pause: at most ``max_silence / 2`` is kept next to the sound.

The cut is made inside material already below the threshold, and a 5 ms
fade-out / fade-in on either side of the splice removes even that small step,
so splices do not click.

Memory: only the silence being measured is buffered, and of it at most
1.5 x ``max_silence`` (its first ``max_silence`` and its last
``max_silence / 2``), however long it lasts.
"""
from __future__ import annotations

import numpy as np

FRAME_SECONDS = 0.01
FADE_SECONDS = 0.005


def _fade(x: np.ndarray, n: int, out: bool) -> np.ndarray:
    """Copy of [C, m] ``x`` with a linear fade over its last (``out``) or first ``n`` samples."""
    n = min(n, x.shape[1])
    if n <= 0:
        return x
    x = x.copy()
    ramp = np.linspace(1.0, 0.0, n + 2, dtype=np.float32)[1:-1]  # never exactly 1 or 0 inside the fade
    if out:
        x[:, -n:] *= ramp
    else:
        x[:, :n] *= ramp[::-1]
    return x


class SilenceTrimmer:
    """Stream [channels, n] float32 blocks through :meth:`process`, then :meth:`flush`.

    Both return the kept audio (possibly [channels, 0]).
    :attr:`removed_frames` counts the frames dropped so far.
    """

    def __init__(
        self,
        sr: int,
        channels: int,
        silence_db: float,
        max_silence: float,
        trim_edges: bool = True,
    ) -> None:
        if max_silence < 0:
            raise ValueError(f"max_silence must be >= 0 seconds, got {max_silence}")
        self.sr, self.channels = int(sr), int(channels)
        self.silence_db, self.max_silence, self.trim_edges = float(silence_db), float(max_silence), trim_edges
        self.removed_frames = 0
        self._frame = max(1, round(FRAME_SECONDS * self.sr))
        self._fade = max(1, round(FADE_SECONDS * self.sr))
        self._threshold = 10.0 ** (self.silence_db / 10.0)  # on mean square
        keep = round(self.max_silence * self.sr)
        self._keep_before = keep // 2  # kept after the sound that precedes a pause
        self._keep_after = keep - self._keep_before  # kept before the sound that follows it
        self._rem = np.zeros((self.channels, 0), np.float32)  # unfinished frame
        self._started = False  # any sound seen yet
        self._flushed = False
        # The silence run being measured: its length, its first ``keep`` samples
        # (head) and its last ``keep_after`` samples (tail).
        self._sil_n = 0
        self._head: list[np.ndarray] = []
        self._head_n = 0
        self._tail = np.zeros((self.channels, 0), np.float32)

    def _empty(self) -> np.ndarray:
        return np.zeros((self.channels, 0), np.float32)

    # silence bookkeeping -----------------------------------------------------
    def _add_silence(self, seg: np.ndarray) -> None:
        self._sil_n += seg.shape[1]
        room = self._keep_before + self._keep_after - self._head_n
        if room > 0:
            part = seg[:, :room].copy()
            self._head.append(part)
            self._head_n += part.shape[1]
        if self._keep_after:
            self._tail = np.concatenate([self._tail, seg[:, -self._keep_after :]], axis=1)[:, -self._keep_after :]

    def _reset_silence(self) -> None:
        self._sil_n, self._head, self._head_n = 0, [], 0
        self._tail = self._empty()

    def _head_array(self, n: int) -> np.ndarray:
        head = np.concatenate(self._head, axis=1) if self._head else self._empty()
        return head[:, :n]

    def _end_silence(self) -> list[np.ndarray]:
        """Sound follows the current silence: return what of it is kept."""
        n = self._sil_n
        if n == 0:
            return []
        if not self._started:  # leading silence
            kept = [] if self.trim_edges else [_fade(self._tail, self._fade, out=False)]
        elif n <= self._keep_before + self._keep_after:  # short pause: kept whole
            kept = [self._head_array(n)]
        else:
            kept = [
                _fade(self._head_array(self._keep_before), self._fade, out=True),
                _fade(self._tail, self._fade, out=False),
            ]
        self.removed_frames += n - sum(k.shape[1] for k in kept)
        self._reset_silence()
        return kept

    def _end_trailing(self) -> list[np.ndarray]:
        n = self._sil_n
        kept = []
        if self._started and not self.trim_edges and n:
            kept = [_fade(self._head_array(self._keep_before), self._fade, out=True)]
        self.removed_frames += n - sum(k.shape[1] for k in kept)
        self._reset_silence()
        return kept

    # frames --------------------------------------------------------------------
    def _consume(self, x: np.ndarray, frame: int) -> list[np.ndarray]:
        """Classify ``x`` ([C, k*frame]) in frames of ``frame`` and route the runs."""
        nf = x.shape[1] // frame
        if nf == 0:
            return []
        ms = np.square(x[:, : nf * frame].reshape(self.channels, nf, frame)).mean(axis=(0, 2))
        silent = ms < self._threshold
        edges = np.flatnonzero(silent[1:] != silent[:-1]) + 1
        starts = np.concatenate([[0], edges])
        ends = np.concatenate([edges, [nf]])
        out: list[np.ndarray] = []
        for s, e in zip(starts.tolist(), ends.tolist()):
            seg = x[:, s * frame : e * frame]
            if silent[s]:
                self._add_silence(seg)
            else:
                out.extend(self._end_silence())
                out.append(seg)
                self._started = True
        return out

    def process(self, block: np.ndarray) -> np.ndarray:
        """Take a [channels, n] block; return the [channels, m] audio now known to be kept."""
        if self._flushed:
            raise RuntimeError("SilenceTrimmer.process called after flush")
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a [{self.channels}, n] block, got shape {block.shape}")
        x = np.concatenate([self._rem, block.astype(np.float32, copy=False)], axis=1)
        whole = x.shape[1] // self._frame * self._frame
        out = self._consume(x[:, :whole], self._frame)
        self._rem = x[:, whole:].copy()
        return np.concatenate(out, axis=1) if out else self._empty()

    def flush(self) -> np.ndarray:
        """Finish the stream: classify the last partial frame, drop trailing silence."""
        if self._flushed:
            raise RuntimeError("SilenceTrimmer.flush called twice")
        self._flushed = True
        out = self._consume(self._rem, self._rem.shape[1]) if self._rem.shape[1] else []
        self._rem = self._empty()
        out.extend(self._end_trailing())
        return np.concatenate(out, axis=1) if out else self._empty()
