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
touching objects: with ``pixel_weights`` ``v_i`` (``segmentation.targets.separation_weights``)::

    CE = Σ_i v_i · w[t_i] · (-log softmax(x_i)[t_i]) / Σ_i v_i · w[t_i]
"""
import numpy as np

from nn.functional import cross_entropy, dice_loss
from nn.tensor import Tensor

__all__ = ["pixel_cross_entropy", "soft_dice_loss", "segmentation_loss"]


def _check_target(logits, target):
    x = logits.data if isinstance(logits, Tensor) else np.asarray(logits)
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if x.ndim != 4:
        raise ValueError(f"logits must have shape (N, H, W, K), got {x.shape}")
    if t.shape != x.shape[:3]:
        raise ValueError(f"target must have shape {x.shape[:3]} (logits without K), got {t.shape}")
    if not (np.issubdtype(t.dtype, np.integer)):
        raise TypeError(f"target must hold integer class ids, got dtype {t.dtype}")
    return x, t.astype(np.int64, copy=False)


def _check_weights(class_weights, num_classes, dtype):
    if class_weights is None:
        return None
    w = np.asarray(class_weights, dtype=dtype)
    if w.shape != (num_classes,):
        raise ValueError(f"class_weights must have shape ({num_classes},), got {w.shape}")
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
    if isinstance(dice_weight, bool) or not isinstance(dice_weight, (int, float, np.floating)) \
            or not np.isfinite(dice_weight) or dice_weight < 0:
        raise ValueError(f"dice_weight must be a finite number >= 0, got {dice_weight!r}")
    weight = _check_weights(class_weights, x.shape[-1], x.dtype)
    pixel_weights = _check_pixel_weights(pixel_weights, t.shape, x.dtype)
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
