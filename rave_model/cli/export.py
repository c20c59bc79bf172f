"""``ravemodel export RUN [-o model.ts] [--offline] [--fidelity 0.95]``: a thin wrapper
over :func:`rave_model.export.export_run`. The default is the streaming model nn~ needs
(nn~ calls the model buffer by buffer); ``--offline`` writes the whole-signal model."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rave_model.cli.app import app
from rave_model.cli.errors import fail, guarded


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="Run folder (ravemodel fit) or checkpoint file.", show_default=False),
    output: Optional[Path] = typer.Option(
        None,
        "-o",
        "--output",
        help="Output .ts file (default: RUN/NAME.ts, or RUN/NAME_offline.ts with --offline; NAME: the run folder's name).",
        show_default=False,
    ),
    streaming: bool = typer.Option(
        True,
        "--streaming/--offline",
        " /--no-streaming",
        help="--streaming (default): buffer-by-buffer output equals whole-signal output, what nn~ needs. "
        "--offline (alias --no-streaming): each call is an isolated whole signal (for files; clicks at every nn~ buffer).",
    ),
    fidelity: float = typer.Option(
        0.95, "--fidelity", min=0.01, max=1.0, help="Share of latent variance kept; sets how many latent dimensions nn~ shows."
    ),
    which: str = typer.Option("last", "--checkpoint", help="Which checkpoint of the run: last or best."),
) -> None:
    """Export a trained model to TorchScript for nn~ (Max/MSP, PureData) or torch.jit.load."""
    if which not in ("last", "best"):
        fail("export", f"--checkpoint must be last or best, got {which!r}")
    if not run.exists():  # answer before paying for the torch import
        fail("export", f"{run}: no such run folder or checkpoint file")

    def work() -> tuple[Path, dict]:
        from rave_model.export import export_run

        return export_run(run, output, fidelity=fidelity, streaming=streaming, which=which)

    path, info = guarded("export", work)
    mode = "streaming (for nn~)" if info["streaming"] else "offline (whole signals; clicks at nn~'s buffer edges)"
    typer.echo(
        f"{path}: {mode} model, {info['sampling_rate']} Hz, "
        f"{info['channels']} ch, {info['latent_dims']}/{info['full_latent_size']} latent dims "
        f"(fidelity {fidelity:g}), hop {info['hop_length']}, prior: {'yes' if info['prior'] else 'no'}"
    )
