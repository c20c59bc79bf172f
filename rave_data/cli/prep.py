"""`ravedata prep` (being written)."""
from __future__ import annotations
