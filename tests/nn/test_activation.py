"""Tests of nn.functional.activation and nn.functional.dense (linear): values, gradients,
stability, dtypes, bad input, and torch as an oracle."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
import nn.functional as F
from tests.oracles import require
from tests.strategies import float_arrays

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


def _away_from_zero(x, margin=1e-3):
    # Keep inputs off the kink of relu / leaky_relu for central differences.
    return np.where(np.abs(x) < margin, margin * 10, x)


# ------------------------------------------------------------- references
def test_values_against_hand_formulas():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    assert np.allclose(F.relu(x).data, [0, 0, 0, 0.5, 3.0])
    assert np.allclose(F.leaky_relu(x, 0.1).data, [-0.2, -0.05, 0, 0.5, 3.0])
    assert np.allclose(F.sigmoid(x).data, 1 / (1 + np.exp(-x)))
    assert np.allclose(F.tanh(x).data, np.tanh(x))
    e = np.exp(x)
    assert np.allclose(F.softmax(x).data, e / e.sum())
    assert np.allclose(F.log_softmax(x).data, np.log(e / e.sum()))


@pytest.mark.parametrize("fn", [F.sigmoid, F.softmax, F.log_softmax, F.tanh])
def test_stable_for_large_logits(fn):
    x = np.array([[-1000.0, 0.0, 1000.0], [1000.0, 1000.0, -1000.0]], dtype=np.float32)
    t = nn.Tensor(x, requires_grad=True)
    y = fn(t)
    assert np.all(np.isfinite(y.data))
    (y * nn.Tensor(np.ones_like(x))).sum().backward()
    assert np.all(np.isfinite(t.grad))


def test_softmax_large_logits_exact():
    x = np.array([[-1000.0, 0.0, 1000.0], [1000.0, 1000.0, -1000.0]])
    assert np.allclose(F.softmax(x).data, [[0, 0, 1], [0.5, 0.5, 0]])
    assert np.allclose(F.log_softmax(x).data, [[-2000, -1000, 0], [-np.log(2), -np.log(2), -2000 - np.log(2)]])
    assert np.allclose(F.sigmoid(np.array([-1000.0, 1000.0])).data, [0, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", [F.relu, F.leaky_relu, F.sigmoid, F.tanh, F.softmax, F.log_softmax])
def test_dtype_preserved(fn, dtype):
    x = np.linspace(-3, 3, 12).reshape(3, 4).astype(dtype)
    t = nn.Tensor(x, requires_grad=True)
    y = fn(t)
    assert y.dtype == dtype
    y.sum().backward()
    assert t.grad.dtype == dtype


# ------------------------------------------------------------- gradients
@given(shape=shapes, data=st.data())
def test_gradcheck_elementwise(shape, data):
    x = _away_from_zero(data.draw(float_arrays(shape)))
    for fn in (F.relu, lambda t: F.leaky_relu(t, 0.2), F.sigmoid, F.tanh):
        assert nn.gradcheck(fn, [nn.Tensor(x.copy(), requires_grad=True)])


@given(shape=shapes, data=st.data())
def test_gradcheck_softmax_axes(shape, data):
    x = data.draw(float_arrays(shape, low=-4, high=4))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    assert nn.gradcheck(lambda t: F.softmax(t, axis=axis), [nn.Tensor(x.copy(), requires_grad=True)])
    assert nn.gradcheck(lambda t: F.log_softmax(t, axis=axis), [nn.Tensor(x.copy(), requires_grad=True)])


@given(lead=st.lists(st.integers(0, 3), min_size=0, max_size=2).map(tuple),
       fin=st.integers(1, 4), fout=st.integers(1, 4), bias=st.booleans(), data=st.data())
def test_gradcheck_linear(lead, fin, fout, bias, data):
    x = data.draw(float_arrays(lead + (fin,)))
    w = data.draw(float_arrays((fin, fout)))
    b = data.draw(float_arrays((fout,))) if bias else None
    xt, wt = nn.Tensor(x, requires_grad=True), nn.Tensor(w, requires_grad=True)
    if int(np.prod(lead)) == 0:
        y = F.linear(xt, wt)
        assert y.shape == lead + (fout,)
        y.sum().backward()
        assert np.all(wt.grad == 0)
        return
    inputs = [xt, wt] + ([nn.Tensor(b, requires_grad=True)] if bias else [])
    assert nn.gradcheck(lambda *a: F.linear(*a), inputs)


def test_gradcheck_dropout_fixed_mask():
    x = np.random.default_rng(0).normal(size=(3, 5))

    def fn(t):
        return F.dropout(t, 0.4, generator=np.random.default_rng(1))

    assert nn.gradcheck(fn, [nn.Tensor(x, requires_grad=True)])


# --------------------------------------------------------------- dropout
def test_dropout_statistics_and_modes():
    x = np.ones((200, 100), dtype=np.float32)
    y = F.dropout(x, 0.3).data
    assert y.dtype == np.float32
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    assert np.allclose(y[kept], 1 / 0.7)
    assert np.array_equal(F.dropout(x, 0.3, training=False).data, x)
    assert np.all(F.dropout(x, 1.0).data == 0)
    assert np.array_equal(F.dropout(x, 0.0).data, x)


def test_dropout_seeded():
    x = np.ones((10, 10))
    nn.manual_seed(3)
    a = F.dropout(x, 0.5).data
    nn.manual_seed(3)
    b = F.dropout(x, 0.5).data
    c = F.dropout(x, 0.5).data
    assert np.array_equal(a, b)
    assert not np.array_equal(b, c)


# ------------------------------------------------------------- bad input
def test_bad_inputs():
    with pytest.raises(TypeError, match="x must be a Tensor or ndarray"):
        F.relu([1.0, 2.0])
    with pytest.raises(TypeError, match="floating-point"):
        F.sigmoid(np.arange(3))
    with pytest.raises(ValueError, match="axis=2"):
        F.softmax(np.zeros((2, 2)), axis=2)
    with pytest.raises(ValueError, match="p must be in"):
        F.dropout(np.zeros(3), 1.5)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        F.linear(np.zeros((2, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="weight must have shape"):
        F.linear(np.zeros((2, 4)), np.zeros(4))
    with pytest.raises(ValueError, match="bias must have shape"):
        F.linear(np.zeros((2, 3)), np.zeros((3, 5)), np.zeros(4))
    with pytest.raises(TypeError, match="weight dtype"):
        F.linear(np.zeros((2, 3)), np.zeros((3, 5), dtype=np.float32))


def test_empty_inputs():
    assert F.softmax(np.zeros((0, 3))).shape == (0, 3)
    assert F.log_softmax(np.zeros((2, 0))).shape == (2, 0)
    assert F.relu(np.zeros((0,), dtype=np.float32)).dtype == np.float32
    assert F.linear(np.zeros((0, 3)), np.ones((3, 2))).shape == (0, 2)


# ---------------------------------------------------------------- oracle
@pytest.mark.oracle
def test_against_torch_forward_and_backward():
    torch = require("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 5)) * 3
    g = rng.normal(size=(4, 3, 5))
    cases = [
        (F.relu, torch.relu),
        (lambda t: F.leaky_relu(t, 0.2), lambda t: torch.nn.functional.leaky_relu(t, 0.2)),
        (F.sigmoid, torch.sigmoid),
        (F.tanh, torch.tanh),
        (lambda t: F.softmax(t, axis=1), lambda t: torch.softmax(t, dim=1)),
        (F.log_softmax, lambda t: torch.log_softmax(t, dim=-1)),
    ]
    for ours, theirs in cases:
        t = nn.Tensor(x.copy(), requires_grad=True)
        y = ours(t)
        y.backward(g)
        tt = torch.tensor(x, requires_grad=True)
        ty = theirs(tt)
        ty.backward(torch.tensor(g))
        assert np.allclose(y.data, ty.detach().numpy(), atol=1e-12)
        assert np.allclose(t.grad, tt.grad.numpy(), atol=1e-12)


@pytest.mark.oracle
def test_linear_against_torch():
    torch = require("torch")
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 6)), rng.normal(size=6)
    g = rng.normal(size=(2, 3, 6))
    xt, wt, bt = (nn.Tensor(a.copy(), requires_grad=True) for a in (x, w, b))
    y = F.linear(xt, wt, bt)
    y.backward(g)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w.T.copy(), b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.tensor(g))
    assert np.allclose(y.data, ty.detach().numpy(), atol=1e-12)
    assert np.allclose(xt.grad, tx.grad.numpy(), atol=1e-12)
    assert np.allclose(wt.grad, tw.grad.numpy().T, atol=1e-12)
    assert np.allclose(bt.grad, tb.grad.numpy(), atol=1e-12)
