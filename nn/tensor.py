"""A reverse-mode automatic differentiation engine on NumPy arrays.

A ``Tensor`` wraps an ``ndarray`` and remembers which ``Function`` produced it.
Calling ``loss.backward()`` walks that graph in reverse topological order and
applies the chain rule, one ``Function.backward`` at a time. This is the design of
micrograd and of PyTorch's autograd, with arrays instead of scalars.

Writing a new differentiable operation::

    class Square(Function):
        @staticmethod
        def forward(ctx, x):            # x: ndarray
            ctx.save_for_backward(x)
            return x * x                # ndarray
        @staticmethod
        def backward(ctx, grad):        # grad: ndarray, shape of the output
            (x,) = ctx.saved_tensors
            return 2 * x * grad         # one gradient per input (or None)

    y = Square.apply(t)                 # t: Tensor -> y: Tensor

Inside ``forward`` and ``backward`` everything is a plain ndarray: the numeric
kernels never see a Tensor, so they can be tested and timed on their own.
"""
import contextlib
import numbers

import numpy as np
from numpy.exceptions import AxisError

__all__ = [
    "Tensor", "Function", "Context", "no_grad", "enable_grad", "is_grad_enabled",
    "concat", "stack", "where", "as_array", "unbroadcast", "scatter_add_rows",
    "normalize_axis", "normalize_axes",
]

_grad_enabled = True


def is_grad_enabled():
    """Return True when operations are being recorded for backward."""
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Context manager that disables graph recording (evaluation, optimizer steps)."""
    global _grad_enabled
    previous = _grad_enabled
    _grad_enabled = False
    try:
        yield
    finally:
        _grad_enabled = previous


@contextlib.contextmanager
def enable_grad():
    """Context manager that re-enables graph recording inside ``no_grad``."""
    global _grad_enabled
    previous = _grad_enabled
    _grad_enabled = True
    try:
        yield
    finally:
        _grad_enabled = previous


def as_array(value, like=None):
    """Return ``value`` as an ndarray without upcasting float32 data.

    Python scalars and lists of floats become float32 (the library default);
    a Python scalar combined with a Tensor ``like`` takes that Tensor's float dtype,
    so ``x * 0.5`` stays float32. ndarrays keep their dtype (float64 is preserved).
    """
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (numbers.Number, np.generic)) and like is not None:
        if np.issubdtype(like.dtype, np.floating):
            if isinstance(value, (bool, np.bool_)) or np.iscomplexobj(value):
                return np.asarray(value)
            return np.asarray(value, dtype=like.dtype)
    array = np.asarray(value)
    if array.dtype == np.float64 and not isinstance(value, np.generic):
        array = array.astype(np.float32)
    return array


def normalize_axis(axis, ndim, name="axis"):
    """``axis`` as an index in ``[0, ndim)``, negative values counting from the end.

    NumPy's rule: ``-ndim <= axis < ndim``, anything else raises ``AxisError`` (a
    ``ValueError`` and ``IndexError``) instead of wrapping around.

    Args:
        axis (int): the axis asked for.
        ndim (int): number of dimensions of the array it indexes.
        name (str): argument name used in error messages.
    Returns:
        int: the axis in ``[0, ndim)``.
    Raises:
        TypeError: ``axis`` is not an int (bools are refused).
        numpy.exceptions.AxisError: ``axis`` is out of range.
    """
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(axis).__name__} {axis!r}")
    if not -ndim <= axis < ndim:
        valid = f"{-ndim}..{ndim - 1}" if ndim else "none"
        raise AxisError(f"{name}={int(axis)} is out of range for an input with {ndim} "
                        f"dimensions (valid: {valid})")
    return int(axis) % ndim


def normalize_axes(axis, ndim, name="axis"):
    """``axis`` (None, an int or a sequence of ints) as a tuple of distinct axes.

    None means every axis. Each axis goes through ``normalize_axis``.

    Raises:
        TypeError: an axis is not an int.
        numpy.exceptions.AxisError: an axis is out of range.
        ValueError: an axis is repeated (``(0, -2)`` on a 2-D input).
    """
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        axes = tuple(normalize_axis(a, ndim, name) for a in axis)
    else:
        axes = (normalize_axis(axis, ndim, name),)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name}={axis!r} holds a repeated axis (for {ndim} dimensions)")
    return axes


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched, to ``shape``.

    Args:
        grad (ndarray): gradient with the broadcast (output) shape.
        shape (tuple): shape of the input that was broadcast.
    Returns:
        ndarray: gradient of shape ``shape``.
    """
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


