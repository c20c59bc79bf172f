"""Signal processing for ``prep``: channels, resampling, loudness, normalisation, trimming.

Each step is a small module with streaming classes (``process(block)`` /
``flush()``) over float32 arrays of shape [channels, n], so a file of any
length goes through in constant memory. Importing this package is cheap: torch
and scipy are imported inside the classes that use them.
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
