"""The latent PCA after stage 1: how many latent dimensions the model uses.

The posterior means of (a sample of) the training examples are centred and
decomposed; the model's buffers receive ``latent_mean`` [L], ``latent_pca``
[L, L] (principal directions as rows, by decreasing variance) and
``fidelity`` [L] (cumulative share of explained variance), which the export
uses to crop the latent to the dimensions a fidelity asks for.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from rave_model.train.stage import TrainContext


def dims_for_fidelity(fidelity: torch.Tensor, target: float) -> int:
    """Smallest number of dimensions whose cumulative explained variance reaches ``target``."""
    reached = (fidelity >= target - 1e-7).nonzero()
    return int(reached[0]) + 1 if len(reached) else int(fidelity.numel())


def principal_components(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z [N, L] -> (mean [L], components [L, L] rows by decreasing variance,
    cumulative explained-variance share [L]). Float64 for a stable eigensolve;
    each component's sign is fixed (largest coefficient positive) so the result
    does not depend on the solver."""
    z = z.double()
    mean = z.mean(0)
    zc = z - mean
    cov = zc.T @ zc / max(1, z.shape[0] - 1)
    var, vec = torch.linalg.eigh(cov)  # ascending
    var, vec = var.flip(0).clamp_min(0), vec.flip(1)
    comps = vec.T
    sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * sign
    total = var.sum()
    cum = var.cumsum(0) / total if total > 0 else torch.ones_like(var)
    return mean, comps, cum


@torch.no_grad()
def fit_latent_pca(ctx: TrainContext) -> dict[str, Any]:
    """Encode up to ``train.pca_examples`` training examples (deterministic
    choice), fit the PCA, write the model buffers; returns what to record."""
    model = ctx.model
    was_training = model.training
    model.eval()
    latent = int(ctx.cfg.model.latent_size)
    idx = ctx.data.train_idx
    n = min(len(idx), int(ctx.cfg.train.pca_examples))
    chosen = np.sort(np.random.default_rng(int(ctx.cfg.train.seed)).choice(idx, size=n, replace=False))
    hop = int(model.hop_length)
    means = []
    for x in ctx.data.examples(chosen, ctx.device):
        x = x[..., : (x.shape[-1] // hop) * hop]
        params = model.encode(x)  # [1, 2L, T']
        means.append(params[0, :latent].T.cpu())  # [T', L]
    model.train(was_training)
    z = torch.cat(means, 0)
    mean, comps, cum = principal_components(z)
    model.latent_mean.copy_(mean.to(model.latent_mean))
    model.latent_pca.copy_(comps.to(model.latent_pca))
    model.fidelity.copy_(cum.to(model.fidelity))
    target = float(ctx.cfg.train.fidelity)
    return {"pca_dims": dims_for_fidelity(cum, target), "fidelity": target, "pca_frames": int(z.shape[0])}