class Context:
    """Scratch space a Function's forward leaves for its backward.

    Attributes:
        needs_input_grad (tuple of bool): for each positional input, whether a
            gradient is wanted (PyTorch's name). Kernels use it to skip work,
            e.g. the input gradient of a network's first convolution.
    """

    def __init__(self, fn, inputs):
        self.fn = fn
        self.inputs = inputs
        self.needs_input_grad = tuple(
            isinstance(t, Tensor) and t.requires_grad for t in inputs
        )
        self._saved = ()

    def save_for_backward(self, *arrays):
        """Keep arrays that backward needs (no copy is made)."""
        self._saved = arrays

    @property
    def saved_tensors(self):
        """The arrays given to ``save_for_backward``, in the same order."""
        return self._saved


class Function:
    """Base class of differentiable operations.

    Subclasses define static ``forward(ctx, *arrays, **params) -> ndarray`` and
    ``backward(ctx, grad) -> gradient or tuple of gradients`` (one per positional
    input, None where no gradient is needed) and are called as
    ``MyFunction.apply(*inputs, **params)``. Inputs may be Tensors, ndarrays or
    Python scalars or None (passed to forward as None, e.g. a missing bias);
    only Tensors with ``requires_grad`` receive gradients.
    """

    @staticmethod
    def forward(ctx, *arrays, **params):
        raise NotImplementedError("Function subclasses must define forward")

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("Function subclasses must define backward")

    @classmethod
    def apply(cls, *inputs, **params):
        like = next((t.data for t in inputs if isinstance(t, Tensor)), None)
        arrays = [
            t.data if isinstance(t, Tensor) else (None if t is None else as_array(t, like))
            for t in inputs
        ]
        ctx = Context(cls, inputs)
        out = cls.forward(ctx, *arrays, **params)
        if not isinstance(out, np.ndarray):
            out = np.asarray(out)
        result = Tensor(out)
        if _grad_enabled and any(ctx.needs_input_grad):
            result.requires_grad = True
            result._ctx = ctx
        return result


