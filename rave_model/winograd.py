"""Winograd (Toom-Cook) minimal filtering for the offline stride-1 convolutions.

A stride-1 convolution with ``r`` taps computes ``m`` consecutive outputs with
``m * r`` channel-mixing products the direct way (one ``[rows, Cin] @ [Cin, Cout]``
product per tap). Winograd's F(m, r) computes them with ``m + r - 1`` such products
on transformed inputs (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
Networks"): F(4, 3) does 6 products where the direct form does 12, so the 3-tap
residual convolutions, most of the v1 model's arithmetic, cost half as much. The
input and output transforms are products with small ``[alpha, alpha]`` and
``[m, alpha]`` matrices over whole blocks of tiles (one BLAS call each), so they add
a few memory passes and no Python loop over time.

The output equals the direct convolution up to float rounding (relative error about
2e-6 for F(4, 3) in float32, tested), so this is an inference-only kernel: training
keeps the ordinary convolution.

Shapes: ``x [B, Cin, T]`` in, ``[B, Cout, length]`` out (a time-major view: memory
``[B, length, Cout]``, the layout the other offline kernels share).
"""
from __future__ import annotations

from fractions import Fraction

import torch

# Interpolation points, small first: the transforms' constants (and the rounding
# error) grow with the points' magnitude, which is why m is kept small.
_POINTS = [Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2), Fraction(-1, 2)]


