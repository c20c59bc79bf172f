"""Convolutions that run offline or streaming with the same weights.

Every layer knows its padding as ``(total, right)``: offline it pads ``total - right``
samples on the left and ``right`` on the right (:func:`conv_padding`, the one padding
rule: centred with the odd sample on the right, ``right = 0`` when the model is
trained causal). In streaming mode all of the padding moves to the past and is
taken from a cache of the previous call's input, so feeding a signal in blocks gives
exactly the same output as feeding it whole to the streaming model. A non-causal
model therefore gets delayed by ``right`` samples per layer once streaming; the
residual connections (:class:`Residual`) delay their skip path by the same amount so
both branches stay aligned.

The caches are non-persistent buffers (not in the state dict, so checkpoints do not
carry them) that are re-created when the batch size, dtype or device changes, which
TorchScript supports, so a scripted module keeps its state between calls like nn~
expects. Being buffers, they follow ``module.to(device)`` like every other tensor.

Every tensor a layer computes with is a parameter or a buffer, the inference-only
weights of :func:`prepare_mm` and :func:`prepare_offline` included, so ``.to(device)``
or ``.to(dtype)`` moves all of them (nn~ calls ``to("cuda")`` on a whole scripted
module), and a weight replaced by its re-laid form is dropped rather than saved twice.

Shapes: every module here takes and returns ``[B, C, T]``. In streaming mode, a strided
layer needs ``T`` to be a multiple of its stride (the export asks nn~ for buffers that
are multiples of the hop length).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from typing import Tuple

from rave_model.winograd import conv1d_winograd, transforms, winograd_u

# Winograd F(4, r) pays for its transforms (a few memory passes) only on wide layers:
# at 64 x 64 channels the direct per-tap products are faster on this kind of CPU
# (bench/bench_model.py; rave_model/winograd.py explains the kernel).
WINOGRAD_MIN_WIDTH = 128 * 128
WINOGRAD_TILE = 4


def conv_padding(kernel_size: int, dilation: int = 1, causal: bool = False) -> tuple[int, int]:
    """``(left, right)`` zero padding of a convolution, acids-rave's rule (``cc.get_padding``):
    ``(kernel_size - 1) * dilation`` samples in all, split evenly with the odd one on the
    right, or all on the left when causal.

    The stride does not enter it (the reference's ``get_padding`` ignores its stride
    argument), so a strided layer maps ``T`` samples to ``ceil(T / stride)`` frames.
    Keeping the reference's split makes every frame read the same samples as in a
    reference model, which imported weights rely on.
    """
    total = (kernel_size - 1) * dilation
    return (total, 0) if causal else (total // 2, total - total // 2)


def _fresh_cache(cache: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    """``cache`` if it matches ``x``'s batch, channels and dtype, else ``n`` samples of silence."""
    if cache.shape[0] != x.shape[0] or cache.shape[1] != x.shape[1] or cache.dtype != x.dtype or cache.device != x.device:
        return torch.zeros(x.shape[0], x.shape[1], n, dtype=x.dtype, device=x.device)
    return cache


