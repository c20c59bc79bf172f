"""Our built-in augmenters: ordinary plugin modules, registered by rave_data.plugins
through the same ``pm.register`` path as any third-party plugin."""
from __future__ import annotations
