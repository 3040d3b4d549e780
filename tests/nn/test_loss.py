"""Tests of nn.functional.loss: gradient checks, torch/torchvision oracles, stability,
reductions, empty and ignored inputs, and bad input."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
import nn.functional as F
from tests.oracles import require
from tests.strategies import float_arrays

REDUCTIONS = ["none", "mean", "sum"]
batch_shapes = st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple)


def _t(a):
    return nn.Tensor(np.array(a, dtype=np.float64), requires_grad=True)


# ------------------------------------------------------------ gradient checks
@given(batch=batch_shapes, k=st.integers(1, 4), reduction=st.sampled_from(REDUCTIONS),
       smoothing=st.sampled_from([0.0, 0.1]), weighted=st.booleans(), data=st.data())
def test_gradcheck_cross_entropy(batch, k, reduction, smoothing, weighted, data):
    x = data.draw(float_arrays(batch + (k,), low=-3, high=3))
    seed = data.draw(st.integers(0, 1000))
    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, size=batch)
    target[rng.random(batch) < 0.3] = -100
    weight = rng.uniform(0.5, 2.0, size=k) if weighted else None
    assert nn.gradcheck(
        lambda t: F.cross_entropy(t, target, weight=weight, reduction=reduction,
                                  label_smoothing=smoothing),
        [_t(x)],
    )


@given(batch=batch_shapes, reduction=st.sampled_from(REDUCTIONS), data=st.data())
def test_gradcheck_bce_logits_and_targets(batch, reduction, data):
    x = data.draw(float_arrays(batch, low=-4, high=4))
    y = data.draw(float_arrays(batch, low=0.05, high=0.95))
    w = data.draw(float_arrays(batch[-1:], low=0.5, high=2))
    pw = data.draw(float_arrays(batch[-1:], low=0.5, high=3))
    assert nn.gradcheck(
        lambda a, b: F.binary_cross_entropy_with_logits(a, b, weight=w, reduction=reduction,
                                                        pos_weight=pw),
        [_t(x), _t(y)],
    )


@given(batch=batch_shapes, reduction=st.sampled_from(REDUCTIONS),
       alpha=st.sampled_from([0.25, -1.0, 0.7]), gamma=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]),
       data=st.data())
def test_gradcheck_sigmoid_focal_loss(batch, reduction, alpha, gamma, data):
    x = data.draw(float_arrays(batch, low=-4, high=4))
    y = data.draw(float_arrays(batch, low=0.05, high=0.95))
    assert nn.gradcheck(
        lambda a, b: F.sigmoid_focal_loss(a, b, alpha=alpha, gamma=gamma, reduction=reduction),
        [_t(x), _t(y)],
    )


@given(batch=batch_shapes, reduction=st.sampled_from(REDUCTIONS),
       beta=st.sampled_from([0.0, 0.5, 1.0]), data=st.data())
def test_gradcheck_regression_losses(batch, reduction, beta, data):
    a = data.draw(float_arrays(batch, low=-2, high=2))
    b = data.draw(float_arrays(batch, low=-2, high=2))
    d = a - b
    # Stay off the kinks: |d| = 0 (all three) and |d| = beta (smooth L1).
    d = np.where(np.abs(d) < 0.05, 0.3, d)
    if beta > 0:
        d = np.where(np.abs(np.abs(d) - beta) < 0.05, beta + 0.2, d)
    a = b + d
    assert nn.gradcheck(lambda p, q: F.smooth_l1_loss(p, q, beta=beta, reduction=reduction),
                        [_t(a), _t(b)])
    assert nn.gradcheck(lambda p, q: F.l1_loss(p, q, reduction=reduction), [_t(a), _t(b)])
    assert nn.gradcheck(lambda p, q: F.mse_loss(p, q, reduction=reduction), [_t(a), _t(b)])


@given(n=st.integers(1, 2), h=st.integers(1, 3), w=st.integers(1, 3), k=st.integers(2, 3),
       reduction=st.sampled_from(REDUCTIONS), ignore=st.booleans(), data=st.data())
def test_gradcheck_dice(n, h, w, k, reduction, ignore, data):
    x = data.draw(float_arrays((n, h, w, k), low=-3, high=3))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    target = rng.integers(0, k, size=(n, h, w))
    if ignore:
        target[rng.random(target.shape) < 0.3] = 255
    assert nn.gradcheck(
        lambda t: F.dice_loss(t, target, ignore_index=255 if ignore else None, reduction=reduction),
        [_t(x)],
    )


# ------------------------------------------------------------- semantics
def test_cross_entropy_hand_computed():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    target = np.array([0, 2])
    expected = [-np.log(np.exp(2) / (np.exp(2) + 2)), np.log(3)]
    assert np.allclose(F.cross_entropy(logits, target, reduction="none").data, expected)
    assert np.isclose(F.cross_entropy(logits, target).item(), np.mean(expected))
    w = np.array([3.0, 1.0, 1.0])
    assert np.isclose(F.cross_entropy(logits, target, weight=w).item(),
                      (3 * expected[0] + expected[1]) / 4)


def test_cross_entropy_all_ignored_is_zero_with_zero_grad():
    x = _t(np.random.default_rng(0).normal(size=(3, 4)))
    loss = F.cross_entropy(x, np.full(3, -100))
    assert loss.item() == 0.0
    loss.backward()
    assert np.all(x.grad == 0)
    x32 = nn.Tensor(np.zeros((2, 5, 3), dtype=np.float32), requires_grad=True)
    loss = F.cross_entropy(x32, np.full((2, 5), 7), ignore_index=7, weight=np.ones(3, np.float32))
    loss.backward()
    assert loss.item() == 0.0 and loss.dtype == np.float32 and np.all(x32.grad == 0)


def test_cross_entropy_stable_for_huge_logits():
    x = nn.Tensor(np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0]], np.float32),
                  requires_grad=True)
    loss = F.cross_entropy(x, np.array([1, 0]), label_smoothing=0.1)
    loss.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(x.grad))
    assert np.isclose(F.cross_entropy(x.data, np.array([0, 1]), reduction="none").data,
                      [0.0, np.log(2)], atol=1e-4).all()


def test_cross_entropy_empty():
    loss = F.cross_entropy(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert loss.shape == () and loss.item() == 0.0 and loss.dtype == np.float32
    none = F.cross_entropy(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), reduction="none")
    assert none.shape == (0,)


def test_losses_keep_float32():
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    y = (x > 0).astype(np.float32)
    for loss in (F.cross_entropy(x, np.array([0, 1, 3])),
                 F.binary_cross_entropy_with_logits(x, y),
                 F.sigmoid_focal_loss(x, y, reduction="mean"),
                 F.smooth_l1_loss(x, y), F.l1_loss(x, y), F.mse_loss(x, y),
                 F.dice_loss(x.reshape(1, 3, 4), np.array([[0, 1, 2]]))):
        assert loss.dtype == np.float32


def test_bce_and_focal_stable_gradients_at_100():
    x = nn.Tensor(np.array([-100.0, -30.0, 0.0, 30.0, 100.0, 1000.0, -1000.0], np.float32),
                  requires_grad=True)
    y = np.array([1, 0, 1, 1, 0, 0, 1], np.float32)
    for fn in (lambda: F.binary_cross_entropy_with_logits(x, y, reduction="sum"),
               lambda: F.sigmoid_focal_loss(x, y, reduction="sum"),
               lambda: F.sigmoid_focal_loss(x, y, gamma=0.5, reduction="sum")):
        x.grad = None
        loss = fn()
        loss.backward()
        assert np.isfinite(loss.item())
        assert np.all(np.isfinite(x.grad))
    bce = F.binary_cross_entropy_with_logits(x.data, y, "none").data  # reduction is third
    assert np.isclose(bce[0], 100.0) and np.isclose(bce[4], 100.0) and np.isclose(bce[5], 1000.0)


def test_smooth_l1_beta_zero_is_l1_with_finite_grad():
    a = nn.Tensor(np.array([0.0, 1.0, -2.0, 0.5]), requires_grad=True)
    b = np.array([0.0, 0.0, 0.0, 0.5])
    loss = F.smooth_l1_loss(a, b, beta=0.0, reduction="sum")
    loss.backward()
    assert loss.item() == 3.0
    assert np.array_equal(a.grad, [0.0, 1.0, -1.0, 0.0])
    assert np.allclose(F.smooth_l1_loss(np.array([0.5, 3.0]), np.zeros(2), reduction="none").data,
                       [0.125, 2.5])


def test_regression_empty_mean_is_zero():
    a = nn.Tensor(np.zeros((0, 4), np.float32), requires_grad=True)
    for fn in (F.smooth_l1_loss, F.l1_loss, F.mse_loss):
        a.grad = None
        loss = fn(a, np.zeros((0, 4), np.float32))
        loss.backward()
        assert loss.item() == 0.0 and a.grad.shape == (0, 4)
    assert F.l1_loss(a, np.zeros((0, 4), np.float32), reduction="none").shape == (0, 4)


def _dice_reference(logits, target, ignore_index, eps):
    """Obvious loops over images and classes."""
    n, k = logits.shape[0], logits.shape[-1]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    probs = e / e.sum(-1, keepdims=True)
    out = np.zeros((n, k))
    for i in range(n):
        for c in range(k):
            valid = np.ones(target[i].shape, bool) if ignore_index is None else target[i] != ignore_index
            p = probs[i][..., c][valid]
            y = (target[i][valid] == c).astype(float)
            out[i, c] = 1 - (2 * (p * y).sum() + eps) / (p.sum() + y.sum() + eps)
    return out


@pytest.mark.parametrize("ignore_index", [None, 255])
@pytest.mark.parametrize("eps", [1.0, 1e-3])
def test_dice_against_loop_reference(ignore_index, eps):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 5, 6, 3))
    target = rng.integers(0, 3, size=(2, 5, 6))
    if ignore_index is not None:
        target[rng.random(target.shape) < 0.2] = ignore_index
    ref = _dice_reference(logits, target, ignore_index, eps)
    ours = F.dice_loss(logits, target, ignore_index=ignore_index, eps=eps, reduction="none").data
    assert ours.shape == (2, 3)
    assert np.allclose(ours, ref)
    assert np.isclose(F.dice_loss(logits, target, ignore_index, eps).item(), ref.mean())
    assert np.isclose(F.dice_loss(logits, target, ignore_index, eps, "sum").item(), ref.sum())


def test_dice_perfect_prediction_near_zero():
    target = np.array([[[0, 1], [1, 2]]])
    logits = np.eye(3)[target] * 50.0
    assert F.dice_loss(logits, target, eps=1e-6).item() < 1e-6


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, exc, match", [
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.zeros(3, int)), ValueError, "target must have shape"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.zeros(2)), TypeError, "integer"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 3])), ValueError, r"\[0, 3\)"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction="avg"), ValueError, "reduction"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), weight=np.ones(2)), ValueError, "weight"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), label_smoothing=1.5), ValueError,
     "label_smoothing"),
    (lambda: F.cross_entropy(np.zeros((2, 3), int), np.array([0, 1])), TypeError, "logits"),
    (lambda: F.cross_entropy([[0.0, 1.0]], np.array([0])), TypeError, "logits"),
    (lambda: F.binary_cross_entropy_with_logits(np.zeros(3), np.zeros(2)), ValueError, "target"),
    (lambda: F.binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros((2, 3)),
                                                pos_weight=np.ones(2)), ValueError, "pos_weight"),
    (lambda: F.sigmoid_focal_loss(np.zeros(3), np.zeros(3), gamma=-1), ValueError, "gamma"),
    (lambda: F.sigmoid_focal_loss(np.zeros(3), np.zeros(4)), ValueError, "targets"),
    (lambda: F.smooth_l1_loss(np.zeros(3), np.zeros(3), beta=-1.0), ValueError, "beta"),
    (lambda: F.mse_loss(np.zeros(3), np.zeros(3, np.float32)), TypeError, "dtype"),
    (lambda: F.l1_loss(np.zeros(3), np.zeros((3, 1))), ValueError, "shape"),
    (lambda: F.dice_loss(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2), int)), ValueError, "K >= 2"),
    (lambda: F.dice_loss(np.zeros((1, 2, 2, 3)), np.zeros((1, 2), int)), ValueError, "target"),
    (lambda: F.dice_loss(np.zeros((1, 2, 2, 3)), np.full((1, 2, 2), 5)), ValueError, "target values"),
    (lambda: F.dice_loss(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2), int), eps=0.0), ValueError, "eps"),
])
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- oracles
@pytest.mark.oracle
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_against_torch(reduction, smoothing, weighted):
    torch = require("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5)) * 4
    t = rng.integers(0, 5, size=(3, 4))
    t[rng.random(t.shape) < 0.25] = 2  # use 2 as ignore_index (inside [0, K))
    w = rng.uniform(0.2, 3, size=5) if weighted else None
    g = rng.normal(size=(3, 4)) if reduction == "none" else np.array(1.7)
    xt = _t(x)
    loss = F.cross_entropy(xt, t, weight=w, ignore_index=2, reduction=reduction,
                           label_smoothing=smoothing)
    loss.backward(g)
    tx = torch.tensor(x, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(
        tx.permute(0, 2, 1), torch.tensor(t), weight=None if w is None else torch.tensor(w),
        ignore_index=2, reduction=reduction, label_smoothing=smoothing)
    tl.backward(torch.tensor(g))
    assert np.allclose(loss.data, tl.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert np.allclose(xt.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.oracle
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_against_torch(reduction):
    torch = require("torch")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 3)) * 5, rng.random((4, 3))
    w, pw = rng.uniform(0.5, 2, size=(4, 1)), rng.uniform(0.5, 3, size=3)
    g = rng.normal(size=(4, 3)) if reduction == "none" else np.array(0.7)
    xt, yt = _t(x), _t(y)
    loss = F.binary_cross_entropy_with_logits(xt, yt, weight=w, reduction=reduction, pos_weight=pw)
    loss.backward(g)
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    tl = torch.nn.functional.binary_cross_entropy_with_logits(
        tx, ty, weight=torch.tensor(w), reduction=reduction, pos_weight=torch.tensor(pw))
    tl.backward(torch.tensor(g))
    assert np.allclose(loss.data, tl.detach().numpy(), rtol=1e-12)
    assert np.allclose(xt.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert np.allclose(yt.grad, ty.grad.numpy(), rtol=1e-10, atol=1e-12)


def _torchvision_focal(torch, inputs, targets, alpha, gamma, reduction):
    """torchvision.ops.sigmoid_focal_loss, verbatim (torchvision cannot be imported here)."""
    p = torch.sigmoid(inputs)
    ce_loss = torch.nn.functional.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


@pytest.mark.oracle
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.25, 1.5)])
def test_focal_against_torchvision_definition(reduction, alpha, gamma):
    torch = require("torch")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 4)) * 3
    y = (rng.random((5, 4)) < 0.3).astype(np.float64)
    y[0] = rng.random(4)  # soft targets too
    g = rng.normal(size=(5, 4)) if reduction == "none" else np.array(1.3)
    xt, yt = _t(x), _t(y)
    loss = F.sigmoid_focal_loss(xt, yt, alpha=alpha, gamma=gamma, reduction=reduction)
    loss.backward(g)
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    tl = _torchvision_focal(torch, tx, ty, alpha, gamma, reduction)
    tl.backward(torch.tensor(g))
    assert np.allclose(loss.data, tl.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert np.allclose(xt.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-13)
    assert np.allclose(yt.grad, ty.grad.numpy(), rtol=1e-9, atol=1e-13)


@pytest.mark.oracle
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_regression_against_torch(reduction, beta):
    torch = require("torch")
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    g = rng.normal(size=(6, 4)) if reduction == "none" else np.array(0.9)
    pairs = [
        (lambda p, q: F.smooth_l1_loss(p, q, beta=beta, reduction=reduction),
         lambda p, q: torch.nn.functional.smooth_l1_loss(p, q, beta=beta, reduction=reduction)),
        (lambda p, q: F.l1_loss(p, q, reduction=reduction),
         lambda p, q: torch.nn.functional.l1_loss(p, q, reduction=reduction)),
        (lambda p, q: F.mse_loss(p, q, reduction=reduction),
         lambda p, q: torch.nn.functional.mse_loss(p, q, reduction=reduction)),
    ]
    for ours, theirs in pairs:
        at, bt = _t(a), _t(b)
        loss = ours(at, bt)
        loss.backward(g)
        ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        tl = theirs(ta, tb)
        tl.backward(torch.tensor(g))
        assert np.allclose(loss.data, tl.detach().numpy(), rtol=1e-12)
        assert np.allclose(at.grad, ta.grad.numpy(), rtol=1e-12, atol=1e-15)
        assert np.allclose(bt.grad, tb.grad.numpy(), rtol=1e-12, atol=1e-15)
