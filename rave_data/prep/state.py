"""What ``prep`` keeps in ``out/`` and how it checks and cleans that folder.

``out/`` holds the dataset (``data.mdb``, ``manifest.jsonl``,
``metadata.yaml``, ``report.json``, ``audio/``) and a hidden state folder
:data:`STATE_DIR`: the lock, the manifest store (``state/``: one record per
committed source), the tails kept for packing (:data:`TAILS`) and one work
folder per run (``work-PID``) where workers leave their results.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

STATE_DIR = ".ravedata"
#: Under STATE_DIR: each output's frames left for packing (prep --pack).
TAILS = "tails"
#: Everything ``prep`` writes in out/ besides ``audio/`` (and all that ``--overwrite`` deletes).
OWN_FILES = ("data.mdb", "lock.mdb", "metadata.yaml", "manifest.jsonl", "report.json")


def committed(out_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """The committed sources' records and the packed record of ``out_dir``."""
    from rave_data.dataset.manifest import ManifestStore

    store = ManifestStore(out_dir / STATE_DIR / "state")
    try:
        return store.records(), store.packed()
    finally:
        store.close()


def wipe(out_dir: Path) -> None:
    """Delete what a previous prep wrote (only our own names, never the user's)."""
    for name in OWN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for sub in (out_dir / "audio", out_dir / STATE_DIR / "state", out_dir / STATE_DIR / TAILS):
        shutil.rmtree(sub, ignore_errors=True)
    remove_work_dirs(out_dir / STATE_DIR)


def remove_work_dirs(state: Path) -> None:
    """Delete the work folders of earlier runs under ``state``."""
    for old in state.glob("work-*"):
        shutil.rmtree(old, ignore_errors=True)


def remove_temp_audio(audio_dir: Path) -> None:
    """Delete the hidden ``.name.PID.tmp`` files: audio a killed worker was writing."""
    if audio_dir.is_dir():
        for dirpath, _, files in os.walk(audio_dir):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    os.unlink(os.path.join(dirpath, name))
