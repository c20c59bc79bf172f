"""rave_data: turn a folder of recordings into a RAVE training set.

Importing this package is cheap: it never imports torch, torchaudio or
pedalboard at start-up (``ravedata --help`` must be instant). Heavy modules are
imported inside the functions that need them.
"""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations (``@rave_data.hookimpl``).
hookimpl = pluggy.HookimplMarker("ravedata")

__all__ = ["__version__", "hookimpl"]
