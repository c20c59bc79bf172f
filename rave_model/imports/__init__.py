"""``ravemodel import``: acids-rave 2.x models as ravemodel runs.

Two sources:

- a **training run** (``rave train``'s folder, or one of its ``.ckpt`` files) with
  the ``config.gin`` beside it: the gin config gives our Config
  (:func:`rave_model.reference.config_from_gin`), the Lightning ``state_dict`` the
  weights (:func:`rave_model.reference.state_dict_from_reference`);
- an **exported model** (``rave export``, ``.ts``): the Config is inferred from the
  scripted modules (:mod:`rave_model.imports.architecture`), the weights read back
  under the checkpoint's key names, and the same mapping applies.

Either way the result is a run folder of ours (:mod:`rave_model.imports.run`) whose
``checkpoints/last.ckpt`` every tool reads: ``ravemodel export`` (our streaming
kernels), ``reconstruct``, ``encode`` / ``decode``, and ``fit`` to go on with the
stages that remain (the prior; the adversarial stage too when the reference had not
reached it).
"""
from __future__ import annotations

from rave_model.imports.errors import ImportFailure
from rave_model.imports.run import ImportReport, import_model

__all__ = ["ImportFailure", "ImportReport", "import_model"]
