"""Weight maps for segmenting touching objects (Ronneberger et al., U-Net, MICCAI 2015).

A semantic segmenter labels pixels; objects are then recovered as connected blobs of
its map. Two objects that touch become one blob, so the U-Net paper keeps a thin
background gap between them ("separation background labels", Sec. 3) and weights the
loss on those gaps, which are a tiny part of the image and would be learnt last.

- ``separate_instances``: a pixel of an object with a pixel of *another* object among its
  8 neighbours becomes background, so objects are always at least one pixel apart.
- ``separation_weights``: the paper weighs its loss with ``w0 · exp(-(d1 + d2)² / 2σ²)``
  (``d1``, ``d2`` the distances to the nearest and second-nearest object); with gaps of
  one pixel that is, in effect, a weight ``w0`` on the background pixels that see two
  objects in their 3x3 neighbourhood, which is what is computed here.
- ``size_weights``: each object's pixels weighted ``median area / its area`` so that
  a small object counts in the loss like a large one.
- ``hard_pixel_weights``: the pixels the network still gets wrong weighted more, from
  its own predictions (a milder focal loss).
"""
import numpy as np
from scipy import ndimage

from nn._checks import check_non_negative
from nn.functional.activation import softmax_forward

__all__ = ["separate_instances", "separation_weights", "size_weights", "hard_pixel_weights",
           "IGNORE_INDEX"]

IGNORE_INDEX = 255  # label-map value counted for no class


