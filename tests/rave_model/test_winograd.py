"""Winograd F(m, r) offline kernels: exact transforms, same outputs as the direct convolution."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from rave_model import cached_conv  # noqa: E402
from rave_model.cached_conv import (  # noqa: E402
    Conv1d,
    ConvTranspose1d,
    prepare_offline,
    conv_padding,
    space_to_depth,
    space_to_depth_weight,
)
from rave_model.config import load_config  # noqa: E402
from rave_model.model import RAVE  # noqa: E402
from rave_model.winograd import conv1d_winograd, transforms, winograd_weight  # noqa: E402


@pytest.mark.parametrize("m, r", [(2, 3), (4, 3), (6, 3), (2, 2), (4, 2), (2, 5)])
def test_transforms_satisfy_the_bilinear_identity(m, r):
    at, g, bt = transforms(m, r)
    alpha = m + r - 1
    assert at.shape == (m, alpha) and g.shape == (alpha, r) and bt.shape == (alpha, alpha)
    # Every (filter tap k, input sample l) pair reaches output i exactly when l == i + k.
    for i in range(m):
        for k in range(r):
            for l in range(alpha):
                value = float((at[i] * g[:, k] * bt[:, l]).sum())
                assert abs(value - (1.0 if l == i + k else 0.0)) < 1e-12, (i, k, l)


def test_f43_is_lavins_input_transform():
    # The published F(4, 3) input transform (Lavin & Gray 2016), as a known answer.
    lavin = torch.tensor(
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        dtype=torch.float64,
    )
    assert torch.equal(transforms(4, 3)[2], lavin)


def reference(x, weight, left, dilation, length):
    """Direct convolution with ``left`` zeros before and enough after for ``length`` outputs."""
    r = weight.shape[-1]
    right = length + (r - 1) * dilation - left - x.shape[-1]
    xp = F.pad(x, (left, max(right, 0)))
    return F.conv1d(xp, weight, dilation=dilation)[..., :length]


@pytest.mark.parametrize(
    "b, t, r, m, dilation, left, extra",
    [
        (1, 100, 3, 4, 1, 1, 0),  # centred
        (1, 100, 3, 4, 1, 2, 0),  # causal
        (1, 100, 3, 4, 1, 0, 0),  # all padding after
        (2, 101, 3, 4, 3, 3, 0),  # batch, dilation, a ragged last tile
        (1, 57, 3, 4, 5, 10, 0),  # causal and dilated
        (1, 3, 3, 4, 5, 5, 0),  # shorter than one tile and than the dilation
        (1, 33, 3, 2, 1, 1, 0),
        (1, 50, 2, 4, 1, 1, 1),  # the polyphase transposed convolution's case: one more output
        (3, 50, 2, 3, 1, 1, 1),
    ],
)
def test_winograd_equals_the_direct_convolution(b, t, r, m, dilation, left, extra):
    torch.manual_seed(0)
    weight = torch.randn(40, 24, r)
    x = torch.randn(b, t, 24).transpose(1, 2)  # time-major, as the offline kernels pass it
    length = t + extra
    ref = reference(x, weight, left, dilation, length)
    u, at, bt = winograd_weight(weight, m)
    y = conv1d_winograd(x, u, at, bt, left, dilation, length if extra else -1)
    assert y.shape == ref.shape
    assert (y - ref).abs().max() < 1e-5 * float(ref.abs().max())
    # In blocks (interior blocks read the input in place, edge blocks from a padded copy),
    # and from a channel-major input (always copied): the same numbers.
    tol = 1e-5 * float(ref.abs().max())
    for block in (1, 8, 24):
        assert (conv1d_winograd(x, u, at, bt, left, dilation, length if extra else -1, block) - ref).abs().max() < tol
    assert (conv1d_winograd(x.contiguous(), u, at, bt, left, dilation, length if extra else -1, 8) - ref).abs().max() < tol
    # The same function compiles for the exported TorchScript module.
    scripted = torch.jit.script(conv1d_winograd)
    assert torch.equal(scripted(x, u, at, bt, left, dilation, length if extra else -1), y)


@pytest.mark.parametrize(
    "kernel, dilation, centred",
    # acids-rave's cc.get_padding(kernel, dilation=dilation), as known answers: the odd
    # sample on the right (4 taps: 1 + 2), nothing for one tap.
    [(3, 1, (1, 1)), (4, 1, (1, 2)), (8, 1, (3, 4)), (9, 1, (4, 4)), (3, 5, (5, 5)), (5, 2, (4, 4)), (1, 1, (0, 0))],
)
def test_conv_padding_is_the_reference_rule(kernel, dilation, centred):
    assert conv_padding(kernel, dilation) == centred
    total = (kernel - 1) * dilation
    assert conv_padding(kernel, dilation, causal=True) == (total, 0)
    conv = Conv1d(2, 2, kernel, stride=4, dilation=dilation)
    assert (conv.pad.total - conv.pad.right, conv.pad.right) == centred  # the stride does not change it


@pytest.mark.parametrize("causal", [False, True])
def test_wide_layers_switch_to_winograd_and_keep_their_output(causal):
    torch.manual_seed(0)
    convs = (
        Conv1d(128, 128, 3, causal=causal),
        Conv1d(128, 256, 3, dilation=5, causal=causal, bias=True),
        ConvTranspose1d(256, 128, 8, 4, causal=causal),
        ConvTranspose1d(128, 128, 4, 2, bias=True, causal=causal),
        # Strided: v1's encoder (9 taps, stride 4; 5 taps, stride 2) and v2's (2r taps).
        Conv1d(64, 128, 9, stride=4, causal=causal),
        Conv1d(128, 256, 5, stride=2, causal=causal, bias=True),
        Conv1d(64, 128, 8, stride=4, causal=causal),
        Conv1d(128, 128, 4, stride=2, causal=causal),
    )
    for conv in convs:
        with torch.no_grad():
            # Lengths that are and are not multiples of the stride; shorter than the kernel.
            xs = [torch.randn(b, conv.in_channels, t) for b, t in ((2, 40), (1, 37), (1, 4))]
            refs = [conv(x) for x in xs]
            if isinstance(conv, Conv1d):
                # (k - 1) * dilation samples of padding whatever the stride: ceil(T / stride)
                # frames, e.g. 10 for 37 samples at stride 4.
                assert [r.shape[-1] for r in refs] == [-(-x.shape[-1] // conv.stride[0]) for x in xs], conv
            prepare_offline(conv)
            assert conv.use_winograd, conv
            if isinstance(conv, Conv1d):
                assert conv.depth_stride == conv.stride[0], conv
            for x, ref in zip(xs, refs):
                y = conv(x)
                assert y.shape == ref.shape
                assert (y - ref).abs().max() < 1e-5 * float(ref.abs().max()), (conv, x.shape)


def test_narrow_and_long_kernels_keep_the_direct_kernels():
    # Too narrow to pay for the transforms; 7 or 1 taps; strided but still too narrow.
    for conv in (Conv1d(64, 64, 3), Conv1d(256, 256, 7), Conv1d(256, 256, 1), Conv1d(16, 32, 9, stride=4)):
        prepare_offline(conv)
        assert not conv.use_winograd and conv.use_taps and conv.depth_stride == 1, conv


@pytest.mark.parametrize("kernel, stride, left", [(9, 4, 3), (9, 4, 5), (5, 2, 2), (5, 2, 3), (8, 4, 2), (4, 2, 0), (3, 2, 1)])
def test_space_to_depth_turns_a_strided_convolution_into_a_stride_1_one(kernel, stride, left):
    torch.manual_seed(0)
    weight, x = torch.randn(5, 3, kernel), torch.randn(2, 3, 8 * stride + 1)
    n = x.shape[-1] // stride
    right = (n - 1) * stride + kernel - left - x.shape[-1]
    ref = F.conv1d(F.pad(x, (left, max(right, 0))), weight, stride=stride)[..., :n]
    folded, folded_left = space_to_depth_weight(weight, stride, left)
    assert folded.shape[:2] == (5, 3 * stride)
    y = reference(space_to_depth(x, stride), folded, folded_left, 1, n)
    assert torch.allclose(y, ref, atol=1e-5)


def test_winograd_keeps_the_model_output(monkeypatch):
    # Every eligible layer of a small v1 goes through Winograd (the width floor lowered).
    monkeypatch.setattr(cached_conv, "WINOGRAD_MIN_WIDTH", 0)
    torch.manual_seed(0)
    model = RAVE(load_config("v1", ["model.capacity=8", "model.latent_size=4"])).eval()
    fast = model.for_inference()
    assert sum(bool(getattr(m, "use_winograd", False)) for m in fast.modules()) >= 20
    x = torch.randn(1, 1, 4 * 2048) * 0.1
    with torch.no_grad():
        ref = model(x)
        assert (fast(x) - ref).abs().max() < 1e-5 * float(ref.abs().max())
