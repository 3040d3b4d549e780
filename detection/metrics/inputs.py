"""Checking and flattening the inputs of every detection metric.

All metrics take the same inputs, one entry per image::

    predictions[i] = {"boxes": (D_i, 4) xyxy, "scores": (D_i,), "labels": (D_i,) int}
    targets[i]     = {"boxes": (G_i, 4) xyxy, "labels": (G_i,) int,
                      optional "iscrowd" (G_i,) bool/int, "area" (G_i,) float,
                      "difficult" (G_i,) bool/int}

For COCO's mask evaluation (``iou_type="segm"``) both also carry ``"masks"``,
``(D_i, H, W)`` and ``(G_i, H, W)`` bool (integers are read as nonzero = inside), the
same ``(H, W)`` on both sides of an image; ``"boxes"`` is then optional (checked when
given; the masks' bounding boxes otherwise), and the object area defaults to the mask
area.

Boxes whose ``x2 < x1`` or ``y2 < y1``: a *prediction* like that is accepted and read
as an empty box, as :func:`detection.nms.nms` reads it: area 0, IoU 0 with every
ground truth, so it is a false positive (in the area ranges containing 0: "all" and
"small"). A *target* like that is a broken annotation and raises ``ValueError``.

A Python loop over the images is unavoidable here (the input *is* a list); it only
checks shapes and collects arrays. Everything after that works on flat arrays, one
row per detection or ground truth, with the image index as a column: that is what
lets the matching and the accumulation run vectorized over all images at once.
"""
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from detection.metrics.masks import _as_masks, mask_area, masks_to_boxes

__all__ = ["DetectionSet", "flatten_detections", "IOU_TYPES"]

IOU_TYPES = ("bbox", "segm")


@dataclass
class DetectionSet:
    """Detections and ground truths of a whole data set as flat arrays.

    Attributes:
        num_images (int): number of images I.
        iou_type (str): "bbox" (box IoU) or "segm" (mask IoU).
        classes (ndarray[K]): int64, sorted labels present in predictions or targets.
        det_boxes (ndarray[D, 4]): float64 xyxy boxes of all detections, image by image
            (for "segm" without boxes: the masks' bounding boxes).
        det_scores (ndarray[D]): float64.
        det_labels (ndarray[D]): int64 class index into ``classes`` (not the label).
        det_images (ndarray[D]): int64 image index.
        det_local (ndarray[D]): int64 index of the detection inside its image's arrays.
        det_area (ndarray[D]): float64 object area of each detection: the box area
            ``max(x2 - x1, 0) * max(y2 - y1, 0)`` ("bbox") or the mask's pixels ("segm").
        gt_boxes (ndarray[G, 4]): float64 xyxy.
        gt_labels (ndarray[G]): int64 class index into ``classes``.
        gt_images (ndarray[G]): int64 image index.
        gt_local (ndarray[G]): int64 index inside its image's arrays.
        gt_crowd (ndarray[G]): bool, COCO ``iscrowd``.
        gt_area (ndarray[G]): float64, ``area`` if given, else the box area ("bbox")
            or the mask's pixels ("segm").
        gt_difficult (ndarray[G]): bool, Pascal VOC ``difficult``.
        det_counts (ndarray[I]), gt_counts (ndarray[I]): int64 boxes per image.
        det_masks (list[ndarray[D_i, H_i, W_i]] | None): bool masks per image ("segm").
        gt_masks (list[ndarray[G_i, H_i, W_i]] | None): bool masks per image ("segm").
    """

    num_images: int
    iou_type: str
    classes: np.ndarray
    det_boxes: np.ndarray
    det_scores: np.ndarray
    det_labels: np.ndarray
    det_images: np.ndarray
    det_local: np.ndarray
    det_area: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_images: np.ndarray
    gt_local: np.ndarray
    gt_crowd: np.ndarray
    gt_area: np.ndarray
    gt_difficult: np.ndarray
    det_counts: np.ndarray
    gt_counts: np.ndarray
    det_masks: list = None
    gt_masks: list = None


