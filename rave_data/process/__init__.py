"""Signal processing for ``prep``: channels, resampling, loudness, normalisation, trimming.

Each step is a small module with streaming classes (``process(block)`` /
``flush()``) over float32 arrays of shape [channels, n], so a file of any
length goes through in constant memory. Nothing here imports torch (the
resampler is numpy); scipy is imported inside the loudness meter only.
"""
from __future__ import annotations

from rave_data.process.channels import to_channels
from rave_data.process.loudness import LoudnessMeter, PeakMeter
from rave_data.process.normalize import MODES as NORMALIZE_MODES
from rave_data.process.normalize import normalize_gain
from rave_data.process.resample import StreamResampler, resample
from rave_data.process.trim import SilenceTrimmer

__all__ = [
    "NORMALIZE_MODES",
    "LoudnessMeter",
    "PeakMeter",
    "SilenceTrimmer",
    "StreamResampler",
    "normalize_gain",
    "resample",
    "to_channels",
]
