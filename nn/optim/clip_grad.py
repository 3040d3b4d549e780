"""Gradient clipping: rescale all gradients together when their joint norm is too large
(Pascanu et al., 2013, "On the difficulty of training recurrent neural networks")."""
import math

import numpy as np

from nn._checks import check_non_negative, check_positive
from nn.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    params = list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"parameters[{i}] must be a Tensor/Parameter, got {type(p).__name__}")
    return [p for p in params if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients in place so that their joint norm is at most ``max_norm``.

    ``total = ‖(‖g_1‖, ‖g_2‖, ...)‖_p``; every gradient is multiplied by
    ``min(1, max_norm / (total + 1e-6))`` (PyTorch's rule). Parameters whose grad is
    None are skipped.

    Args:
        parameters (iterable of Parameter or a Tensor).
        max_norm (float): the largest allowed norm, >= 0.
        norm_type (float): p of the p-norm; ``float("inf")`` for the max norm.
        error_if_nonfinite (bool): raise if the total norm is NaN or infinite.
    Returns:
        float: the total norm before clipping.
    """
    max_norm = check_non_negative(max_norm, "max_norm", finite=False)
    norm_type = check_positive(norm_type, "norm_type", finite=False)
    grads = _grads(parameters)
    if not grads:
        return 0.0
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(g.grad))) if g.grad.size else 0.0 for g in grads)
    else:
        norms = [np.sum(np.abs(g.grad.astype(np.float64)) ** norm_type) for g in grads]
        total = float(np.sum(norms)) ** (1.0 / norm_type)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise RuntimeError(f"the total norm of order {norm_type} of the gradients is {total}")
        return total
    coef = min(1.0, max_norm / (total + 1e-6))
    if coef < 1.0:
        for p in grads:
            p.grad = p.grad * p.grad.dtype.type(coef)
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place."""
    clip_value = check_non_negative(clip_value, "clip_value", finite=False)
    for p in _grads(parameters):
        np.clip(p.grad, -clip_value, clip_value, out=p.grad)
