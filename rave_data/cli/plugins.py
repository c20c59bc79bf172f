"""`ravedata plugins` (being written)."""
from __future__ import annotations
