"""Listening commands: ``ravemodel generate / encode / decode / reconstruct``.

Thin wrappers over :mod:`rave_model.generate` and :mod:`rave_model.listen`.
MODEL is a run folder, a checkpoint file or an exported ``.ts`` file. Any
problem with a model, audio or latent file ends in one line on stderr naming
the file and exit status 2 (:mod:`rave_model.cli.errors`); nothing half-written
is left behind.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer

from rave_model.cli.app import app
from rave_model.cli.errors import guarded

MODEL_HELP = "A run folder (ravemodel fit), a checkpoint file, or an exported .ts file."
SEED_HELP = "Seed of every random draw (same seed, same output)."


def _run(command: str, work: Callable[[], str]) -> None:
    """Run ``work`` (which returns the line to print) under :func:`guarded`."""
    typer.echo(guarded(command, work))


@app.command("generate")
def generate_cmd(
    model: Path = typer.Argument(..., help=MODEL_HELP, show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Output wav (32-bit float, the model's rate).", show_default=False),
    seconds: float = typer.Option(10.0, "--seconds", "-s", help="Seconds of new audio."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Sampling temperature: <1 safer, >1 wilder, 0 most likely."),
    seed: Optional[int] = typer.Option(None, "--seed", help=SEED_HELP),
    prime: Optional[Path] = typer.Option(None, "--prime", help="Continue this recording (it starts the output).", show_default=False),
) -> None:
    """Generate audio with the prior (stage 3) and the decoder."""

    def work() -> str:
        from rave_model.generate import generate
        from rave_model.listen import load_listener

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        listener = load_listener(model)
        columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("generate", total=None)
            audio = generate(
                listener, seconds, temperature=temperature, seed=seed, prime=prime,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        return _write(output, audio, listener.sr)

    _run("generate", work)


@app.command("encode")
def encode_cmd(
    model: Path = typer.Argument(..., help=MODEL_HELP, show_default=False),
    audio: Path = typer.Argument(..., help="Audio file (any format, rate and channel count).", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Output .npy, float32 [latent, frames].", show_default=False),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
) -> None:
    """Encode an audio file to its latent trajectory (PCA space)."""

    def work() -> str:
        from rave_model.listen import encode_file, load_listener, save_latents

        listener = load_listener(model)
        z = encode_file(listener, audio, seed=seed)
        save_latents(output, z)
        return f"{output}: {z.shape[0]} latent dimensions x {z.shape[1]} frames ({listener.hop} samples each)"

    _run("encode", work)


@app.command("decode")
def decode_cmd(
    model: Path = typer.Argument(..., help=MODEL_HELP, show_default=False),
    latents: Path = typer.Argument(..., help=".npy latents [latent, frames] (e.g. from ravemodel encode).", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Output wav (32-bit float, the model's rate).", show_default=False),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
) -> None:
    """Decode a latent trajectory to audio."""

    def work() -> str:
        from rave_model.listen import decode_latents, load_latents, load_listener

        listener = load_listener(model)
        y = decode_latents(listener, load_latents(latents), seed=seed)
        return _write(output, y, listener.sr)

    _run("decode", work)


@app.command("reconstruct")
def reconstruct_cmd(
    model: Path = typer.Argument(..., help=MODEL_HELP, show_default=False),
    audio: Path = typer.Argument(..., help="Audio file (any format, rate and channel count).", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Output wav (32-bit float, the model's rate).", show_default=False),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
) -> None:
    """Encode then decode an audio file: hear what the model keeps."""

    def work() -> str:
        from rave_model.listen import load_listener, reconstruct_file

        listener = load_listener(model)
        y = reconstruct_file(listener, audio, seed=seed)
        return _write(output, y, listener.sr)

    _run("reconstruct", work)


def _write(output: Path, audio: "numpy.ndarray", sr: int) -> str:
    """Write ``audio`` [channels, n] to ``output``; the one-line summary the commands print."""
    from rave_model.listen import write_audio

    write_audio(output, audio, sr)
    return f"{output}: {audio.shape[1] / sr:.2f} s, {audio.shape[0]} ch, {sr} Hz"
