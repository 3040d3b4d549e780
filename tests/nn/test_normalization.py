"""Tests of nn.functional.normalization and nn.modules.normalization: references built
from elementary autograd ops, gradient checks, running statistics, bad input, and torch
as an oracle (NCHW, transposed)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nn
import nn.functional as F

from tests.oracles import require


# ------------------------------------------------------------- references
def ref_batch_norm(x, weight, bias, mean=None, var=None, eps=1e-5):
    """Batch norm written with Tensor mean/sub/pow/sqrt: the slow, obvious composition.

    Uses the batch statistics when ``mean``/``var`` are None (training), else the given ones.
    """
    axes = tuple(range(x.ndim - 1))
    if mean is None:
        mean = x.mean(axis=axes, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=axes, keepdims=True)
    else:
        mean, var = nn.Tensor(mean), nn.Tensor(var)
        centered = x - mean
    y = centered / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def ref_group_norm(x, num_groups, weight, bias, eps=1e-5):
    n, c = x.shape[0], x.shape[-1]
    grouped = x.reshape(n, -1, num_groups, c // num_groups)  # (N, S, G, C/G)
    mean = grouped.mean(axis=(1, 3), keepdims=True)
    centered = grouped - mean
    var = (centered * centered).mean(axis=(1, 3), keepdims=True)
    y = (centered / (var + eps).sqrt()).reshape(x.shape)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _grads(fn, x, weight, bias, grad_out):
    """Output and gradients of ``fn(x, weight, bias)`` for the output gradient ``grad_out``."""
    tensors = [nn.Tensor(a.copy(), requires_grad=True) if a is not None else None
               for a in (x, weight, bias)]
    y = fn(*tensors)
    y.backward(grad_out)
    return [y.data] + [t.grad if t is not None else None for t in tensors]


def _random_inputs(rng, shape, dtype, scale, shift, affine=True):
    """x of ``shape`` (``scale · N(0, 1) + shift``) and per-channel weight and bias drawn
    from N(0, 1) (None without ``affine``), in this order from ``rng``, of ``dtype``."""
    c = shape[-1]
    x = (rng.standard_normal(shape) * scale + shift).astype(dtype)
    weight = rng.standard_normal(c).astype(dtype) if affine else None
    bias = rng.standard_normal(c).astype(dtype) if affine else None
    return x, weight, bias


def _assert_all_close(ours, reference, tol):
    for a, b in zip(ours, reference):
        if b is None:
            assert a is None
        else:
            assert a.dtype == b.dtype
            assert np.allclose(a, b, rtol=tol, atol=tol)


shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 6))
dtypes = st.sampled_from([np.float32, np.float64])


@given(shape=shapes, seed=st.integers(0, 2**31 - 1), training=st.booleans(),
       affine=st.booleans(), dtype=dtypes)
def test_batch_norm_matches_composed_reference(shape, seed, training, affine, dtype):
    rng = np.random.default_rng(seed)
    if training and np.prod(shape[:3]) == 1:
        shape = (2,) + shape[1:]
    c = shape[-1]
    x, weight, bias = _random_inputs(rng, shape, dtype, 3, 1, affine)
    running_mean = rng.standard_normal(c).astype(dtype)
    running_var = rng.uniform(0.5, 2, c).astype(dtype)
    grad_out = rng.standard_normal(shape).astype(dtype)
    ours = _grads(lambda *a: F.batch_norm(a[0], running_mean.copy(), running_var.copy(), a[1],
                                          a[2], training=training), x, weight, bias, grad_out)
    stats = {} if training else {"mean": running_mean, "var": running_var}
    reference = _grads(lambda *a: ref_batch_norm(*a, **stats), x, weight, bias, grad_out)
    _assert_all_close(ours, reference, 2e-4 if dtype == np.float32 else 1e-10)


@given(shape=shapes, seed=st.integers(0, 2**31 - 1), groups=st.sampled_from([1, 2, 3]),
       affine=st.booleans(), dtype=dtypes)
def test_group_norm_matches_composed_reference(shape, seed, groups, affine, dtype):
    rng = np.random.default_rng(seed)
    shape = shape[:3] + (groups * shape[3],)
    if np.prod(shape) == groups:  # one value per group: rejected, as by PyTorch
        shape = (2,) + shape[1:]
    x, weight, bias = _random_inputs(rng, shape, dtype, 3, 1, affine)
    grad_out = rng.standard_normal(shape).astype(dtype)
    ours = _grads(lambda *a: F.group_norm(a[0], groups, a[1], a[2]), x, weight, bias, grad_out)
    reference = _grads(lambda *a: ref_group_norm(a[0], groups, a[1], a[2]), x, weight, bias,
                       grad_out)
    _assert_all_close(ours, reference, 2e-4 if dtype == np.float32 else 1e-10)


def test_batch_norm_running_statistics_by_hand():
    x = np.array([1.0, 2.0, 3.0, 6.0]).reshape(2, 1, 2, 1)
    running_mean, running_var = np.zeros(1), np.ones(1)
    y = F.batch_norm(x, running_mean, running_var, training=True, momentum=0.5, eps=0.0)
    # mean 3, biased variance 3.5 (normalizes), unbiased 14/3 (recorded).
    assert np.allclose(y.data.ravel(), (np.array([1, 2, 3, 6]) - 3) / np.sqrt(3.5))
    assert np.allclose(running_mean, [1.5])
    assert np.allclose(running_var, [0.5 + 0.5 * 14 / 3])
    y = F.batch_norm(x, running_mean, running_var, training=False, eps=0.0)
    assert np.allclose(y.data.ravel(), (np.array([1, 2, 3, 6]) - 1.5) / np.sqrt(0.5 + 7 / 3))


def test_batch_norm_on_vectors_and_group_norm_per_sample():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4))
    y = F.batch_norm(x, None, None, training=True, eps=0.0).data
    assert np.allclose(y.mean(axis=0), 0) and np.allclose(y.var(axis=0), 1)
    x = rng.standard_normal((3, 4, 5, 6)) * np.arange(1, 4)[:, None, None, None]
    y = F.group_norm(x, 2, eps=0.0).data.reshape(3, 20, 2, 3)
    assert np.allclose(y.mean(axis=(1, 3)), 0) and np.allclose(y.var(axis=(1, 3)), 1)


# ------------------------------------------------------------ gradient checks
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck(training, rng):
    x = nn.Tensor(rng.standard_normal((2, 3, 2, 3)) * 2 + 1, requires_grad=True)
    weight = nn.Tensor(rng.standard_normal(3), requires_grad=True)
    bias = nn.Tensor(rng.standard_normal(3), requires_grad=True)
    running_mean, running_var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    assert nn.gradcheck(
        lambda a, w, b: F.batch_norm(a, running_mean, running_var, w, b, training=training),
        [x, weight, bias],
    )


def test_frozen_batch_norm_gradient(rng):
    # Evaluation mode with fixed parameters (detection backbones): an affine map per channel.
    x = nn.Tensor(rng.standard_normal((2, 3, 2, 4)), requires_grad=True)
    weight, bias = rng.standard_normal(4), rng.standard_normal(4)
    running_mean, running_var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    grad_out = rng.standard_normal(x.shape)
    F.batch_norm(x, running_mean, running_var, weight, bias).backward(grad_out)
    assert np.allclose(x.grad, grad_out * weight / np.sqrt(running_var + 1e-5))
    assert nn.gradcheck(lambda a: F.batch_norm(a, running_mean, running_var, weight, bias), [x])


def test_batch_norm_gradcheck_without_affine(rng):
    x = nn.Tensor(rng.standard_normal((3, 2, 2, 2)), requires_grad=True)
    assert nn.gradcheck(lambda a: F.batch_norm(a, None, None, training=True), [x])


@pytest.mark.parametrize("num_groups", [1, 2, 4])
def test_group_norm_gradcheck(num_groups, rng):
    x = nn.Tensor(rng.standard_normal((2, 3, 2, 4)) * 2 + 1, requires_grad=True)
    weight = nn.Tensor(rng.standard_normal(4), requires_grad=True)
    bias = nn.Tensor(rng.standard_normal(4), requires_grad=True)
    assert nn.gradcheck(lambda a, w, b: F.group_norm(a, num_groups, w, b), [x, weight, bias])
    assert nn.gradcheck(lambda a: F.group_norm(a, num_groups), [x])


# -------------------------------------------------------------- modules
def test_batchnorm2d_buffers_state_dict_and_modes(rng):
    bn = nn.BatchNorm2d(3)
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var",
                                    "num_batches_tracked"}
    x = rng.standard_normal((4, 5, 5, 3)).astype(np.float32) * 2 + 3
    y = bn(x)
    assert y.dtype == np.float32 and bn.running_mean.dtype == np.float32
    assert int(bn.num_batches_tracked) == 1
    assert np.allclose(bn.running_mean, 0.1 * x.reshape(-1, 3).mean(axis=0), atol=1e-6)
    assert np.allclose(bn.running_var, 0.9 + 0.1 * x.reshape(-1, 3).var(axis=0, ddof=1), atol=1e-5)
    state = bn.state_dict()
    bn.eval()
    y_eval = bn(x)
    assert int(bn.num_batches_tracked) == 1  # evaluation records nothing
    expected = (x - bn.running_mean) / np.sqrt(bn.running_var + 1e-5)
    assert np.allclose(y_eval.data, expected, atol=1e-5)
    other = nn.BatchNorm2d(3)
    other.load_state_dict(state)
    other.eval()
    assert np.array_equal(other(x).data, y_eval.data)
    bn.reset_running_stats()
    assert np.all(bn.running_mean == 0) and np.all(bn.running_var == 1)
    assert int(bn.num_batches_tracked) == 0


def test_batchnorm2d_without_running_stats_uses_batch_stats_in_eval(rng):
    bn = nn.BatchNorm2d(2, affine=False, track_running_stats=False).eval()
    assert bn.state_dict() == {} and list(bn.parameters()) == []
    x = rng.standard_normal((3, 2, 2, 2))
    assert np.allclose(bn(x).data, ref_batch_norm(nn.Tensor(x), None, None).data)


def test_groupnorm_module(rng):
    gn = nn.GroupNorm(2, 4)
    assert [name for name, _ in gn.named_parameters()] == ["weight", "bias"]
    x = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    assert np.array_equal(gn(x).data, F.group_norm(x, 2, gn.weight, gn.bias).data)
    assert "2, 4" in repr(gn) and "BatchNorm2d(3" in repr(nn.BatchNorm2d(3))


def test_empty_batch_returns_empty_and_keeps_running_stats():
    bn = nn.BatchNorm2d(3)
    x = nn.Tensor(np.zeros((0, 4, 4, 3), dtype=np.float32), requires_grad=True)
    y = bn(x)
    assert y.shape == (0, 4, 4, 3) and y.dtype == np.float32
    assert np.all(bn.running_mean == 0) and np.all(bn.running_var == 1)
    y.sum().backward()
    assert x.grad.shape == (0, 4, 4, 3) and np.array_equal(bn.weight.grad, np.zeros(3))
    z = F.group_norm(np.zeros((0, 2, 2, 4), dtype=np.float32), 2)
    assert z.shape == (0, 2, 2, 4) and z.dtype == np.float32


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, error, match", [
    (lambda: nn.BatchNorm2d(3)(np.zeros((2, 4, 4, 4))), ValueError, "4 channels"),
    (lambda: nn.BatchNorm2d(3)(np.zeros((2, 4, 3))), ValueError, "4-D"),
    (lambda: nn.BatchNorm2d(0), ValueError, "num_features"),
    (lambda: nn.GroupNorm(3, 4), ValueError, "divide"),
    (lambda: nn.GroupNorm(2, 4)(np.zeros((2, 3, 3, 6))), ValueError, "channels"),
    (lambda: F.group_norm(np.zeros((2, 3, 3, 6)), 4), ValueError, "divide"),
    (lambda: F.group_norm(np.zeros((2, 3, 3, 6)), 0), ValueError, "num_groups"),
    (lambda: F.group_norm(np.zeros(6), 2), ValueError, "2-D"),
    (lambda: F.group_norm(np.zeros((1, 1, 1, 2)), 2), ValueError, "more than 1 value"),
    (lambda: F.batch_norm(np.zeros((1, 1, 1, 3)), None, None, training=True), ValueError,
     "more than 1 value"),
    (lambda: F.batch_norm(np.zeros((2, 1, 1, 3)), None, None), ValueError, "running_mean"),
    (lambda: F.batch_norm(np.zeros((2, 1, 1, 3)), np.zeros(3), None, training=True), ValueError,
     "both"),
    (lambda: F.batch_norm(np.zeros((2, 2, 3)), np.zeros(2), np.ones(2)), ValueError,
     "running_mean"),
    (lambda: F.batch_norm(np.zeros((2, 2, 3), np.float32), np.zeros(3), np.ones(3),
                          weight=np.ones(3)), TypeError, "dtype"),
    (lambda: F.batch_norm(np.zeros((2, 2, 3), np.int64), np.zeros(3), np.ones(3)), TypeError,
     "floating"),
    (lambda: F.group_norm(np.zeros((2, 2, 4)), 2, bias=np.zeros(3)), ValueError, "bias"),
])
def test_bad_input_raises_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------ oracle
def _nchw(x):
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def _nhwc(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _assert_matches_torch(torch, torch_fn, ours, x, weight, bias, grad_out, dtype):
    """``ours`` (output, dx, dweight, dbias of ``_grads``) equals ``torch_fn(x, weight, bias)``
    of torch (NCHW) and its gradients for the output gradient ``grad_out``."""
    tx = torch.tensor(_nchw(x), requires_grad=True)
    tw, tb = torch.tensor(weight, requires_grad=True), torch.tensor(bias, requires_grad=True)
    ty = torch_fn(tx, tw, tb)
    ty.backward(torch.from_numpy(_nchw(grad_out)))
    y, dx, dw, db = ours
    tol = 2e-5 if dtype == np.float32 else 1e-10
    assert np.allclose(y, _nhwc(ty), rtol=tol, atol=tol)
    assert np.allclose(dx, _nhwc(tx.grad), rtol=tol, atol=tol * 10)
    assert np.allclose(dw, tw.grad.numpy(), rtol=tol, atol=tol * 10)
    assert np.allclose(db, tb.grad.numpy(), rtol=tol, atol=tol * 10)


@pytest.mark.oracle
@settings(max_examples=20)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), training=st.booleans(), dtype=dtypes)
def test_batch_norm_matches_torch(shape, seed, training, dtype):
    torch = require("torch")
    rng = np.random.default_rng(seed)
    if training and np.prod(shape[:3]) == 1:
        shape = (2,) + shape[1:]
    c = shape[-1]
    x, weight, bias = _random_inputs(rng, shape, dtype, 2, -1)
    running_mean = rng.standard_normal(c).astype(dtype)
    running_var = rng.uniform(0.5, 2, c).astype(dtype)
    grad_out = rng.standard_normal(shape).astype(dtype)
    torch_running = [torch.from_numpy(running_mean.copy()), torch.from_numpy(running_var.copy())]
    ours = _grads(lambda *a: F.batch_norm(a[0], running_mean, running_var, a[1], a[2],
                                          training=training, momentum=0.3),
                  x, weight, bias, grad_out)
    _assert_matches_torch(
        torch, lambda tx, tw, tb: torch.nn.functional.batch_norm(
            tx, *torch_running, tw, tb, training=training, momentum=0.3),
        ours, x, weight, bias, grad_out, dtype)
    tol = 2e-5 if dtype == np.float32 else 1e-10
    assert np.allclose(running_mean, torch_running[0].numpy(), rtol=tol, atol=tol)
    assert np.allclose(running_var, torch_running[1].numpy(), rtol=tol, atol=tol)


@pytest.mark.oracle
@settings(max_examples=20)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), groups=st.sampled_from([1, 2, 4]),
       dtype=dtypes)
def test_group_norm_matches_torch(shape, seed, groups, dtype):
    torch = require("torch")
    rng = np.random.default_rng(seed)
    shape = shape[:3] + (groups * shape[3],)
    if np.prod(shape[1:]) == groups:
        # A single value per group normalizes to 0 ± rounding amplified by 1/sqrt(eps);
        # PyTorch's fused x·scale + shift is 1e-5 off there, so give groups 2 values.
        shape = (shape[0], 2) + shape[2:]
    x, weight, bias = _random_inputs(rng, shape, dtype, 2, -1)
    grad_out = rng.standard_normal(shape).astype(dtype)
    ours = _grads(lambda *a: F.group_norm(a[0], groups, a[1], a[2]), x, weight, bias, grad_out)
    _assert_matches_torch(
        torch, lambda tx, tw, tb: torch.nn.functional.group_norm(tx, groups, tw, tb),
        ours, x, weight, bias, grad_out, dtype)


@pytest.mark.oracle
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm2d_running_stats_over_train_steps_match_torch(momentum):
    torch = require("torch")
    rng = np.random.default_rng(7)
    ours = nn.BatchNorm2d(4, momentum=momentum)
    theirs = torch.nn.BatchNorm2d(4, momentum=momentum)
    for step in range(5):
        x = (rng.standard_normal((3, 5, 6, 4)) * (step + 1) + step).astype(np.float32)
        grad_out = rng.standard_normal(x.shape).astype(np.float32)
        ours.zero_grad()
        y = ours(x)
        y.backward(grad_out)
        theirs.zero_grad()
        ty = theirs(torch.from_numpy(_nchw(x)))
        ty.backward(torch.from_numpy(_nchw(grad_out)))
        assert np.allclose(y.data, _nhwc(ty), atol=1e-5)
        assert np.allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
        assert np.allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
        with torch.no_grad():  # a shared update keeps both models on the same weights
            theirs.weight -= 0.1 * theirs.weight.grad
            theirs.bias -= 0.1 * theirs.bias.grad
        ours.weight.data -= 0.1 * ours.weight.grad
        ours.bias.data -= 0.1 * ours.bias.grad
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 5
    assert np.allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-5, atol=1e-5)
    assert np.allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-5, atol=1e-5)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((2, 5, 6, 4)).astype(np.float32)
    assert np.allclose(ours(x).data, _nhwc(theirs(torch.from_numpy(_nchw(x)))), atol=1e-5)
