"""Numerical gradient checking: compare backward with central differences.

The function is ``nn.gradcheck`` (PyTorch's name); this module is ``gradient_check`` so
that ``nn.gradcheck`` names one thing, the function.

For a function ``f`` with output ``y`` we fix a random direction ``v`` (same shape as
``y``) and check the gradient of the scalar ``L = sum(v * f(x))``::

    dL/dx[i]  ≈  (L(x + eps·e_i) - L(x - eps·e_i)) / (2·eps)

A random projection checks every output at once (an error survives it only for
``v`` in a set of measure zero) and costs two forward calls per input element.
"""
import numpy as np

from nn.tensor import Tensor, no_grad

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree (or backward is not deterministic)."""


def _scalar_objective(fn, inputs, direction):
    with no_grad():
        out = fn(*inputs)
    return float(np.sum(np.asarray(out.data, dtype=np.float64) * direction))


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Check ``fn``'s backward against float64 central differences.

    Args:
        fn (callable): takes ``*inputs`` and returns a Tensor of any shape.
        inputs (Tensor or sequence): the arguments. Tensors with ``requires_grad``
            must be float64 and are checked; anything else is passed through.
        eps (float): finite-difference step.
        atol, rtol (float): pass when ``|analytic - numeric| <= atol + rtol·|numeric|``
            for every element.
        seed (int): seed of the random output direction.
    Returns:
        bool: True.
    Raises:
        GradcheckError: naming the input, the worst element's index and both values;
            or when two backward passes give different gradients.
        TypeError: an input to check is not float64.
    """
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    inputs = tuple(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(
                f"gradcheck: input {i} has dtype {inputs[i].dtype}; central differences need float64"
            )

    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(out.shape)

    def analytic():
        for i in checked:
            inputs[i].grad = None
        y = fn(*inputs)
        if not y.requires_grad:
            raise GradcheckError("gradcheck: the output does not depend on any checked input")
        y.backward(direction.astype(y.dtype))
        return [
            np.zeros(inputs[i].shape) if inputs[i].grad is None else inputs[i].grad.copy()
            for i in checked
        ]

    first = analytic()
    second = analytic()
    for i, g1, g2 in zip(checked, first, second):
        if not np.array_equal(g1, g2):
            raise GradcheckError(f"gradcheck: backward is not deterministic for input {i}")

    for i, grad in zip(checked, first):
        x = inputs[i].data
        numeric = np.zeros(x.shape)
        flat = x.reshape(-1)  # a view: perturbing it perturbs the input
        if not np.shares_memory(flat, x):
            raise ValueError(f"gradcheck: input {i} must be contiguous")
        num_flat = numeric.reshape(-1)
        for k in range(flat.size):
            original = flat[k]
            flat[k] = original + eps
            plus = _scalar_objective(fn, inputs, direction)
            flat[k] = original - eps
            minus = _scalar_objective(fn, inputs, direction)
            flat[k] = original
            num_flat[k] = (plus - minus) / (2 * eps)
        error = np.abs(grad - numeric) - (atol + rtol * np.abs(numeric))
        if error.size and error.max() > 0:
            worst = np.unravel_index(int(np.argmax(error)), x.shape)
            raise GradcheckError(
                f"gradcheck: input {i} at index {tuple(int(w) for w in worst)}: "
                f"analytic {grad[worst]:.10g} vs numeric {numeric[worst]:.10g}"
            )
    return True
