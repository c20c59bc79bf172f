"""The Stage protocol: what the runner needs from one training stage.

A stage owns its optimizers and any extra networks (a discriminator, a prior)
and knows how to take one step. The runner (:mod:`rave_model.train.runner`)
owns everything shared: the data position, the step counter, checkpoints,
validation scheduling, logging, the NaN guard and Ctrl-C. A new stage is a
subclass of :class:`Stage` registered by name in
:data:`rave_model.train.stages.STAGES`.

Distributed training: a stage never wraps a module in DDP itself; it calls
``ctx.wrap(module)`` so the wrapping happens in exactly one place, and it
never logs or saves: the runner does that on the main process only.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

    from rave_model.config import Config
    from rave_model.data import DataPosition, TrainData
    from rave_model.model import RAVE
    from rave_model.train.logging import TrainLogger


def _identity(module: nn.Module) -> nn.Module:
    return module


@dataclass
class TrainContext:
    """Everything a stage may use. ``rank``/``world_size``/``is_main`` are
    explicit so a distributed launcher only has to fill them in (and set
    ``wrap`` to a DDP wrapper)."""

    cfg: Config
    model: RAVE
    device: torch.device
    run_dir: Path
    data: TrainData
    logger: TrainLogger
    rank: int = 0
    world_size: int = 1
    is_main: bool = True
    wrap: Callable[[nn.Module], nn.Module] = _identity
    #: Facts earlier stages recorded (e.g. ``{"vae": {"pca_dims": 12}}``);
    #: saved in the checkpoint under "info".
    info: dict[str, Any] = field(default_factory=dict)


class Stage:
    """One training stage. Subclasses set :attr:`name` and implement
    :meth:`train_step`; everything else has a sensible default.

    Life cycle, driven by the runner::

        stage = StageClass(ctx)         # build optimizers / extra networks
        # total_steps() <= 0: the stage is marked done and nothing below runs
        stage.load_state_dict(s)        # only when resuming inside this stage
        stage.on_start()                # e.g. freeze the encoder
        for step in range(start, stage.total_steps()):
            losses = stage.train_step(batch, step)     # {name: 0-d tensor or float}
            ... losses to the host, NaN guard: at log steps, before validation
            ... and before every checkpoint (never inside a step)
            ... stage.validate() every val_every steps
        stage.on_complete()             # e.g. the latent PCA after the VAE
    """

    name: ClassVar[str] = ""

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx

    # -- what the runner asks -------------------------------------------------
    def total_steps(self) -> int:
        """Number of optimisation steps of this stage (0 skips it)."""
        raise NotImplementedError

    def batches(self, position: DataPosition) -> Iterator[tuple[Any, DataPosition]]:
        """Yield (batch, position after this batch) from ``position`` on,
        forever. The default is the audio training stream ([B, C, n_signal]
        float32 crops on ``ctx.device``); a stage with its own data (the prior's
        latents) overrides this."""
        return self.ctx.data.train_batches(position, self.ctx.device)

    def train_step(self, batch: Any, step: int) -> dict[str, Any]:
        """One optimisation step; returns the losses as detached 0-d tensors
        (or Python numbers for what the host already knows, e.g. beta).

        Never convert a device tensor to a float here: that makes the host wait
        for the GPU every step. The runner brings the losses to the host at log
        steps, before validation and before a checkpoint, all at once, and stops
        the run there if any is NaN or infinite (naming the step it happened at;
        nothing is saved after it)."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation metrics; the key "spectral_distance" (lower is better)
        picks the best checkpoint. Default: none."""
        return {}

    def log_media(self, step: int) -> None:
        """Write audio/figures through ``ctx.logger`` (main process only)."""

    def on_start(self) -> None:
        """Called once before the first step (fresh or resumed)."""

    def on_complete(self) -> dict[str, Any]:
        """Called once after the last step; what it returns is stored in the
        checkpoint's "info" under this stage's name."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Stage-private state (optimizers, discriminator, ...). The RAVE
        model itself is saved by the runner."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
