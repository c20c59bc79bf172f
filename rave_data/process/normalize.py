"""Normalisation: the one gain applied to a whole file."""
from __future__ import annotations

import math

#: The modes ``normalize_gain`` accepts.
MODES: tuple[str, ...] = ("peak", "loudness", "none")


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def normalize_gain(
    mode: str, peak: float, lufs: float, target_lufs: float, peak_db: float
) -> float:
    """Linear gain that normalises a file measured at ``peak`` (linear sample
    peak) and ``lufs`` (BS.1770 integrated loudness).

    - ``"peak"``: the sample peak lands on ``peak_db`` dBFS.
    - ``"loudness"``: the loudness lands on ``target_lufs``, except that the
      gain is lowered so the peak never exceeds ``peak_db`` (the gain is
      limited; samples are never clipped), so very dynamic files end up a little
      quieter than the target.
    - ``"none"``: 1.0.

    A silent file (peak 0, or loudness -inf because every block was gated)
    gets 1.0: there is nothing to scale. Raises ValueError on an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown normalize mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "none" or not (peak > 0.0) or not math.isfinite(peak):
        return 1.0
    ceiling = db_to_gain(peak_db) / peak
    if mode == "peak":
        return ceiling
    if not math.isfinite(lufs):
        return 1.0
    return min(db_to_gain(target_lufs - lufs), ceiling)