def transforms(m: int, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(AT [m, alpha], G [alpha, r], BT [alpha, alpha])`` of F(m, r), ``alpha = m + r - 1``,
    in float64, for correlation (what ``conv1d`` computes):
    ``y[i] = sum_k g[k] d[i + k] = (AT @ ((G @ g) * (BT @ d)))[i]``.

    ``AT`` evaluates at the points (plus the point at infinity), ``G`` interpolates with
    Lagrange weights; ``BT`` is then the unique solution of the bilinear identity, solved
    numerically and checked exact.
    """
    alpha = m + r - 1
    if alpha - 1 > len(_POINTS):
        raise ValueError(f"F({m}, {r}) needs more interpolation points than are defined")
    pts = _POINTS[: alpha - 1]
    at = torch.zeros(m, alpha, dtype=torch.float64)
    g = torch.zeros(alpha, r, dtype=torch.float64)
    for j, p in enumerate(pts):
        f = Fraction(1)
        for q in pts:
            if q != p:
                f *= p - q
        for i in range(m):
            at[i, j] = float(p**i)
        for k in range(r):
            g[j, k] = float(p**k / f)
    at[m - 1, alpha - 1] = 1.0
    g[alpha - 1, r - 1] = 1.0
    # sum_j AT[i, j] G[j, k] BT[j, l] = [l == i + k] for every i, k, l: linear in BT.
    coef = torch.einsum("ij,jk->ikj", at, g)  # [m, r, alpha]
    system = torch.zeros(m, r, alpha, alpha, alpha, dtype=torch.float64)  # (i, k, l) x (j, l')
    target = torch.zeros(m, r, alpha, dtype=torch.float64)
    for i in range(m):
        for k in range(r):
            target[i, k, i + k] = 1.0
            for l in range(alpha):
                system[i, k, l, :, l] = coef[i, k]
    a = system.reshape(m * r * alpha, alpha * alpha)
    bt = torch.linalg.lstsq(a, target.reshape(-1, 1)).solution
    bt = torch.round(bt * 4096) / 4096  # the entries are dyadic: make them exact
    if (a @ bt - target.reshape(-1, 1)).abs().max() > 1e-12:
        raise ArithmeticError(f"no exact F({m}, {r}) input transform")
    return at, g, bt.reshape(alpha, alpha)


def winograd_u(g: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Transformed weights ``U [alpha, Cin, Cout]`` of a ``[Cout, Cin, r]`` correlation
    kernel, with ``G [alpha, r]`` of :func:`transforms`: computed in float64 on the CPU (any
    device computes the same numbers), returned in the weight's dtype and on its device.

    TorchScript compiles it, so an exported offline model stores the ``r`` taps and derives
    the ``alpha`` transformed ones when first called."""
    u = torch.einsum("ak,oik->aio", g.to(torch.device("cpu"), torch.float64), weight.detach().cpu().double())
    return u.to(weight.device, weight.dtype).contiguous()


def winograd_weight(weight: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Transformed weights ``U [alpha, Cin, Cout]`` of a ``[Cout, Cin, r]`` correlation
    kernel (:func:`winograd_u`), with the ``AT [m, alpha]`` and ``BT [alpha, alpha]`` that go
    with it, in the weight's dtype."""
    at, g, bt = transforms(m, weight.shape[-1])
    return winograd_u(g, weight), at.to(weight.dtype), bt.to(weight.dtype)


def conv1d_winograd(
    x: torch.Tensor,
    u: torch.Tensor,
    at: torch.Tensor,
    bt: torch.Tensor,
    left: int,
    dilation: int,
    length: int = -1,
    block: int = 1024,
) -> torch.Tensor:
    """Stride-1 convolution of ``x [B, Cin, T]``, zero-padded with ``left`` samples before
    and as many as needed after: output row ``t`` reads input rows
    ``t + j * dilation - left`` for each tap ``j``. ``[B, Cout, length]`` (``T`` frames by
    default), computed with F(m, r) from :func:`winograd_weight`.

    Dilation: output rows ``t`` and ``t + dilation`` share inputs, so a tile is ``m``
    outputs ``dilation`` apart; the ``dilation`` interleaved tiles of a super-row of
    ``m * dilation`` outputs are transformed together as one ``[dilation * Cin]`` row.

    About ``block`` output rows are done at a time: the transformed tiles of a block
    (``alpha / m`` times its input) then stay in the core's cache between the four
    steps, and no temporary is large enough to be a fresh page-faulting allocation
    per call.
    """
    # The transforms in the input's dtype (weights are prepared in float32).
    u, at, bt = u.to(x.dtype), at.to(x.dtype), bt.to(x.dtype)
    alpha, cin, cout = u.shape
    m = at.shape[0]
    r = alpha - m + 1
    b, t = x.shape[0], x.shape[-1]
    n = t if length < 0 else length
    d = dilation
    width = d * cin
    tiles = -(-(-(-n // d)) // m)  # ceil(ceil(n / d) / m)
    per_block = max(1, block // (m * d))
    out = x.new_empty(b, tiles * m * d, cout)
    for i in range(b):
        x0 = x[i].t()  # [T, Cin]
        direct = x0.stride(1) == 1 and x0.stride(0) == cin  # rows can be read in place
        ov = out[i].view(tiles, m, d * cout)
        for a0 in range(0, tiles, per_block):
            nb = min(per_block, tiles - a0)
            start = a0 * m * d - left  # first input row of the block (may be negative)
            rows = (nb * m + r - 1) * d
            if direct and start >= 0 and start + rows <= t:
                src, offset = x0, x0.storage_offset() + start * cin
            else:  # the edges: a zero-padded copy of the rows that exist
                src = x0.new_zeros(rows, cin)
                lo, hi = max(start, 0), min(start + rows, t)
                if lo < hi:
                    src[lo - start : hi - start] = x0[lo:hi]
                offset = src.storage_offset()
            # Tile a, point j reads super-row a * m + j (tiles overlap by r - 1 super-rows):
            # gather them as [alpha, tiles, d * Cin] ...
            cols = torch.as_strided(src, (alpha, nb, width), (width, m * width, 1), offset).contiguous()
            # ... transform every tile with one product, multiply channels per point ...
            v = torch.mm(bt, cols.view(alpha, nb * width)).view(alpha, nb * d, cin)
            prod = torch.bmm(v, u)  # [alpha, nb * d, Cout]
            # ... transform back ([m, nb, d * Cout]) and interleave the m outputs.
            y = torch.mm(at, prod.view(alpha, nb * d * cout)).view(m, nb, d * cout)
            ov[a0 : a0 + nb].copy_(y.transpose(0, 1))
    return out[:, :n].transpose(1, 2)
