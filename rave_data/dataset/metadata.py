"""``metadata.yaml``: the dataset facts acids-rave reads, plus our own.

acids-rave's ``rave train`` reads ``lazy`` (must be false: the audio is in the
LMDB, not re-decoded at training time) and ``channels``; ``n_seconds`` is
informative. We add ``sr``, ``num_signal``, ``example_frames``,
``n_examples`` and the tool that wrote it, which our reader uses and
acids-rave ignores.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

METADATA_NAME = "metadata.yaml"


def dataset_metadata(
    *, sr: int, channels: int, num_signal: int, n_examples: int, tool_version: str
) -> dict[str, Any]:
    """The ``metadata.yaml`` mapping of a dataset of ``n_examples`` examples,
    each ``2 * num_signal`` frames per channel."""
    example_frames = 2 * num_signal
    return {
        "lazy": False,
        "channels": int(channels),
        "sr": int(sr),
        "n_seconds": round(n_examples * example_frames / sr, 3),
        "num_signal": int(num_signal),
        "example_frames": example_frames,
        "n_examples": int(n_examples),
        "tool": "ravedata",
        "tool_version": tool_version,
    }


def write_metadata(folder: Path | str, meta: dict[str, Any]) -> None:
    import yaml

    from rave_data.dataset.manifest import write_atomic

    write_atomic(Path(folder) / METADATA_NAME, yaml.safe_dump(meta, sort_keys=False))


def read_metadata(folder: Path | str) -> dict[str, Any]:
    """The folder's ``metadata.yaml`` as a dict; ``{}`` when absent (old or
    foreign datasets may have none)."""
    import yaml

    path = Path(folder) / METADATA_NAME
    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}
