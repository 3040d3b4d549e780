"""Tests of nn.functional.upsampling and nn.modules.upsampling: a per-pixel loop reference,
hand-computed cases, PyTorch's index subtleties, gradient checks, bad input, and torch
as an oracle (NCHW, transposed)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nn
import nn.functional as F
from tests.oracles import require


# ------------------------------------------------------------- reference
def _source_nearest(o, size_in, size_out, scale, exact):
    """One output index's input index, with PyTorch's float32 arithmetic, one scalar at a time."""
    if not exact and size_out == size_in:
        return o
    if not exact and size_out == 2 * size_in:
        return o // 2
    s = np.float32(1.0 / scale) if scale else np.float32(size_in) / np.float32(size_out)
    position = np.float32((o + 0.5) * float(s)) if exact else np.float32(o) * s
    return min(int(math.floor(position)), size_in - 1)


def _source_linear(o, size_in, size_out, scale, align_corners, dtype):
    """``[(index, weight), (index, weight)]`` of one output index in linear interpolation."""
    f = np.dtype(dtype).type
    if size_out == size_in:
        return [(o, 1.0), (o, 0.0)]
    if align_corners:
        ratio = f(size_in - 1) / f(size_out - 1) if size_out > 1 else f(0)
        position = ratio * f(o)
    else:
        ratio = f(1.0 / scale) if scale else f(size_in) / f(size_out)
        position = max(ratio * (f(o) + f(0.5)) - f(0.5), f(0))
    i0 = min(int(math.floor(position)), size_in - 1)
    lam = min(max(position - f(i0), f(0)), f(1))
    i1 = i0 + 1 if i0 < size_in - 1 else i0
    return [(i0, f(1) - lam), (i1, lam)]


def ref_interpolate(x, grad_out, out_size, mode, scales, align_corners):
    """Loop over output pixels: the output and the input gradient for ``grad_out``."""
    n, h, w, c = x.shape
    ho, wo = out_size
    y = np.zeros((n, ho, wo, c), dtype=np.float64)
    dx = np.zeros(x.shape, dtype=np.float64)
    for a in range(ho):
        for b in range(wo):
            if mode == "bilinear":
                rows = _source_linear(a, h, ho, scales[0], align_corners, x.dtype)
                cols = _source_linear(b, w, wo, scales[1], align_corners, x.dtype)
            else:
                exact = mode == "nearest-exact"
                rows = [(_source_nearest(a, h, ho, scales[0], exact), 1.0)]
                cols = [(_source_nearest(b, w, wo, scales[1], exact), 1.0)]
            for i, wi in rows:
                for j, wj in cols:
                    y[:, a, b, :] += float(wi) * float(wj) * x[:, i, j, :]
                    dx[:, i, j, :] += float(wi) * float(wj) * grad_out[:, a, b, :]
    return y, dx


@st.composite
def resize_cases(draw):
    """An input shape and the arguments of one interpolate call that PyTorch accepts."""
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    mode = draw(st.sampled_from(["nearest", "nearest-exact", "bilinear"]))
    kwargs = {"mode": mode}
    if mode == "bilinear":
        kwargs["align_corners"] = draw(st.booleans())
    if draw(st.booleans()):
        kwargs["size"] = (draw(st.integers(1, 20)), draw(st.integers(1, 20)))
    else:
        factor = st.sampled_from([0.5, 0.7, 1.0, 1.05, 1.5, 1.7, 2.0, 2.05, 2.5, 3.0, 1 / 3])
        factors = (draw(factor), draw(factor))
        if math.floor(h * factors[0]) < 1 or math.floor(w * factors[1]) < 1:
            factors = (max(factors[0], 1.0), max(factors[1], 1.0))
        kwargs["scale_factor"] = factors
        kwargs["recompute_scale_factor"] = draw(st.sampled_from([None, True]))
    return (draw(st.integers(1, 2)), h, w, draw(st.integers(1, 3))), kwargs


# The draws of interpolate's two tests, against the loop reference and against torch.
resize_draws = given(case=resize_cases(), seed=st.integers(0, 2**31 - 1),
                     dtype=st.sampled_from([np.float32, np.float64]))


def _expected_geometry(shape, kwargs):
    """Output size and the scales the kernel sees, per PyTorch's Python wrapper."""
    if "size" in kwargs:
        return kwargs["size"], (None, None)
    factors = kwargs["scale_factor"]
    out = tuple(math.floor(float(s) * f) for s, f in zip(shape[1:3], factors))
    return out, (None, None) if kwargs.get("recompute_scale_factor") else factors


def _forward_backward(x, grad_out, **kwargs):
    t = nn.Tensor(x.copy(), requires_grad=True)
    y = F.interpolate(t, **kwargs)
    y.backward(grad_out)
    return y.data, t.grad


def _random_resize(case, seed, dtype):
    """A seeded input and output gradient for a ``resize_cases`` draw (the output size of
    ``_expected_geometry``), and interpolate's output and input gradient on them.

    Returns:
        tuple: ``x``, ``grad_out``, ``y``, ``dx`` (ndarrays of ``dtype``).
    """
    shape, kwargs = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    out_size, _ = _expected_geometry(shape, kwargs)
    grad_out = rng.standard_normal((shape[0],) + tuple(out_size) + (shape[3],)).astype(dtype)
    y, dx = _forward_backward(x, grad_out, **kwargs)
    return x, grad_out, y, dx


