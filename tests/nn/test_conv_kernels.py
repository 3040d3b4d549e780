"""Tests of nn.functional.conv_kernels (the blocked, threaded kernels) against the plain
definition in nn.functional.conv (im2col + one GEMM, col2im), and of the plain
definition against the loop references of tests/nn/test_conv.py.

The fast kernels run with tiny blocks too, so that every way of cutting the work
(several images per block, several blocks per image) meets the comparison.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import _threads
from nn.functional import conv_kernels
from nn.functional.conv import (
    col2im, conv2d_backward, conv2d_backward_plain, conv2d_forward, conv2d_forward_plain,
    conv2d_geometry, conv_transpose2d_backward, conv_transpose2d_backward_plain,
    conv_transpose2d_forward, conv_transpose2d_forward_plain, conv_transpose2d_geometry, im2col,
)
from tests.nn.test_conv import conv2d_reference, conv_transpose2d_reference
from tests.strategies import conv2d_geometries

TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-4)}

# (x shape, kernel, C_out, stride, padding, dilation, groups)
CONV_CASES = [
    ((2, 7, 9, 4), (3, 3), 5, 1, 1, 1, 1),
    ((2, 8, 8, 3), (3, 3), 6, 2, 1, 1, 1),
    ((2, 9, 7, 2), (3, 2), 3, (2, 1), ((1, 0), (2, 1)), (1, 2), 1),
    ((3, 5, 6, 3), (1, 1), 4, 1, 0, 1, 1),  # a plain GEMM
    ((2, 6, 6, 4), (1, 1), 3, 2, 0, 1, 1),  # 1x1 stride 2
    ((2, 8, 8, 6), (3, 3), 9, 1, 1, 1, 3),  # groups
    ((1, 9, 9, 4), (3, 3), 4, 2, 2, 2, 2),  # groups, stride, dilation
    ((2, 8, 8, 4), (2, 2), 6, 2, 0, 1, 1),  # windows tile the input
    ((1, 7, 7, 2), (3, 3), 2, 1, "same", 2, 1),
    ((0, 5, 5, 3), (3, 3), 4, 1, 1, 1, 1),  # empty batch
]

# (x shape, kernel, C_out, stride, padding, output_padding, dilation, groups)
CONVT_CASES = [
    ((2, 4, 5, 3), (2, 2), 2, 2, 0, 0, 1, 1),
    ((2, 4, 5, 3), (2, 2), 2, 2, 0, 1, 1, 1),
    ((1, 4, 4, 4), (3, 3), 4, 2, 1, 1, 1, 2),
    ((2, 3, 5, 2), (4, 3), 3, (2, 3), (1, 0), (1, 2), 1, 1),
    ((1, 5, 4, 2), (3, 3), 2, 1, 1, 0, 2, 1),
    ((2, 3, 3, 3), (1, 1), 3, 1, 0, 0, 1, 1),
]


@pytest.fixture(params=[(1, 1 << 30), (2, 64)], ids=["1-thread-one-block", "2-threads-tiny-blocks"])
def blocks(request, monkeypatch):
    """Run the fast kernels as one block on one thread, and in tiny blocks on two."""
    threads, block_bytes = request.param
    before = _threads.get_num_threads()
    _threads.set_num_threads(threads)
    monkeypatch.setattr(conv_kernels, "_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(_threads, "BLOCK_BYTES", block_bytes)
    yield
    _threads.set_num_threads(before)


def _arrays(rng, dtype, *shapes):
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("x_shape,kernel,c_out,stride,padding,dilation,groups", CONV_CASES)
def test_fast_conv2d_matches_the_plain_definition(blocks, dtype, seed, x_shape, kernel, c_out,
                                                  stride, padding, dilation, groups):
    rng = np.random.default_rng(seed)
    w_shape = (*kernel, x_shape[-1] // groups, c_out)
    x, weight, bias = _arrays(rng, dtype, x_shape, w_shape, (c_out,))
    geometry = conv2d_geometry(x, weight, bias, stride, padding, dilation, groups)
    y_plain, cols = conv2d_forward_plain(x, weight, bias, geometry)
    y_fast, cache = conv2d_forward(x, weight, bias, stride, padding, dilation, groups)
    assert y_fast.dtype == y_plain.dtype == dtype and y_fast.shape == y_plain.shape
    np.testing.assert_allclose(y_fast, y_plain, **TOLERANCE[dtype])

    dy = rng.standard_normal(y_plain.shape).astype(dtype)
    dx_plain, dw_plain, db_plain = conv2d_backward_plain(dy, cols, weight, x.shape, geometry)
    dx_fast, dw_fast, db_fast = conv2d_backward(dy, cache)
    for fast, plain in ((dx_fast, dx_plain), (dw_fast, dw_plain), (db_fast, db_plain)):
        assert fast.dtype == plain.dtype == dtype and fast.shape == plain.shape
        np.testing.assert_allclose(fast, plain, **TOLERANCE[dtype])
    # The stride-1 layers take dx and dW from one column matrix when the forward knew
    # that dx is needed: the same numbers again.
    y_fused, fused = conv_kernels.conv2d_forward_blocked(x, weight, bias, geometry, True, True)
    dx_fused, dw_fused, _ = conv2d_backward(dy, fused)
    np.testing.assert_allclose(dx_fused, dx_plain, **TOLERANCE[dtype])
    np.testing.assert_allclose(dw_fused, dw_plain, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("x_shape,kernel,c_out,stride,padding,output_padding,dilation,groups",
                         CONVT_CASES)
def test_fast_conv_transpose2d_matches_the_plain_definition(blocks, dtype, seed, x_shape, kernel,
                                                            c_out, stride, padding,
                                                            output_padding, dilation, groups):
    rng = np.random.default_rng(seed)
    w_shape = (*kernel, x_shape[-1], c_out // groups)
    x, weight, bias = _arrays(rng, dtype, x_shape, w_shape, (c_out,))
    geometry = conv_transpose2d_geometry(x, weight, bias, stride, padding, output_padding,
                                         dilation, groups)
    y_plain = conv_transpose2d_forward_plain(x, weight, bias, geometry)
    y_fast, cache = conv_transpose2d_forward(x, weight, bias, stride, padding, output_padding,
                                             groups, dilation)
    assert y_fast.dtype == y_plain.dtype == dtype and y_fast.shape == y_plain.shape
    np.testing.assert_allclose(y_fast, y_plain, **TOLERANCE[dtype])

    dy = rng.standard_normal(y_plain.shape).astype(dtype)
    plain = conv_transpose2d_backward_plain(dy, x, weight, geometry)
    fast = conv_transpose2d_backward(dy, cache)
    for got, want in zip(fast, plain):
        assert got.dtype == want.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **TOLERANCE[dtype])


@settings(max_examples=40, deadline=None)
@given(conv2d_geometries(), st.integers(0, 2 ** 16))
def test_plain_conv2d_matches_the_loop_reference(g, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g["shape"])
    weight = rng.standard_normal((*g["kernel_size"], g["shape"][-1] // g["groups"],
                                  g["out_channels"]))
    bias = rng.standard_normal(g["out_channels"])
    geometry = conv2d_geometry(x, weight, bias, g["stride"], g["padding"], g["dilation"],
                               g["groups"])
    y, cols = conv2d_forward_plain(x, weight, bias, geometry)
    expected = conv2d_reference(x, weight, bias, geometry.stride, geometry.padding,
                                geometry.dilation, g["groups"])
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    # The gradients by the adjoint identities: <y(x), dy> is linear in x and in W.
    dy = rng.standard_normal(y.shape)
    dx, dw, db = conv2d_backward_plain(dy, cols, weight, x.shape, geometry)
    probe_x, probe_w = rng.standard_normal(x.shape), rng.standard_normal(weight.shape)
    y_px = conv2d_reference(probe_x, weight, None, geometry.stride, geometry.padding,
                            geometry.dilation, g["groups"])
    y_pw = conv2d_reference(x, probe_w, None, geometry.stride, geometry.padding,
                            geometry.dilation, g["groups"])
    assert np.sum(y_px * dy) == pytest.approx(np.sum(probe_x * dx), rel=1e-9, abs=1e-9)
    assert np.sum(y_pw * dy) == pytest.approx(np.sum(probe_w * dw), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 1, 2)), rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(conv2d_geometries(transposed=True), st.integers(0, 2 ** 16))
def test_plain_conv_transpose2d_matches_the_loop_reference(g, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g["shape"])
    weight = rng.standard_normal((*g["kernel_size"], g["shape"][-1],
                                  g["out_channels"] // g["groups"]))
    geometry = conv_transpose2d_geometry(x, weight, None, g["stride"], g["padding"],
                                         g["output_padding"], g["dilation"], g["groups"])
    y = conv_transpose2d_forward_plain(x, weight, None, geometry)
    expected = conv_transpose2d_reference(x, weight, None, g["stride"], g["padding"],
                                          g["output_padding"], g["dilation"], g["groups"])
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_col2im_is_the_adjoint_of_im2col():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, 6, 4))
    weight = np.zeros((3, 2, 2, 6))
    geometry = conv2d_geometry(x, weight, None, (2, 1), ((1, 2), (0, 1)), (1, 2), 2)
    cols = im2col(x, geometry)
    assert cols.shape == (2, 2 * 4 * 5, 3 * 2 * 2)  # Ho = (10 - 3) // 2 + 1, Wo = 7 - 3 + 1
    probe = rng.standard_normal(cols.shape)
    back = col2im(probe, geometry, x.shape)
    assert back.shape == x.shape
    assert np.sum(cols * probe) == pytest.approx(np.sum(x * back), rel=1e-12)
    # Summing a column of ones counts how many windows read each pixel.
    counts = col2im(np.ones(cols.shape), geometry, x.shape)
    assert counts[0, 0, 0, 0] == 1 and counts.max() > 1
