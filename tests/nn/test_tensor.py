"""Tests of the autograd core (nn.tensor): every op's gradient, broadcasting, indexing
with repeated indices, graph walking, dtype rules, errors, and torch as an oracle."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
from nn.functional.activation import log_softmax_forward, softmax_forward
from nn.tensor import Function, GetItem, scatter_add_rows
from tests.oracles import require
from tests.strategies import float_arrays

small_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)


@st.composite
def broadcastable_pair(draw):
    """Two shapes that broadcast together (some axes 1 or missing in one of them)."""
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    other = [1 if draw(st.booleans()) else n for n in shape]
    drop = draw(st.integers(0, len(other)))
    other = other[drop:]
    if draw(st.booleans()):
        return tuple(shape), tuple(other)
    return tuple(other), tuple(shape)


def _t(a):
    return nn.Tensor(np.array(a, dtype=np.float64), requires_grad=True)


# ----------------------------------------------------------- arithmetic
@given(shapes=broadcastable_pair(), data=st.data())
def test_gradcheck_binary_ops_with_broadcasting(shapes, data):
    sa, sb = shapes
    a = data.draw(float_arrays(sa))
    b = data.draw(float_arrays(sb, low=0.5, high=2.0))  # away from 0 for division and pow
    ops = [lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x / y,
           lambda x, y: y ** x, lambda x, y: -x * 2.0 + 3.0 - y / 2.0]
    for op in ops:
        assert nn.gradcheck(op, [_t(a), _t(b)])


@given(shape=small_shapes, data=st.data())
def test_gradcheck_unary_ops(shape, data):
    x = data.draw(float_arrays(shape, low=0.2, high=2.0))
    sign = np.where(data.draw(float_arrays(shape)) > 0, 1.0, -1.0)
    for op in [lambda t: t.exp(), lambda t: t.log(), lambda t: t.sqrt(), lambda t: t ** 3,
               lambda t: t ** -0.5, lambda t: 1.5 ** t, lambda t: 2.0 / t]:
        assert nn.gradcheck(op, [_t(x)])
    assert nn.gradcheck(lambda t: t.abs(), [_t(x * sign)])
    clipped = np.where(np.abs(x - 1.0) < 0.05, 1.3, x)  # away from the clip bound
    assert nn.gradcheck(lambda t: t.clip(min=1.0), [_t(clipped)])
    assert nn.gradcheck(lambda t: t.clip(max=1.0), [_t(clipped)])


@given(m=st.integers(1, 3), k=st.integers(1, 3), n=st.integers(1, 3),
       batch=st.lists(st.integers(1, 2), max_size=2).map(tuple), data=st.data())
def test_gradcheck_matmul(m, k, n, batch, data):
    a = data.draw(float_arrays(batch + (m, k)))
    b = data.draw(float_arrays((k, n)))
    v = data.draw(float_arrays((k,)))
    assert nn.gradcheck(lambda x, y: x @ y, [_t(a), _t(b)])
    assert nn.gradcheck(lambda x, y: x @ y, [_t(a), _t(v)])  # matrix @ vector
    assert nn.gradcheck(lambda x, y: x @ y, [_t(v), _t(b)])  # vector @ matrix
    assert nn.gradcheck(lambda x, y: x @ y, [_t(v), _t(v.copy())])  # dot product


# ----------------------------------------------------------- reductions
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
       keepdims=st.booleans(), data=st.data())
def test_gradcheck_reductions(shape, keepdims, data):
    ndim = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                               st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim,
                                        unique=True).map(tuple)))
    # Distinct values: max/min have a unique arg-extremum, away from kinks.
    size = int(np.prod(shape))
    x = np.random.default_rng(data.draw(st.integers(0, 999))).permutation(size).reshape(shape) * 0.1
    for op in (lambda t: t.sum(axis, keepdims), lambda t: t.mean(axis, keepdims),
               lambda t: t.max(axis, keepdims), lambda t: t.min(axis, keepdims)):
        assert nn.gradcheck(op, [_t(x)])


def test_max_ties_share_gradient_like_torch_amax():
    x = _t([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]])
    x.max(axis=1).sum().backward()
    assert np.array_equal(x.grad, [[0, 0.5, 0.5], [0.5, 0, 0.5]])
    with pytest.raises(ValueError, match="empty"):
        nn.Tensor(np.zeros((0, 3))).max()


# ----------------------------------------------------------- shape ops
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=4).map(tuple), data=st.data())
def test_gradcheck_reshape_transpose(shape, data):
    x = data.draw(float_arrays(shape))
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    assert nn.gradcheck(lambda t: t.reshape(-1), [_t(x)])
    assert nn.gradcheck(lambda t: t.reshape(shape[::-1]) * 2, [_t(x)])
    assert nn.gradcheck(lambda t: t.transpose(perm) * nn.Tensor(np.arange(x.size).reshape(
        tuple(shape[i] for i in perm))), [_t(x)])
    assert nn.gradcheck(lambda t: t.T, [_t(x)])
    assert nn.gradcheck(lambda t: t.flatten(1 if len(shape) > 1 else 0), [_t(x)])


@given(n=st.integers(1, 3), data=st.data())
def test_gradcheck_concat_stack_where(n, data):
    parts = [data.draw(float_arrays((2, i + 1))) for i in range(n)]
    same = [data.draw(float_arrays((2, 3))) for _ in range(n)]
    assert nn.gradcheck(lambda *ts: nn.concat(list(ts), axis=1), [_t(p) for p in parts])
    assert nn.gradcheck(lambda *ts: nn.concat(list(ts), axis=-1), [_t(p) for p in parts])
    assert nn.gradcheck(lambda *ts: nn.stack(list(ts), axis=1), [_t(p) for p in same])
    cond = data.draw(float_arrays((2, 3))) > 0
    b = data.draw(float_arrays((3,)))
    assert nn.gradcheck(lambda x, y: nn.where(cond, x, y), [_t(same[0]), _t(b)])
    assert nn.gradcheck(lambda x, y: nn.where(nn.Tensor(cond), x, y), [_t(same[0]), _t(b)])


# ----------------------------------------------------------- indexing
BASIC_INDICES = [1, -1, slice(1, 3), (slice(None), 0), (Ellipsis, 1), (None, 0), (0, slice(None, None, 2))]


@pytest.mark.parametrize("index", BASIC_INDICES)
def test_gradcheck_basic_indexing(index):
    x = np.random.default_rng(0).normal(size=(4, 3, 2))
    assert nn.gradcheck(lambda t: t[index], [_t(x)])


def _fancy_indices(rng, shape):
    """Advanced indices of every form GetItem distinguishes, with repeats."""
    n0, n1 = shape[0], shape[1]
    rows = rng.integers(0, n0, size=7)  # repeats likely
    cols = rng.integers(-n1, n1, size=7)  # negative indices too
    mask = rng.random(shape[:2]) > 0.5
    return [
        rows, list(rows), (rows, cols), (rows.reshape(7, 1), cols[:3]), np.sort(rows),
        np.unique(rows), (np.arange(n0), rng.integers(0, n1, size=n0)), mask,
        (mask, 1), (slice(None), cols), (Ellipsis, rows % shape[-1]), (rows, slice(0, 1)),
        (None, rows), (rows, Ellipsis, 0), np.array([], dtype=np.int64), 2 * (rows,)[:1][0] % n0,
        (rng.random(shape) > 0.3),
    ]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fancy_index_backward_matches_add_at_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    shape = (5, 4, 3)
    x = rng.normal(size=shape).astype(dtype)
    for index in _fancy_indices(rng, shape):
        t = nn.Tensor(x.copy(), requires_grad=True)
        y = t[index]
        assert np.array_equal(y.data, x[index])
        grad = rng.normal(size=y.shape).astype(dtype)
        y.backward(grad)
        # np.add.at is the slow but obviously correct reference
        reference = np.zeros(shape, dtype=dtype)
        np.add.at(reference, index if not isinstance(index, list) else np.asarray(index), grad)
        assert t.grad.dtype == dtype
        assert np.allclose(t.grad, reference, rtol=1e-6, atol=1e-6), index


def test_repeated_indices_accumulate():
    x = _t([1.0, 2.0, 3.0])
    x[np.array([0, 0, 2, 0])].sum().backward()
    assert np.array_equal(x.grad, [3.0, 0.0, 1.0])
    m = _t(np.zeros((3, 2)))
    m[np.array([1, 1])].sum().backward()  # whole rows repeated
    assert np.array_equal(m.grad, [[0, 0], [2, 2], [0, 0]])
    logits = _t(np.zeros((4, 3)))
    logits[np.arange(4), np.array([2, 0, 2, 1])].sum().backward()  # unique: assignment path
    assert np.array_equal(logits.grad.sum(axis=1), np.ones(4))


@given(k=st.integers(0, 30), rows=st.integers(1, 6), width=st.integers(1, 4), data=st.data())
def test_scatter_add_rows_against_loop(k, rows, width, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    flat = rng.integers(0, rows, size=k)
    if data.draw(st.booleans()):
        flat = np.unique(flat)
        k = flat.size
    values = rng.normal(size=(k, width))
    out = scatter_add_rows(rows, flat, values)
    expected = np.zeros((rows, width))
    for j in range(k):  # the obviously correct loop
        expected[flat[j]] += values[j]
    assert out.shape == (rows, width) and np.allclose(out, expected)


@given(data=st.data())
def test_gradcheck_fancy_indexing(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    x = rng.normal(size=(4, 3, 2))
    index = data.draw(st.sampled_from(_fancy_indices(rng, x.shape)))
    assert nn.gradcheck(lambda t: t[index], [_t(x)])


def test_index_with_tensors():
    x = _t(np.arange(6.0).reshape(3, 2))
    idx = nn.Tensor(np.array([2, 2]))
    y = x[idx, nn.Tensor(np.array([1, 0]))]
    assert np.array_equal(y.data, [5.0, 4.0])
    mask = x > 2.5
    assert np.array_equal(x[mask].data, [3.0, 4.0, 5.0])


# ----------------------------------------------------------- graph
def test_diamond_graph_accumulates_and_walks_each_node_once():
    calls = []

    class Counted(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 1.0

        @staticmethod
        def backward(ctx, grad):
            calls.append(1)
            return grad

    x = _t([1.0, 2.0])
    h = Counted.apply(x)
    y = (h * h + h * 3.0).sum()  # h used three times
    y.backward()
    assert len(calls) == 1
    assert np.allclose(x.grad, 2 * x.data + 3)


def test_gradients_accumulate_across_backward_calls_and_zero_grad():
    x = _t([1.0, -1.0])
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    assert np.array_equal(x.grad, [5.0, 5.0])
    x.zero_grad()
    assert x.grad is None


def test_deep_chain_has_no_recursion_limit():
    x = _t([1.0])
    y = x
    for _ in range(5000):
        y = y * 1.0 + 0.0
    y.sum().backward()
    assert x.grad[0] == 1.0


def test_retain_grad_detach_item_numpy_repr():
    x = _t([[1.0, 2.0]])
    h = (x * 2).retain_grad()
    out = (h * h).sum()
    out.backward()
    assert np.array_equal(h.grad, 2 * h.data)
    assert np.array_equal(x.grad, 8 * x.data)
    d = h.detach()
    assert not d.requires_grad and d.is_leaf and np.shares_memory(d.data, h.data)
    assert out.item() == 20.0 and isinstance(out.item(), float)
    assert x.numpy() is x.data
    assert "grad_fn=Mul" in repr(h) and "requires_grad=True" in repr(x)
    assert h.grad_fn.__name__ == "Mul" and x.grad_fn is None
    assert h.parents[0] is x and x.parents == ()
    with pytest.raises(ValueError, match="one element"):
        x.item()


def test_no_grad_and_enable_grad():
    x = _t([1.0, 2.0])
    with nn.no_grad():
        y = x * 2
        assert not nn.is_grad_enabled()
        with nn.enable_grad():
            z = x * 2
    assert nn.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    assert z.requires_grad


def test_backward_errors():
    x = _t([1.0, 2.0])
    with pytest.raises(RuntimeError, match="scalar output.*shape \\(2,\\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="grad has shape"):
        (x * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        nn.Tensor([1.0]).backward()

    class WrongShape(Function):
        @staticmethod
        def forward(ctx, a):
            return a.sum()

        @staticmethod
        def backward(ctx, grad):
            return np.ones(5)

    with pytest.raises(RuntimeError, match="WrongShape.backward returned a gradient of shape"):
        WrongShape.apply(x).backward()

    class WrongCount(Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, grad):
            return grad

    with pytest.raises(RuntimeError, match="returned 1 gradients for 2 inputs"):
        WrongCount.apply(x, x).sum().backward()


def test_custom_function_needs_input_grad_and_none_inputs():
    seen = {}

    class Affine(Function):
        @staticmethod
        def forward(ctx, x, w, b):
            ctx.save_for_backward(x, w)
            seen["needs"] = ctx.needs_input_grad
            seen["bias"] = b
            return x * w

        @staticmethod
        def backward(ctx, grad):
            x, w = ctx.saved_tensors
            return (grad * w if ctx.needs_input_grad[0] else None,
                    grad * x if ctx.needs_input_grad[1] else None, None)

    x, w = nn.Tensor(np.array([1.0, 2.0])), _t([3.0, 4.0])
    Affine.apply(x, w, None).sum().backward()
    assert seen == {"needs": (False, True, False), "bias": None}
    assert np.array_equal(w.grad, [1.0, 2.0]) and x.grad is None


# ----------------------------------------------------------- dtype rules
def test_python_scalars_do_not_upcast_float32():
    x = nn.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    for y in (x * 0.5, 0.5 * x, x + 1, 1 - x, x / 3.0, 2.0 / x, x ** 2, 2.0 ** x, -x,
              x * np.float64(2.0), x.exp(), x.mean(), x.astype(np.float32), x.clip(0.1, 0.9)):
        assert y.dtype == np.float32, y
    y = (x * 0.5 + 1).sum()
    y.backward()
    assert x.grad.dtype == np.float32
    assert nn.Tensor([1.0, 2.0]).dtype == np.float32  # lists of floats default to float32
    assert nn.Tensor(np.ones(2)).dtype == np.float64  # ndarrays keep float64
    assert nn.Tensor([1, 2]).dtype.kind == "i"


def test_astype_is_differentiable_between_floats():
    x = nn.Tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    y = x.astype(np.float64)
    (y * 2).sum().backward()
    assert y.dtype == np.float64 and x.grad.dtype == np.float32 and np.all(x.grad == 2)


def test_requires_grad_needs_float():
    with pytest.raises(TypeError, match="floating-point"):
        nn.Tensor(np.arange(3), requires_grad=True)


def test_concat_stack_bad_input():
    with pytest.raises(ValueError, match="non-empty list"):
        nn.concat([])
    with pytest.raises(ValueError, match="non-empty list"):
        nn.stack(nn.Tensor([1.0]))


def test_getitem_is_registered_function():
    x = _t([1.0, 2.0])
    assert x[np.array([0])]._ctx.fn is GetItem


# ----------------------------------------------------------- oracle
@pytest.mark.oracle
def test_composite_expression_against_torch():
    torch = require("torch")
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 4)), rng.normal(size=(4, 2)), rng.uniform(0.5, 2, size=(1, 2))
    idx = np.array([0, 2, 2, 1, 0])

    at, bt, ct = _t(a), _t(b), _t(c)
    h = (at @ bt) / ct + ct ** 2
    h = nn.where(h.data > 0, h, h * 0.1)
    g = nn.concat([h, h.exp()], axis=1)[idx]
    out = (g.max(axis=1) * g.mean(axis=1)).sum() + g[np.array([0, 0]), np.array([1, 3])].sum()
    out.backward()

    ta, tb, tc = (torch.tensor(v, requires_grad=True) for v in (a, b, c))
    th = (ta @ tb) / tc + tc ** 2
    th = torch.where(th > 0, th, th * 0.1)
    tg = torch.cat([th, th.exp()], 1)[torch.tensor(idx)]
    tout = (tg.amax(1) * tg.mean(1)).sum() + tg[torch.tensor([0, 0]), torch.tensor([1, 3])].sum()
    tout.backward()
    assert np.isclose(out.item(), tout.item(), rtol=1e-12)
    for ours, theirs in ((at, ta), (bt, tb), (ct, tc)):
        assert np.allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------- axis arguments
def _x23():
    return nn.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))


AXIS_CALLS = [
    ("sum", lambda x, a: x.sum(axis=a)),
    ("mean", lambda x, a: x.mean(axis=a)),
    ("max", lambda x, a: x.max(axis=a)),
    ("min", lambda x, a: x.min(axis=a)),
    ("sum tuple", lambda x, a: x.sum(axis=(0, a))),
    ("transpose", lambda x, a: x.transpose(0, a)),
    ("flatten", lambda x, a: x.flatten(a)),
    ("concat", lambda x, a: nn.concat([x, x], axis=a)),
    # a new axis: the output has 3 dimensions, so -3..2 are valid and 2 -> 3 is not
    ("stack", lambda x, a: nn.stack([x, x], axis=a + 1 if a >= 0 else a - 1)),
    ("softmax", lambda x, a: nn.functional.softmax(x, axis=a)),
    ("log_softmax", lambda x, a: nn.functional.log_softmax(x, axis=a)),
    ("Softmax module", lambda x, a: nn.Softmax(axis=a)(x)),
    ("softmax kernel", lambda x, a: nn.Tensor(softmax_forward(x.data, a))),
    ("log_softmax kernel",
     lambda x, a: nn.Tensor(log_softmax_forward(x.data, a) + 0)),
]


@pytest.mark.parametrize("name, call", AXIS_CALLS, ids=[n for n, _ in AXIS_CALLS])
@pytest.mark.parametrize("axis", [2, 5, -3, -7])
def test_axis_out_of_range_raises_axis_error(name, call, axis):
    with pytest.raises(np.exceptions.AxisError, match="out of range") as info:
        call(_x23(), axis)
    if name != "stack":
        assert f"{axis}" in str(info.value) and "2 dimensions" in str(info.value)
    assert isinstance(info.value, ValueError)  # AxisError is a ValueError (and IndexError)


@pytest.mark.parametrize("name, call", AXIS_CALLS, ids=[n for n, _ in AXIS_CALLS])
def test_axis_in_range_matches_numpy(name, call):
    x = _x23()
    for axis in (1, -1):
        out = call(x, axis)
        numpy_out = {
            "sum": lambda: x.data.sum(axis=axis), "mean": lambda: x.data.mean(axis=axis),
            "max": lambda: x.data.max(axis=axis), "min": lambda: x.data.min(axis=axis),
            "sum tuple": lambda: x.data.sum(axis=(0, axis)),
            "transpose": lambda: np.transpose(x.data, (0, axis)),
            "flatten": lambda: x.data.reshape(x.shape[:axis % 2] + (-1,)),
            "concat": lambda: np.concatenate([x.data, x.data], axis=axis),
            "stack": lambda: np.stack([x.data, x.data], axis=axis + 1 if axis >= 0 else axis - 1),
        }.get(name)
        if numpy_out is not None:
            assert np.array_equal(out.data, numpy_out())
        else:  # softmax family: rows along `axis` sum to 1 (in probability space)
            probs = np.exp(out.data) if name.startswith("log_softmax") else out.data
            assert np.allclose(probs.sum(axis=axis), 1.0)


@pytest.mark.parametrize("call, match", [
    (lambda x: x.sum(axis=(0, -2)), "repeated"),
    (lambda x: x.transpose(0, 0), "repeated"),
    (lambda x: x.transpose(0), "permutation"),
    (lambda x: x.sum(axis=1.0), "must be an int"),
    (lambda x: x.transpose(0, True), "must be an int"),
])
def test_axis_repeated_or_not_an_int(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(_x23())


@pytest.mark.parametrize("a, b", [(1e-20, 1e-20), (1e20, 3e19), (-3e-30, 1e-25)])
def test_division_gradient_does_not_overflow_in_the_square_of_the_divisor(a, b):
    # d(a/b)/db = -a / b² = -(a / b) / b: b² alone under- or overflows float32 here
    x = nn.Tensor(np.float32([a]), requires_grad=True)
    y = nn.Tensor(np.float32([b]), requires_grad=True)
    (x / y).sum().backward()
    expected = -(np.float64(np.float32(a)) / np.float32(b)) / np.float32(b)
    assert np.isfinite(y.grad).all() and y.grad.dtype == np.float32
    np.testing.assert_allclose(y.grad, [expected], rtol=1e-6)
    np.testing.assert_allclose(x.grad, [1 / np.float64(np.float32(b))], rtol=1e-6)
