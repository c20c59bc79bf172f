"""ravedata-roomverb: room reverb by convolution with synthetic impulse responses."""
from __future__ import annotations

__version__ = "0.1.0"
