"""Loss functions for classification, box regression and segmentation.

Every loss takes Tensors or ndarrays and returns a Tensor; the class axis is last
(``logits (..., K)``). ``reduction`` is "none" (per-element losses), "sum" or "mean".

Conventions that differ from a naive formula, on purpose:

- ``reduction="mean"`` over zero elements (no boxes, every target ignored) returns
  0 with a zero gradient, not NaN (PyTorch returns NaN). A batch without positives
  must not poison training.
- Everything is computed from ``log_softmax`` / ``log_sigmoid`` of the logits, never
  from ``log(softmax)``, so logits of ±1000 give finite losses and gradients.

The hot losses (cross-entropy, BCE, focal, smooth L1) have hand-written backward
kernels; ``dice_loss`` is composed from differentiable Tensor operations.
"""
import numpy as np

from nn._checks import (check_array, check_choice, check_in_range, check_int, check_non_negative,
                       check_positive, check_probability, check_same_shape, check_shape)
from nn.functional.activation import log_sigmoid_forward, log_softmax_forward, sigmoid_forward
from nn.functional.activation import softmax
from nn.tensor import Function, Tensor

__all__ = [
    "cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal_loss",
    "smooth_l1_loss", "l1_loss", "mse_loss", "dice_loss",
]

_REDUCTIONS = ("none", "mean", "sum")


# ------------------------------------------------------------------ checks
def _as_float_like(value, like):
    """A target/weight as an ndarray of ``like``'s dtype (int targets become float)."""
    return np.asarray(value, dtype=like.dtype)


# --------------------------------------------------------------- reduction
def reduce_forward(per_element, reduction, denominator=None):
    """Apply ``reduction`` to per-element losses.

    Args:
        per_element (ndarray[...]): losses.
        reduction (str): "none", "sum" or "mean".
        denominator (float, optional): what "mean" divides by (default: the count).
    Returns:
        ndarray: 0-d for "sum"/"mean", ``per_element`` for "none". A mean with a
        zero denominator is 0.
    """
    if reduction == "none":
        return per_element
    total = per_element.sum(dtype=per_element.dtype)
    if reduction == "sum":
        return np.asarray(total)
    denominator = per_element.size if denominator is None else denominator
    if denominator == 0:
        return np.zeros((), dtype=per_element.dtype)
    return np.asarray(total / per_element.dtype.type(denominator))


def reduce_backward(grad, shape, dtype, reduction, denominator=None):
    """The gradient of each per-element loss, given the gradient of the reduced loss.

    Returns:
        ndarray[shape]: ``grad`` itself for "none", broadcast for "sum", divided by
        the denominator for "mean" (zero when the denominator is 0).
    """
    if reduction == "none":
        return grad
    if reduction == "mean":
        count = int(np.prod(shape, dtype=np.int64)) if denominator is None else denominator
        scale = 0.0 if count == 0 else 1.0 / count
        grad = grad * dtype.type(scale)
    return np.broadcast_to(np.asarray(grad, dtype=dtype), shape)


# ============================================================ cross-entropy
def cross_entropy_forward(logits, target, weight=None, ignore_index=-100, label_smoothing=0.0):
    """Per-row cross-entropy with class weights, an ignored label and label smoothing.

    With ``logp = log_softmax(x)``, ``w_t = weight[t]`` (0 for an ignored row) and
    smoothing ``ε`` over ``K`` classes (Szegedy et al., 2016, "Rethinking the Inception
    Architecture", as implemented by PyTorch)::

        loss_i = (1 - ε) · (-w_t · logp[i, t_i])  +  (ε / K) · (-Σ_k w_k · logp[i, k])

    Args:
        logits (ndarray[M, K]): float.
        target (ndarray[M]): int class indices (or ``ignore_index``).
        weight (ndarray[K] or None): per-class weights, logits' dtype.
        ignore_index (int): rows with this target contribute 0.
        label_smoothing (float): ε in [0, 1].
    Returns:
        tuple: ``(per_row ndarray[M], w_t ndarray[M], probs ndarray[M, K])`` where
        ``probs = softmax(x)`` is kept for the backward; the PyTorch mean divides
        ``per_row.sum()`` by ``w_t.sum()``.
    """
    num_rows, num_classes = logits.shape
    valid = target != ignore_index
    safe_target = np.where(valid, target, 0)
    logp, probs = log_softmax_forward(logits, axis=-1, return_probs=True)
    rows = np.arange(num_rows)
    picked = logp[rows, safe_target]  # (M,) log-probability of the target class
    class_weight = np.ones(num_classes, dtype=logits.dtype) if weight is None else weight
    w_t = class_weight[safe_target] * valid  # (M,) zero for ignored rows
    per_row = -(1.0 - label_smoothing) * w_t * picked
    if label_smoothing > 0:
        smooth = -(logp * class_weight).sum(axis=-1) * valid  # (M,)
        per_row = per_row + (label_smoothing / num_classes) * smooth
    return per_row.astype(logits.dtype, copy=False), w_t, probs


