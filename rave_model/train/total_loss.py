"""The loss a step minimises: each term times its weight from ``train.loss_weights``.

A stage computes its loss terms as a ``{name: 0-d tensor}`` dictionary and sums them
with :func:`weighted_sum`, so adding a term is one function that computes it and one
key (its weight's default in :class:`rave_model.config.TrainConfig`).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch


def weighted_sum(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """``sum(weights[k] * terms[k])`` over ``terms`` (0-d tensors); a term without a
    weight is a programming error, named in the message."""
    missing = [k for k in terms if k not in weights]
    if missing:
        raise KeyError(f"loss term(s) {', '.join(missing)} have no weight: add them to TrainConfig.loss_weights")
    total = None
    for name, term in terms.items():
        weighted = float(weights[name]) * term
        total = weighted if total is None else total + weighted
    if total is None:
        raise ValueError("no loss term to sum")
    return total
