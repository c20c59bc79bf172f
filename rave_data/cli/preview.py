"""`ravedata preview` (being written)."""
from __future__ import annotations
