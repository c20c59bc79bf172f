"""``ravemodel import SOURCE RUN``: an acids-rave 2.x run (.ckpt + config.gin) or exported
.ts as a ravemodel run folder. A thin wrapper over :func:`rave_model.imports.import_model`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rave_model.cli.app import app
from rave_model.cli.errors import fail, guarded


@app.command("import")
def import_cmd(
    source: Path = typer.Argument(
        ..., help="acids-rave run folder (rave train's output), one of its .ckpt files, or a .ts from rave export.", show_default=False
    ),
    run: Path = typer.Argument(..., help="Run folder to create (then: ravemodel export / reconstruct / fit RUN).", show_default=False),
    gin: Optional[Path] = typer.Option(
        None, "--gin", help="The run's config.gin, when it is not in the .ckpt's folder or the two above.", show_default=False
    ),
    force: bool = typer.Option(False, "--force", help="Replace a checkpoint already in RUN."),
) -> None:
    """Import a model trained with acids-rave 2.x (RAVE) as a ravemodel run."""
    if not source.exists():  # answer before paying for the torch import
        fail("import", f"{source}: no such file or folder")
    if gin is not None and not gin.is_file():
        fail("import", f"{gin}: no such gin config file")

    def work():
        from rave_model.imports import import_model

        return import_model(source, run, gin=gin, force=force)

    report = guarded("import", work)
    cfg = report.config
    m = cfg.model
    typer.echo(
        f"{report.checkpoint}: {m.architecture} model from an acids-rave {report.kind} ({report.source}), "
        f"capacity {m.capacity}, ratios {m.ratios}, {m.n_bands} bands, {m.latent_size} latent dims, "
        f"{cfg.data.sr} Hz, {cfg.data.channels} ch; stages done: {', '.join(report.done)}"
    )
    for note in report.notes:
        typer.echo(f"note: {note}")

