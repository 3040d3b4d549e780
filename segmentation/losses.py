"""Losses of a semantic segmenter: per-pixel cross entropy, soft Dice, and their sum.

Cross entropy treats every pixel as a classification on its own::

    CE = Σ_i w[t_i] · (-log softmax(x_i)[t_i]) / Σ_i w[t_i]     (non-ignored pixels i)

On a plate crop about 85% of the pixels are background, so a network can reach a
low cross entropy while its digits are still blurry. The soft Dice loss (Milletari,
Navab and Ahmadi, 2016, "V-Net") looks at each class as a whole: with
``p = softmax(x)`` and ``y`` the one-hot target, per image ``n`` and class ``k``::

    dice[n, k] = (2 Σ p·y + ε) / (Σ p + Σ y + ε),    Dice loss = mean_{n,k} (1 - dice[n, k])

A small class (the pixels of a thin "1") weighs as much as the background in it. The
two are complementary: cross entropy gives well-scaled, per-pixel gradients from the
first step; Dice keeps the rare classes from being drowned. Their sum is what the
digit segmenter trains on (``segmentation_loss``)::

    L = CE + λ · Dice

Pixels labelled ``ignore_index`` (255, crop parts outside the image) count in neither.

Pixel weights. Characters on a plate stand one or two pixels apart; a network that
blurs the gap between two of them loses only a few pixels of cross entropy but reads
two characters as one. The U-Net paper (Ronneberger et al., 2015, Eq. 2) therefore
weighs the cross entropy per pixel, heavily on the thin background gaps that separate
touching objects: with ``pixel_weights`` ``v_i`` (``segmentation.weights.separation_weights``)::

    CE = Σ_i v_i · w[t_i] · (-log softmax(x_i)[t_i]) / Σ_i v_i · w[t_i]

One softmax for both terms. ``segmentation_loss`` with ``dice_weight > 0`` runs as one
``Function`` (``CrossEntropyDiceFunction``): both terms read the same
``p = softmax(x)``, computed once per block of pixels, and the backward pass is one
closed form. With ``c_i = v_i·w[t_i] / Σ v·w`` (0 for an ignored pixel), per image
``n`` and class ``k`` the Dice sums ``I = Σ p·y``, ``P = Σ p``, ``Y = Σ y``, and the
loss gradient ``g``::

    dL/dx_ik = g·c_i·(p_ik - y_ik) + p_ik·(G_ik - Σ_j G_ij p_ij),
    G_ik = dL/dp_ik = λ·g/(N·K) · ((2I + ε)/(P + Y + ε)² - 2·y_ik/(P + Y + ε))

(cross entropy through the log-softmax, Dice through the softmax). Two passes over
the logits instead of the ~20 of the two terms written as separate autograd ops
(softmax, log-softmax, one-hot products, sums); measured on the digit segmenter's
training batch (8 x 48 x 144 x 14): 28 ms -> 7-11 ms per step, forward and backward.
"""
import numpy as np

from nn._checks import check_non_negative, check_positive, check_shape
from nn._threads import BLOCK_BYTES, parallel_for
from nn.functional import cross_entropy, dice_loss
from nn.tensor import Function, Tensor

__all__ = ["pixel_cross_entropy", "soft_dice_loss", "segmentation_loss",
           "cross_entropy_dice_forward", "cross_entropy_dice_backward",
           "CrossEntropyDiceFunction"]


def _check_target(logits, target):
    x = logits.data if isinstance(logits, Tensor) else np.asarray(logits)
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    check_shape(x, "logits", ("N", "H", "W", "K"))
    if t.shape != x.shape[:3]:
        raise ValueError(f"target must have shape {x.shape[:3]} (logits without K), got {t.shape}")
    if not (np.issubdtype(t.dtype, np.integer)):
        raise TypeError(f"target must hold integer class ids, got dtype {t.dtype}")
    return x, t.astype(np.int64, copy=False)


def _check_weights(class_weights, num_classes, dtype):
    if class_weights is None:
        return None
    w = np.asarray(class_weights, dtype=dtype)
    check_shape(w, "class_weights", (num_classes,))
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("class_weights must be finite and non-negative")
    return w


