"""rave_model: train RAVE models from a ravedata dataset and export them for nn~."""
from __future__ import annotations

__version__ = "0.1.0"
