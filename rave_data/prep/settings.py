"""What ``prep`` does to every source: the settings that shape the output.

Only settings that change the bytes of the dataset live here (sample rate,
channels, processing, augmentation). How a run is carried out (``--jobs``,
``--quiet``, ``--include``) is not a setting: changing it never invalidates an
existing ``out/``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NORMALIZE_MODES = ("peak", "loudness", "none")
FORMATS = ("wav", "flac")
BITS = (16, 24)
#: Augmented variants written per source by ``--augment`` without ``--variants``.
DEFAULT_VARIANTS = 4


class SettingsError(ValueError):
    """A setting out of range; ``str()`` is a one-line message for the user."""


@dataclass(frozen=True)
class PrepSettings:
    """Every knob of ``ravedata prep`` that changes what is written.

    These defaults are the command's: ``ravedata prep``'s options take them
    from here (documented in docs/prep.md).
    """

    sr: int = 44100
    channels: int = 1
    normalize: str = "peak"
    target_lufs: float = -23.0
    peak_db: float = -1.0
    trim: bool = True
    max_silence: float = 1.0
    silence_db: float = -60.0
    format: str = "wav"
    bits: int = 16
    num_signal: int = 131072
    pad_short: bool = False
    #: Pack short files and the tails of longer ones into whole examples (rave_data.prep.pack).
    pack: bool = False
    augment: bool = False
    #: None: :data:`DEFAULT_VARIANTS` with ``augment``, else 0.
    variants: int | None = None
    seed: int = 0
    #: Text of the augmentation plan file (not its path: moving the file must
    #: not invalidate the dataset, editing it must).
    augment_plan: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.variants is None:
            object.__setattr__(self, "variants", DEFAULT_VARIANTS if self.augment else 0)
        if not 1000 <= self.sr <= 768000:
            raise SettingsError(f"--sr {self.sr}: expected a sample rate between 1000 and 768000 Hz")
        if not 1 <= self.channels <= 64:
            raise SettingsError(f"--channels {self.channels}: expected 1 to 64")
        if self.normalize not in NORMALIZE_MODES:
            raise SettingsError(f"--normalize {self.normalize}: expected one of {', '.join(NORMALIZE_MODES)}")
        if self.format not in FORMATS:
            raise SettingsError(f"--format {self.format}: expected wav or flac")
        if self.bits not in BITS:
            raise SettingsError(f"--bits {self.bits}: expected 16 or 24")
        if self.num_signal < 256:
            raise SettingsError(f"--num-signal {self.num_signal}: expected at least 256 samples")
        if self.max_silence < 0:
            raise SettingsError(f"--max-silence {self.max_silence}: expected seconds >= 0")
        if self.silence_db >= 0:
            raise SettingsError(f"--silence-db {self.silence_db}: expected a level below 0 dBFS")
        if self.variants < 0:
            raise SettingsError(f"--variants {self.variants}: expected 0 or more")
        if self.pack and self.pad_short:
            raise SettingsError("--pack and --pad-short exclude each other (--pack keeps short files without padding)")
        if self.augment and self.variants == 0:
            raise SettingsError("--augment needs --variants N with N >= 1")

    @property
    def example_frames(self) -> int:
        """Frames per channel in one LMDB example: 2 x num_signal, as acids-rave
        writes, so that training can crop ``num_signal`` at a random offset."""
        return 2 * self.num_signal

    @property
    def n_variants(self) -> int:
        """Augmented variants written per source (0 unless ``--augment``)."""
        return self.variants if self.augment else 0

    def to_record(self) -> dict[str, Any]:
        """JSON-able form; the plan text is replaced by its hash to stay short."""
        import hashlib

        rec = asdict(self)
        if not rec["pack"]:
            del rec["pack"]  # absent unless set: datasets made before the option match
        plan = rec.pop("augment_plan")
        rec["augment_plan_sha1"] = hashlib.sha1(plan.encode()).hexdigest() if plan is not None else None
        return rec

    def signature(self) -> str:
        """Stable text compared against the settings an ``out/`` was made with."""
        import json

        return json.dumps(self.to_record(), sort_keys=True)

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """Human-readable ``name: old -> new`` for each setting that differs."""
        mine = self.to_record()
        return [
            f"{k}: {stored.get(k)!r} -> {mine.get(k)!r}"
            for k in sorted(set(mine) | set(stored))
            if stored.get(k) != mine.get(k)
        ]


def read_plan_text(path: Path | str | None) -> str | None:
    """The augmentation plan file's text (``None`` without a file)."""
    if path is None:
        return None
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read augmentation plan ({exc.strerror or exc})") from None
