"""Mask IoU: the overlap of instance masks, for COCO's ``segm`` evaluation.

An instance mask is a boolean image ``(H, W)``: True on the object's pixels. The IoU of
two masks counts pixels::

    IoU(A, B) = |A ∩ B| / |A ∪ B| = |A ∩ B| / (|A| + |B| - |A ∩ B|)

and for a crowd region B (COCO's ``iscrowd``) the union is replaced by the detection's
own area, ``|A ∩ B| / |A|``, so a detection lying inside a crowd counts fully (the rule
of pycocotools' ``maskApi.c``, ``rleIou``). A pair without common pixels has IoU 0
(never NaN, empty masks included).

All intersections at once: with the masks flattened to rows of 0/1 values,
``|A_i ∩ B_j|`` is the dot product of rows i and j, so one matrix product
``(N, P) @ (P, M)`` gives every pair (P = H·W pixels; only the pixels covered by some
mask of one side take part). The product runs in float32, which holds every integer up
to 2**24 exactly; the pixels are cut into chunks of at most 2**24 (and of a bounded
memory footprint, 64 MiB of float32), each chunk's counts are exact, and the chunks
are summed in int64.
"""
import numpy as np

__all__ = ["mask_area", "mask_iou", "mask_intersections", "iou_from_counts", "masks_to_boxes"]

_EXACT_FLOAT32 = 2**24       # float32 represents every integer up to this one
_CHUNK_BYTES = 64 * 2**20    # float32 copy of one pixel chunk of both mask sets


def _as_masks(masks, name):
    """``masks`` as a bool ndarray ``(N, H, W)``; integers are read as "nonzero = inside"."""
    array = np.asarray(masks)
    if array.dtype.kind not in "biu":
        raise TypeError(
            f"{name} must be a bool (or integer 0/1) array of shape (N, H, W), got dtype "
            f"{array.dtype}; threshold mask probabilities first"
        )
    if array.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W), got {array.shape}")
    return array if array.dtype == np.bool_ else array != 0


def mask_area(masks):
    """Pixels of each mask.

    Args:
        masks (ndarray[N, H, W]): bool (or integer, nonzero = inside).
    Returns:
        ndarray[N]: int64 pixel counts.
    """
    masks = _as_masks(masks, "masks")
    n, height, width = masks.shape
    return np.count_nonzero(masks.reshape(n, height * width), axis=1).astype(np.int64)


