"""The one error an import raises for a source it cannot use."""
from __future__ import annotations


class ImportFailure(ValueError):
    """A file or model that cannot be imported; ``str()`` names the file and the reason."""
