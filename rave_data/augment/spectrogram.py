"""Before/after spectrogram images with numpy and zlib only (no matplotlib, no pillow).

``spectrogram_png(rows, sr, path)`` stacks one spectrogram per signal (the
original on top, then each variant) on a shared time axis, so a time-stretched
variant is visibly shorter or longer, and writes an 8-bit RGB PNG.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Rows of each band: log-spaced frequencies from F_MIN to Nyquist.
BAND_HEIGHT = 128
F_MIN = 40.0
N_FFT = 2048
#: Dark-blue -> purple -> orange -> pale-yellow ramp (a magma-like palette: dark = quiet).
_PALETTE = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    dtype=np.float64,
)
_SEPARATOR = (255, 255, 255)


def stft_db(x: np.ndarray, hop: int, n_fft: int = N_FFT) -> np.ndarray:
    """Magnitude in dB of mono ``x`` [n]: [n_fft // 2 + 1, frames] float64."""
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft), axis=1)).T
    return 20.0 * np.log10(spec + 1e-9)


def _log_rows(db: np.ndarray, sr: int, height: int) -> np.ndarray:
    """Resample the frequency axis to ``height`` log-spaced rows, lowest frequency at the bottom."""
    n_bins = db.shape[0]
    freqs = np.geomspace(F_MIN, sr / 2, height)
    bins = np.clip(np.round(freqs / (sr / 2) * (n_bins - 1)).astype(int), 0, n_bins - 1)
    return db[bins][::-1]


def _colour(values: np.ndarray) -> np.ndarray:
    """[h, w] in 0..1 -> [h, w, 3] uint8 through the palette."""
    pos = np.clip(values, 0.0, 1.0) * (len(_PALETTE) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(_PALETTE) - 1)
    frac = (pos - lo)[..., None]
    return (_PALETTE[lo] * (1 - frac) + _PALETTE[hi] * frac).round().astype(np.uint8)


def write_png(path: Path | str, rgb: np.ndarray) -> None:
    """Write [h, w, 3] uint8 as a PNG (filter type 0 on every row, zlib level 6)."""
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit, colour type 2 (RGB)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)


def spectrogram_image(rows: Sequence[np.ndarray], sr: int, width: int = 800, dynamic_db: float = 80.0) -> np.ndarray:
    """One band per signal in ``rows`` (each [channels, n]); returns [h, w, 3] uint8.

    All bands share the time scale of the longest signal and one dB scale
    (relative to the loudest bin over all bands), so level changes show too.
    """
    longest = max(r.shape[1] for r in rows)
    hop = max(1, int(np.ceil(max(longest - N_FFT, 1) / max(width - 1, 1))))
    dbs = [_log_rows(stft_db(r.mean(axis=0).astype(np.float64), hop), sr, BAND_HEIGHT) for r in rows]
    top = max(float(d.max()) for d in dbs)
    cols = max(d.shape[1] for d in dbs)
    bands = []
    for d in dbs:
        band = _colour((d - (top - dynamic_db)) / dynamic_db)
        if band.shape[1] < cols:  # shorter signal: black after its end
            band = np.concatenate([band, np.zeros((BAND_HEIGHT, cols - band.shape[1], 3), np.uint8)], axis=1)
        bands.append(band)
        bands.append(np.broadcast_to(np.array(_SEPARATOR, np.uint8), (2, cols, 3)))
    return np.concatenate(bands[:-1], axis=0)


def spectrogram_png(rows: Sequence[np.ndarray], sr: int, path: Path | str, width: int = 800) -> None:
    write_png(path, spectrogram_image(rows, sr, width=width))
