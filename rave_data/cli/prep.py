"""``ravedata prep IN OUT``: a thin wrapper over :func:`rave_data.prep.prep`.

Parses options into :class:`~rave_data.prep.settings.PrepSettings` (whose
defaults are the options' defaults), draws the progress bar, prints the
summary (or JSON) and sets the exit status. Every option is explained in
docs/prep.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rave_data.prep.settings import DEFAULT_VARIANTS, PrepSettings

#: The settings of a bare ``ravedata prep IN OUT``.
DEFAULTS = PrepSettings()


def prep_command(
    in_dir: Path = typer.Argument(..., help="Folder of recordings (searched recursively).", show_default=False),
    out_dir: Path = typer.Argument(..., help="Dataset folder to create or update.", show_default=False),
    sr: int = typer.Option(DEFAULTS.sr, "--sr", help="Target sample rate in Hz (the model's rate)."),
    channels: int = typer.Option(DEFAULTS.channels, "--channels", help="Channels to keep: 1 = mono mix; N > 1 keeps N (mono is duplicated)."),
    normalize: str = typer.Option(DEFAULTS.normalize, "--normalize", help="peak | loudness | none."),
    target_lufs: float = typer.Option(DEFAULTS.target_lufs, "--target-lufs", help="Loudness target for --normalize loudness (LUFS)."),
    peak_db: float = typer.Option(DEFAULTS.peak_db, "--peak-db", help="Peak level for --normalize peak, ceiling for loudness (dBFS)."),
    no_trim: bool = typer.Option(not DEFAULTS.trim, "--no-trim", help="Keep all silence (no trimming at all)."),
    max_silence: float = typer.Option(DEFAULTS.max_silence, "--max-silence", help="Internal silences longer than this (s) are shortened to it."),
    silence_db: float = typer.Option(DEFAULTS.silence_db, "--silence-db", help="Level below which audio counts as silence (dBFS)."),
    fmt: str = typer.Option(DEFAULTS.format, "--format", help="Processed audio format under out/audio: wav | flac."),
    bits: int = typer.Option(DEFAULTS.bits, "--bits", help="Bit depth of the processed audio files: 16 | 24."),
    num_signal: int = typer.Option(DEFAULTS.num_signal, "--num-signal", help="Training crop length; each LMDB example holds 2x this per channel."),
    pad_short: bool = typer.Option(DEFAULTS.pad_short, "--pad-short", help="Zero-pad files shorter than one example into one example."),
    pack: bool = typer.Option(DEFAULTS.pack, "--pack", help="Pack files shorter than one example and the tails of longer ones into whole examples (5 ms crossfades; provenance in the manifest)."),
    augment: bool = typer.Option(DEFAULTS.augment, "--augment", help="Also write augmented variants of every source."),
    variants: Optional[int] = typer.Option(None, "--variants", help=f"Augmented variants per source (default {DEFAULT_VARIANTS} with --augment)."),
    seed: int = typer.Option(DEFAULTS.seed, "--seed", help="Seed of the augmentation draws."),
    augment_config: Optional[Path] = typer.Option(None, "--augment-config", help="Augmentation plan (TOML) instead of the default plan."),
    include: Optional[list[str]] = typer.Option(None, "--include", help="Only files matching this glob (repeatable)."),
    exclude: Optional[list[str]] = typer.Option(None, "--exclude", help="Skip files matching this glob (repeatable)."),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Worker processes (0 = all cores)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the dataset in OUT and rebuild it from scratch."),
    strict: bool = typer.Option(False, "--strict", help="Skip files that decode short of their header (kept with a warning otherwise); exit with status 1 when any file was skipped or warned about."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    show_traceback: bool = typer.Option(False, "--traceback", "-v", help="For each variant an augmenter failed on: its sampled chain and full traceback (stderr)."),
) -> None:
    """Turn a folder of recordings into a RAVE training set (LMDB + processed audio)."""
    import sys

    from rave_data.prep import PrepError, prep
    from rave_data.prep.settings import SettingsError, read_plan_text

    def fail(message: str) -> None:
        typer.echo(f"ravedata prep: error: {message}", err=True)
        raise typer.Exit(2)

    try:
        if augment_config is not None and not augment:
            raise SettingsError("--augment-config needs --augment")
        plan_text = read_plan_text(augment_config)
        if augment:
            _check_plan(plan_text)
        settings = PrepSettings(
            sr=sr, channels=channels, normalize=normalize, target_lufs=target_lufs, peak_db=peak_db,
            trim=not no_trim, max_silence=max_silence, silence_db=silence_db, format=fmt, bits=bits,
            num_signal=num_signal, pad_short=pad_short, pack=pack, augment=augment, variants=variants,
            seed=seed, augment_plan=plan_text,
        )
    except (SettingsError, ValueError) as exc:
        fail(str(exc))
        return

    progress = None
    if not quiet and not as_json and sys.stderr.isatty():
        from rave_data.prep.progress import RichProgress

        progress = RichProgress()
    try:
        report = prep(in_dir, out_dir, settings, jobs=jobs or None, include=include or (),
                      exclude=exclude or (), overwrite=overwrite, progress=progress, strict=strict)
    except PrepError as exc:
        fail(str(exc))
        return
    except KeyboardInterrupt:
        typer.echo("ravedata prep: interrupted; run the same command again to finish", err=True)
        raise typer.Exit(130) from None

    if show_traceback:
        from rave_data.augment.provenance import format_failure

        for failure in report["run"]["failed_variants"]:
            typer.echo(format_failure(failure["source"], failure), err=True)
    if as_json:
        import json

        typer.echo(json.dumps(report, indent=2))
    elif not quiet:
        from rave_data.prep.report import format_summary

        typer.echo(format_summary(report))
    if not report["dataset"]["examples"] and report["run"]["files_found"]:
        # Loud whatever --quiet/--json: an empty dataset is never what was wanted.
        typer.echo(f"ravedata prep: {report['run']['warnings'][-1]}", err=True)
        raise typer.Exit(1)
    if strict and (report["run"]["skipped"] or report["run"]["warnings"]):
        raise typer.Exit(1)


def _check_plan(plan_text: str | None) -> None:
    """Fail before any work when the plan names unknown augmenters."""
    import tomllib

    from rave_data.augment import get_registry, parse_plan
    from rave_data.augment.plan import default_plan_text

    # A plugin that failed to load is named, even when the plan does not use it.
    reg = get_registry()
    for err in reg.errors:
        typer.echo(f"ravedata prep: warning: {err}", err=True)
    for note in reg.notes:  # augmenter name clashes
        typer.echo(f"ravedata prep: warning: {note}", err=True)
    try:
        parse_plan(tomllib.loads(plan_text or default_plan_text()), source="--augment-config")
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"--augment-config: not valid TOML: {exc}") from None