def cross_entropy_backward(grad_rows, probs, target, w_t, valid, weight=None, label_smoothing=0.0):
    """Gradient of ``cross_entropy_forward`` with respect to the logits.

    With ``G = dL/dlogp`` the log-softmax backward is ``G - softmax(x) · Σ_k G_k``.
    ``G`` is ``-(1 - ε) w_t`` at the target column plus ``-(ε/K) w_k`` everywhere.

    Args:
        grad_rows (ndarray[M]): gradient of each row's loss.
        probs (ndarray[M, K]), target (ndarray[M]), w_t (ndarray[M]), valid (ndarray[M] bool):
            from the forward (``probs = softmax(x)``; ``target`` with ignored rows
            replaced by 0).
    Returns:
        ndarray[M, K]
    """
    num_rows, num_classes = probs.shape
    target_coef = (1.0 - label_smoothing) * w_t * grad_rows  # (M,) -G at the target column
    g_sum = -target_coef  # (M,) Σ_k G_k
    if label_smoothing > 0:
        class_weight = np.ones(num_classes, dtype=probs.dtype) if weight is None else weight
        smooth_coef = (label_smoothing / num_classes) * grad_rows * valid  # (M,)
        g_smooth = -smooth_coef[:, None] * class_weight[None, :]  # (M, K)
        g_sum = g_sum - smooth_coef * class_weight.sum()
        dx = g_smooth - probs * g_sum[:, None]
    else:
        dx = -probs * g_sum[:, None]
    # One target per row: the column indices are unique within each row.
    dx[np.arange(num_rows), target] -= target_coef
    return dx.astype(probs.dtype, copy=False)


class CrossEntropyFunction(Function):
    """Autograd glue of ``cross_entropy_forward`` / ``cross_entropy_backward``."""

    @staticmethod
    def forward(ctx, logits, target=None, weight=None, ignore_index=-100, reduction="mean",
                label_smoothing=0.0):
        batch_shape = logits.shape[:-1]
        num_classes = logits.shape[-1]
        rows = int(np.prod(batch_shape, dtype=np.int64))
        logits2 = logits.reshape(rows, num_classes)  # (M, K)
        target1 = target.reshape(rows)  # (M,)
        per_row, w_t, probs = cross_entropy_forward(
            logits2, target1, weight, ignore_index, label_smoothing
        )
        valid = target1 != ignore_index
        ctx.probs, ctx.w_t, ctx.valid = probs, w_t, valid
        ctx.target = np.where(valid, target1, 0)
        ctx.weight, ctx.label_smoothing = weight, label_smoothing
        ctx.reduction, ctx.batch_shape, ctx.logits_shape = reduction, batch_shape, logits.shape
        # PyTorch's weighted mean: divide by the summed weight of the non-ignored targets.
        ctx.denominator = float(w_t.sum(dtype=np.float64))
        return reduce_forward(per_row.reshape(batch_shape), reduction, ctx.denominator)

    @staticmethod
    def backward(ctx, grad):
        dtype = ctx.probs.dtype
        grad_rows = reduce_backward(grad, ctx.batch_shape, dtype, ctx.reduction, ctx.denominator)
        grad_rows = np.reshape(grad_rows, -1)  # (M,)
        dx = cross_entropy_backward(
            grad_rows, ctx.probs, ctx.target, ctx.w_t, ctx.valid, ctx.weight, ctx.label_smoothing
        )
        return dx.reshape(ctx.logits_shape)


def cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Softmax cross-entropy with PyTorch's semantics and the class axis last.

    ``loss_i = -w[t_i] · log softmax(x_i)[t_i]`` (with optional label smoothing, see
    ``cross_entropy_forward``). "mean" divides the sum by ``Σ_i w[t_i]`` over the
    non-ignored targets (the count when unweighted); if every target is ignored the
    loss is 0 with a zero gradient.

    Args:
        logits (Tensor or ndarray[..., K]): unnormalized scores, float.
        target (ndarray or Tensor[...]): int class indices in [0, K) or ``ignore_index``.
        weight (ndarray[K], optional): per-class weights (non-negative).
        ignore_index (int): target value that contributes nothing.
        reduction (str): "none" (shape ``target.shape``), "mean" or "sum".
        label_smoothing (float): ε in [0, 1].
    Returns:
        Tensor: scalar, or ``target.shape`` for "none"; the logits' dtype.
    Raises:
        ValueError: shapes that do not match, a target outside [0, K), bad options.
        TypeError: non-float logits, non-integer targets.
    """
    x = check_array(logits, "logits", "float")
    if x.ndim < 1:
        raise ValueError("logits must have shape (..., K), got a 0-d array")
    t = check_array(target, "target")
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    if t.shape != x.shape[:-1]:
        raise ValueError(f"target must have shape {x.shape[:-1]} (logits without the class axis), "
                         f"got {t.shape}")
    check_choice(reduction, "reduction", _REDUCTIONS)
    label_smoothing = check_probability(label_smoothing, "label_smoothing")
    ignore_index = check_int(ignore_index, "ignore_index")
    num_classes = x.shape[-1]
    valid = t != ignore_index
    if np.any(valid & ((t < 0) | (t >= num_classes))):
        bad = t[valid & ((t < 0) | (t >= num_classes))]
        raise ValueError(f"target values must be in [0, {num_classes}) or ignore_index="
                         f"{ignore_index}, got {bad[:5].tolist()}")
    if weight is not None:
        w = check_array(weight, "weight", "float")
        check_shape(w, "weight", (num_classes,))
        if np.any(w < 0) or not np.all(np.isfinite(w)):
            raise ValueError("weight must be finite and non-negative")
        weight = w.astype(x.dtype, copy=False)
    return CrossEntropyFunction.apply(
        logits, target=t, weight=weight, ignore_index=int(ignore_index),
        reduction=reduction, label_smoothing=label_smoothing,
    )


# ========================================================== binary / focal
def bce_with_logits_forward(x, y, pos_weight=None):
    """``-[p_w · y · log σ(x) + (1 - y) · log σ(-x)]`` elementwise, stable for any x."""
    log_p = log_sigmoid_forward(x)
    log_not_p = log_sigmoid_forward(-x)
    positive = y if pos_weight is None else pos_weight * y
    return -(positive * log_p + (1 - y) * log_not_p)


class BCEWithLogitsFunction(Function):
    """Binary cross-entropy on logits; gradients for the logits and the targets.

    ``dL/dx = (p_w·y + 1 - y)·σ(x) - p_w·y`` (``σ(x) - y`` without pos_weight) and
    ``dL/dy = -p_w·log σ(x) + log σ(-x)``; both are multiplied by ``weight``.
    """

    @staticmethod
    def forward(ctx, x, y, weight=None, pos_weight=None, reduction="mean"):
        per = bce_with_logits_forward(x, y, pos_weight)
        if weight is not None:
            per = per * weight
        per = per.astype(x.dtype, copy=False)
        ctx.save_for_backward(x, y)
        ctx.weight, ctx.pos_weight, ctx.reduction = weight, pos_weight, reduction
        return reduce_forward(per, reduction)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        g = reduce_backward(grad, x.shape, x.dtype, ctx.reduction)
        if ctx.weight is not None:
            g = g * ctx.weight
        dx = dy = None
        pw = 1.0 if ctx.pos_weight is None else ctx.pos_weight
        if ctx.needs_input_grad[0]:
            p = sigmoid_forward(x)
            dx = g * ((pw * y + 1 - y) * p - pw * y)
        if ctx.needs_input_grad[1]:
            dy = g * (-pw * log_sigmoid_forward(x) + log_sigmoid_forward(-x))
        return dx, dy


def _broadcastable(array, shape, name):
    try:
        np.broadcast_shapes(array.shape, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {array.shape} does not broadcast to {shape}") from None
    if np.broadcast_shapes(array.shape, shape) != tuple(shape):
        raise ValueError(f"{name} of shape {array.shape} would enlarge the loss shape {shape}")


def binary_cross_entropy_with_logits(logits, target, reduction="mean", weight=None,
                                     pos_weight=None):
    """Binary cross-entropy of ``sigmoid(logits)`` against targets in [0, 1].

    ``loss = -weight · [pos_weight · y · log σ(x) + (1 - y) · log σ(-x)]``, computed with
    ``log σ(x) = min(x, 0) - log(1 + exp(-|x|))`` so logits of ±1000 are exact.

    Args:
        logits (Tensor or ndarray[...]): float.
        target (Tensor or ndarray[...]): same shape, values in [0, 1] (soft labels allowed).
        reduction (str): "none", "mean" or "sum" (third, as in DESIGN.md's contract;
            pass ``weight`` by keyword).
        weight (ndarray, optional): broadcastable to the logits' shape.
        pos_weight (ndarray, optional): weight of the positive term, broadcastable
            (e.g. ``(K,)`` for K binary classes on the last axis).
    Returns:
        Tensor: scalar or the logits' shape; the logits' dtype.
    """
    x = check_array(logits, "logits", "float")
    y = check_array(target, "target")
    check_same_shape(y, "target", x, "logits")
    check_choice(reduction, "reduction", _REDUCTIONS)
    if weight is not None:
        weight = _as_float_like(check_array(weight, "weight"), x)
        _broadcastable(weight, x.shape, "weight")
    if pos_weight is not None:
        pos_weight = _as_float_like(check_array(pos_weight, "pos_weight"), x)
        _broadcastable(pos_weight, x.shape, "pos_weight")
    if not isinstance(target, Tensor):
        target = _as_float_like(y, x)
    elif not np.issubdtype(y.dtype, np.floating):
        target = _as_float_like(y, x)
    return BCEWithLogitsFunction.apply(
        logits, target, weight=weight, pos_weight=pos_weight, reduction=reduction
    )


def sigmoid_focal_loss_forward(x, y, alpha=0.25, gamma=2.0):
    """Per-element focal loss (Lin et al., 2017, "Focal Loss for Dense Object Detection").

    With ``p = σ(x)``, ``p_t = p·y + (1 - p)·(1 - y)``, ``α_t = α·y + (1 - α)·(1 - y)``::

        FL = α_t · (1 - p_t)^γ · BCE(x, y)

    exactly torchvision's ``sigmoid_focal_loss``; ``alpha < 0`` drops ``α_t``.
    """
    ce = bce_with_logits_forward(x, y)
    p = sigmoid_forward(x)
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


class SigmoidFocalLossFunction(Function):
    """Hand-written backward of the focal loss, finite for logits of any size.

    With ``m = 1 - p_t``: ``dm/dx = -(2y - 1)·p(1 - p)``, ``dm/dy = 1 - 2p``,
    ``dCE/dx = p - y``, ``dCE/dy = -x``, ``dα_t/dy = 2α - 1``.
    """

    @staticmethod
    def forward(ctx, x, y, alpha=0.25, gamma=2.0, reduction="none"):
        per = sigmoid_focal_loss_forward(x, y, alpha, gamma).astype(x.dtype, copy=False)
        ctx.save_for_backward(x, y)
        ctx.alpha, ctx.gamma, ctx.reduction = alpha, gamma, reduction
        return reduce_forward(per, reduction)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        alpha, gamma = ctx.alpha, ctx.gamma
        g = reduce_backward(grad, x.shape, x.dtype, ctx.reduction)
        p = sigmoid_forward(x)
        ce = bce_with_logits_forward(x, y)
        m = 1 - (p * y + (1 - p) * (1 - y))  # 1 - p_t, in [0, 1]
        modulator = m ** gamma
        # d(m^γ)/dm = γ·m^(γ-1). At m = 0 with γ < 1 the power is infinite, but there
        # p(1 - p) = 0 so dm is 0 too: take the product as 0 instead of inf·0 = NaN.
        with np.errstate(divide="ignore"):
            power = m ** (gamma - 1)
        d_modulator = gamma * np.where(np.isfinite(power), power, 0)
        if alpha >= 0:
            alpha_t = alpha * y + (1 - alpha) * (1 - y)
        else:
            alpha_t = np.ones_like(x)
        dx = dy = None
        if ctx.needs_input_grad[0]:
            dm_dx = -(2 * y - 1) * p * (1 - p)
            dx = g * alpha_t * ((p - y) * modulator + ce * d_modulator * dm_dx)
        if ctx.needs_input_grad[1]:
            dm_dy = 1 - 2 * p
            d = alpha_t * (-x * modulator + ce * d_modulator * dm_dy)
            if alpha >= 0:
                d = d + (2 * alpha - 1) * ce * modulator
            dy = g * d
        return dx, dy


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """Focal loss of RetinaNet (Lin et al., 2017), torchvision's definition.

    ``FL = α_t · (1 - p_t)^γ · BCE(x, y)`` with ``p = σ(x)``,
    ``p_t = p·y + (1 - p)(1 - y)``, ``α_t = α·y + (1 - α)(1 - y)``; ``alpha < 0``
    disables the α weighting. The backward is hand-written and stays finite for
    logits of ±100 (and beyond).

    Args:
        logits (Tensor or ndarray[...]): float, e.g. ``(N, A·H·W, K)`` class logits.
        targets (Tensor or ndarray[...]): same shape, in [0, 1] (one-hot for classes).
        alpha (float): balance of positives; negative to disable.
        gamma (float): focusing exponent >= 0.
        reduction (str): "none" (default, as torchvision), "mean" or "sum".
    Returns:
        Tensor: per-element losses or a scalar; the logits' dtype.
    """
    x = check_array(logits, "logits", "float")
    y = check_array(targets, "targets")
    check_same_shape(y, "targets", x, "logits")
    check_choice(reduction, "reduction", _REDUCTIONS)
    alpha = check_in_range(alpha, "alpha", None, 1)
    gamma = check_non_negative(gamma, "gamma")
    if not isinstance(targets, Tensor) or not np.issubdtype(y.dtype, np.floating):
        targets = _as_float_like(y, x)
    return SigmoidFocalLossFunction.apply(logits, targets, alpha=alpha, gamma=gamma,
                                          reduction=reduction)


# ============================================================== regression
def _save_difference(ctx, a, b, reduction):
    """``d = a - b``, saved for the backward with the reduction."""
    d = a - b
    ctx.save_for_backward(d)
    ctx.reduction = reduction
    return d


def _difference_grads(ctx, grad, local):
    """Gradients of a loss of ``d = input - target`` whose per-element derivative
    ``dloss/dd`` is ``local``: ``g · local`` for the input, ``-g · local`` for the target."""
    (d,) = ctx.saved_tensors
    gd = reduce_backward(grad, d.shape, d.dtype, ctx.reduction) * local
    return (gd if ctx.needs_input_grad[0] else None,
            -gd if ctx.needs_input_grad[1] else None)


class SmoothL1Function(Function):
    """Huber-style smooth L1 (Girshick, 2015, "Fast R-CNN") on ``d = input - target``::

        loss = 0.5 · d² / β   if |d| < β,   |d| - 0.5·β   otherwise

    gradient ``d / β`` inside, ``sign(d)`` outside; β = 0 is exactly L1 with
    ``sign(0) = 0``, so no division by zero happens.
    """

    @staticmethod
    def forward(ctx, a, b, beta=1.0, reduction="mean"):
        d = _save_difference(ctx, a, b, reduction)
        ctx.beta = beta
        ad = np.abs(d)
        if beta == 0:
            per = ad
        else:
            per = np.where(ad < beta, (0.5 / beta) * d * d, ad - 0.5 * beta)
        return reduce_forward(per.astype(a.dtype, copy=False), reduction)

    @staticmethod
    def backward(ctx, grad):
        (d,) = ctx.saved_tensors
        if ctx.beta == 0:
            local = np.sign(d)
        else:
            local = np.where(np.abs(d) < ctx.beta, d / d.dtype.type(ctx.beta), np.sign(d))
        return _difference_grads(ctx, grad, local)


class L1Function(Function):
    """``|input - target|``; gradient ``sign(d)`` (0 at d = 0, like PyTorch)."""

    @staticmethod
    def forward(ctx, a, b, reduction="mean"):
        d = _save_difference(ctx, a, b, reduction)
        return reduce_forward(np.abs(d), reduction)

    @staticmethod
    def backward(ctx, grad):
        (d,) = ctx.saved_tensors
        return _difference_grads(ctx, grad, np.sign(d))


class MSEFunction(Function):
    """``(input - target)²``; gradient ``2 d``."""

    @staticmethod
    def forward(ctx, a, b, reduction="mean"):
        d = _save_difference(ctx, a, b, reduction)
        return reduce_forward(d * d, reduction)

    @staticmethod
    def backward(ctx, grad):
        (d,) = ctx.saved_tensors
        return _difference_grads(ctx, grad, 2 * d)


def _regression_args(input, target, reduction):
    x = check_array(input, "input", "float")
    y = check_array(target, "target", "float")
    check_same_shape(y, "target", x, "input")
    if y.dtype != x.dtype:
        raise TypeError(f"target dtype {y.dtype} does not match input dtype {x.dtype}")
    check_choice(reduction, "reduction", _REDUCTIONS)


def smooth_l1_loss(input, target, beta=1.0, reduction="mean"):
    """Smooth L1 loss (Fast R-CNN's box loss), PyTorch's definition; see ``SmoothL1Function``.

    Args:
        input, target (Tensor or ndarray[...]): same shape and float dtype.
        beta (float): >= 0, width of the quadratic zone; 0 gives L1.
        reduction (str): "none", "mean" or "sum".
    Returns:
        Tensor: scalar or the input's shape.
    """
    _regression_args(input, target, reduction)
    beta = check_non_negative(beta, "beta")
    return SmoothL1Function.apply(input, target, beta=beta, reduction=reduction)


def l1_loss(input, target, reduction="mean"):
    """Mean absolute error ``|input - target|``.

    Args:
        input, target (Tensor or ndarray[...]): same shape and float dtype.
        reduction (str): "none", "mean" or "sum".
    """
    _regression_args(input, target, reduction)
    return L1Function.apply(input, target, reduction=reduction)


def mse_loss(input, target, reduction="mean"):
    """Mean squared error ``(input - target)²``.

    Args:
        input, target (Tensor or ndarray[...]): same shape and float dtype.
        reduction (str): "none", "mean" or "sum".
    """
    _regression_args(input, target, reduction)
    return MSEFunction.apply(input, target, reduction=reduction)


# ==================================================================== Dice
def dice_loss(logits, target, ignore_index=None, eps=1.0, reduction="mean"):
    """Soft Dice loss over softmax probabilities (Milletari et al., 2016, "V-Net").

    For each image ``n`` and class ``k``, with ``p = softmax(logits)`` over the last
    axis, ``y`` the one-hot target and the sums over the valid pixels of image ``n``::

        dice[n, k] = (2 · Σ p·y + eps) / (Σ p + Σ y + eps)
        loss[n, k] = 1 - dice[n, k]

    ``eps`` (additive smoothing) keeps the ratio defined when a class is absent from
    both prediction and target (then ``dice → 1``, loss → 0).

    Args:
        logits (Tensor or ndarray[N, ..., K]): unnormalized class scores, float,
            e.g. ``(N, H, W, K)`` from a segmenter; K >= 2 (binary: K = 2).
        target (ndarray or Tensor[N, ...]): int class ids in [0, K) (or ``ignore_index``).
        ignore_index (int, optional): pixels with this label are left out of every sum.
        eps (float): smoothing, > 0.
        reduction (str): "none" gives ``(N, K)``; "mean" averages over N and K; "sum".
    Returns:
        Tensor: scalar or ``(N, K)``; the logits' dtype.
    """
    x = check_array(logits, "logits", "float")
    if x.ndim < 2:
        raise ValueError(f"logits must have shape (N, ..., K), got {x.shape}")
    t = check_array(target, "target")
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"target must hold integer class ids, got dtype {t.dtype}")
    if t.shape != x.shape[:-1]:
        raise ValueError(f"target must have shape {x.shape[:-1]}, got {t.shape}")
    num_classes = x.shape[-1]
    if num_classes < 2:
        raise ValueError(f"dice_loss needs K >= 2 classes on the last axis, got {num_classes}")
    eps = check_positive(eps, "eps")
    check_choice(reduction, "reduction", _REDUCTIONS)
    if ignore_index is not None:
        ignore_index = check_int(ignore_index, "ignore_index")
    valid = np.ones(t.shape, dtype=bool) if ignore_index is None else t != ignore_index
    if np.any(valid & ((t < 0) | (t >= num_classes))):
        raise ValueError(f"target values must be in [0, {num_classes}) or ignore_index")

    dtype = x.dtype
    safe = np.where(valid, t, 0)
    one_hot = (safe[..., None] == np.arange(num_classes)) & valid[..., None]  # (N, ..., K)
    one_hot = one_hot.astype(dtype)
    valid_f = valid[..., None].astype(dtype)  # (N, ..., 1)
    spatial = tuple(range(1, x.ndim - 1))  # the axes between N and K

    probs = softmax(logits, axis=-1) * valid_f  # (N, ..., K), ignored pixels zeroed
    intersection = (probs * one_hot).sum(axis=spatial)  # (N, K)
    cardinality = probs.sum(axis=spatial) + one_hot.sum(axis=spatial)  # (N, K)
    eps_t = dtype.type(eps)
    dice = (intersection * dtype.type(2) + eps_t) / (cardinality + eps_t)
    loss = 1 - dice  # (N, K)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if loss.size == 0:
        return Tensor(np.zeros((), dtype=dtype))
    return loss.mean()