def separate_instances(instances):
    """Set to 0 every pixel with an 8-neighbour of another (non-zero) instance.

    Args:
        instances (ndarray[..., H, W] int): instance ids, 0 for none (any leading axes,
            e.g. a batch of crops).

    Returns:
        ndarray like ``instances``: afterwards no two different instances are
        8-adjacent, so 8-connected components never join two instances.
    """
    if not isinstance(instances, np.ndarray) or instances.ndim < 2 \
            or not np.issubdtype(instances.dtype, np.integer):
        got = (f"{instances.dtype} {instances.shape}" if isinstance(instances, np.ndarray)
               else type(instances).__name__)
        raise ValueError(f"instances must be an integer ndarray (..., H, W), got {got}")
    h, w = instances.shape[-2:]
    pad = [(0, 0)] * (instances.ndim - 2) + [(1, 1), (1, 1)]
    padded = np.pad(instances, pad)  # 0 outside: the border touches nothing
    contact = np.zeros(instances.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            neighbour = padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
            contact |= (neighbour != 0) & (neighbour != instances)
    return np.where(contact, 0, instances)


# 8-connectivity within each crop of a (N, H, W) batch, none across crops.
_BATCH_EIGHT = np.zeros((3, 3, 3), dtype=bool)
_BATCH_EIGHT[1] = True


def _object_blobs(labels, background, ignore_index):
    """Check a batch of label maps; its object mask, 8-connected blobs and their count."""
    if not isinstance(labels, np.ndarray) or labels.ndim != 3 \
            or not np.issubdtype(labels.dtype, np.integer):
        got = (f"{labels.dtype} {labels.shape}" if isinstance(labels, np.ndarray)
               else type(labels).__name__)
        raise ValueError(f"labels must be an integer ndarray (N, H, W), got {got}")
    foreground = (labels != background) & (labels != ignore_index)
    blobs, count = ndimage.label(foreground, structure=_BATCH_EIGHT)  # (N, H, W) ids, 0 none
    return foreground, blobs, count


def separation_weights(labels, weight=10.0, background=0, ignore_index=IGNORE_INDEX):
    """Per-pixel loss weights: ``weight`` on the gaps between objects, 1 elsewhere.

    A gap pixel is a background pixel with two different objects (8-connected blobs
    of the label map, which ``separate_instances`` keeps apart) in its 3x3
    neighbourhood.

    Args:
        labels (ndarray[N, H, W] int): class ids (e.g. ``plates.targets.crop_region_labels``).
        weight (float): the gap weight ``w0 >= 0`` (1 disables it).
        background (int): the background class; ignore_index (int): not an object.

    Returns:
        ndarray[N, H, W] float32.
    """
    if isinstance(weight, bool) or not np.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    _, blobs, count = _object_blobs(labels, background, ignore_index)
    weights = np.ones(labels.shape, np.float32)
    if count < 2:
        return weights
    window = (1, 3, 3)
    highest = ndimage.maximum_filter(blobs, size=window, mode="constant", cval=0)
    lowest = ndimage.minimum_filter(np.where(blobs > 0, blobs, count + 1), size=window,
                                    mode="constant", cval=count + 1)
    gap = (labels == background) & (highest > 0) & (lowest <= count) & (lowest != highest)
    weights[gap] = weight
    return weights


def size_weights(labels, max_weight=5.0, background=0, ignore_index=IGNORE_INDEX):
    """Per-pixel loss weights that let a small object count like a large one.

    A dot or a dash covers a few pixels of a crop, a digit tens: in a per-pixel loss a
    lost dot costs almost nothing, yet a plate with it is misread. Each object (8-connected
    blob of the label map) gets the weight ``median area / its area`` on its pixels,
    clipped to ``[1, max_weight]`` (the median over the blobs of the whole batch);
    everything else 1.

    Args:
        labels (ndarray[N, H, W] int): class ids (e.g. ``plates.targets.crop_region_labels``).
        max_weight (float): the largest weight, >= 1 (1 disables it).

    Returns:
        ndarray[N, H, W] float32.
    """
    if isinstance(max_weight, bool) or not np.isfinite(max_weight) or max_weight < 1:
        raise ValueError(f"max_weight must be a finite number >= 1, got {max_weight!r}")
    is_object, blobs, count = _object_blobs(labels, background, ignore_index)
    weights = np.ones(labels.shape, np.float32)
    if count == 0:
        return weights
    areas = np.bincount(blobs.ravel(), minlength=count + 1)[1:]  # (count,)
    per_blob = np.clip(np.median(areas) / areas, 1, max_weight).astype(np.float32)
    weights[is_object] = per_blob[blobs[is_object] - 1]
    return weights


def hard_pixel_weights(logits, labels, strength, ignore_index=IGNORE_INDEX):
    """Per-pixel loss weights ``1 + strength * (1 - p)^2``, ``p`` the predicted
    probability of the pixel's true class (no gradient flows through them).

    The pixels a network still gets wrong weigh up to ``1 + strength``; the ones it
    has learned stay at 1. The focal loss (Lin et al., 2017) scales a pixel's cross
    entropy by ``(1 - p)^2`` alone, which also silences every learned pixel; here the
    plain cross entropy stays and the hard pixels come on top: a small mark labelled
    background but predicted as an object is a few pixels of an image and would
    otherwise cost almost nothing.

    Args:
        logits (ndarray[N, H, W, K] float): the network's outputs for the batch.
        labels (ndarray[N, H, W] int): true classes in ``0..K-1``, ``ignore_index`` for none.
        strength (float): the added weight of a pixel predicted with ``p = 0`` (>= 0).

    Returns:
        ndarray[N, H, W] float32 (1 on ignored pixels).
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, H, W, K), got shape {logits.shape}")
    if labels.shape != logits.shape[:3] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer (N, H, W) = {logits.shape[:3]}, got "
                         f"{labels.dtype} {labels.shape}")
    strength = check_non_negative(strength, "strength")
    ignored = labels == ignore_index
    if np.any(~ignored & ((labels < 0) | (labels >= logits.shape[-1]))):
        raise ValueError(f"labels must be in [0, {logits.shape[-1]}) or "
                         f"ignore_index={ignore_index}")
    probs = softmax_forward(logits.astype(np.float32, copy=False), axis=-1)
    p = np.take_along_axis(probs, np.where(ignored, 0, labels)[..., None], axis=-1)[..., 0]
    weights = 1 + np.float32(strength) * (1 - p) ** 2
    weights[ignored] = 1
    return weights
