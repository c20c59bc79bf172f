"""Which decoders read a file, in which order: chosen by its extension.

Kept apart from :mod:`rave_data.io.decode` (numpy, the decoders) so that
``prep``'s parent can choose what its workers preload without importing them.
The order is measured, fastest exact decoder first: the table and how it was
measured are in docs/prep.md ("Decoders").
"""
from __future__ import annotations

import os
from pathlib import Path

_SF_FIRST = ("soundfile", "pyav", "pedalboard")
_AV_FIRST = ("pyav", "soundfile", "pedalboard")
#: Decoders by extension, tried in this order (others: soundfile first).
#: libsndfile reads PCM in place and is faster than FFmpeg on FLAC and MP3;
#: FFmpeg's Opus decoder runs at twice libsndfile's speed and its Vorbis
#: decoder as fast, and decodes Vorbis files to the end where libsndfile's
#: stops short; m4a/aac/wma have no other reader.
DECODERS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("ogg", "oga", "opus"), _AV_FIRST),
    **dict.fromkeys(("m4a", "mp4", "aac", "wma", "alac", "ac3", "mka", "webm"), ("pyav",)),
}

#: Extensions only PyAV reads: its reason for refusing one is the one reported.
AV_ONLY: frozenset[str] = frozenset(e for e, order in DECODERS.items() if order == ("pyav",))


def decoders_for(path: Path | str) -> tuple[str, ...]:
    """The decoders tried for ``path``, in order (chosen by its extension)."""
    return DECODERS.get(os.path.splitext(str(path))[1][1:].lower(), _SF_FIRST)