def _assert_resized_like(y, dx, expected_y, expected_dx, mode, dtype):
    """Output and input gradient equal the expected ones: nearest copies exactly,
    bilinear within the dtype's rounding."""
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert y.shape == expected_y.shape
    if mode == "bilinear":
        assert np.allclose(y, expected_y, rtol=tol, atol=tol)
    else:
        assert np.array_equal(y, expected_y.astype(dtype))  # the same indices, exact copies
    assert np.allclose(dx, expected_dx, rtol=tol, atol=tol)


# ------------------------------------------------------ against the reference
@settings(max_examples=60)
@resize_draws
def test_interpolate_matches_loop_reference(case, seed, dtype):
    shape, kwargs = case
    x, grad_out, y, dx = _random_resize(case, seed, dtype)
    out_size, scales = _expected_geometry(shape, kwargs)
    y_ref, dx_ref = ref_interpolate(x, grad_out, out_size, kwargs["mode"], scales,
                                    kwargs.get("align_corners"))
    assert y.dtype == dtype and dx.dtype == dtype
    _assert_resized_like(y, dx, y_ref, dx_ref, kwargs["mode"], dtype)


def test_hand_computed_values():
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    assert np.array_equal(F.interpolate(x, scale_factor=2).data[0, :, :, 0],
                          [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    row = np.array([0.0, 1.0]).reshape(1, 1, 2, 1)
    # Pixel centres: outputs at input positions -0.25 (clamped to 0), 0.25, 0.75, 1.25.
    assert np.allclose(F.interpolate(row, size=(1, 4), mode="bilinear").data.ravel(),
                       [0, 0.25, 0.75, 1])
    # Corners aligned: outputs at 0, 1/3, 2/3, 1.
    assert np.allclose(
        F.interpolate(row, size=(1, 4), mode="bilinear", align_corners=True).data.ravel(),
        [0, 1 / 3, 2 / 3, 1])
    five = np.arange(5.0).reshape(1, 1, 5, 1)
    # 5 -> 3: legacy nearest reads floor(o · 5/3) = 0, 1, 3; nearest-exact floor((o + 0.5) · 5/3).
    assert np.array_equal(F.interpolate(five, size=(1, 3)).data.ravel(), [0, 1, 3])
    assert np.array_equal(F.interpolate(five, size=(1, 3), mode="nearest-exact").data.ravel(),
                          [0, 2, 4])


def test_scale_factor_versus_size_subtleties():
    x = np.arange(10.0).reshape(1, 1, 10, 1)
    # 10 * 1.05 -> 10 outputs: PyTorch copies (same size) instead of using 1 / 1.05.
    assert np.array_equal(F.interpolate(x, scale_factor=(1, 1.05)).data.ravel(), np.arange(10))
    # 10 * 2.05 -> 20 outputs: exactly twice the input, so output o reads o // 2.
    assert np.array_equal(F.interpolate(x, scale_factor=(1, 2.05)).data.ravel(),
                          np.arange(20) // 2)
    # Bilinear: sampling at 1 / 1.5 differs from sampling at in / out = 5 / 7 ...
    y = np.linspace(0, 1, 5).reshape(1, 1, 5, 1)
    by_factor = F.interpolate(y, scale_factor=(1, 1.5), mode="bilinear").data
    by_size = F.interpolate(y, size=(1, 7), mode="bilinear").data
    assert by_factor.shape == by_size.shape == (1, 1, 7, 1)
    assert not np.allclose(by_factor, by_size)
    # ... and recompute_scale_factor=True turns the first into the second.
    recomputed = F.interpolate(y, scale_factor=(1, 1.5), mode="bilinear",
                               recompute_scale_factor=True).data
    assert np.array_equal(recomputed, by_size)


def test_nearest_keeps_integer_label_maps_exact():
    labels = np.random.default_rng(0).integers(0, 21, size=(2, 5, 7, 1)).astype(np.uint8)
    for kwargs in [{"scale_factor": 2}, {"size": (13, 9)}, {"scale_factor": 0.5}]:
        y = F.interpolate(labels, **kwargs).data
        assert y.dtype == np.uint8
        assert set(np.unique(y)) <= set(np.unique(labels))
    assert np.array_equal(F.interpolate(labels, scale_factor=3).data[:, ::3, ::3], labels)


def test_empty_batch_and_channels():
    for shape in [(0, 4, 4, 3), (2, 4, 4, 0)]:
        for mode in ["nearest", "bilinear"]:
            y = F.interpolate(np.zeros(shape, np.float32), scale_factor=2, mode=mode)
            assert y.shape == (shape[0], 8, 8, shape[3]) and y.dtype == np.float32


@given(size_in=st.integers(1, 12), size_out=st.integers(1, 30),
       mode=st.sampled_from(["nearest", "nearest-exact", "bilinear"]), align_corners=st.booleans())
def test_transposed_taps_are_the_transposed_matrix(size_in, size_out, mode, align_corners):
    from nn.functional.upsampling import interpolation_taps, taps_matrix, transpose_taps

    index, weight = interpolation_taps(size_in, size_out, mode, None,
                                       align_corners and mode == "bilinear", np.float64)
    matrix = taps_matrix(index, weight, size_in)  # (out, in)
    assert np.allclose(matrix.sum(axis=1), 1)  # every output is a convex combination
    t_index, t_weight = transpose_taps(index, weight, size_in)
    assert t_index.shape[1] == size_in
    assert np.allclose(taps_matrix(t_index, t_weight, size_out), matrix.T)


# ------------------------------------------------------------ gradient checks
@pytest.mark.parametrize("kwargs", [
    {"scale_factor": 2},
    {"scale_factor": (3, 2)},
    {"size": (5, 3)},
    {"size": (7, 2), "mode": "nearest-exact"},
    {"scale_factor": 2, "mode": "bilinear"},
    {"size": (5, 7), "mode": "bilinear", "align_corners": True},
    {"size": (2, 3), "mode": "bilinear"},
    {"scale_factor": 1.7, "mode": "bilinear"},
])
def test_interpolate_gradcheck(kwargs, rng):
    x = nn.Tensor(rng.standard_normal((2, 4, 3, 2)), requires_grad=True)
    assert nn.gradcheck(lambda t: F.interpolate(t, **kwargs), [x])


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize("x, kwargs, error, match", [
    (np.zeros((4, 4, 3)), {"scale_factor": 2}, ValueError, "4-D"),
    (np.zeros((1, 4, 4, 3)), {}, ValueError, "neither"),
    (np.zeros((1, 4, 4, 3)), {"size": 8, "scale_factor": 2}, ValueError, "both"),
    (np.zeros((1, 4, 4, 3)), {"size": 8, "mode": "bicubic"}, ValueError, "mode"),
    (np.zeros((1, 4, 4, 3)), {"size": 8, "align_corners": True}, ValueError, "align_corners"),
    (np.zeros((1, 4, 4, 3)), {"size": 0}, ValueError, "at least 1"),
    (np.zeros((1, 4, 4, 3)), {"scale_factor": 0.1}, ValueError, "at least 1"),
    (np.zeros((1, 4, 4, 3)), {"scale_factor": -2.0}, ValueError, "scale_factor"),
    (np.zeros((1, 4, 4, 3)), {"size": (2, 3, 4)}, ValueError, "size"),
    (np.zeros((1, 4, 4, 3)), {"size": 2.5}, TypeError, "size"),
    (np.zeros((1, 4, 4, 3)), {"size": 8, "recompute_scale_factor": True}, ValueError,
     "recompute_scale_factor"),
    (np.zeros((1, 4, 4, 3), np.int64), {"size": 8, "mode": "bilinear"}, TypeError, "floating"),
])
def test_bad_input_raises_clear_error(x, kwargs, error, match):
    with pytest.raises(error, match=match):
        F.interpolate(x, **kwargs)


# ----------------------------------------------------------------- module
def test_upsample_module(rng):
    x = rng.standard_normal((1, 3, 4, 2)).astype(np.float32)
    up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    assert np.array_equal(up(x).data, F.interpolate(x, scale_factor=2, mode="bilinear").data)
    assert "scale_factor=2" in repr(up) and list(up.parameters()) == []
    assert nn.Upsample(size=(5, 5))(x).shape == (1, 5, 5, 2)
    with pytest.raises(ValueError, match="exactly one"):
        nn.Upsample()
    with pytest.raises(ValueError, match="mode"):
        nn.Upsample(scale_factor=2, mode="trilinear")


# ------------------------------------------------------------------ oracle
@pytest.mark.oracle
@settings(max_examples=60)
@resize_draws
def test_interpolate_matches_torch(case, seed, dtype):
    torch = require("torch")
    _, kwargs = case
    x, grad_out, y, dx = _random_resize(case, seed, dtype)
    tx = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), requires_grad=True)
    ty = torch.nn.functional.interpolate(tx, **kwargs)
    ty.backward(torch.from_numpy(np.ascontiguousarray(grad_out.transpose(0, 3, 1, 2))))
    expected_y = ty.detach().numpy().transpose(0, 2, 3, 1)
    expected_dx = tx.grad.numpy().transpose(0, 2, 3, 1)
    _assert_resized_like(y, dx, expected_y, expected_dx, kwargs["mode"], dtype)


@pytest.mark.oracle
def test_nearest_indices_match_torch_over_many_sizes():
    torch = require("torch")
    from nn.functional.upsampling import nearest_source_indices

    for size_in in range(1, 40):
        x = torch.arange(size_in, dtype=torch.float32).reshape(1, 1, 1, size_in)
        for size_out in range(1, 90):
            for mode in ["nearest", "nearest-exact"]:
                expected = torch.nn.functional.interpolate(x, size=(1, size_out), mode=mode)
                ours = nearest_source_indices(size_in, size_out, exact=mode == "nearest-exact")
                assert np.array_equal(ours, expected.numpy().ravel().astype(np.int64))