def box_area(boxes):
    """Area of xyxy boxes, ``max(x2 - x1, 0) * max(y2 - y1, 0)`` (continuous, no +1).

    A box with ``x2 < x1`` or ``y2 < y1`` is empty (area 0), as in :mod:`detection.boxes`.

    Args:
        boxes (ndarray[N, 4]): xyxy, float.
    Returns:
        ndarray[N]: float, same dtype.
    """
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)


def _as_array(value, name):
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise TypeError(f"{name} must be array-like, got {type(value).__name__}: {exc}") from None


def _boxes(entry, name):
    boxes = _as_array(entry["boxes"], f"{name}['boxes']")
    if boxes.size == 0:
        return np.zeros((0, 4), np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}['boxes'] must have shape (N, 4) (xyxy), got {boxes.shape}")
    if boxes.dtype.kind not in "fiu":
        raise TypeError(f"{name}['boxes'] must be a float or int array, got dtype {boxes.dtype}")
    return boxes


def _vector(entry, key, name, n, kind):
    """A (n,) array entry[key] of the given kind: "float", "int" or "flag"."""
    value = _as_array(entry[key], f"{name}[{key!r}]")
    if value.size == 0 and n == 0:
        return np.zeros(0, np.float64 if kind == "float" else np.int64)
    if value.shape != (n,):
        raise ValueError(
            f"{name}[{key!r}] must have shape ({n},), one value per object of {name}, "
            f"got {value.shape}"
        )
    # dtype kinds: f float, i/u signed/unsigned integer, b bool.
    if value.dtype.kind not in {"float": "fiu", "int": "iu", "flag": "iub"}[kind]:
        expected = {"float": "a float", "int": "an integer", "flag": "a bool or integer"}[kind]
        raise TypeError(f"{name}[{key!r}] must be {expected} array, got dtype {value.dtype}")
    return value