def pixel_cross_entropy(logits, target, ignore_index=255, class_weights=None):
    """Mean per-pixel cross entropy, weighted by class.

    Args:
        logits (Tensor[N, H, W, K]): float scores.
        target (ndarray[N, H, W] int): class ids in [0, K) or ``ignore_index``.
        ignore_index (int): target value that contributes nothing.
        class_weights (ndarray[K] or None): ``w[k]``; the mean divides by ``Σ w[t_i]``.
    Returns:
        Tensor: scalar, the logits' dtype (0 when every pixel is ignored).
    """
    x, t = _check_target(logits, target)
    weight = _check_weights(class_weights, x.shape[-1], x.dtype)
    return cross_entropy(logits, t, weight=weight, ignore_index=ignore_index)


def soft_dice_loss(logits, target, ignore_index=255, eps=1.0):
    """``mean_{n,k} (1 - dice[n, k])`` over images and classes (see the module docstring).

    Args:
        logits (Tensor[N, H, W, K]): float scores.
        target (ndarray[N, H, W] int): class ids in [0, K) or ``ignore_index``.
        ignore_index (int or None): pixels left out of every sum.
        eps (float): additive smoothing ε > 0; a class absent from both the target and
            the prediction of an image scores dice 1 (loss 0).
    Returns:
        Tensor: scalar, the logits' dtype.
    """
    _, t = _check_target(logits, target)
    return dice_loss(logits, t, ignore_index=ignore_index, eps=eps, reduction="mean")


def _check_pixel_weights(pixel_weights, shape, dtype):
    if pixel_weights is None:
        return None
    v = np.asarray(pixel_weights)
    if v.shape != shape:
        raise ValueError(f"pixel_weights must have the target's shape {shape}, got {v.shape}")
    if not np.issubdtype(v.dtype, np.floating) and not np.issubdtype(v.dtype, np.integer):
        raise TypeError(f"pixel_weights must be numbers, got dtype {v.dtype}")
    v = v.astype(dtype, copy=False)
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError("pixel_weights must be finite and non-negative")
    return v


def _weighted_cross_entropy(logits, t, weight, ignore_index, pixel_weights):
    """``Σ v·w[t]·(-logp[t]) / Σ v·w[t]`` over the non-ignored pixels (0 if none weigh)."""
    per_pixel = cross_entropy(logits, t, weight=weight, ignore_index=ignore_index,
                              reduction="none")  # (N, H, W): w[t]·(-logp[t]), 0 where ignored
    valid = t != ignore_index
    class_w = (weight[np.where(valid, t, 0)] if weight is not None
               else np.ones(t.shape, pixel_weights.dtype))
    total = float((pixel_weights * class_w * valid).sum())
    scale = pixel_weights / total if total > 0 else np.zeros_like(pixel_weights)
    return (per_pixel * scale).sum()