class CachedPad1d(nn.Module):
    """Pads ``[B, C, T]`` with ``left`` and ``right`` samples offline; streaming, all
    ``left + right`` samples come before, from a cache of the previous call's input."""

    def __init__(self, left: int, right: int) -> None:
        super().__init__()
        self.total = left + right
        self.right = right
        self.streaming = False
        self.register_buffer("cache", torch.zeros(0), persistent=False)

    def reset(self) -> None:
        self.cache = torch.zeros(0, dtype=self.cache.dtype, device=self.cache.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.total == 0:
            return x
        if not self.streaming:
            return F.pad(x, (self.total - self.right, self.right))
        x = torch.cat([_fresh_cache(self.cache, x, self.total), x], -1)
        self.cache = x[..., x.shape[-1] - self.total:]
        return x


def matmul_t(wt: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``wt [K, M]``, ``x [B, K, N]`` -> ``wt.T @ x``, ``[B, M, N]``.

    The weight is stored transposed because BLAS (MKL on this kind of CPU) is several
    times faster on short blocks as ``x.T @ wt`` than as ``w @ x``; long blocks keep the
    ``w @ x`` form, which is faster there.
    """
    if x.shape[0] == 1:
        x0 = x[0]
        if x0.shape[-1] < 64:
            return torch.mm(x0.t(), wt).t().unsqueeze(0)
        return torch.mm(wt.t(), x0).unsqueeze(0)
    return torch.matmul(x.transpose(1, 2), wt).transpose(1, 2)


def conv1d_mm(x: torch.Tensor, wt: torch.Tensor, kernel_size: int, stride: int, dilation: int) -> torch.Tensor:
    """Convolution of an already padded ``x [B, Cin, Tp]`` as one matrix product.

    ``wt [kernel_size * Cin, Cout]`` holds the taps tap-major. Stacking the ``k``
    shifted (strided) views of ``x`` and calling BLAS beats oneDNN's direct convolution
    on short blocks, where oneDNN falls back to slow reference kernels.
    """
    t_out = (x.shape[-1] - (kernel_size - 1) * dilation - 1) // stride + 1
    span = (t_out - 1) * stride + 1
    if kernel_size == 1:
        cols = x[..., :span:stride]
    else:
        cols = torch.cat([x[..., j * dilation : j * dilation + span : stride] for j in range(kernel_size)], 1)
    return matmul_t(wt, cols)


def conv1d_taps(
    x: torch.Tensor,
    wt: torch.Tensor,
    left: int,
    dilation: int,
    stride: int = 1,
    block: int = 2048,
    length: int = -1,
) -> torch.Tensor:
    """Convolution of an unpadded ``x [B, Cin, T]`` padded with ``left`` zeros before and
    zeros after, with ``wt [k, Cin, Cout]``: ``[B, Cout, length]`` (``length`` output
    frames, ``ceil(T / stride)`` by default, as :class:`Conv1d` with its default padding).

    Each tap is one matrix product of the time-major view ``x^T`` (every ``stride``-th
    row) accumulated in place into the output rows it reaches, so neither a padded copy
    nor an im2col copy is made. The result is a time-major view; element-wise ops keep
    that layout, so the next such convolution reads its input without a transposition
    (a channel-major input with few channels is transposed first: BLAS is slow on a
    transposed operand with a short inner dimension). For a batch of one, the taps run
    ``block`` output rows at a time so that rows stay in cache between taps.
    """
    k, b, t = wt.shape[0], x.shape[0], x.shape[-1]
    n = (t + stride - 1) // stride if length < 0 else length
    covered = (t + stride - 1) // stride  # output rows whose unshifted input row exists
    xt = x.transpose(1, 2)  # [B, T, Cin]
    if xt.stride(-1) != 1 and xt.shape[-1] < 64:
        xt = xt.contiguous()
    # The tap that reads input row r * stride for output row r initialises the output.
    full = left // dilation if left % dilation == 0 and left // dilation < k else -1
    if b == 1:
        x0 = xt[0]
        y0 = x0.new_empty(n, wt.shape[-1])
        for start in range(0, n, block):
            stop = min(n, start + block)
            if full >= 0 and start < covered:
                end = min(stop, covered)
                torch.mm(x0[start * stride : (end - 1) * stride + 1 : stride], wt[full], out=y0[start:end])
                if stop > end:
                    y0[end:stop].zero_()
            else:
                y0[start:stop].zero_()
            for j in range(k):
                shift = j * dilation - left  # output row r reads input row r * stride + shift
                lo = max(start, (stride - 1 - shift) // stride)
                hi = min(stop, (t - 1 - shift) // stride + 1)
                if j != full and lo < hi:
                    y0[lo:hi].addmm_(x0[lo * stride + shift : (hi - 1) * stride + shift + 1 : stride], wt[j])
        return y0.t().unsqueeze(0)
    y = xt.new_zeros(b, n, wt.shape[-1])  # [B, length, Cout]
    for j in range(k):
        shift = j * dilation - left
        lo, hi = max(0, (stride - 1 - shift) // stride), min(n, (t - 1 - shift) // stride + 1)
        if lo < hi:
            rows = xt[:, lo * stride + shift : (hi - 1) * stride + shift + 1 : stride]
            y[:, lo:hi].baddbmm_(rows, wt[j].expand(b, -1, -1))
    return y.transpose(1, 2)


def conv_transpose1d_mm(x: torch.Tensor, wt: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """Transposed convolution ``[B, Cin, N] -> [B, Cout, (N + m - 1) * stride]`` where
    ``wt [Cin, Cout * m * stride]`` holds a kernel of ``m * stride`` taps: one matrix
    product, then the ``m`` stride-long kernel segments are overlap-added."""
    b, n = x.shape[0], x.shape[-1]
    cols = matmul_t(wt, x)  # [B, Cout * K, N]
    m = cols.shape[1] // (out_channels * stride)
    # [B, Cout, m, stride, N] -> [B, Cout, m, N * stride]: segment j of frame q lands at (q + j) * stride.
    cols = cols.reshape(b, out_channels, m, stride, n).transpose(3, 4).reshape(b, out_channels, m, n * stride)
    y = F.pad(cols[:, :, 0], (0, (m - 1) * stride))
    for j in range(1, m):
        y[:, :, j * stride : j * stride + n * stride] += cols[:, :, j]
    return y


def polyphase_weight(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """Transposed-convolution weight ``[Cin, Cout, m * stride]`` re-laid as the weight
    ``[m, Cin, Cout * stride]`` of an ordinary ``m``-tap convolution whose ``Cout * stride``
    outputs are the output phases (see :func:`conv_transpose1d_poly`)."""
    cin, cout, k = weight.shape[0], weight.shape[1], weight.shape[2]
    m = k // stride
    # out[o, q * stride + p] = sum_j sum_i w[i, o, j * stride + p] * x[i, q - j]: tap j' = m - 1 - j.
    return weight.reshape(cin, cout, m, stride).flip(2).permute(2, 0, 1, 3).reshape(m, cin, cout * stride).contiguous()


def conv_transpose1d_poly(x: torch.Tensor, wp: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """Transposed convolution ``[B, Cin, N] -> [B, Cout, (N + m - 1) * stride]`` (the same
    full-length output as ``F.conv_transpose1d``) in polyphase form: with ``wp`` from
    :func:`polyphase_weight`, one ``m``-tap stride-1 convolution computes every output
    phase, then the phases are interleaved.

    Why: oneDNN's transposed convolution runs at a fraction of the matmul peak and a
    depthwise-like one (the PQMF synthesis, ``Cout = 1``) at a few percent of it. Here the
    ``m`` taps are matrix products accumulated in place on shifted views of the
    time-major input (:func:`conv1d_taps`: no padded or im2col copy), which BLAS runs
    near its peak.
    """
    m = wp.shape[0]
    # Output frame q reads input frames q - m + 1 .. q (zero outside): left padding m - 1.
    return phases_to_time(conv1d_taps(x, wp, m - 1, 1, length=x.shape[-1] + m - 1), out_channels, stride)


def phases_to_time(y: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """Polyphase output ``y [B, Cout * stride, n]`` (a time-major view, as
    :func:`conv1d_taps` returns it) -> ``[B, Cout, n * stride]``."""
    b, n = y.shape[0], y.shape[-1]
    y = y.transpose(1, 2)  # [B, n, Cout * stride], contiguous
    # [B, n, Cout * stride] -> [B, Cout, n * stride]: phase p of frame q is sample q * stride + p.
    # Kept time-major in memory, the layout conv1d_taps and the element-wise ops between
    # them then share (mixing layouts makes element-wise ops several times slower).
    y = y.view(b, n, out_channels, stride).transpose(2, 3).reshape(b, n * stride, out_channels)
    return y.transpose(1, 2)


def winograd_suits(weight: torch.Tensor) -> bool:
    """Whether a stride-1 ``[Cout, Cin, k]`` convolution is faster through Winograd."""
    return weight.shape[-1] in (2, 3) and weight.shape[0] * weight.shape[1] >= WINOGRAD_MIN_WIDTH


def space_to_depth(x: torch.Tensor, stride: int) -> torch.Tensor:
    """``[B, C, T] -> [B, stride * C, ceil(T / stride)]``: frame ``q`` holds input frames
    ``q * stride .. q * stride + stride - 1`` side by side (channel ``p * C + c`` is
    frame ``q * stride + p``, channel ``c``), zero-padded at the end. Free for a
    time-major input (a reshape of ``[T, C]`` rows); the result is time-major."""
    b, c, t = x.shape
    xt = x.transpose(1, 2)  # [B, T, C]
    if t % stride:
        xt = F.pad(xt, (0, 0, 0, stride - t % stride))
    return xt.reshape(b, -1, stride * c).transpose(1, 2)


def space_to_depth_weight(weight: torch.Tensor, stride: int, left: int) -> Tuple[torch.Tensor, int]:
    """A stride-``s`` convolution ``[Cout, Cin, k]`` whose output frame ``r`` reads input
    frames ``s * r + j - left``, as the stride-1 convolution ``[Cout, s * Cin, k']`` over
    :func:`space_to_depth` frames, and its left padding (in those frames).

    Tap ``j`` lands in folded frame ``r + (j - left) // s`` at phase ``(j - left) % s``;
    ``k'`` spans the folded frames reached, with zeros where no original tap falls.
    """
    cout, cin, k = weight.shape[0], weight.shape[1], weight.shape[2]
    first, last = (-left) // stride, (k - 1 - left) // stride
    folded = weight.new_zeros([cout, stride, cin, last - first + 1])
    for j in range(k):
        q, p = (j - left) // stride, (j - left) % stride
        folded[:, p, :, q - first] = weight[:, :, j]
    return folded.reshape(cout, stride * cin, last - first + 1), -first


def tap_major(weight: torch.Tensor, order: list[int]) -> torch.Tensor:
    """Same values and shape as ``weight`` but laid out in memory in ``order``, so that
    ``weight.permute(order)`` is contiguous and flattening it for a matmul is free."""
    inverse = [order.index(i) for i in range(len(order))]
    return weight.detach().permute(order).contiguous().permute(inverse)


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` that can stream, padded ``(left, right)`` = ``padding`` or, by
    default, :func:`conv_padding`'s reference rule.

    ``[B, in_channels, T] -> [B, out_channels, ceil(T / stride)]`` (streaming, ``T`` a
    multiple of the stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        causal: bool = False,
        padding: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=bias)
        self.pad = CachedPad1d(*(conv_padding(kernel_size, dilation, causal) if padding is None else padding))
        self.use_mm = False
        self.use_taps = False
        # Inference-only weights, empty until prepare_offline; buffers so that .to()
        # moves them, non-persistent so that training checkpoints do not hold them.
        self.register_buffer("weight_taps", torch.zeros(0), persistent=False)  # [k, Cin, Cout]
        self.use_winograd = False
        self.depth_stride = 1  # > 1: offline, the input goes through space_to_depth first
        self.winograd_left = 0
        # Winograd: U [alpha, Cin (* depth_stride), Cout] is derived from the weight and
        # G [alpha, r] (float64) at the first call, so an export stores the weight alone.
        self.register_buffer("winograd_u", torch.zeros(0), persistent=False)
        self.register_buffer("winograd_g", torch.zeros(0), persistent=False)
        self.register_buffer("winograd_at", torch.zeros(0), persistent=False)  # [m, alpha]
        self.register_buffer("winograd_bt", torch.zeros(0), persistent=False)  # [alpha, alpha]

    def prepare_mm(self) -> None:
        """Inference only: compute through :func:`conv1d_mm` (weights re-laid tap-major)."""
        weight = self.weight.detach()
        if self.groups > 1:
            # A block-diagonal dense weight: a little more arithmetic, but one fast matmul
            # instead of oneDNN's grouped kernel, which is slow on short blocks.
            per_in, per_out = self.in_channels // self.groups, self.out_channels // self.groups
            dense = weight.new_zeros(self.out_channels, self.in_channels, self.kernel_size[0])
            for g in range(self.groups):
                dense[g * per_out : (g + 1) * per_out, g * per_in : (g + 1) * per_in] = weight[g * per_out : (g + 1) * per_out]
            weight = dense
        self.weight = nn.Parameter(tap_major(weight, [2, 1, 0]), requires_grad=False)
        self.use_mm = True

    def prepare_offline(self) -> None:
        """Inference only, whole signals: dense convolutions through :func:`conv1d_winograd`
        when they are wide and have (or can be given) 2 or 3 taps, :func:`conv1d_taps`
        otherwise (oneDNN keeps the grouped ones).

        A strided convolution is first rewritten as a stride-1 one over
        :func:`space_to_depth` frames (``stride`` input frames side by side): its
        ``k`` taps become ``ceil``-ish ``k / stride`` taps over ``stride * Cin`` channels,
        which Winograd then applies to (v1's 9-tap, stride-4 encoder layers become
        3-tap ones: 6 products per 4 outputs instead of 9 direct ones).
        """
        if self.groups != 1 or self.pad.streaming:
            return
        weight = self.weight.detach()
        left = self.pad.total - self.pad.right
        stride = self.stride[0]
        if stride > 1 and self.dilation[0] == 1:
            folded, folded_left = space_to_depth_weight(weight, stride, left)
            if winograd_suits(folded):
                weight, left = folded, folded_left
                self.depth_stride = stride
        if (stride == 1 or self.depth_stride > 1) and winograd_suits(weight):
            at, g, bt = transforms(WINOGRAD_TILE, weight.shape[-1])
            self.winograd_g, self.winograd_at, self.winograd_bt = g, at.to(weight.dtype), bt.to(weight.dtype)
            self.winograd_u = weight.new_zeros(0)  # derived from the weight at the first call
            self.winograd_left = left
            self.use_winograd = True
            return
        self.weight_taps = weight.permute(2, 1, 0).contiguous()  # [k, Cin, Cout]
        self.use_taps = True
        # The kernel reads only the re-laid taps: keep the original out of memory and of exports.
        if not parametrize.is_parametrized(self):
            self.weight = nn.Parameter(weight.new_zeros(0), requires_grad=False)

    def winograd_weight(self) -> torch.Tensor:
        """``U`` of the Winograd kernel, from the weight (folded first when strided)."""
        weight = self.weight
        if self.depth_stride > 1:
            weight = space_to_depth_weight(weight, self.depth_stride, self.pad.total - self.pad.right)[0]
        return winograd_u(self.winograd_g, weight)

    @property
    def delay(self) -> int:
        """Samples (at the input rate) this layer delays its output by once streaming."""
        return self.pad.right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offline = not self.pad.streaming
        if (self.use_winograd or self.use_taps) and not offline:
            raise RuntimeError("a convolution prepared for offline use (prepare_offline) cannot stream")
        if self.use_winograd:
            if self.winograd_u.numel() == 0:
                self.winograd_u = self.winograd_weight()
            n = (x.shape[-1] + self.stride[0] - 1) // self.stride[0]
            if self.depth_stride > 1:
                x = space_to_depth(x, self.depth_stride)
            y = conv1d_winograd(x, self.winograd_u, self.winograd_at, self.winograd_bt, self.winograd_left, self.dilation[0], n)
        elif self.use_taps:
            left = self.pad.total - self.pad.right
            y = conv1d_taps(x, self.weight_taps.to(x.dtype), left, self.dilation[0], self.stride[0])
        elif self.use_mm:
            wt = self.weight.permute(2, 1, 0).reshape(-1, self.out_channels)
            y = conv1d_mm(self.pad(x), wt, self.kernel_size[0], self.stride[0], self.dilation[0])
        else:
            return F.conv1d(self.pad(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        bias = self.bias
        if bias is not None:
            y = y + bias.unsqueeze(-1)
        return y


class OverlapAdd(nn.Module):
    """Crops the ``(n + 1) * stride``-ish output of a transposed convolution to ``n * stride``.

    Offline: drops ``left`` samples at the start and the rest of the overlap at the end.
    Streaming: adds the previous call's tail (the part of its kernels that spills into
    this block) to the start and keeps this call's tail for the next one.
    """

    def __init__(self, overlap: int, causal: bool) -> None:
        super().__init__()
        self.overlap = overlap
        self.left = 0 if causal else overlap // 2
        self.streaming = False
        self.register_buffer("cache", torch.zeros(0), persistent=False)

    def reset(self) -> None:
        self.cache = torch.zeros(0, dtype=self.cache.dtype, device=self.cache.device)

    def forward(self, y: torch.Tensor, n_out: int) -> torch.Tensor:
        if self.overlap == 0:
            return y[..., :n_out]
        if not self.streaming:
            return y[..., self.left:self.left + n_out]
        head = y[..., :self.overlap] + _fresh_cache(self.cache, y, self.overlap)
        self.cache = y[..., n_out:n_out + self.overlap]
        return torch.cat([head, y[..., self.overlap:n_out]], -1)


class ConvTranspose1d(nn.ConvTranspose1d):
    """Up-sampling by ``stride``: ``[B, in_channels, T] -> [B, out_channels, T * stride]``.

    The bias (if any) is added after the overlap-add so that overlapping kernel tails
    from two streaming calls do not count it twice.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool = False, causal: bool = False
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        if kernel_size < stride:
            raise ValueError(f"transposed convolution kernel ({kernel_size}) shorter than its stride ({stride})")
        if kernel_size % stride:
            raise ValueError(f"transposed convolution kernel ({kernel_size}) must be a multiple of its stride ({stride})")
        self.ola = OverlapAdd(kernel_size - stride, causal)
        self.use_mm = False
        self.use_poly = False
        # Inference-only weights (see Conv1d): buffers, empty until prepare_offline.
        self.register_buffer("weight_poly", torch.zeros(0), persistent=False)  # [taps, Cin, Cout * stride]
        self.use_winograd = False
        # U [alpha, Cin, Cout * stride], derived at the first call as in Conv1d.
        self.register_buffer("winograd_u", torch.zeros(0), persistent=False)
        self.register_buffer("winograd_g", torch.zeros(0), persistent=False)
        self.register_buffer("winograd_at", torch.zeros(0), persistent=False)
        self.register_buffer("winograd_bt", torch.zeros(0), persistent=False)

    def prepare_mm(self) -> None:
        """Inference only: compute through :func:`conv_transpose1d_mm`."""
        self.weight = nn.Parameter(self.weight.detach().contiguous(), requires_grad=False)
        self.use_mm = True

    def prepare_offline(self) -> None:
        """Inference only: compute through :func:`conv_transpose1d_poly` (faster than
        oneDNN's transposed convolution on long signals), weights re-laid once here."""
        if self.ola.streaming:
            return
        poly = polyphase_weight(self.weight.detach(), self.stride[0])
        # The polyphase form is an ordinary stride-1 convolution: Winograd applies.
        weight = poly.permute(2, 1, 0)  # [Cout * stride, Cin, taps]
        if winograd_suits(weight):
            at, g, bt = transforms(WINOGRAD_TILE, weight.shape[-1])
            self.winograd_g, self.winograd_at, self.winograd_bt = g, at.to(weight.dtype), bt.to(weight.dtype)
            self.winograd_u = weight.new_zeros(0)  # derived from the weight at the first call
            self.use_winograd = True
            return
        self.weight_poly = poly
        self.use_poly = True
        # The kernel reads only the polyphase form (see Conv1d.prepare_offline).
        if not parametrize.is_parametrized(self):
            self.weight = nn.Parameter(poly.new_zeros(0), requires_grad=False)

    def winograd_weight(self) -> torch.Tensor:
        """``U`` of the Winograd kernel, from the weight's polyphase form."""
        return winograd_u(self.winograd_g, polyphase_weight(self.weight, self.stride[0]).permute(2, 1, 0))

    @property
    def delay(self) -> int:
        """Samples (at the output rate) this layer delays its output by once streaming."""
        return self.ola.left

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.use_winograd or self.use_poly) and self.ola.streaming:
            raise RuntimeError("a transposed convolution prepared for offline use (prepare_offline) cannot stream")
        if self.use_mm:
            wt = self.weight.reshape(self.in_channels, -1)
            y = conv_transpose1d_mm(x, wt, self.out_channels, self.stride[0])
        elif self.use_winograd:
            if self.winograd_u.numel() == 0:
                self.winograd_u = self.winograd_weight()
            taps = self.winograd_u.shape[0] - self.winograd_at.shape[0] + 1
            y = conv1d_winograd(x, self.winograd_u, self.winograd_at, self.winograd_bt, taps - 1, 1, x.shape[-1] + taps - 1)
            y = phases_to_time(y, self.out_channels, self.stride[0])
        elif self.use_poly:
            y = conv_transpose1d_poly(x, self.weight_poly.to(x.dtype), self.out_channels, self.stride[0])
        else:
            y = F.conv_transpose1d(x, self.weight, None, self.stride)
        y = self.ola(y, x.shape[-1] * self.stride[0])
        bias = self.bias
        if bias is not None:
            y = y + bias.unsqueeze(-1)
        return y


class Delay(nn.Module):
    """Delays ``[B, C, T]`` by ``n`` samples while streaming; identity offline."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.streaming = False
        self.register_buffer("cache", torch.zeros(0), persistent=False)

    def reset(self) -> None:
        self.cache = torch.zeros(0, dtype=self.cache.dtype, device=self.cache.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n == 0 or not self.streaming:
            return x
        x = torch.cat([_fresh_cache(self.cache, x, self.n), x], -1)
        self.cache = x[..., x.shape[-1] - self.n:]
        return x[..., : x.shape[-1] - self.n]


def branch_delay(module: nn.Module) -> int:
    """Streaming delay of a chain of stride-1 layers: the sum of their right paddings."""
    total = 0
    for m in module.modules():
        if isinstance(m, Conv1d):
            if m.stride[0] != 1:
                raise ValueError("branch_delay only applies to stride-1 branches")
            total += m.delay
    return total


class Residual(nn.Module):
    """``x + branch(x)``, the skip path delayed like the branch when streaming."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch
        self.skip = Delay(branch_delay(branch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.branch(x)


class FrameNoise(nn.Module):
    """Deterministic uniform noise in [0, 1) that streams: a counter-based hash.

    ``uniform(b, t, n)`` returns ``[b, t, n]`` values for the next ``t`` frames and
    advances the frame counter, so ``t = 8`` once gives the same numbers as ``t = 4``
    twice. Unlike ``torch.rand`` this does not depend on how other random draws are
    interleaved between calls, which is what lets the exported model give identical
    output for a signal in blocks and whole. Each batch item gets its own stream; a
    change of batch size starts the streams over, like the convolutions' caches do.
    The hash is SplitMix64's finaliser on int64 tensors (wrapping multiplication).
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self.streaming = False
        # Frames drawn so far while streaming, for a batch of ``batch``: plain ints, so no
        # tensor is left behind on the CPU when the module moves and no device sync is
        # needed to read them.
        self.frame = 0
        self.batch = -1

    def reset(self) -> None:
        self.frame = 0
        self.batch = -1

    def uniform(self, b: int, t: int, n: int, device: torch.device) -> torch.Tensor:
        start = self.frame if self.streaming and b == self.batch else 0
        frames = torch.arange(start, start + t, device=device).view(1, t, 1)
        items = torch.arange(b, device=device).view(b, 1, 1)
        z = (items * (1 << 40) + frames * n + torch.arange(n, device=device).view(1, 1, n)) ^ self.seed
        z = z * -7046029254386353131  # 0x9E3779B97F4A7C15
        z = (z ^ ((z >> 30) & 0x3FFFFFFFF)) * -4658895280553007687  # 0xBF58476D1CE4E5B9
        z = (z ^ ((z >> 27) & 0x1FFFFFFFFF)) * -7723592293110705685  # 0x94D049BB133111EB
        z = z ^ ((z >> 31) & 0x1FFFFFFFF)
        if self.streaming:
            self.frame = start + t
            self.batch = b
        return ((z >> 40) & 0xFFFFFF).float() / 16777216.0

    def normal(self, b: int, t: int, n: int, device: torch.device) -> torch.Tensor:
        """Standard normal ``[b, t, n]`` (Box-Muller on two uniform draws per value)."""
        u = self.uniform(b, t, 2 * n, device).view(b, t, n, 2)
        return torch.sqrt(-2.0 * torch.log1p(-u[..., 0])) * torch.cos(2.0 * math.pi * u[..., 1])


_STATEFUL = (CachedPad1d, OverlapAdd, Delay, FrameNoise)


def set_streaming(module: nn.Module, streaming: bool) -> None:
    """Switch every cached layer of ``module`` to streaming (or back) and clear the caches."""
    for m in module.modules():
        if isinstance(m, _STATEFUL):
            m.streaming = streaming
            m.reset()


def prepare_mm(module: nn.Module) -> None:
    """Inference only: switch every convolution of ``module`` to the matmul kernels
    (``conv1d_mm``, ``conv_transpose1d_mm``); outputs are unchanged up to rounding."""
    for m in module.modules():
        if callable(getattr(m, "prepare_mm", None)):
            m.prepare_mm()


def fold_batchnorm(module: nn.Module) -> None:
    """Inference only: fold every eval-mode ``BatchNorm1d`` that directly follows a
    :class:`Conv1d` in an ``nn.Sequential`` into that convolution's weight and bias,
    and drop it. In eval mode BatchNorm is the per-channel affine map
    ``(y - mean) * gamma / sqrt(var + eps) + beta``; applied to the convolution's weights
    it costs nothing at run time (instead of a full memory pass per layer), offline or
    streaming. Outputs are unchanged up to rounding."""
    for seq in list(module.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        i = 1
        while i < len(seq):
            conv, norm = seq[i - 1], seq[i]
            foldable = isinstance(conv, Conv1d) and not hasattr(conv, "parametrizations")  # weight norm: fold that first
            if foldable and isinstance(norm, nn.BatchNorm1d) and not norm.training and norm.running_var is not None:
                with torch.no_grad():
                    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps) if norm.affine else torch.rsqrt(norm.running_var + norm.eps)
                    shift = norm.bias - norm.running_mean * scale if norm.affine else -norm.running_mean * scale
                    bias = conv.bias * scale + shift if conv.bias is not None else shift
                    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1), requires_grad=False)
                    conv.bias = nn.Parameter(bias.clone(), requires_grad=False)
                del seq[i]
            else:
                i += 1


def prepare_offline(module: nn.Module) -> None:
    """Inference only, whole signals: switch the transposed convolutions of ``module`` to
    their polyphase kernels, the dense ones to :func:`conv1d_taps`, and make the
    LeakyReLUs that safely can work in place; outputs are unchanged up to rounding."""
    for m in module.modules():
        if callable(getattr(m, "prepare_offline", None)):
            m.prepare_offline()
    # A LeakyReLU right after a layer that returns a fresh tensor may overwrite it: one
    # memory pass and no allocation. Not the first layer of a residual branch, whose
    # input is still needed by the skip path.
    for seq in module.modules():
        if isinstance(seq, nn.Sequential):
            for prev, layer in zip(list(seq)[:-1], list(seq)[1:]):
                fresh = isinstance(prev, (Conv1d, ConvTranspose1d, nn.BatchNorm1d, Residual)) or isinstance(
                    getattr(prev, "net", None), Residual
                )
                if isinstance(layer, nn.LeakyReLU) and fresh:
                    layer.inplace = True


def reset_streaming(module: nn.Module) -> None:
    """Forget the past: clear every cache (the next call starts from silence)."""
    for m in module.modules():
        if isinstance(m, _STATEFUL):
            m.reset()
