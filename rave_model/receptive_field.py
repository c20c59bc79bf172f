"""Receptive field of an autoencoder, measured by gradient.

The left and right receptive fields are the numbers of input samples that the
output sample in the middle of a long signal depends on, before and after it:
``(left, right)`` in samples at the model's rate. They are measured rather than
derived from the layer list so that every architecture (v1's loudness branch,
v2's dilated units, the noise branches, causal padding) is covered by one rule,
the one acids-rave uses (``rave.core.get_rave_receptive_field``): the gradient of
one output sample with respect to the input, counting the samples where it is
non-zero, on a signal doubled in length until the gradient vanishes at both ends.
"""
from __future__ import annotations

import torch

from rave_model.model import RAVE


def receptive_field(model: RAVE, start: int = 2**15, limit: int = 2**22) -> tuple[int, int]:
    """``(left, right)`` receptive field of ``decode(sample(encode(x)))`` in samples.

    Runs in eval mode (BatchNorm on its running statistics) and restores the mode
    afterwards; parameters receive no gradient. Raises ValueError when the field
    is still not contained in a signal of ``limit`` samples.
    """
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        n = start
        while n <= limit:
            x = torch.randn(1, model.n_channels, n, device=param.device, dtype=param.dtype, requires_grad=True)
            z, _ = model.reparametrize(model.encode(x))
            y = model.decode(z)
            (grad,) = torch.autograd.grad(y[0, 0, n // 2], x)
            grad = grad.reshape(-1)
            left, right = grad[: grad.numel() // 2], grad[grad.numel() // 2 :]
            if left[0] == 0 and right[-1] == 0:
                return int((left != 0).sum()), int((right != 0).sum())
            n *= 2
    finally:
        model.train(was_training)
    raise ValueError(f"receptive field larger than {limit} samples")


def valid_crop(bands: torch.Tensor, field: tuple[int, int]) -> torch.Tensor:
    """Drop the sub-band samples whose full-rate output sees past the crop's edges.

    ``bands [B, C * n_bands, T']`` -> ``[B, C * n_bands, T' - floor(left / n) - ceil(right / n)]``
    with ``n = n_bands * C`` (the reference divides by the channel dimension of the
    sub-band tensor; the rounding is its too, so loss terms compare exactly).
    """
    n_bands = bands.shape[1]
    left = field[0] // n_bands
    right = -(-field[1] // n_bands)
    return bands[..., left : bands.shape[-1] - right]
