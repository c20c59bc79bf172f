"""Augmentation: the augmenter contract, the registry of installed augmenters,
plans (TOML) and concrete chains.

Typical use, from ``prep`` or from a training data loader::

    plan = load_plan(path) if path else default_plan()
    chain = plan.sample(variant_rng(seed, source_id, i))   # or any np.random.Generator
    y = chain.apply(x, sr)                                 # [C, n] float32 -> [C, m]
    record = chain.to_record()                             # into the manifest; Chain.from_record replays it

Augmenters are named ``name`` or ``plugin:name`` (see :mod:`rave_data.augment.registry`
for clashes). Plugin authors check their augmenters with :func:`rave_data.testing.check_augmenter`.

Nothing here imports pedalboard until an augmenter is applied.
"""
from __future__ import annotations

from rave_data.augment.chain import Chain, ChainStep
from rave_data.augment.contract import AugmentError, Augmenter, Param
from rave_data.augment.plan import Plan, Step, default_plan, load_plan, parse_plan, variant_rng
from rave_data.augment.registry import Registry, get_registry

__all__ = [
    "AugmentError", "Augmenter", "Chain", "ChainStep", "Param", "Plan",
    "Registry", "Step", "default_plan", "get_registry", "load_plan", "parse_plan", "variant_rng",
]
