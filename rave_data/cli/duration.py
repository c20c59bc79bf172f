"""`ravedata duration` (being written)."""
from __future__ import annotations
