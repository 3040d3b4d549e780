"""Tests of nn.functional.pooling and nn.modules.pooling: loop references, tie rule,
gradient checks, bad input, and torch as an oracle (NCHW, transposed)."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import nn
import nn.functional as F
from nn.functional.pooling import pool_output_size
from tests.oracles import require
from tests.strategies import pool2d_geometries


# ------------------------------------------------------------- references
def _out_size(size, k, s, p, d, ceil_mode):
    """PyTorch's output length, written out with floats rather than integer division."""
    span = d * (k - 1) + 1
    rounding = math.ceil if ceil_mode else math.floor
    out = rounding((size + 2 * p - span) / s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def ref_max_pool2d(x, grad_out, kernel_size, stride, padding, dilation, ceil_mode):
    """Loop over windows and elements: output and the gradient routed to each window's
    first maximum in row-major window order (its first element inside the input when
    all are -inf; nowhere when the window lies in the padding), as PyTorch does."""
    n_, h, w, c_ = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    ho = _out_size(h, kh, sh, ph, dh, ceil_mode)
    wo = _out_size(w, kw, sw, pw, dw, ceil_mode)
    y = np.zeros((n_, ho, wo, c_), dtype=x.dtype)
    dx = np.zeros(x.shape, dtype=np.float64)
    for n in range(n_):
        for c in range(c_):
            for a in range(ho):
                for b in range(wo):
                    best, where = -np.inf, None
                    for i in range(kh):
                        for j in range(kw):
                            r, q = a * sh - ph + i * dh, b * sw - pw + j * dw
                            if not (0 <= r < h and 0 <= q < w):
                                continue
                            if where is None or x[n, r, q, c] > best:
                                best, where = x[n, r, q, c], (r, q)
                    y[n, a, b, c] = best
                    if grad_out is not None and where is not None:
                        dx[n, where[0], where[1], c] += grad_out[n, a, b, c]
    return y, dx


def ref_avg_pool2d(x, grad_out, kernel_size, stride, padding, ceil_mode, count_include_pad):
    n_, h, w, c_ = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    ho = _out_size(h, kh, sh, ph, 1, ceil_mode)
    wo = _out_size(w, kw, sw, pw, 1, ceil_mode)
    y = np.zeros((n_, ho, wo, c_), dtype=np.float64)
    dx = np.zeros(x.shape, dtype=np.float64)
    for a in range(ho):
        for b in range(wo):
            r0, q0 = a * sh - ph, b * sw - pw
            # The padded window, cut at the end of the padding (ceil_mode reads beyond it).
            r1, q1 = min(r0 + kh, h + ph), min(q0 + kw, w + pw)
            rows = [r for r in range(r0, r1) if 0 <= r < h]
            cols = [q for q in range(q0, q1) if 0 <= q < w]
            count = (r1 - r0) * (q1 - q0) if count_include_pad else len(rows) * len(cols)
            for r in rows:
                for q in cols:
                    y[:, a, b, :] += x[:, r, q, :] / count
                    if grad_out is not None:
                        dx[:, r, q, :] += grad_out[:, a, b, :] / count
    return y, dx


def ref_adaptive_avg_pool2d(x, grad_out, output_size):
    n_, h, w, c_ = x.shape
    ho, wo = output_size
    y = np.zeros((n_, ho, wo, c_))
    dx = np.zeros(x.shape)
    for a in range(ho):
        r0, r1 = math.floor(a * h / ho), math.ceil((a + 1) * h / ho)
        for b in range(wo):
            q0, q1 = math.floor(b * w / wo), math.ceil((b + 1) * w / wo)
            count = (r1 - r0) * (q1 - q0)
            y[:, a, b, :] = x[:, r0:r1, q0:q1, :].sum(axis=(1, 2)) / count
            if grad_out is not None:
                dx[:, r0:r1, q0:q1, :] += grad_out[:, a:a + 1, b:b + 1, :] / count
    return y, dx


def _has_window_in_padding(geometry):
    """True when some window reads no input element (possible with dilation)."""
    for axis in range(2):
        size = geometry["shape"][1 + axis]
        keys = ("kernel_size", "stride", "padding", "dilation")
        k, s, p, d = (geometry[key][axis] for key in keys)
        out = _out_size(size, k, s, p, d, geometry["ceil_mode"])
        for o in range(out):
            if not any(0 <= o * s - p + i * d < size for i in range(k)):
                return True
    return False


# The draws of each pooling's two tests, against the loop reference and against torch.
SEEDS = st.integers(0, 2**31 - 1)
DTYPES = st.sampled_from([np.float32, np.float64])
max_pool_cases = given(geometry=pool2d_geometries(), seed=SEEDS, ties=st.booleans(),
                       dtype=DTYPES)
avg_pool_cases = given(geometry=pool2d_geometries(max_dilation=1), seed=SEEDS,
                       count_include_pad=st.booleans(), dtype=DTYPES)


def _pool_args(geometry):
    return {k: v for k, v in geometry.items() if k != "shape"}


def _values(rng, shape, ties, dtype):
    """Random values; with ``ties`` few distinct integers so windows hold equal maxima."""
    if ties:
        return rng.integers(0, 3, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _forward_backward(fn, x, grad_out, **kwargs):
    t = nn.Tensor(x.copy(), requires_grad=True)
    y = fn(t, **kwargs)
    y.backward(grad_out)
    return y.data, t.grad


def _random_pool(fn, geometry, seed, dtype, ties=False, **kwargs):
    """A seeded input (``_values``) and output gradient for a ``pool2d_geometries`` draw,
    and ``fn``'s output and input gradient on them.

    Returns:
        tuple: ``args`` (the geometry and ``kwargs`` as ``fn``'s keywords; avg pooling has
        no dilation), ``x``, ``grad_out``, ``y``, ``dx``.
    """
    rng = np.random.default_rng(seed)
    args = dict(_pool_args(geometry), **kwargs)
    if fn is not F.max_pool2d:
        del args["dilation"]
    x = _values(rng, geometry["shape"], ties, dtype)
    grad_out = rng.standard_normal(fn(x, **args).shape).astype(dtype)
    y, dx = _forward_backward(fn, x, grad_out, **args)
    return args, x, grad_out, y, dx


# -------------------------------------------------- against loop references
@settings(max_examples=40)
@max_pool_cases
def test_max_pool2d_matches_loop_reference(geometry, seed, ties, dtype):
    args, x, grad_out, y, dx = _random_pool(F.max_pool2d, geometry, seed, dtype, ties)
    y_ref, dx_ref = ref_max_pool2d(x, grad_out, **args)
    assert y.dtype == dtype and dx.dtype == dtype
    assert np.array_equal(y, y_ref)
    assert np.allclose(dx, dx_ref, rtol=1e-5, atol=1e-6)


@settings(max_examples=40)
@avg_pool_cases
def test_avg_pool2d_matches_loop_reference(geometry, seed, count_include_pad, dtype):
    args, x, grad_out, y, dx = _random_pool(F.avg_pool2d, geometry, seed, dtype,
                                            count_include_pad=count_include_pad)
    y_ref, dx_ref = ref_avg_pool2d(x, grad_out, **args)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert y.dtype == dtype and dx.dtype == dtype
    assert np.allclose(y, y_ref, rtol=tol, atol=tol)
    assert np.allclose(dx, dx_ref, rtol=tol, atol=tol)


@given(h=st.integers(1, 9), w=st.integers(1, 9), ho=st.integers(1, 6), wo=st.integers(1, 6),
       seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_adaptive_avg_pool2d_matches_loop_reference(h, w, ho, wo, seed, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, h, w, 3)).astype(dtype)
    grad_out = rng.standard_normal((2, ho, wo, 3)).astype(dtype)
    y, dx = _forward_backward(F.adaptive_avg_pool2d, x, grad_out, output_size=(ho, wo))
    y_ref, dx_ref = ref_adaptive_avg_pool2d(x, grad_out, (ho, wo))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert y.dtype == dtype and dx.dtype == dtype
    assert np.allclose(y, y_ref, rtol=tol, atol=tol)
    assert np.allclose(dx, dx_ref, rtol=tol, atol=tol)


def test_hand_computed_values():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    assert np.array_equal(F.max_pool2d(x, 2).data[0, :, :, 0], [[5, 7], [13, 15]])
    assert np.array_equal(F.avg_pool2d(x, 2).data[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    # Padding 1 with a 3x3 window: corners average 4 real values over 9 (or over 4).
    corner = (0 + 1 + 4 + 5) / 9
    assert F.avg_pool2d(x, 3, 2, 1).data[0, 0, 0, 0] == pytest.approx(corner)
    assert F.avg_pool2d(x, 3, 2, 1, count_include_pad=False).data[0, 0, 0, 0] == pytest.approx(2.5)
    assert F.adaptive_avg_pool2d(x, 1).data.reshape(()) == pytest.approx(7.5)
    assert np.array_equal(F.adaptive_avg_pool2d(x, (None, 2)).data[0, :, :, 0],
                          [[0.5, 2.5], [4.5, 6.5], [8.5, 10.5], [12.5, 14.5]])


def test_max_pool2d_ties_go_to_first_element_in_window_order():
    # All values equal: every window's gradient goes to its top-left element.
    x = np.ones((1, 4, 4, 2))
    y, dx = _forward_backward(F.max_pool2d, x, np.ones((1, 2, 2, 2)), kernel_size=2)
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1
    assert np.array_equal(dx[0, :, :, 0], expected)
    # Overlapping windows (stride 1) share top-left elements and add up.
    y, dx = _forward_backward(F.max_pool2d, x, np.ones((1, 3, 3, 2)), kernel_size=2, stride=1)
    expected = np.zeros((4, 4))
    expected[:3, :3] = 1
    assert np.array_equal(dx[0, :, :, 1], expected)


def test_max_pool2d_integer_input_and_empty_batch():
    x = np.array([[1, -5], [7, 3]], dtype=np.int64).reshape(1, 2, 2, 1)
    y = F.max_pool2d(x, 2, padding=1)
    assert y.dtype == np.int64
    assert np.array_equal(y.data[0, :, :, 0], [[1, -5], [7, 3]])
    for fn, kwargs in [(F.max_pool2d, {"kernel_size": 2}), (F.avg_pool2d, {"kernel_size": 2}),
                       (F.adaptive_avg_pool2d, {"output_size": 3})]:
        for shape, expected in [((0, 6, 6, 3), None), ((2, 6, 6, 0), None)]:
            out = fn(np.zeros(shape, dtype=np.float32), **kwargs)
            assert out.dtype == np.float32
            assert out.shape[0] == shape[0] and out.shape[3] == shape[3]
            assert out.shape[1:3] == (3, 3)


def test_nan_propagates_through_max_pool2d():
    x = np.zeros((1, 2, 2, 1), dtype=np.float32)
    x[0, 1, 0, 0] = np.nan
    assert np.isnan(F.max_pool2d(x, 2).data).all()


# ------------------------------------------------------------ gradient checks
def _distinct(rng, shape):
    """Values at least 0.01 apart, so a 1e-6 step never changes a window's maximum."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01).astype(np.float64)


@pytest.mark.parametrize("kwargs", [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0), "dilation": (2, 1)},
    {"kernel_size": 3, "stride": 2, "ceil_mode": True},
])
def test_max_pool2d_gradcheck(kwargs, rng):
    x = nn.Tensor(_distinct(rng, (2, 6, 5, 2)), requires_grad=True)
    assert nn.gradcheck(lambda t: F.max_pool2d(t, **kwargs), [x])


@pytest.mark.parametrize("kwargs", [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False, "ceil_mode": True},
    {"kernel_size": (2, 3), "stride": 1, "divisor_override": 5},
])
def test_avg_pool2d_gradcheck(kwargs, rng):
    x = nn.Tensor(rng.standard_normal((2, 6, 5, 2)), requires_grad=True)
    assert nn.gradcheck(lambda t: F.avg_pool2d(t, **kwargs), [x])


@pytest.mark.parametrize("output_size", [1, (3, 2), (4, 7)])
def test_adaptive_avg_pool2d_gradcheck(output_size, rng):
    x = nn.Tensor(rng.standard_normal((2, 6, 5, 2)), requires_grad=True)
    assert nn.gradcheck(lambda t: F.adaptive_avg_pool2d(t, output_size), [x])


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize("fn, x, kwargs, error, match", [
    (F.max_pool2d, np.zeros((4, 4, 3)), {"kernel_size": 2}, ValueError, "4-D"),
    (F.avg_pool2d, np.zeros((1, 1, 4, 4, 3)), {"kernel_size": 2}, ValueError, "4-D"),
    (F.adaptive_avg_pool2d, np.zeros((4, 4)), {"output_size": 2}, ValueError, "4-D"),
    (F.max_pool2d, np.zeros((1, 4, 4, 1)), {"kernel_size": 3, "padding": 2}, ValueError, "padding"),
    (F.avg_pool2d, np.zeros((1, 4, 4, 1)), {"kernel_size": 2, "padding": (0, 2)}, ValueError,
     "padding"),
    (F.max_pool2d, np.zeros((1, 4, 4, 1)), {"kernel_size": 2, "stride": 0}, ValueError, "stride"),
    (F.max_pool2d, np.zeros((1, 4, 4, 1)), {"kernel_size": 0}, ValueError, "kernel_size"),
    (F.max_pool2d, np.zeros((1, 4, 4, 1)), {"kernel_size": 2, "dilation": 0}, ValueError,
     "dilation"),
    (F.max_pool2d, np.zeros((1, 4, 4, 1)), {"kernel_size": 5}, ValueError, "too small"),
    (F.avg_pool2d, np.zeros((1, 4, 4, 1)), {"kernel_size": (1, 6)}, ValueError, "too small"),
    (F.max_pool2d, np.zeros((1, 4, 4, 1)), {"kernel_size": 2.0}, TypeError, "kernel_size"),
    (F.max_pool2d, np.zeros((1, 4, 4, 1)), {"kernel_size": (2, 2, 2)}, TypeError, "kernel_size"),
    (F.max_pool2d, np.zeros((1, 4, 4, 1), dtype=bool), {"kernel_size": 2}, TypeError, "dtype"),
    (F.avg_pool2d, np.zeros((1, 4, 4, 1), dtype=np.int32), {"kernel_size": 2}, TypeError, "dtype"),
    (F.avg_pool2d, np.zeros((1, 4, 4, 1)), {"kernel_size": 2, "divisor_override": 0}, ValueError,
     "divisor_override"),
    (F.adaptive_avg_pool2d, np.zeros((1, 4, 4, 1)), {"output_size": 0}, ValueError, "output_size"),
    (F.adaptive_avg_pool2d, np.zeros((1, 0, 4, 1)), {"output_size": 2}, ValueError, "spatial"),
])
def test_bad_input_raises_clear_error(fn, x, kwargs, error, match):
    with pytest.raises(error, match=match):
        fn(x, **kwargs)


def test_pool_output_size_formula():
    assert pool_output_size(5, 2, 2, 0) == 2
    assert pool_output_size(5, 2, 2, 0, ceil_mode=True) == 3
    # ceil_mode drops a last window that would start in the right padding.
    assert pool_output_size(4, 3, 3, 1, ceil_mode=True) == 2
    assert pool_output_size(7, 3, 1, 0, dilation=2) == 3


# ----------------------------------------------------------------- modules
def test_modules_call_functional_with_their_hyperparameters(rng):
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
    assert np.array_equal(pool(x).data, F.max_pool2d(x, 3, 2, 1, ceil_mode=True).data)
    avg = nn.AvgPool2d(2, count_include_pad=False)
    assert np.array_equal(avg(x).data, F.avg_pool2d(x, 2, count_include_pad=False).data)
    gap = nn.AdaptiveAvgPool2d(1)
    assert gap(x).shape == (2, 1, 1, 3)
    assert np.allclose(gap(x).data[:, 0, 0], x.mean(axis=(1, 2)), atol=1e-6)
    assert list(pool.parameters()) == [] and pool.state_dict() == {}
    assert "kernel_size=3" in repr(pool) and "output_size=1" in repr(gap)


# ------------------------------------------------------------------ oracle
def _to_torch(torch, x):
    return torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), requires_grad=True)


def _from_torch(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _torch_forward_backward(torch, fn, x, grad_out, *args, **kwargs):
    """Output and input gradient (NHWC ndarrays) of the torch function ``fn`` on ``x``."""
    tx = _to_torch(torch, x)
    ty = fn(tx, *args, **kwargs)
    ty.backward(torch.from_numpy(np.ascontiguousarray(grad_out.transpose(0, 3, 1, 2))))
    return _from_torch(ty), _from_torch(tx.grad)


@pytest.mark.oracle
@settings(max_examples=30)
@max_pool_cases
def test_max_pool2d_matches_torch(geometry, seed, ties, dtype):
    torch = require("torch")
    # PyTorch routes the gradient of a window lying wholly in the padding to an index
    # outside the input (memory of a neighbouring row); ours gives it no gradient
    # (test_max_pool2d_minus_infinity_and_all_padding_windows).
    assume(not _has_window_in_padding(geometry))
    args, x, grad_out, y, dx = _random_pool(F.max_pool2d, geometry, seed, dtype, ties)
    y_torch, dx_torch = _torch_forward_backward(torch, torch.nn.functional.max_pool2d, x,
                                                grad_out, **args)
    assert np.array_equal(y, y_torch)
    assert np.allclose(dx, dx_torch, rtol=1e-5, atol=1e-6)


@pytest.mark.oracle
@settings(max_examples=30)
@avg_pool_cases
def test_avg_pool2d_matches_torch(geometry, seed, count_include_pad, dtype):
    torch = require("torch")
    args, x, grad_out, y, dx = _random_pool(F.avg_pool2d, geometry, seed, dtype,
                                            count_include_pad=count_include_pad)
    y_torch, dx_torch = _torch_forward_backward(torch, torch.nn.functional.avg_pool2d, x,
                                                grad_out, **args)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.allclose(y, y_torch, rtol=tol, atol=tol)
    assert np.allclose(dx, dx_torch, rtol=tol, atol=tol)


@pytest.mark.oracle
@given(h=st.integers(1, 12), w=st.integers(1, 12), ho=st.integers(1, 7), wo=st.integers(1, 7),
       seed=st.integers(0, 2**31 - 1))
def test_adaptive_avg_pool2d_matches_torch(h, w, ho, wo, seed):
    torch = require("torch")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
    grad_out = rng.standard_normal((2, ho, wo, 3)).astype(np.float32)
    y, dx = _forward_backward(F.adaptive_avg_pool2d, x, grad_out, output_size=(ho, wo))
    y_torch, dx_torch = _torch_forward_backward(torch, torch.nn.functional.adaptive_avg_pool2d,
                                                x, grad_out, (ho, wo))
    assert np.allclose(y, y_torch, rtol=1e-5, atol=1e-5)
    assert np.allclose(dx, dx_torch, rtol=1e-5, atol=1e-5)


@pytest.mark.oracle
@pytest.mark.parametrize("kwargs", [
    {"kernel_size": 3, "padding": 2},
    {"kernel_size": 5},
    {"kernel_size": 2, "stride": 0},
])
def test_torch_rejects_what_we_reject(kwargs):
    torch = require("torch")
    x = np.zeros((1, 4, 4, 1), dtype=np.float32)
    with pytest.raises(RuntimeError):
        torch.nn.functional.max_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), **kwargs)
    with pytest.raises(ValueError):
        F.max_pool2d(x, **kwargs)


def test_max_pool2d_minus_infinity_and_all_padding_windows():
    # All -inf: each window's gradient goes to its first element inside the input
    # (PyTorch's answer: [[4, 2, 0], [2, 1, 0], [0, 0, 0]]), never to the padding.
    x = np.full((1, 3, 3, 1), -np.inf)
    y, dx = _forward_backward(F.max_pool2d, x, np.ones((1, 3, 3, 1)), kernel_size=3, stride=1,
                              padding=1)
    assert np.all(y == -np.inf)
    assert np.array_equal(dx[0, :, :, 0], [[4, 2, 0], [2, 1, 0], [0, 0, 0]])
    # A window that reads only padding gives -inf and no gradient.
    x = np.ones((1, 1, 1, 1))
    y, dx = _forward_backward(F.max_pool2d, x, np.ones((1, 1, 1, 1)), kernel_size=(1, 2),
                              stride=1, padding=(0, 1), dilation=(1, 2))
    assert y[0, 0, 0, 0] == -np.inf and dx[0, 0, 0, 0] == 0
