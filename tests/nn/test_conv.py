"""Tests of nn.functional.conv (conv2d, conv_transpose2d) and nn.modules.conv.

The fast kernels are compared with slow loop references written from the
definitions (a gather for the convolution, a scatter for the transposed one),
checked against central differences in float64, against torch, and against each
other through adjointness.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nn
import nn.functional as F
from nn.functional import conv as conv_module
from nn.functional import conv_kernels
from nn.functional.conv import (
    conv2d_backward, conv2d_forward, conv_transpose2d_backward, conv_transpose2d_forward,
)
from tests.oracles import require
from tests.strategies import conv2d_geometries


# ============================================================ loop references
def conv2d_reference(x, weight, bias=None, stride=(1, 1), padding=((0, 0), (0, 0)),
                     dilation=(1, 1), groups=1):
    """Convolution by its definition: one dot product per output value (slow)."""
    n, h, w, c = x.shape
    kh, kw, cg, c_out = weight.shape
    (pt, pb), (pl, pr) = padding
    sh, sw = stride
    dh, dw = dilation
    xp = np.zeros((n, h + pt + pb, w + pl + pr, c), dtype=x.dtype)
    xp[:, pt:pt + h, pl:pl + w] = x
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    cog = c_out // groups
    y = np.zeros((n, ho, wo, c_out), dtype=np.float64)
    for b in range(n):
        for r in range(ho):
            for q in range(wo):
                for o in range(c_out):
                    group = o // cog
                    total = 0.0
                    for i in range(kh):
                        for j in range(kw):
                            for ci in range(cg):
                                total += (xp[b, r * sh + i * dh, q * sw + j * dw, group * cg + ci]
                                          * weight[i, j, ci, o])
                    y[b, r, q, o] = total + (0.0 if bias is None else bias[o])
    return y.astype(x.dtype)


def conv_transpose2d_reference(x, weight, bias=None, stride=(1, 1), padding=(0, 0),
                               output_padding=(0, 0), dilation=(1, 1), groups=1):
    """Transposed convolution as a scatter: each input pixel adds ``x · W[i, j]`` (slow)."""
    n, h, w, c_in = x.shape
    kh, kw, _, cog = weight.shape
    sh, sw = stride
    dh, dw = dilation
    ph, pw = padding
    full_h = (h - 1) * sh + dh * (kh - 1) + 1 + output_padding[0]
    full_w = (w - 1) * sw + dw * (kw - 1) + 1 + output_padding[1]
    cg = c_in // groups
    full = np.zeros((n, full_h, full_w, cog * groups), dtype=np.float64)
    for b in range(n):
        for r in range(h):
            for q in range(w):
                for ci in range(c_in):
                    group = ci // cg
                    for i in range(kh):
                        for j in range(kw):
                            for o in range(cog):
                                full[b, r * sh + i * dh, q * sw + j * dw, group * cog + o] += (
                                    x[b, r, q, ci] * weight[i, j, ci, o]
                                )
    y = full[:, ph:full_h - ph, pw:full_w - pw]
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype)


def _pads(padding):
    return tuple((p, p) for p in padding)


def _conv_inputs(geometry, seed):
    """For a ``conv2d_geometries`` draw: a generator seeded with ``seed``, then from it a
    random input x (N, H, W, C_in) and HWIO weight (kh, kw, C_in/groups, C_out), float64."""
    g = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g["shape"])
    c_in = g["shape"][3]
    weight = rng.standard_normal(g["kernel_size"] + (c_in // g["groups"], g["out_channels"]))
    return rng, x, weight


def _tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


# ================================================================= forward
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "shape, c_out, kernel, stride, padding, dilation, groups",
    [
        ((2, 7, 6, 3), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
        ((1, 9, 8, 4), 6, (3, 2), (2, 3), (1, 0), (1, 1), 2),
        ((2, 8, 9, 2), 3, (2, 3), (1, 2), (2, 1), (2, 1), 1),
        ((1, 5, 5, 3), 3, (1, 1), (1, 1), (0, 0), (1, 1), 3),  # depthwise 1x1
        ((2, 6, 6, 4), 4, (1, 1), (1, 1), (0, 0), (1, 1), 1),  # pure GEMM path
        ((1, 8, 8, 2), 2, (2, 2), (2, 2), (0, 0), (1, 1), 1),  # patchify, k == s
    ],
)
def test_conv2d_forward_matches_loop_reference(shape, c_out, kernel, stride, padding, dilation,
                                               groups, seed, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal(kernel + (shape[3] // groups, c_out)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype)
    y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    expected = conv2d_reference(x, weight, bias, stride, _pads(padding), dilation, groups)
    assert y.dtype == dtype
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.data, expected, **_tolerance(dtype))


@settings(max_examples=30)
@given(geometry=conv2d_geometries(), seed=st.integers(0, 2**31 - 1))
def test_conv2d_hypothesis_geometries_match_loop_reference(geometry, seed):
    g = geometry
    rng, x, weight = _conv_inputs(g, seed)
    bias = rng.standard_normal(g["out_channels"])
    y = F.conv2d(x, weight, bias, g["stride"], g["padding"], g["dilation"], g["groups"])
    expected = conv2d_reference(x, weight, bias, g["stride"], _pads(g["padding"]), g["dilation"],
                                g["groups"])
    np.testing.assert_allclose(y.data, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=30)
@given(geometry=conv2d_geometries(transposed=True), seed=st.integers(0, 2**31 - 1))
def test_conv_transpose2d_hypothesis_geometries_match_loop_reference(geometry, seed):
    rng = np.random.default_rng(seed)
    g = geometry
    c_in = g["shape"][3]
    x = rng.standard_normal(g["shape"])
    weight = rng.standard_normal(g["kernel_size"] + (c_in, g["out_channels"] // g["groups"]))
    bias = rng.standard_normal(g["out_channels"])
    y = F.conv_transpose2d(x, weight, bias, g["stride"], g["padding"], g["output_padding"],
                           g["groups"], g["dilation"])
    expected = conv_transpose2d_reference(x, weight, bias, g["stride"], g["padding"],
                                          g["output_padding"], g["dilation"], g["groups"])
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.data, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "shape, c_out, kernel, stride, padding, output_padding, dilation, groups",
    [
        ((2, 4, 5, 3), 4, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), 1),  # k == s: one GEMM + reshape
        ((1, 4, 4, 4), 2, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 1),  # FCN/U-Net upsampling
        ((2, 3, 4, 4), 6, (3, 3), (2, 1), (1, 0), (1, 0), (1, 1), 2),
        ((1, 3, 3, 2), 3, (2, 3), (3, 2), (0, 1), (2, 1), (1, 2), 1),
        ((1, 2, 3, 2), 2, (1, 1), (3, 3), (0, 0), (2, 2), (1, 1), 1),  # stride > kernel: gaps
    ],
)
def test_conv_transpose2d_forward_matches_loop_reference(shape, c_out, kernel, stride, padding,
                                                         output_padding, dilation, groups, seed,
                                                         dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal(kernel + (shape[3], c_out // groups)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype)
    y = F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    expected = conv_transpose2d_reference(x, weight, bias, stride, padding, output_padding,
                                          dilation, groups)
    assert y.dtype == dtype
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.data, expected, **_tolerance(dtype))


def test_same_padding_keeps_the_size_and_pads_the_end_for_even_kernels():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 6, 2))
    weight = rng.standard_normal((4, 2, 2, 3))
    y = F.conv2d(x, weight, padding="same", dilation=(1, 3))
    assert y.shape == (1, 5, 6, 3)
    # total padding 3 rows: 1 on top, 2 at the bottom; 3 columns: 1 left, 2 right
    expected = conv2d_reference(x, weight, None, (1, 1), ((1, 2), (1, 2)), (1, 3))
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)
    valid = F.conv2d(x, weight, padding="valid")
    np.testing.assert_allclose(valid.data, conv2d_reference(x, weight), rtol=1e-12, atol=1e-12)


def test_hand_computed_convolution():
    # A 3x3 image of 1..9 with a 2x2 kernel of ones sums each 2x2 block.
    x = np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    weight = np.ones((2, 2, 1, 1))
    y = F.conv2d(x, weight, np.array([0.5]))
    np.testing.assert_array_equal(y.data[0, :, :, 0], [[12.5, 16.5], [24.5, 28.5]])
    # Its transpose spreads each value over a 2x2 block (stride 2: no overlap).
    up = F.conv_transpose2d(np.array([[[[1.0], [2.0]]]]), np.ones((2, 2, 1, 1)), stride=2)
    np.testing.assert_array_equal(up.data[0, :, :, 0], [[1, 1, 2, 2], [1, 1, 2, 2]])


# ================================================================ gradients
GRAD_GEOMETRIES = [
    # shape, c_out, kernel, stride, padding, dilation, groups
    ((1, 5, 4, 2), 3, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((2, 5, 6, 2), 2, (3, 2), (2, 2), (1, 0), (1, 1), 1),
    ((1, 6, 5, 4), 2, (2, 3), (1, 2), (2, 1), (2, 1), 2),
    ((1, 4, 4, 3), 3, (1, 1), (1, 1), (0, 0), (1, 1), 3),
    ((1, 1, 1, 2), 2, (1, 1), (2, 2), (1, 1), (1, 1), 1),  # the only pixel is never read
    ((1, 5, 3, 2), 2, (2, 1), (3, 2), (2, 1), (2, 1), 1),  # phases no tap reaches
]


@pytest.mark.parametrize("shape, c_out, kernel, stride, padding, dilation, groups", GRAD_GEOMETRIES)
def test_conv2d_gradcheck(shape, c_out, kernel, stride, padding, dilation, groups):
    rng = np.random.default_rng(0)
    x = nn.Tensor(rng.standard_normal(shape), requires_grad=True)
    weight = nn.Tensor(rng.standard_normal(kernel + (shape[3] // groups, c_out)),
                       requires_grad=True)
    bias = nn.Tensor(rng.standard_normal(c_out), requires_grad=True)
    assert nn.gradcheck(
        lambda a, w, b: F.conv2d(a, w, b, stride, padding, dilation, groups), (x, weight, bias)
    )


def test_conv2d_same_padding_gradcheck():
    rng = np.random.default_rng(1)
    x = nn.Tensor(rng.standard_normal((1, 4, 5, 2)), requires_grad=True)
    weight = nn.Tensor(rng.standard_normal((2, 4, 2, 2)), requires_grad=True)
    assert nn.gradcheck(lambda a, w: F.conv2d(a, w, padding="same"), (x, weight))


@pytest.mark.parametrize(
    "shape, c_out, kernel, stride, padding, output_padding, dilation, groups",
    [
        ((1, 3, 3, 2), 3, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1),
        ((2, 2, 3, 2), 2, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), 1),
        ((1, 3, 2, 4), 4, (2, 3), (1, 2), (0, 1), (0, 1), (2, 1), 2),
    ],
)
def test_conv_transpose2d_gradcheck(shape, c_out, kernel, stride, padding, output_padding,
                                    dilation, groups):
    rng = np.random.default_rng(0)
    x = nn.Tensor(rng.standard_normal(shape), requires_grad=True)
    weight = nn.Tensor(rng.standard_normal(kernel + (shape[3], c_out // groups)),
                       requires_grad=True)
    bias = nn.Tensor(rng.standard_normal(c_out), requires_grad=True)
    assert nn.gradcheck(
        lambda a, w, b: F.conv_transpose2d(a, w, b, stride, padding, output_padding, groups,
                                           dilation),
        (x, weight, bias),
    )


def test_conv_transpose2d_output_size_gradcheck():
    rng = np.random.default_rng(2)
    x = nn.Tensor(rng.standard_normal((1, 3, 2, 2)), requires_grad=True)
    weight = nn.Tensor(rng.standard_normal((3, 3, 2, 2)), requires_grad=True)
    y = F.conv_transpose2d(x, weight, stride=2, padding=1, output_size=(6, 4))
    assert y.shape == (1, 6, 4, 2)
    assert nn.gradcheck(
        lambda a, w: F.conv_transpose2d(a, w, stride=2, padding=1, output_size=(6, 4)), (x, weight)
    )


@settings(max_examples=20)
@given(geometry=conv2d_geometries(), seed=st.integers(0, 2**31 - 1))
def test_conv2d_gradients_match_loop_reference_transposes(geometry, seed):
    """dx of conv2d is the (reference) transposed conv of dy; dW and db by their sums."""
    g = geometry
    rng, x, weight = _conv_inputs(g, seed)
    y, cache = conv2d_forward(x, weight, np.zeros(g["out_channels"]), g["stride"], g["padding"],
                              g["dilation"], g["groups"])
    dy = rng.standard_normal(y.shape)
    dx, dw, db = conv2d_backward(dy, cache)
    # dx: scatter dy through the same filters (the transposed-conv weight is the conv
    # weight with its last two axes swapped), then crop what the forward's padding and
    # its floor division cut off.
    swapped = np.ascontiguousarray(weight.transpose(0, 1, 3, 2))
    full = conv_transpose2d_reference(dy, swapped, None, g["stride"], (0, 0), (0, 0),
                                      g["dilation"], g["groups"])
    (ph, pw), (n, h, w, c) = g["padding"], g["shape"]
    padded = np.zeros((n, h + 2 * ph, w + 2 * pw, c))
    padded[:, :full.shape[1], :full.shape[2]] = full
    np.testing.assert_allclose(dx, padded[:, ph:ph + h, pw:pw + w], rtol=1e-10, atol=1e-10)
    # dW[i, j, c, o] = Σ_{n,t,u} x_pad[n, t·sh + i·dh, u·sw + j·dw, c of o's group] dy[n, t, u, o]
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    (kh, kw), (sh, sw), (dh, dw_), groups = (g["kernel_size"], g["stride"], g["dilation"],
                                             g["groups"])
    ho, wo = y.shape[1:3]
    cg, cog = c // groups, g["out_channels"] // groups
    expected_dw = np.zeros_like(weight)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                       j * dw_:j * dw_ + sw * (wo - 1) + 1:sw]
            for o in range(g["out_channels"]):
                group = o // cog
                expected_dw[i, j, :, o] = np.tensordot(
                    patch[..., group * cg:(group + 1) * cg], dy[..., o], axes=([0, 1, 2], [0, 1, 2])
                )
    np.testing.assert_allclose(dw, expected_dw, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 1, 2)), rtol=1e-12, atol=1e-12)


@settings(max_examples=30)
@given(geometry=conv2d_geometries(), seed=st.integers(0, 2**31 - 1))
def test_conv2d_and_conv_transpose2d_are_adjoint(geometry, seed):
    """<conv2d(x, W), y> == <x, conv_transpose2d(y, W')> with W' = W with its last axes swapped."""
    g = geometry
    rng, x, weight = _conv_inputs(g, seed)
    y = F.conv2d(x, weight, None, g["stride"], g["padding"], g["dilation"], g["groups"]).data
    probe = rng.standard_normal(y.shape)
    back = F.conv_transpose2d(probe, weight.transpose(0, 1, 3, 2), None, g["stride"], g["padding"],
                              0, g["groups"], g["dilation"], output_size=g["shape"][1:3]).data
    assert back.shape == x.shape
    lhs = float(np.sum(y * probe))
    rhs = float(np.sum(x * back))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


def test_first_layer_skips_the_input_gradient(monkeypatch):
    rng = np.random.default_rng(0)
    x = nn.Tensor(rng.standard_normal((2, 6, 6, 3)).astype(np.float32))  # an image: no grad
    weight = nn.Tensor(rng.standard_normal((3, 3, 3, 4)).astype(np.float32), requires_grad=True)

    def forbidden(*args, **kwargs):
        raise AssertionError("dx was computed for an input that needs no gradient")

    monkeypatch.setattr(conv_kernels, "conv2d_input_grad", forbidden)
    F.conv2d(x, weight, padding=1).sum().backward()
    assert x.grad is None
    assert weight.grad.shape == weight.shape


def test_frozen_weight_keeps_no_column_matrix():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 5, 2))
    weight = rng.standard_normal((3, 3, 2, 2))
    _, cache = conv2d_forward(x, weight, keep_cols=False)
    assert cache.cols is None
    with pytest.raises(ValueError, match="keep_cols"):
        conv2d_backward(np.ones((1, 3, 3, 2)), cache)
    xt = nn.Tensor(x, requires_grad=True)
    y = F.conv2d(xt, weight)  # weight is a plain array: no dW, no columns kept
    assert y._ctx.cache.cols is None
    y.sum().backward()
    expected = conv2d_backward(np.ones(y.shape), conv2d_forward(x, weight)[1])[0]
    np.testing.assert_allclose(xt.grad, expected, rtol=1e-12)


@pytest.mark.parametrize("need_weight, need_bias", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("groups, kernel", [(1, 3), (2, 3), (1, 1)])
def test_bias_gradient_with_and_without_the_weight_gradient(need_weight, need_bias, groups, kernel):
    """db = Σ dy, whether it comes from the bias column of dW's GEMM or on its own."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 4))
    weight = rng.standard_normal((kernel, kernel, 4 // groups, 6))
    bias = rng.standard_normal(6)
    y, cache = conv2d_forward(x, weight, bias, padding=kernel // 2, groups=groups)
    expected = conv2d_reference(x, weight, bias, (1, 1), _pads((kernel // 2,) * 2), (1, 1), groups)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    _, dw, db = conv2d_backward(dy, cache, need_input_grad=False, need_weight_grad=need_weight,
                                need_bias_grad=need_bias)
    if need_bias:
        np.testing.assert_allclose(db, dy.sum(axis=(0, 1, 2)), rtol=1e-12, atol=1e-12)
    else:
        assert db is None
    if need_weight:
        reference_dw = conv2d_backward(dy, conv2d_forward(x, weight, None, padding=kernel // 2,
                                                          groups=groups)[1])[1]
        np.testing.assert_allclose(dw, reference_dw, rtol=1e-12, atol=1e-12)
    else:
        assert dw is None



@settings(max_examples=30)
@given(geometry=conv2d_geometries(max_stride=1, max_groups=1, max_kernel=5),
       seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_stride1_backward_from_the_columns_of_dy_matches_the_two_pass_backward(geometry, seed,
                                                                              dtype):
    """Stride 1: dx and dW from im2col(dy) alone (the training path, which keeps only the
    input) equal the backward from the kept columns of x (checked against loops above)."""
    g = geometry
    rng, x, weight = _conv_inputs(g, seed)
    x, weight = x.astype(dtype), weight.astype(dtype)
    args = (g["stride"], g["padding"], g["dilation"], g["groups"])
    y, kept = conv2d_forward(x, weight, None, *args)
    dy = rng.standard_normal(y.shape).astype(dtype)
    xt, wt = nn.Tensor(x, requires_grad=True), nn.Tensor(weight, requires_grad=True)
    out = F.conv2d(xt, wt, None, *args)
    assert out._ctx.cache.cols is None  # stride 1: the input is kept, not its columns
    out.backward(dy)
    dx, dw, _ = conv2d_backward(dy, kept)
    rtol, atol = (1e-4, 1e-4) if dtype == np.float32 else (1e-12, 1e-12)
    assert xt.grad.dtype == dtype and wt.grad.dtype == dtype
    np.testing.assert_allclose(xt.grad, dx, rtol=rtol, atol=atol)
    np.testing.assert_allclose(wt.grad, dw, rtol=rtol, atol=atol)


# =================================================================== oracle
def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


ORACLE_CONV = [
    # shape, c_out, kernel, stride, padding, dilation, groups
    ((2, 9, 7, 4), 6, (3, 3), (2, 1), (1, 1), (1, 1), 2),
    ((1, 8, 8, 3), 5, (5, 3), (1, 1), (2, 0), (1, 2), 1),
    ((2, 7, 9, 4), 4, (4, 2), (1, 1), "same", (2, 1), 1),
    ((1, 6, 6, 2), 3, (3, 3), (3, 3), "valid", (1, 1), 1),
    ((2, 5, 5, 6), 6, (3, 3), (1, 1), (1, 1), (1, 1), 6),  # depthwise
]


@pytest.mark.oracle
@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # torch's own note
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, c_out, kernel, stride, padding, dilation, groups", ORACLE_CONV)
def test_conv2d_matches_torch(shape, c_out, kernel, stride, padding, dilation, groups, dtype):
    torch = require("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal(kernel + (shape[3] // groups, c_out)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype)
    xs, ws, bs = (nn.Tensor(a, requires_grad=True) for a in (x, weight, bias))
    y = F.conv2d(xs, ws, bs, stride, padding, dilation, groups)
    dy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(dy)

    xt = torch.tensor(_nchw(x), requires_grad=True)
    wt = torch.tensor(np.ascontiguousarray(weight.transpose(3, 2, 0, 1)), requires_grad=True)
    bt = torch.tensor(bias, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    yt.backward(torch.tensor(_nchw(dy)))

    tol = _tolerance(dtype)
    np.testing.assert_allclose(y.data, _nhwc(yt), **tol)
    np.testing.assert_allclose(xs.grad, _nhwc(xt.grad), **tol)
    np.testing.assert_allclose(ws.grad, wt.grad.numpy().transpose(2, 3, 1, 0), **tol)
    np.testing.assert_allclose(bs.grad, bt.grad.numpy(), **tol)


ORACLE_CONVT = [
    # shape, c_out, kernel, stride, padding, output_padding, dilation, groups, output_size
    ((2, 5, 4, 4), 6, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 2, None),
    ((1, 3, 5, 3), 2, (2, 2), (2, 2), (0, 0), (1, 0), (1, 1), 1, None),
    ((2, 4, 3, 2), 4, (3, 2), (3, 2), (1, 0), (0, 0), (2, 3), 1, (13, 9)),
    ((1, 4, 4, 4), 4, (3, 3), (2, 2), (1, 1), (0, 0), (1, 1), 4, (8, 7)),
]


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, c_out, kernel, stride, padding, output_padding, dilation, groups, output_size",
    ORACLE_CONVT,
)
def test_conv_transpose2d_matches_torch(shape, c_out, kernel, stride, padding, output_padding,
                                        dilation, groups, output_size, dtype):
    torch = require("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal(kernel + (shape[3], c_out // groups)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype)

    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    module_t = torch.nn.ConvTranspose2d(shape[3], c_out, kernel, stride, padding, output_padding,
                                        groups, True, dilation).to(torch_dtype)
    with torch.no_grad():
        module_t.weight.copy_(torch.tensor(np.ascontiguousarray(weight.transpose(2, 3, 0, 1))))
        module_t.bias.copy_(torch.tensor(bias))
    xt = torch.tensor(_nchw(x), requires_grad=True)
    yt = module_t(xt, output_size=output_size)

    module = nn.ConvTranspose2d(shape[3], c_out, kernel, stride, padding, output_padding, groups,
                                True, dilation, dtype=dtype)
    module.weight.data = weight.copy()
    module.bias.data = bias.copy()
    xs = nn.Tensor(x, requires_grad=True)
    y = module(xs, output_size=output_size)
    assert y.shape == _nhwc(yt).shape
    dy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(dy)
    yt.backward(torch.tensor(_nchw(dy)))

    tol = _tolerance(dtype)
    np.testing.assert_allclose(y.data, _nhwc(yt), **tol)
    np.testing.assert_allclose(xs.grad, _nhwc(xt.grad), **tol)
    torch_weight_grad = module_t.weight.grad.numpy().transpose(2, 3, 0, 1)  # -> (kh, kw, in, out/g)
    np.testing.assert_allclose(module.weight.grad, torch_weight_grad, **tol)
    np.testing.assert_allclose(module.bias.grad, module_t.bias.grad.numpy(), **tol)


@pytest.mark.oracle
@settings(max_examples=15)
@given(geometry=conv2d_geometries(), seed=st.integers(0, 2**31 - 1))
def test_conv2d_hypothesis_geometries_match_torch(geometry, seed):
    torch = require("torch")
    g = geometry
    rng, x, weight = _conv_inputs(g, seed)
    xs, ws = nn.Tensor(x, requires_grad=True), nn.Tensor(weight, requires_grad=True)
    y = F.conv2d(xs, ws, None, g["stride"], g["padding"], g["dilation"], g["groups"])
    dy = rng.standard_normal(y.shape)
    y.backward(dy)
    xt = torch.tensor(_nchw(x), requires_grad=True)
    wt = torch.tensor(np.ascontiguousarray(weight.transpose(3, 2, 0, 1)), requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, None, g["stride"], g["padding"], g["dilation"],
                                    g["groups"])
    yt.backward(torch.tensor(_nchw(dy)))
    np.testing.assert_allclose(y.data, _nhwc(yt), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(xs.grad, _nhwc(xt.grad), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ws.grad, wt.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-10,
                               atol=1e-10)


# =========================================================== shapes, dtypes
def test_empty_batch_gives_empty_results_of_the_right_shape():
    x = nn.Tensor(np.zeros((0, 6, 5, 2), np.float32), requires_grad=True)
    weight = nn.Tensor(np.ones((3, 3, 2, 4), np.float32), requires_grad=True)
    bias = nn.Tensor(np.ones(4, np.float32), requires_grad=True)
    y = F.conv2d(x, weight, bias, stride=2, padding=1)
    assert y.shape == (0, 3, 3, 4) and y.dtype == np.float32
    y.sum().backward()
    assert x.grad.shape == x.shape
    np.testing.assert_array_equal(weight.grad, 0)
    np.testing.assert_array_equal(bias.grad, 0)
    up = F.conv_transpose2d(np.zeros((0, 2, 2, 4), np.float32), np.ones((2, 2, 4, 3), np.float32),
                            stride=2)
    assert up.shape == (0, 4, 4, 3) and up.dtype == np.float32


def test_dtypes_are_preserved_and_tensors_or_arrays_accepted():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((1, 4, 4, 2)).astype(dtype)
        weight = rng.standard_normal((3, 3, 2, 2)).astype(dtype)
        a = F.conv2d(x, weight, padding=1)
        b = F.conv2d(nn.Tensor(x), nn.Tensor(weight), padding=1)
        assert isinstance(a, nn.Tensor) and a.dtype == dtype
        np.testing.assert_array_equal(a.data, b.data)
        up = F.conv_transpose2d(x, weight, stride=2)
        assert up.dtype == dtype


def test_non_contiguous_input_is_accepted():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5)).transpose(0, 2, 3, 1)  # an NCHW array viewed as NHWC
    weight = rng.standard_normal((3, 3, 3, 2))
    y = F.conv2d(x, weight, padding=1)
    expected = conv2d_reference(np.ascontiguousarray(x), weight, None, (1, 1), ((1, 1), (1, 1)))
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)


def test_kernels_run_alone_on_arrays():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 5, 2)).astype(np.float32)
    weight = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    y, cache = conv2d_forward(x, weight, None, stride=2, padding=1)
    dx, dw, db = conv2d_backward(np.ones_like(y), cache, need_bias_grad=False)
    assert (y.shape, dx.shape, dw.shape, db) == ((1, 3, 3, 4), x.shape, weight.shape, None)
    assert dx.dtype == dw.dtype == np.float32
    up, cache_t = conv_transpose2d_forward(y, weight.transpose(0, 1, 3, 2), None, 2, 1,
                                           output_size=(5, 5))
    assert up.shape == x.shape
    dxt, dwt, dbt = conv_transpose2d_backward(np.ones_like(up), cache_t, need_weight_grad=False)
    assert dxt.shape == y.shape and dwt is None and dbt.shape == (2,)


# =================================================================== errors
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(x=np.zeros((4, 4, 2))), ValueError, "x must be 4-D"),
        (dict(weight=np.zeros((3, 3, 2))), ValueError, "weight must be 4-D"),
        (dict(weight=np.zeros((3, 3, 3, 4))), ValueError, "x has 2 channels"),
        (dict(groups=3), ValueError, "groups=3 must divide"),
        (dict(groups=0), ValueError, "groups must be a positive int"),
        (dict(weight=np.zeros((7, 3, 2, 4))), ValueError, "larger than the padded input"),
        (dict(x=np.zeros((1, 4, 4, 2), np.float32)), TypeError, "does not match x dtype"),
        (dict(x=np.zeros((1, 4, 4, 2), np.int64)), TypeError, "floating-point"),
        (dict(bias=np.zeros(3)), ValueError, r"bias must have shape \(4,\)"),
        (dict(bias=np.zeros(4, np.float32)), TypeError, "bias dtype"),
        (dict(stride=0), ValueError, "stride must be >= 1"),
        (dict(stride=(1, 2, 3)), TypeError, "stride must be an int or a pair"),
        (dict(padding=-1), ValueError, "padding must be >= 0"),
        (dict(padding="full"), ValueError, "'same' or 'valid'"),
        (dict(padding="same", stride=2), ValueError, "strided convolutions"),
        (dict(dilation=0), ValueError, "dilation must be >= 1"),
        (dict(x=[[1.0]]), TypeError, "x must be a Tensor or ndarray"),
    ],
)
def test_conv2d_errors(kwargs, error, match):
    args = dict(x=np.zeros((1, 4, 4, 2)), weight=np.zeros((3, 3, 2, 4)), bias=None, stride=1,
                padding=0, dilation=1, groups=1)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        F.conv2d(**args)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(x=np.zeros((4, 4, 2))), ValueError, "x must be 4-D"),
        (dict(weight=np.zeros((3, 3, 3, 4))), ValueError, "x has 2 channels"),
        (dict(groups=4, weight=np.zeros((3, 3, 2, 1))), ValueError, "groups=4 must divide"),
        (dict(output_padding=2), ValueError, "smaller than either stride"),
        (dict(output_padding=1, stride=1), ValueError, "smaller than either stride"),
        (dict(padding=5), ValueError, "must be positive"),
        (dict(padding="same"), ValueError, "int or a pair"),
        (dict(weight=np.zeros((3, 3, 2, 4), np.float32)), TypeError, "does not match x dtype"),
        (dict(output_size=(20, 9)), ValueError, r"not in \[9, 10\]"),
        (dict(output_size=(10, 9), output_padding=(0, 1)), ValueError, "contradicts output_size"),
    ],
)
def test_conv_transpose2d_errors(kwargs, error, match):
    args = dict(x=np.zeros((1, 4, 4, 2)), weight=np.zeros((3, 3, 2, 4)), bias=None, stride=2,
                padding=0, output_padding=0, groups=1, dilation=1, output_size=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        F.conv_transpose2d(**args)


def test_output_padding_may_reach_the_stride_when_below_the_dilation():
    # PyTorch accepts output_padding < dilation even when it is >= stride.
    y = F.conv_transpose2d(np.ones((1, 2, 2, 1)), np.ones((2, 2, 1, 1)), stride=1, dilation=3,
                           output_padding=2)
    assert y.shape == (1, 2 + 3 + 2, 2 + 3 + 2, 1)
    np.testing.assert_array_equal(y.data[0, -2:, :, 0], 0)  # rows no tap reaches


def test_errors_come_before_any_work(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(conv_module, "im2col", forbidden)
    monkeypatch.setattr(conv_module, "conv2d_forward_blocked", forbidden)
    monkeypatch.setattr(conv_kernels, "im2col_blocked", forbidden)
    with pytest.raises(ValueError):
        F.conv2d(np.zeros((1, 4, 4, 2)), np.zeros((3, 3, 3, 4)))


# ================================================================== modules
def test_conv2d_module_matches_the_function_and_has_torch_init_bounds():
    nn.manual_seed(0)
    layer = nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2)
    assert layer.weight.shape == (3, 3, 3, 8) and layer.bias.shape == (8,)
    assert layer.weight.dtype == np.float32
    bound = 1 / math.sqrt(3 * 3 * 3)  # PyTorch: fan_in = C_in/groups · kh · kw
    assert np.abs(layer.weight.data).max() <= bound
    assert np.abs(layer.weight.data).max() > 0.9 * bound
    assert np.abs(layer.bias.data).max() <= bound
    x = np.random.default_rng(0).standard_normal((2, 7, 7, 6)).astype(np.float32)
    y = layer(nn.Tensor(x))
    np.testing.assert_array_equal(
        y.data, F.conv2d(x, layer.weight.data, layer.bias.data, 2, 1, 1, 2).data
    )
    assert sorted(layer.state_dict()) == ["bias", "weight"]
    assert "kernel_size=(3, 3)" in repr(layer) and "groups=2" in repr(layer)


def test_conv2d_module_is_reproducible_and_takes_a_generator():
    nn.manual_seed(5)
    a = nn.Conv2d(3, 4, 3)
    nn.manual_seed(5)
    b = nn.Conv2d(3, 4, 3)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    c = nn.Conv2d(3, 4, 3, generator=np.random.default_rng(1))
    d = nn.Conv2d(3, 4, 3, generator=np.random.default_rng(1))
    np.testing.assert_array_equal(c.weight.data, d.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    no_bias = nn.Conv2d(3, 4, 1, bias=False, dtype=np.float64)
    assert no_bias.bias is None and no_bias.weight.dtype == np.float64
    assert list(no_bias.state_dict()) == ["weight"]


def test_conv_transpose2d_module_uses_torch_fan_in():
    layer = nn.ConvTranspose2d(64, 2, 3, stride=2, padding=1, output_padding=1)
    assert layer.weight.shape == (3, 3, 64, 2)
    bound = 1 / math.sqrt(2 * 3 * 3)  # PyTorch reads C_out/groups · kh · kw as fan_in
    assert np.abs(layer.weight.data).max() <= bound
    assert np.abs(layer.weight.data).max() > 0.9 * bound
    assert np.abs(layer.bias.data).max() <= bound
    x = np.random.default_rng(0).standard_normal((1, 5, 5, 64)).astype(np.float32)
    y = layer(x)
    assert y.shape == (1, 10, 10, 2)
    # output_size replaces the stored output_padding, as in PyTorch
    assert layer(x, output_size=(9, 10)).shape == (1, 9, 10, 2)
    assert "output_padding=(1, 1)" in repr(layer)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (nn.Conv2d, dict(in_channels=3, out_channels=4, kernel_size=3, groups=2),
         "divisible by groups"),
        (nn.Conv2d, dict(in_channels=0, out_channels=4, kernel_size=3), "in_channels must be"),
        (nn.Conv2d, dict(in_channels=2, out_channels=4, kernel_size=0), "kernel_size must be >= 1"),
        (nn.Conv2d, dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, padding="same"),
         "strided"),
        (nn.ConvTranspose2d, dict(in_channels=2, out_channels=4, kernel_size=3, stride=2,
                                  output_padding=2), "smaller than either stride"),
        (nn.ConvTranspose2d, dict(in_channels=4, out_channels=3, kernel_size=3, groups=2),
         "divisible by groups"),
    ],
)
def test_module_argument_errors(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_modules_train_a_tiny_autoencoder_step():
    """Conv2d then ConvTranspose2d: gradients reach every parameter and a step lowers the loss."""
    nn.manual_seed(0)
    down = nn.Conv2d(2, 4, 3, stride=2, padding=1)
    up = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 2)).astype(np.float32)

    def loss_value():
        out = up(F.relu(down(nn.Tensor(x))))
        return ((out - x) ** 2).mean()

    loss = loss_value()
    loss.backward()
    params = [down.weight, down.bias, up.weight, up.bias]
    assert all(p.grad is not None and p.grad.shape == p.shape for p in params)
    with nn.no_grad():
        for p in params:
            p.data -= 0.1 * p.grad
    assert loss_value().item() < loss.item()
