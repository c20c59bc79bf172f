"""Training: the stage protocol, the stage registry, the loop and checkpoints.

``ravemodel fit`` runs every stage named in :data:`rave_model.train.stages.STAGES`
in order (``vae``, ``adversarial``, then ``prior`` once registered), each to its
configured number of steps, resuming from the run folder's last checkpoint.
Importing this package is cheap; torch is imported by the modules that need it.
"""
from __future__ import annotations
