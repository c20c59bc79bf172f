"""Turn a read acids-rave source into a ravemodel run folder.

The run folder holds what ``ravemodel fit`` would have written (see
:mod:`rave_model.train.checkpoint`)::

    RUN/checkpoints/last.ckpt     a checkpoint (Checkpoint), stage "imported"
    RUN/acids-rave-config.gin     the reference's gin config (checkpoint imports)

Stages: "vae" is marked done (the weights are a trained representation and carry the
reference's latent PCA); "adversarial" too when the reference had passed its
``phase_1_duration`` (its ``warmed_up`` flag). The checkpoint's stage is "imported",
which no training stage resumes, so ``ravemodel fit DATA --run RUN`` starts each
stage still to do from its beginning: the reference's optimiser and discriminator
states are not carried over.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rave_model.imports.errors import ImportFailure

STAGE = "imported"
GIN_COPY = "acids-rave-config.gin"


@dataclass
class ImportReport:
    """What an import wrote and what it could not carry over."""

    run_dir: Path
    checkpoint: Path
    source: Path
    kind: str  # "checkpoint" or "export"
    config: Any
    done: list[str]
    step: int
    notes: list[str] = field(default_factory=list)


def import_model(source: Path | str, output: Path | str, gin: Path | str | None = None, force: bool = False) -> ImportReport:
    """Import an acids-rave run folder, ``.ckpt`` file or exported ``.ts`` into ``output``.

    Args:
        source: acids-rave run folder, ``.ckpt`` or ``.ts``.
        output: run folder to create.
        gin: the ``config.gin`` of a checkpoint, when it is not beside or above it.
        force: replace a checkpoint already in ``output``.

    Raises:
        ImportFailure: the source cannot be read or mapped; ``output`` already holds a
            run (without ``force``). The message names the file and the reason.
    """
    from rave_model.listen import is_scripted_file
    from rave_model.train import checkpoint as ckpt_io

    source, output = Path(source), Path(output)
    if not source.exists():
        raise ImportFailure(f"{source}: no such file or folder")
    target = ckpt_io.checkpoint_dir(output) / ckpt_io.LAST
    if target.exists() and not force:
        raise ImportFailure(f"{output}: already holds a run ({target}); choose another output folder or pass --force")
    notes: list[str] = []
    if is_scripted_file(source):
        if gin is not None:
            raise ImportFailure(f"{gin}: --gin applies to checkpoints; a .ts carries its own architecture")
        from rave_model.imports.scripted import read_export

        ref = read_export(source)
        cfg, state, warmed, step, kind = ref.config, ref.state, ref.warmed_up, 0, "export"
        notes += ref.notes
        notes.append(
            "a .ts holds no training configuration: losses, discriminator and schedules are the "
            f"ravemodel preset of the same family (see config)"
        )
        provenance = {"kind": "acids-rave export", "path": str(source.resolve()), "streaming": ref.streaming}
        origin = source
    else:
        from rave_model.imports.lightning import read_checkpoint

        ref = read_checkpoint(source, Path(gin) if gin is not None else None)
        cfg = _config_from_gin(ref.gin_text, ref.gin_path)
        _adopt_channels(cfg, ref.state, ref.path)
        state, warmed, step, kind = ref.state, ref.warmed_up, ref.step, "checkpoint"
        provenance = {
            "kind": "acids-rave checkpoint",
            "path": str(ref.path.resolve()),
            "gin": str(ref.gin_path.resolve()),
            "lightning": ref.lightning_version,
            "step": ref.step,
            "epoch": ref.extra.get("epoch"),
        }
        origin = ref.path
    model = _build_model(cfg, state, origin)
    model.set_warmed_up(warmed)
    if float(model.fidelity.abs().sum()) == 0.0:
        # The reference fits its PCA at validation during phase 1 only; until then it
        # holds the identity and a zero fidelity. A ramp keeps every dimension at export.
        import torch

        L = int(model.latent_size)
        model.fidelity.copy_(torch.arange(1, L + 1, dtype=torch.float32) / L)
        notes.append(f"the source had no latent PCA yet (identity): all {L} latent dimensions are kept at export")
    done = ["vae", "adversarial"] if warmed else ["vae"]
    provenance.update(acids_rave="2.x (the file does not record the exact version)", warmed_up=bool(warmed))
    checkpoint = _write_run(output, cfg, model, done, step, provenance)
    if kind == "checkpoint":
        shutil.copyfile(ref.gin_path, output / GIN_COPY)
    return ImportReport(run_dir=output, checkpoint=checkpoint, source=origin, kind=kind, config=cfg, done=done, step=step, notes=notes)


def _config_from_gin(text: str, path: Path) -> Any:
    try:
        from rave_model.reference import config_from_gin
    except ImportError as exc:  # pragma: no cover - the mapping module ships with the package
        raise ImportFailure(f"{path}: this ravemodel cannot read gin configs ({exc})") from None
    try:
        return config_from_gin(text)
    except (ValueError, KeyError, TypeError) as exc:
        msg = str(exc).strip("'\"")
        raise ImportFailure(f"{path}: cannot map this acids-rave config: {msg}") from None


def _adopt_channels(cfg: Any, state: dict[str, Any], path: Path) -> None:
    """``rave train --channels N`` passes the channel count outside the gin config; the
    first encoder convolution sees ``n_bands * channels`` inputs."""
    for key in ("encoder.encoder.net.0.weight_v", "encoder.encoder.net.0.weight"):
        w = state.get(key)
        if w is not None and w.dim() == 3:
            inputs = int(w.shape[1])
            if inputs % cfg.model.n_bands:
                raise ImportFailure(f"{path}: the encoder takes {inputs} inputs, not a multiple of {cfg.model.n_bands} PQMF bands")
            cfg.data.channels = inputs // cfg.model.n_bands
            return


def _build_model(cfg: Any, ref_state: dict[str, Any], origin: Path) -> Any:
    """Our RAVE with the reference's weights; every tensor of ours must be filled."""
    from rave_model.model import RAVE

    try:
        from rave_model.reference import state_dict_from_reference
    except ImportError as exc:  # pragma: no cover
        raise ImportFailure(f"{origin}: this ravemodel cannot map acids-rave weights ({exc})") from None
    try:
        model = RAVE(cfg)
    except ValueError as exc:
        raise ImportFailure(f"{origin}: cannot build the model: {exc}") from None
    try:
        ours = state_dict_from_reference(ref_state, cfg)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ImportFailure(f"{origin}: cannot map the weights: {str(exc).strip(chr(39))}") from None
    for name in ("latent_pca", "latent_mean", "fidelity"):
        if name not in ours and name in ref_state:
            ours[name] = ref_state[name]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    if missing:
        raise ImportFailure(f"{origin}: the source has no weights for {len(missing)} tensors of the model, e.g. {', '.join(missing[:3])}")
    for key, value in expected.items():
        if tuple(ours[key].shape) != tuple(value.shape):
            raise ImportFailure(f"{origin}: {key} has shape {tuple(ours[key].shape)}, the model needs {tuple(value.shape)}")
    model.load_state_dict({k: ours[k] for k in expected}, strict=True)
    return model.eval()


def _write_run(output: Path, cfg: Any, model: Any, done: list[str], step: int, imported: dict[str, Any]) -> Path:
    from rave_model.train.checkpoint import Checkpoint, Provenance, run_file
    from rave_model.train.pca import dims_for_fidelity

    fidelity = float(cfg.train.fidelity)
    ckpt = Checkpoint(
        config=cfg,
        stage=STAGE,
        step=int(step),
        model=model.state_dict(),
        done=list(done),
        info={"vae": {"pca_dims": dims_for_fidelity(model.fidelity, fidelity), "fidelity": fidelity}},
        provenance=Provenance.current(imported_from=imported),
    )
    return ckpt.save(run_file(output))