class Tensor:
    """An ndarray that records the operations applied to it.

    Args:
        data (array-like): the values. Python floats and lists become float32;
            ndarrays keep their dtype.
        requires_grad (bool): accumulate a gradient into ``.grad`` on backward.
            Only floating-point tensors can require a gradient.

    Attributes:
        data (ndarray): the values.
        grad (ndarray or None): the accumulated gradient, same shape as ``data``.
    """

    __array_priority__ = 1000  # ndarray <op> Tensor defers to Tensor's reflected op

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        self.data = as_array(data)
        if requires_grad and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(
                f"requires_grad needs a floating-point tensor, got dtype {self.data.dtype}"
            )
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None
        self._retain_grad = False

    # ------------------------------------------------------------------ basics
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def is_leaf(self):
        return self._ctx is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = np.array2string(self.data, precision=4, threshold=20, edgeitems=2)
        extra = ", requires_grad=True" if self.requires_grad else ""
        fn = f", grad_fn={self._ctx.fn.__name__}" if self._ctx is not None else ""
        return f"Tensor({body}, dtype={self.dtype}{extra}{fn})"

    def numpy(self):
        """The underlying ndarray (shared, not copied)."""
        return self.data

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def detach(self):
        """A new Tensor sharing the data, cut from the graph."""
        return Tensor(self.data)

    @property
    def grad_fn(self):
        """The Function class that produced this tensor (None for a leaf)."""
        return None if self._ctx is None else self._ctx.fn

    @property
    def parents(self):
        """The input Tensors of the Function that produced this tensor (empty for a leaf).

        Following ``parents`` from a loss walks the whole graph back to the leaves.
        """
        if self._ctx is None:
            return ()
        return tuple(t for t in self._ctx.inputs if isinstance(t, Tensor))

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (for inspection)."""
        self._retain_grad = True
        return self

    def zero_grad(self):
        self.grad = None

    def astype(self, dtype):
        """Cast to ``dtype`` (differentiable between float dtypes)."""
        return Cast.apply(self, dtype=np.dtype(dtype))

    # ---------------------------------------------------------------- backward
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into ``.grad`` of every leaf requiring grad.

        Args:
            grad (array-like, optional): gradient of the final objective with
                respect to this tensor, same shape. Needed unless this tensor
                has a single element.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: "
                "no input of its graph has requires_grad=True"
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a scalar output, got shape "
                    f"{self.shape}; pass grad= of that shape"
                )
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(as_array(grad), dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"grad has shape {grad.shape}, expected {self.shape}")

        order = self._topological_order()
        grads = {id(self): grad}
        for node in order:
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._ctx is None or node._retain_grad:
                node.grad = g.copy() if node.grad is None else node.grad + g
            if node._ctx is None:
                continue
            ctx = node._ctx
            input_grads = ctx.fn.backward(ctx, g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(ctx.inputs):
                raise RuntimeError(
                    f"{ctx.fn.__name__}.backward returned {len(input_grads)} gradients "
                    f"for {len(ctx.inputs)} inputs"
                )
            for parent, pg in zip(ctx.inputs, input_grads):
                if not (isinstance(parent, Tensor) and parent.requires_grad) or pg is None:
                    continue
                pg = np.asarray(pg)
                if pg.shape != parent.shape:
                    raise RuntimeError(
                        f"{ctx.fn.__name__}.backward returned a gradient of shape "
                        f"{pg.shape} for an input of shape {parent.shape}"
                    )
                if pg.dtype != parent.dtype:
                    pg = pg.astype(parent.dtype)
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg

    def _topological_order(self):
        """Nodes reachable from self, each after every node that uses it."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                for parent in node._ctx.inputs:
                    if isinstance(parent, Tensor) and parent.requires_grad and id(parent) not in visited:
                        stack.append((parent, False))
        order.reverse()
        return order

    # -------------------------------------------------------------- arithmetic
    def __add__(self, other):
        return Add.apply(self, other)

    def __radd__(self, other):
        return Add.apply(other, self)

    def __sub__(self, other):
        return Sub.apply(self, other)

    def __rsub__(self, other):
        return Sub.apply(other, self)

    def __mul__(self, other):
        return Mul.apply(self, other)

    def __rmul__(self, other):
        return Mul.apply(other, self)

    def __truediv__(self, other):
        return Div.apply(self, other)

    def __rtruediv__(self, other):
        return Div.apply(other, self)

    def __neg__(self):
        return Neg.apply(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return Pow.apply(self, exponent)
        return PowScalar.apply(self, exponent=exponent)

    def __rpow__(self, base):
        return Pow.apply(base, self)

    def __matmul__(self, other):
        return MatMul.apply(self, other)

    def __rmatmul__(self, other):
        return MatMul.apply(other, self)

    # comparisons give boolean tensors, outside the graph
    def __lt__(self, other):
        return Tensor(self.data < as_array(other, self.data))

    def __le__(self, other):
        return Tensor(self.data <= as_array(other, self.data))

    def __gt__(self, other):
        return Tensor(self.data > as_array(other, self.data))

    def __ge__(self, other):
        return Tensor(self.data >= as_array(other, self.data))

    __hash__ = object.__hash__

    # ------------------------------------------------------------------- unary
    def exp(self):
        return Exp.apply(self)

    def log(self):
        return Log.apply(self)

    def sqrt(self):
        return Sqrt.apply(self)

    def abs(self):
        return Abs.apply(self)

    def clip(self, min=None, max=None):
        return Clip.apply(self, min=min, max=max)

    # -------------------------------------------------------------- reductions
    def sum(self, axis=None, keepdims=False):
        return Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return Max.apply(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return -Max.apply(-self, axis=axis, keepdims=keepdims)

    # ------------------------------------------------------------------- shape
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape=shape)

    def flatten(self, start_axis=0):
        """Merge the axes from ``start_axis`` on into one (``x.flatten(1)``: ``(N, -1)``)."""
        start_axis = normalize_axis(start_axis, self.ndim, "start_axis")
        return self.reshape(self.shape[:start_axis] + (-1,))

    def transpose(self, *axes):
        """Permute the axes (``x.transpose(0, 2, 1)``); no argument reverses them."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return Transpose.apply(self, axes=axes or None)

    @property
    def T(self):
        return self.transpose()

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        return GetItem.apply(self, index=index)


# ====================================================================== ops
def _reduce_axes(axis, ndim):
    return normalize_axes(axis, ndim)


class Cast(Function):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.in_dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.in_dtype)


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        return (
            unbroadcast(grad, sa) if ctx.needs_input_grad[0] else None,
            unbroadcast(grad, sb) if ctx.needs_input_grad[1] else None,
        )


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        return (
            unbroadcast(grad, sa) if ctx.needs_input_grad[0] else None,
            unbroadcast(-grad, sb) if ctx.needs_input_grad[1] else None,
        )


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return (
            unbroadcast(grad * b, a.shape) if ctx.needs_input_grad[0] else None,
            unbroadcast(grad * a, b.shape) if ctx.needs_input_grad[1] else None,
        )


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        ga = unbroadcast(grad / b, a.shape) if ctx.needs_input_grad[0] else None
        # -a / b² as -(a / b) / b (PyTorch's form): b² alone under- or overflows sooner
        gb = unbroadcast(-grad * (a / b) / b, b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return -grad


class PowScalar(Function):
    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return a ** exponent

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        p = ctx.exponent
        return grad * p * a ** (p - 1)


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved_tensors
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(grad * b * a ** (b - 1), a.shape)
        if ctx.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_a = np.where(a > 0, np.log(np.where(a > 0, a, 1)), 0)
            gb = unbroadcast(grad * out * log_a, b.shape)
        return ga, gb


class MatMul(Function):
    """Matrix product with NumPy's ``@`` semantics (batched, broadcast)."""

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul needs at least 1-D operands")
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        # Promote 1-D operands to matrices as NumPy does, and the gradient with them.
        a2 = a[None, :] if a.ndim == 1 else a  # (..., m, k)
        b2 = b[:, None] if b.ndim == 1 else b  # (..., k, n)
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        g = grad.reshape(batch + (a2.shape[-2], b2.shape[-1]))  # (..., m, n)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = g @ np.swapaxes(b2, -1, -2)
            ga = unbroadcast(ga, a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            gb = np.swapaxes(a2, -1, -2) @ g
            gb = unbroadcast(gb, b2.shape).reshape(b.shape)
        return ga, gb


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * out


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad / a


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad / (2 * out)


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.abs(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad * np.sign(a)


class Clip(Function):
    """Clamp to [min, max]; the gradient passes where the value was not clamped."""

    @staticmethod
    def forward(ctx, a, min=None, max=None):
        ctx.save_for_backward(a)
        ctx.bounds = (min, max)
        return np.clip(a, min, max)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        mask = np.ones(a.shape, dtype=bool)
        if lo is not None:
            mask &= a >= lo
        if hi is not None:
            mask &= a <= hi
        return grad * mask


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape = a.shape
        ctx.axes = _reduce_axes(axis, a.ndim)
        return np.sum(a, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        grad = np.expand_dims(grad, ctx.axes) if grad.ndim != len(ctx.shape) else grad
        return np.broadcast_to(grad, ctx.shape).copy()


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape = a.shape
        ctx.axes = _reduce_axes(axis, a.ndim)
        ctx.count = int(np.prod([a.shape[i] for i in ctx.axes]))
        return np.mean(a, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        grad = np.expand_dims(grad, ctx.axes) if grad.ndim != len(ctx.shape) else grad
        return np.broadcast_to(grad / ctx.count, ctx.shape).copy()


class Max(Function):
    """Maximum over axes; ties share the gradient equally (like ``torch.amax``)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        axes = _reduce_axes(axis, a.ndim)
        if a.size == 0:
            raise ValueError(f"max over an empty tensor of shape {a.shape}")
        out = np.max(a, axis=axes, keepdims=True)
        ctx.save_for_backward(a, out)
        ctx.axes = axes
        return out if keepdims else np.squeeze(out, axis=axes)

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved_tensors
        mask = a == out
        count = mask.sum(axis=ctx.axes, keepdims=True)
        grad = grad.reshape(out.shape)
        return mask * (grad / count)


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)


class Transpose(Function):
    @staticmethod
    def forward(ctx, a, axes=None):
        if axes is None:
            axes = tuple(range(a.ndim))[::-1]
        else:
            axes = normalize_axes(axes, a.ndim, "axes")
            if len(axes) != a.ndim:
                raise ValueError(f"transpose axes {axes} must be a permutation of all "
                                 f"{a.ndim} axes of the input")
        ctx.inverse = tuple(np.argsort(axes))
        return np.transpose(a, axes)

    @staticmethod
    def backward(ctx, grad):
        return np.transpose(grad, ctx.inverse)


def _is_basic_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice, type(None), type(Ellipsis))) for i in items)


def _is_unique_sorted(flat):
    """True when ``flat`` is strictly increasing, hence free of repeats (an O(k) check).

    Catches the common unique cases for free: ``x[np.arange(n), labels]``, positions
    from a boolean mask (``np.nonzero`` is sorted), sorted index lists.
    """
    return flat.size < 2 or bool(np.all(flat[1:] > flat[:-1]))


def scatter_add_rows(num_rows, flat, values):
    """Sum the rows of ``values`` into ``num_rows`` rows at positions ``flat``.

    ``out[flat[j]] += values[j]`` for every j, with repeated positions adding up — what
    ``np.add.at`` does, without its per-element slowness (~25x slower than this):
    plain assignment when the positions are strictly increasing (no repeats),
    ``np.bincount`` for single values, and a sparse ``(num_rows, k)`` 0/1 matrix
    times ``values`` (a C segment sum) for rows.

    Args:
        num_rows (int): rows of the output.
        flat (ndarray[k] int): destination row of each value row.
        values (ndarray[k, T]): float.
    Returns:
        ndarray[num_rows, T]: same dtype as ``values``.
    """
    k, width = values.shape
    if _is_unique_sorted(flat):
        out = np.zeros((num_rows, width), dtype=values.dtype)
        out[flat] = values
        return out
    if width == 1:
        summed = np.bincount(flat, weights=values[:, 0], minlength=num_rows)  # float64
        return summed.astype(values.dtype, copy=False).reshape(num_rows, 1)
    import scipy.sparse  # a dependency of the library; imported here to keep `import nn` light

    ones = np.ones(k, dtype=values.dtype)
    selector = scipy.sparse.csr_matrix((ones, (flat, np.arange(k))), shape=(num_rows, k))
    return np.asarray(selector @ values)  # (num_rows, T)


def _leading_advanced_index(index, shape):
    """Split an advanced index into (integer arrays over the leading axes, count).

    Returns ``(arrays, n_lead)`` when ``index`` is integer/boolean arrays (and ints) on
    the first ``n_lead`` axes followed only by full slices / Ellipsis — the gather
    ``x[rows]``, ``x[batch, i, j]``, ``x[mask]`` forms; otherwise None.
    """
    items = index if isinstance(index, tuple) else (index,)
    arrays = []
    position = 0
    while position < len(items):
        item = items[position]
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            arrays.append(np.asarray(item))
        elif isinstance(item, np.ndarray) and item.dtype == bool:
            arrays.extend(np.nonzero(item))  # a k-D mask consumes k axes
        elif isinstance(item, (np.ndarray, list)):
            array = np.asarray(item)
            if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
                if array.size:  # e.g. a list of bools: leave it to the generic path
                    return None
                array = array.astype(np.intp)
            arrays.append(array)
        else:
            break
        position += 1
    if not arrays:
        return None
    for item in items[position:]:
        if item is Ellipsis:
            continue
        if not (isinstance(item, slice) and item == slice(None)):
            return None
    if len(arrays) > len(shape):
        return None
    return arrays, len(arrays)


class GetItem(Function):
    """Indexing. Basic indices (ints, slices) write the gradient back by assignment;
    advanced (fancy) indices sum the gradient of repeated positions (``x[[0, 0]]``
    sends twice the gradient to ``x[0]``), using ``scatter_add_rows`` instead of the
    slow ``np.add.at``."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, grad):
        shape, index = ctx.shape, ctx.index
        if _is_basic_index(index):
            out = np.zeros(shape, dtype=grad.dtype)
            out[index] = grad
            return out
        if isinstance(index, np.ndarray) and index.dtype == bool:
            out = np.zeros(shape, dtype=grad.dtype)
            out[index] = grad  # mask positions are unique
            return out
        lead = _leading_advanced_index(index, shape)
        if lead is not None:
            arrays, n_lead = lead
            lead_shape, trail_shape = shape[:n_lead], shape[n_lead:]
            arrays = [a % n for a, n in zip(np.broadcast_arrays(*arrays), lead_shape)]
            flat = np.ravel_multi_index(arrays, lead_shape).reshape(-1)  # (k,)
            width = int(np.prod(trail_shape, dtype=np.int64))
            values = grad.reshape(flat.size, width)  # (k, prod(trailing))
            num_rows = int(np.prod(lead_shape, dtype=np.int64))
            return scatter_add_rows(num_rows, flat, values).reshape(shape)
        # Any other mix (arrays after slices, newaxis, ...): number every element of
        # the input, index those numbers like the input, and scatter by number.
        positions = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape)[index]
        values = grad.reshape(-1, 1)  # (k, 1)
        size = int(np.prod(shape, dtype=np.int64))
        return scatter_add_rows(size, positions.reshape(-1), values).reshape(shape)


class Concat(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        axis = normalize_axis(axis, arrays[0].ndim)
        ctx.axis = axis
        ctx.splits = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        return tuple(np.split(grad, ctx.splits, axis=ctx.axis))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        axis = normalize_axis(axis, arrays[0].ndim + 1)  # an axis of the output
        ctx.axis = axis
        ctx.count = len(arrays)
        return np.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        return tuple(np.take(grad, i, axis=ctx.axis) for i in range(ctx.count))


class Where(Function):
    @staticmethod
    def forward(ctx, condition, a, b):
        condition = condition.astype(bool)
        ctx.save_for_backward(condition)
        ctx.shapes = (a.shape, b.shape)
        return np.where(condition, a, b)

    @staticmethod
    def backward(ctx, grad):
        (condition,) = ctx.saved_tensors
        sa, sb = ctx.shapes
        ga = unbroadcast(np.where(condition, grad, 0), sa) if ctx.needs_input_grad[1] else None
        gb = unbroadcast(np.where(condition, 0, grad), sb) if ctx.needs_input_grad[2] else None
        return None, ga, gb


def _check_sequence(tensors, name):
    if not isinstance(tensors, (list, tuple)) or len(tensors) == 0:
        raise ValueError(f"{name} expects a non-empty list of tensors")


def concat(tensors, axis=0):
    """Join tensors along an existing axis (``np.concatenate``)."""
    _check_sequence(tensors, "concat")
    return Concat.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    """Join tensors along a new axis (``np.stack``)."""
    _check_sequence(tensors, "stack")
    return Stack.apply(*tensors, axis=axis)


def where(condition, a, b):
    """Elementwise ``a if condition else b``; gradients flow to the chosen side."""
    if isinstance(condition, Tensor):
        condition = condition.data
    return Where.apply(np.asarray(condition), a, b)
