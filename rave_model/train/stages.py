"""The stage registry: which stages ``ravemodel fit`` runs, in order.

Add a stage with one line (``STAGES["prior"] = PriorStage``) in this file.
Classes are referenced lazily (module path strings) so importing the registry
never imports torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rave_model.train.stage import Stage

#: name -> "module:Class", in the order the stages run.
STAGES: dict[str, str] = {
    "vae": "rave_model.train.vae:VAEStage",
    "adversarial": "rave_model.train.adversarial:AdversarialStage",
    "prior": "rave_model.train.prior_stage:PriorStage",
}


def stage_class(name: str) -> type[Stage]:
    """The Stage subclass registered under ``name``."""
    try:
        target = STAGES[name]
    except KeyError:
        raise ValueError(f"unknown training stage {name!r}; known: {', '.join(STAGES)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