# ============================================================ CE + Dice in one Function
def _image_blocks(n, pixels, row_bytes):
    """Blocks ``(image, start, stop)`` of ~``BLOCK_BYTES`` of pixel rows, never across images.

    Rows ``[start, stop)`` index the flattened ``(N·H·W, K)`` logits; a block lies in
    one image, so its Dice sums go to that image alone.
    """
    per = max(1, min(pixels, BLOCK_BYTES // max(1, row_bytes)))  # rows per block
    return [(i, i * pixels + r, i * pixels + min(r + per, pixels))
            for i in range(n) for r in range(0, pixels, per)]


def _row_max(rows):
    """``rows.max(axis=1)`` of ``(R, K)``: for few classes, ``K - 1`` column maxima
    (a reduction over a short last axis costs NumPy ~2.5x more)."""
    if rows.shape[1] > 32:
        return rows.max(axis=1)
    top = rows[:, 0].copy()
    for j in range(1, rows.shape[1]):
        np.maximum(top, rows[:, j], out=top)
    return top


def cross_entropy_dice_forward(logits, target, coef, valid, eps=1.0):
    """The two terms of ``segmentation_loss`` from one softmax (module docstring).

    Args:
        logits (ndarray[N, H, W, K]): float scores.
        target (ndarray[N, H, W] int): class ids in [0, K), ignored pixels already 0.
        coef (ndarray[N, H, W]): cross-entropy weight ``v·w[t]`` of each pixel, 0 where
            ignored (logits' dtype).
        valid (ndarray[N, H, W] bool): pixels that count.
        eps (float): Dice smoothing ε > 0.
    Returns:
        tuple: ``(ce_sum, dice, cache)``: ``ce_sum = Σ coef·(-log p[t])`` (float),
        ``dice (ndarray[N, K])`` the per-image, per-class Dice ratio, and the cache for
        ``cross_entropy_dice_backward`` (probabilities and the Dice sums).
    """
    n, h, w, k = logits.shape
    pixels = h * w
    dtype = logits.dtype
    x = np.ascontiguousarray(logits).reshape(n * pixels, k)  # (M, K)
    t, c, v = target.reshape(-1), coef.reshape(-1), valid.reshape(-1)  # (M,)
    valid_f = v.astype(dtype)
    probs = np.empty_like(x)  # (M, K)
    blocks = _image_blocks(n, pixels, k * x.itemsize)
    ones = np.ones(k, dtype=dtype)
    ce_parts = [None] * len(blocks)
    p_parts = [None] * len(blocks)  # (K,) Σ p over the block's valid pixels
    i_parts = [None] * len(blocks)  # (K,) Σ p·y

    def block(j, slot):
        _, r0, r1 = blocks[j]
        xb, pb, tb = x[r0:r1], probs[r0:r1], t[r0:r1]
        top = _row_max(xb)  # (rows,)
        np.subtract(xb, top[:, None], out=pb)
        np.exp(pb, out=pb)
        total = pb @ ones  # (rows,) Σ_k exp(x - max), as a GEMV (6x faster than .sum(axis=1))
        pb /= total[:, None]  # now softmax(x)
        rows = np.arange(r1 - r0)
        # -log p[t] = log Σ exp(x - max) - (x[t] - max): no log of a tiny probability.
        nll = np.log(total) - (xb[rows, tb] - top)  # (rows,)
        ce_parts[j] = np.dot(c[r0:r1], nll)
        p_parts[j] = valid_f[r0:r1] @ pb  # (K,)
        vb = v[r0:r1]
        i_parts[j] = np.bincount(tb[vb], weights=pb[rows, tb][vb], minlength=k)

    parallel_for(block, len(blocks))
    # Partial sums added in block order (bit-for-bit reproducible whatever the threads did).
    ce_sum = 0.0
    inter = np.zeros((n, k))
    prob_sum = np.zeros((n, k))
    for (image, _, _), ce_part, p_part, i_part in zip(blocks, ce_parts, p_parts, i_parts):
        ce_sum += float(ce_part)
        prob_sum[image] += p_part
        inter[image] += i_part
    # Σ y per image and class: the valid pixels' labels counted.
    image_of = np.repeat(np.arange(n), pixels)[v]
    counts = np.bincount(image_of * k + t[v], minlength=n * k).reshape(n, k)  # (N, K)
    denominator = prob_sum + counts + eps  # (N, K)
    dice = (2 * inter + eps) / denominator
    cache = (probs, t, c, v, inter, denominator, eps, blocks, logits.shape)
    return ce_sum, dice.astype(dtype), cache


def cross_entropy_dice_backward(grad_ce, grad_dice, cache):
    """``dL/dx`` of ``L = grad_ce · Σ coef·(-log p[t]) + grad_dice · Σ_{n,k} dice[n, k]``.

    Args:
        grad_ce (float): factor of the cross-entropy sum (``g / Σ v·w``).
        grad_dice (float): factor of the summed Dice ratios (``-λ·g / (N·K)``).
        cache (tuple): from ``cross_entropy_dice_forward``.
    Returns:
        ndarray[N, H, W, K]: the logits' gradient, their dtype.
    """
    probs, t, c, v, inter, denominator, eps, blocks, shape = cache
    dtype = probs.dtype
    k = probs.shape[1]
    # dice = (2I + ε)/D: d dice/dp_k = 2·y_k/D - (2I + ε)/D², for the valid pixels.
    beta = (-grad_dice * (2 * inter + eps) / denominator ** 2).astype(dtype)  # (N, K), all k
    alpha = (2 * grad_dice / denominator).astype(dtype)  # (N, K), target class only
    row_ce = (grad_ce * c).astype(dtype)  # (M,) g·c_i
    dx = np.empty_like(probs)  # (M, K)

    def block(j, slot):
        image, r0, r1 = blocks[j]
        pb, tb, out = probs[r0:r1], t[r0:r1], dx[r0:r1]
        rows = np.arange(r1 - r0)
        p_t = pb[rows, tb]  # (rows,)
        a_t = alpha[image][tb] * p_t  # (rows,) G_t·p_t's target part
        # Σ_j G_ij p_ij = p·β + α[t]·p_t; dx = p·(β + c - Σ G p) + [k = t]·(α[t]·p_t - c).
        shift = row_ce[r0:r1] - (pb @ beta[image] + a_t)  # (rows,)
        np.add(beta[image][None, :], shift[:, None], out=out)
        out *= pb
        out[rows, tb] += a_t - row_ce[r0:r1]
        out[~v[r0:r1]] = 0  # ignored pixels: no gradient from either term

    parallel_for(block, len(blocks))
    return dx.reshape(shape)


class CrossEntropyDiceFunction(Function):
    """``CE + λ·Dice`` on the logits (autograd glue of the two kernels above).

    ``forward(ctx, logits, target, coef, valid, dice_weight, eps, parts)``: ``coef`` and
    ``valid`` as in ``cross_entropy_dice_forward``; ``parts`` (dict or None) receives
    the two terms as floats ``{"ce", "dice"}``.
    """

    @staticmethod
    def forward(ctx, logits, target=None, coef=None, valid=None, dice_weight=1.0, eps=1.0,
                parts=None):
        dtype = logits.dtype
        ce_sum, dice, ctx.cache = cross_entropy_dice_forward(logits, target, coef, valid, eps)
        # The cross entropy is a weighted mean: 0 when no pixel weighs anything.
        weight_sum = float(coef.sum(dtype=np.float64))
        ctx.ce_scale = 1.0 / weight_sum if weight_sum > 0 else 0.0
        ce = dtype.type(ce_sum * ctx.ce_scale)
        dice_term = (1 - dice).mean(dtype=dtype) if dice.size else dtype.type(0)
        ctx.dice_scale = dice_weight / dice.size if dice.size else 0.0
        if parts is not None:
            parts.update(ce=float(ce), dice=float(dice_term))
        return np.asarray(ce + dice_term * dtype.type(dice_weight), dtype=dtype)

    @staticmethod
    def backward(ctx, grad):
        g = float(grad)
        return cross_entropy_dice_backward(g * ctx.ce_scale, -g * ctx.dice_scale, ctx.cache)


def segmentation_loss(logits, target, dice_weight=1.0, ignore_index=255, class_weights=None,
                      eps=1.0, return_parts=False, pixel_weights=None):
    """``CE + dice_weight · Dice``: the digit segmenter's training loss.

    Args:
        logits (Tensor[N, H, W, K]): float scores (``UNet`` output).
        target (ndarray[N, H, W] int): class ids in [0, K) or ``ignore_index``.
        dice_weight (float): λ >= 0; 0 gives plain cross entropy.
        ignore_index (int): target value left out of both terms.
        class_weights (ndarray[K] or None): weights of the cross-entropy term.
        eps (float): Dice smoothing.
        return_parts (bool): also return the two terms as floats.
        pixel_weights (ndarray[N, H, W] or None): per-pixel weights ``v_i >= 0`` of the
            cross-entropy term (see the module docstring); None weighs every pixel 1.
    Returns:
        Tensor: the scalar loss, or ``(loss, {"ce": float, "dice": float})``.
    Raises:
        ValueError: shapes that do not match, a negative ``dice_weight``, bad weights.
        TypeError: a non-integer target.
    """
    x, t = _check_target(logits, target)
    dice_weight = check_non_negative(dice_weight, "dice_weight")
    weight = _check_weights(class_weights, x.shape[-1], x.dtype)
    pixel_weights = _check_pixel_weights(pixel_weights, t.shape, x.dtype)
    if dice_weight > 0 and x.size:
        # Both terms from one softmax (module docstring).
        eps = check_positive(eps, "eps")
        valid = t != ignore_index
        if np.any(valid & ((t < 0) | (t >= x.shape[-1]))):
            raise ValueError(f"target values must be in [0, {x.shape[-1]}) or "
                             f"ignore_index={ignore_index}")
        safe = np.where(valid, t, 0)
        coef = (weight[safe] if weight is not None else np.ones(t.shape, x.dtype)) * valid
        if pixel_weights is not None:
            coef *= pixel_weights
        parts = {} if return_parts else None
        loss = CrossEntropyDiceFunction.apply(
            logits, target=safe, coef=coef.astype(x.dtype, copy=False), valid=valid,
            dice_weight=float(dice_weight), eps=float(eps), parts=parts)
        return (loss, parts) if return_parts else loss
    if pixel_weights is None:
        ce = cross_entropy(logits, t, weight=weight, ignore_index=ignore_index)
    else:
        ce = _weighted_cross_entropy(logits, t, weight, ignore_index, pixel_weights)
    if dice_weight == 0:
        loss, dice_value = ce, 0.0
    else:
        dice = dice_loss(logits, t, ignore_index=ignore_index, eps=eps, reduction="mean")
        loss = ce + dice * x.dtype.type(dice_weight)
        dice_value = dice.item()
    if return_parts:
        return loss, {"ce": ce.item(), "dice": dice_value}
    return loss