def _check_entry(entry, name, keys):
    if not isinstance(entry, Mapping):
        raise TypeError(f"{name} must be a dict with keys {keys}, got {type(entry).__name__}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ValueError(f"{name} is missing key(s) {missing}; expected keys {keys}")


def _masks(entry, name):
    """``entry["masks"]`` as bool ``(n, H, W)``; an empty list gives ``(0, 0, 0)``."""
    masks = _as_array(entry["masks"], f"{name}['masks']")
    if masks.size == 0 and masks.ndim != 3:
        return np.zeros((0, 0, 0), bool)
    return _as_masks(masks, f"{name}['masks']")


def _boxes_and_masks(entry, name, iou_type):
    """The boxes ``(n, 4)`` and, for "segm", the masks ``(n, H, W)`` bool (else None)."""
    if iou_type == "bbox":
        return _boxes(entry, name), None
    masks = _masks(entry, name)
    if "boxes" not in entry:
        return masks_to_boxes(masks), masks
    boxes = _boxes(entry, name)
    if len(boxes) != len(masks):
        raise ValueError(
            f"{name}['boxes'] must have shape ({len(masks)}, 4) to match {name}['masks'], "
            f"got {boxes.shape}"
        )
    return boxes, masks


def _same_image_size(det_masks, gt_masks, i):
    """Give an empty side the other side's (H, W); raise if two non-empty sides differ."""
    det_size, gt_size = det_masks.shape[1:], gt_masks.shape[1:]
    if len(det_masks) == 0 and det_size != gt_size:
        det_masks = np.zeros((0,) + gt_size, bool)
    elif len(gt_masks) == 0 and det_size != gt_size:
        gt_masks = np.zeros((0,) + det_size, bool)
    elif det_size != gt_size:
        raise ValueError(
            f"predictions[{i}]['masks'] and targets[{i}]['masks'] must have the same (H, W), "
            f"got {det_size} and {gt_size}"
        )
    return det_masks, gt_masks


def flatten_detections(predictions, targets, iou_type="bbox"):
    """Check ``predictions`` and ``targets`` and gather them into a :class:`DetectionSet`.

    Args:
        predictions (list[dict]): one dict per image with ``boxes`` (D_i, 4) xyxy,
            ``scores`` (D_i,) and ``labels`` (D_i,) int; for "segm" also ``masks``
            (D_i, H, W) bool, ``boxes`` then optional.
        targets (list[dict]): one dict per image with ``boxes`` (G_i, 4) xyxy and
            ``labels`` (G_i,) int; optional ``iscrowd`` (G_i,), ``area`` (G_i,),
            ``difficult`` (G_i,); for "segm" also ``masks`` (G_i, H, W) bool, ``boxes``
            then optional.
        iou_type (str): "bbox" or "segm".
    Returns:
        DetectionSet: flat float64/int64 arrays; labels mapped to class indices.
    Raises:
        TypeError: not lists of dicts, or arrays of the wrong dtype.
        ValueError: lengths differ, missing keys, wrong shapes, masks of an image with
            different (H, W), non-finite boxes or scores, target boxes with x2 < x1 or
            y2 < y1, negative or non-finite areas, unknown ``iou_type``.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {list(IOU_TYPES)}, got {iou_type!r}")
    for arg, value in (("predictions", predictions), ("targets", targets)):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise TypeError(
                f"{arg} must be a list with one dict per image, got {type(value).__name__}"
            )
    if len(predictions) != len(targets):
        raise ValueError(
            "predictions and targets must have the same length (one entry per image), "
            f"got {len(predictions)} and {len(targets)}"
        )
    segm = iou_type == "segm"
    shape_key = ["masks"] if segm else ["boxes"]
    num_images = len(targets)
    det_boxes, det_scores, det_labels, det_masks = [], [], [], []
    gt_boxes, gt_labels, gt_crowd, gt_area, gt_area_given, gt_difficult = [], [], [], [], [], []
    gt_masks = []
    det_counts = np.zeros(num_images, np.int64)
    gt_counts = np.zeros(num_images, np.int64)
    for i, (pred, target) in enumerate(zip(predictions, targets)):
        name = f"predictions[{i}]"
        _check_entry(pred, name, shape_key + ["scores", "labels"])
        boxes, masks = _boxes_and_masks(pred, name, iou_type)
        n = len(boxes)
        det_boxes.append(boxes)
        det_masks.append(masks)
        det_scores.append(_vector(pred, "scores", name, n, "float"))
        det_labels.append(_vector(pred, "labels", name, n, "int"))
        det_counts[i] = n

        name = f"targets[{i}]"
        _check_entry(target, name, shape_key + ["labels"])
        boxes, masks = _boxes_and_masks(target, name, iou_type)
        n = len(boxes)
        gt_boxes.append(boxes)
        gt_masks.append(masks)
        gt_labels.append(_vector(target, "labels", name, n, "int"))
        gt_crowd.append(
            _vector(target, "iscrowd", name, n, "flag") != 0
            if "iscrowd" in target else np.zeros(n, bool)
        )
        gt_difficult.append(
            _vector(target, "difficult", name, n, "flag") != 0
            if "difficult" in target else np.zeros(n, bool)
        )
        gt_area.append(
            _vector(target, "area", name, n, "float") if "area" in target
            else np.zeros(n)  # replaced by the box or mask area below
        )
        gt_area_given.append("area" in target)
        gt_counts[i] = n
        if segm:
            det_masks[i], gt_masks[i] = _same_image_size(det_masks[i], gt_masks[i], i)

    det_images = np.repeat(np.arange(num_images), det_counts)
    gt_images = np.repeat(np.arange(num_images), gt_counts)
    det_boxes = np.concatenate(det_boxes).astype(np.float64) if num_images else np.zeros((0, 4))
    gt_boxes = np.concatenate(gt_boxes).astype(np.float64) if num_images else np.zeros((0, 4))
    det_scores = np.concatenate(det_scores).astype(np.float64) if num_images else np.zeros(0)
    det_labels = (
        np.concatenate(det_labels).astype(np.int64) if num_images else np.zeros(0, np.int64)
    )
    gt_labels = np.concatenate(gt_labels).astype(np.int64) if num_images else np.zeros(0, np.int64)
    gt_crowd = np.concatenate(gt_crowd) if num_images else np.zeros(0, bool)
    gt_difficult = np.concatenate(gt_difficult) if num_images else np.zeros(0, bool)
    gt_area = np.concatenate(gt_area).astype(np.float64) if num_images else np.zeros(0)
    given = np.repeat(np.array(gt_area_given, bool), gt_counts)

    # Checks on the flat arrays (fast), reported with the image they come from.
    # Index inside the image: position minus the image's first position.
    det_first = np.cumsum(det_counts) - det_counts  # (I,)
    gt_first = np.cumsum(gt_counts) - gt_counts
    det_local = np.arange(len(det_images)) - np.repeat(det_first, det_counts)
    gt_local = np.arange(len(gt_images)) - np.repeat(gt_first, gt_counts)
    for arg, boxes, images, local in (
        ("predictions", det_boxes, det_images, det_local),
        ("targets", gt_boxes, gt_images, gt_local),
    ):
        bad = ~np.isfinite(boxes).all(axis=1)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{arg}[{images[j]}]['boxes'][{local[j]}] is not finite: {boxes[j].tolist()}"
            )
    # Inverted prediction boxes are empty boxes (see the module docstring); inverted
    # targets are broken annotations.
    bad = (gt_boxes[:, 2] < gt_boxes[:, 0]) | (gt_boxes[:, 3] < gt_boxes[:, 1])
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"targets[{gt_images[j]}]['boxes'][{gt_local[j]}] must be xyxy with x2 >= x1 and "
            f"y2 >= y1, got {gt_boxes[j].tolist()}"
        )
    bad = ~np.isfinite(det_scores)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"predictions[{det_images[j]}]['scores'][{det_local[j]}] is not finite")
    bad = given & (~np.isfinite(gt_area) | (gt_area < 0))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"targets[{gt_images[j]}]['area'][{gt_local[j]}] must be finite and >= 0, "
            f"got {gt_area[j]}"
        )
    if segm:
        det_area = np.concatenate([mask_area(m) for m in det_masks] + [np.zeros(0, np.int64)])
        default_gt_area = np.concatenate([mask_area(m) for m in gt_masks] + [np.zeros(0, np.int64)])
        det_area, default_gt_area = det_area.astype(np.float64), default_gt_area.astype(np.float64)
    else:
        det_area, default_gt_area = box_area(det_boxes), box_area(gt_boxes)
        det_masks = gt_masks = None
    gt_area = np.where(given, gt_area, default_gt_area)

    # Labels -> dense class indices 0..K-1 over every label seen in either input.
    classes = np.unique(np.concatenate([gt_labels, det_labels]))
    return DetectionSet(
        num_images=num_images,
        iou_type=iou_type,
        classes=classes,
        det_boxes=det_boxes,
        det_scores=det_scores,
        det_labels=np.searchsorted(classes, det_labels),
        det_images=det_images,
        det_local=det_local,
        det_area=det_area,
        gt_boxes=gt_boxes,
        gt_labels=np.searchsorted(classes, gt_labels),
        gt_images=gt_images,
        gt_local=gt_local,
        gt_crowd=gt_crowd,
        gt_area=gt_area,
        gt_difficult=gt_difficult,
        det_counts=det_counts,
        gt_counts=gt_counts,
        det_masks=det_masks,
        gt_masks=gt_masks,
    )
