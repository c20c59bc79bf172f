"""Before/after spectrograms for ``ravedata preview``, drawn with matplotlib.

One panel per signal (the original on top, then each variant), all on one
time axis in seconds (so a time-stretched variant is visibly shorter or
longer), a log-frequency axis in Hz, one colour scale in dBFS shared by every
panel (so level changes show as brightness) with its colour bar, and a label
per panel naming the chain. A variant that failed gets an empty panel whose
label says why.

matplotlib rather than a hand-made PNG: tick labels, panel labels and a
colour bar need text rendering, which matplotlib's Agg backend does well and
byte-reproducibly (same version, same fonts: it ships DejaVu). It is imported
only here, so no other command pays for it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Rows of each panel: log-spaced frequencies from F_MIN to Nyquist.
N_ROWS = 256
F_MIN = 40.0
N_FFT = 2048
#: Colour scale: from the loudest bin of all panels down this many dB.
DYNAMIC_DB = 80.0
#: Labels longer than this are cut (a long chain would run off the panel).
MAX_LABEL = 150


@dataclass
class Panel:
    """One row of the figure: ``audio`` [channels, n] float32, or None for a failed variant."""

    label: str
    audio: np.ndarray | None
    error: str | None = None


def stft_db(x: np.ndarray, hop: int, n_fft: int = N_FFT) -> np.ndarray:
    """Level in dBFS of mono ``x`` [n]: [n_fft // 2 + 1, frames] float64.

    Scaled so that a full-scale sine reads 0 dB at its frequency (the Hann
    window's sum / 2 is the peak magnitude of a unit sine).
    """
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = np.hanning(n_fft)
    spec = np.abs(np.fft.rfft(x[idx] * window, axis=1)).T / (window.sum() / 2)
    return 20.0 * np.log10(spec + 1e-10)


def log_rows(db: np.ndarray, sr: int, rows: int = N_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Resample the frequency axis to ``rows`` log-spaced frequencies
    (lowest first); returns (levels [rows, frames], frequencies [rows] in Hz)."""
    n_bins = db.shape[0]
    freqs = np.geomspace(F_MIN, sr / 2, rows)
    bins = np.clip(np.round(freqs / (sr / 2) * (n_bins - 1)).astype(int), 0, n_bins - 1)
    return db[bins], freqs


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "\u2026"


def spectrogram_figure(panels: Sequence[Panel], sr: int, width: int = 1000) -> Any:
    """A matplotlib Figure of ``panels`` (see the module docstring)."""
    from matplotlib.figure import Figure

    drawn = [p.audio for p in panels if p.audio is not None]
    longest = max((a.shape[1] for a in drawn), default=1)
    hop = max(1, int(np.ceil(max(longest - N_FFT, 1) / max(width - 1, 1))))
    levels = {i: log_rows(stft_db(p.audio.mean(axis=0).astype(np.float64), hop), sr)
              for i, p in enumerate(panels) if p.audio is not None}
    # The scale ends at the loudest level over all panels, rounded up to 10 dB.
    top = 10.0 * np.ceil(max((float(d.max()) for d, _ in levels.values()), default=0.0) / 10.0)
    seconds = longest / sr

    fig = Figure(figsize=(width / 100, 0.6 + 1.7 * len(panels)), dpi=100, layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    log_lo, log_hi = np.log10(F_MIN), np.log10(sr / 2)
    ticks = [f for f in (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000) if F_MIN <= f <= sr / 2]
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        if i in levels:
            db, _ = levels[i]
            dur = panel.audio.shape[1] / sr
            # Rows are log-spaced: drawn on a log10(Hz) scale with ticks named in Hz.
            image = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                              extent=(0.0, dur, log_lo, log_hi), vmin=top - DYNAMIC_DB, vmax=top)
        else:
            ax.set_facecolor("#e8e8e8")
            ax.text(0.5, 0.5, _short(panel.error or "failed"), transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="#a00000", wrap=True)
        ax.set_xlim(0.0, seconds)
        ax.set_ylim(log_lo, log_hi)
        ax.set_yticks([np.log10(f) for f in ticks], [f"{f // 1000}k" if f >= 1000 else str(f) for f in ticks])
        ax.set_ylabel("Hz")
        ax.set_title(_short(panel.label), loc="left", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.01, aspect=40)
        bar.set_label("level (dBFS)")
    return fig


def spectrogram_png(panels: Sequence[Panel], sr: int, path: Path | str, width: int = 1000) -> None:
    """Draw :func:`spectrogram_figure` into a PNG (no timestamp or version
    in it, so the same input gives the same bytes)."""
    fig = spectrogram_figure(panels, sr, width=width)
    fig.savefig(str(path), format="png", metadata={"Software": None})