def mask_intersections(masks1, masks2):
    """Common pixels of every pair of masks, by chunked float32 matrix products.

    Args:
        masks1 (ndarray[N, H, W]): bool.
        masks2 (ndarray[M, H, W]): bool, same H and W.
    Returns:
        ndarray[N, M]: int64 ``|A_i ∩ B_j|``.
    """
    masks1 = _as_masks(masks1, "masks1")
    masks2 = _as_masks(masks2, "masks2")
    if masks1.shape[1:] != masks2.shape[1:]:
        raise ValueError(
            f"masks1 and masks2 must have the same (H, W), got {masks1.shape[1:]} and "
            f"{masks2.shape[1:]}"
        )
    n, m = masks1.shape[0], masks2.shape[0]
    pixels = masks1.shape[1] * masks1.shape[2]
    flat1 = masks1.reshape(n, pixels)  # (N, P)
    flat2 = masks2.reshape(m, pixels)  # (M, P)
    inter = np.zeros((n, m), np.int64)
    if n == 0 or m == 0 or pixels == 0:
        return inter
    # Only pixels inside some mask of the set with fewer masks can be common: instance
    # masks cover a small part of an image, so this removes most columns for little cost.
    support = np.flatnonzero((flat2 if m <= n else flat1).any(axis=0))  # (S,) pixel indices
    chunk = int(min(_EXACT_FLOAT32, max(1, _CHUNK_BYTES // (4 * (n + m)))))
    for start in range(0, len(support), chunk):
        columns = support[start:start + chunk]
        a = flat1[:, columns].astype(np.float32)  # (N, p)
        b = flat2[:, columns].astype(np.float32)  # (M, p)
        inter += (a @ b.T).astype(np.int64)  # exact: every count <= p <= 2**24
    return inter


def mask_iou(masks1, masks2, iscrowd=None):
    """Pairwise IoU of instance masks, COCO's crowd rule included.

    ``IoU = |A ∩ B| / (|A| + |B| - |A ∩ B|)``, or ``|A ∩ B| / |A|`` where ``iscrowd[j]``
    (B_j a crowd region, A the detection); 0 for pairs without common pixels. Equal to
    pycocotools' ``mask.iou(encode(masks1), encode(masks2), iscrowd)``.

    Args:
        masks1 (ndarray[N, H, W]): bool (or integer, nonzero = inside), the detections.
        masks2 (ndarray[M, H, W]): bool, same H and W, the ground truths.
        iscrowd (ndarray[M] or None): bool/int, crowd regions among ``masks2``.
    Returns:
        ndarray[N, M]: float64 in [0, 1].
    Raises:
        TypeError: masks not bool or integer.
        ValueError: shapes not (N, H, W), different (H, W), or ``iscrowd`` not (M,).
    """
    masks1 = _as_masks(masks1, "masks1")
    masks2 = _as_masks(masks2, "masks2")
    crowd = np.zeros(masks2.shape[0], bool) if iscrowd is None else np.asarray(iscrowd)
    if crowd.shape != (masks2.shape[0],) or crowd.dtype.kind not in "biu":
        raise ValueError(
            f"iscrowd must be a bool or integer array of shape ({masks2.shape[0]},), got "
            f"{crowd.dtype} {crowd.shape}"
        )
    inter = mask_intersections(masks1, masks2)
    return iou_from_counts(inter, mask_area(masks1)[:, None], mask_area(masks2)[None, :],
                           crowd[None, :] != 0)


def iou_from_counts(inter, area1, area2, crowd):
    """IoU from pixel counts, broadcast: ``inter / union`` or ``inter / area1`` for crowds.

    The counts are exact integers, so the float64 quotient is the one pycocotools computes.

    Args:
        inter, area1, area2 (ndarray): int64, broadcastable to one shape.
        crowd (ndarray): bool, broadcastable; True: the union is ``area1``.
    Returns:
        ndarray: float64, 0 where ``inter == 0``.
    """
    inter = np.asarray(inter, np.float64)
    union = np.where(crowd, area1, area1 + area2 - inter).astype(np.float64)
    return np.divide(inter, union, out=np.zeros(np.broadcast(inter, union).shape),
                     where=inter > 0)


def masks_to_boxes(masks):
    """The bounding box of each mask, in continuous xyxy pixel coordinates.

    A mask covering columns ``c0..c1`` and rows ``r0..r1`` has the box
    ``(c0, r0, c1 + 1, r1 + 1)`` (pixel i spans [i, i + 1)); an empty mask gets
    ``(0, 0, 0, 0)``, as pycocotools' ``toBbox``.

    Args:
        masks (ndarray[N, H, W]): bool.
    Returns:
        ndarray[N, 4]: float64 xyxy.
    """
    masks = _as_masks(masks, "masks")
    n, height, width = masks.shape
    if masks.size == 0:
        return np.zeros((n, 4))
    cols = masks.any(axis=1)  # (N, W)
    rows = masks.any(axis=2)  # (N, H)
    nonempty = cols.any(axis=1)
    x1 = np.argmax(cols, axis=1)
    x2 = width - np.argmax(cols[:, ::-1], axis=1)
    y1 = np.argmax(rows, axis=1)
    y2 = height - np.argmax(rows[:, ::-1], axis=1)
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float64)
    return np.where(nonempty[:, None], boxes, 0.0)
