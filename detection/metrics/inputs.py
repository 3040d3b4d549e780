"""Checking and flattening the inputs of every detection metric.

All metrics take the same inputs, one entry per image::

    predictions[i] = {"boxes": (D_i, 4) xyxy, "scores": (D_i,), "labels": (D_i,) int}
    targets[i]     = {"boxes": (G_i, 4) xyxy, "labels": (G_i,) int,
                      optional "iscrowd" (G_i,) bool/int, "area" (G_i,) float,
                      "difficult" (G_i,) bool/int}

A Python loop over the images is unavoidable here (the input *is* a list); it only
checks shapes and collects arrays. Everything after that works on flat arrays, one
row per detection or ground truth, with the image index as a column: that is what
lets the matching and the accumulation run vectorized over all images at once.
"""
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DetectionSet", "flatten_detections"]


@dataclass
class DetectionSet:
    """Detections and ground truths of a whole data set as flat arrays.

    Attributes:
        num_images (int): number of images I.
        classes (ndarray[K]): int64, sorted labels present in predictions or targets.
        det_boxes (ndarray[D, 4]): float64 xyxy boxes of all detections, image by image.
        det_scores (ndarray[D]): float64.
        det_labels (ndarray[D]): int64 class index into ``classes`` (not the label).
        det_images (ndarray[D]): int64 image index.
        det_local (ndarray[D]): int64 index of the detection inside its image's arrays.
        gt_boxes (ndarray[G, 4]): float64 xyxy.
        gt_labels (ndarray[G]): int64 class index into ``classes``.
        gt_images (ndarray[G]): int64 image index.
        gt_local (ndarray[G]): int64 index inside its image's arrays.
        gt_crowd (ndarray[G]): bool, COCO ``iscrowd``.
        gt_area (ndarray[G]): float64, ``area`` if given else the box area.
        gt_difficult (ndarray[G]): bool, Pascal VOC ``difficult``.
        det_counts (ndarray[I]), gt_counts (ndarray[I]): int64 boxes per image.
    """

    num_images: int
    classes: np.ndarray
    det_boxes: np.ndarray
    det_scores: np.ndarray
    det_labels: np.ndarray
    det_images: np.ndarray
    det_local: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_images: np.ndarray
    gt_local: np.ndarray
    gt_crowd: np.ndarray
    gt_area: np.ndarray
    gt_difficult: np.ndarray
    det_counts: np.ndarray
    gt_counts: np.ndarray

    @property
    def det_area(self):
        """ndarray[D]: float64 box area ``(x2 - x1) * (y2 - y1)`` of each detection."""
        return box_area(self.det_boxes)


def box_area(boxes):
    """Area of xyxy boxes, ``(x2 - x1) * (y2 - y1)`` (continuous coordinates, no +1).

    Args:
        boxes (ndarray[N, 4]): xyxy, float.
    Returns:
        ndarray[N]: float, same dtype.
    """
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


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
            f"{name}[{key!r}] must have shape ({n},) to match {name}['boxes'], got {value.shape}"
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


def flatten_detections(predictions, targets):
    """Check ``predictions`` and ``targets`` and gather them into a :class:`DetectionSet`.

    Args:
        predictions (list[dict]): one dict per image with ``boxes`` (D_i, 4) xyxy,
            ``scores`` (D_i,) and ``labels`` (D_i,) int.
        targets (list[dict]): one dict per image with ``boxes`` (G_i, 4) xyxy and
            ``labels`` (G_i,) int; optional ``iscrowd`` (G_i,), ``area`` (G_i,),
            ``difficult`` (G_i,).
    Returns:
        DetectionSet: flat float64/int64 arrays; labels mapped to class indices.
    Raises:
        TypeError: not lists of dicts, or arrays of the wrong dtype.
        ValueError: lengths differ, missing keys, wrong shapes, non-finite boxes or
            scores, boxes with x2 < x1 or y2 < y1, negative or non-finite areas.
    """
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
    num_images = len(targets)
    det_boxes, det_scores, det_labels = [], [], []
    gt_boxes, gt_labels, gt_crowd, gt_area, gt_area_given, gt_difficult = [], [], [], [], [], []
    det_counts = np.zeros(num_images, np.int64)
    gt_counts = np.zeros(num_images, np.int64)
    for i, (pred, target) in enumerate(zip(predictions, targets)):
        name = f"predictions[{i}]"
        _check_entry(pred, name, ["boxes", "scores", "labels"])
        boxes = _boxes(pred, name)
        n = len(boxes)
        det_boxes.append(boxes)
        det_scores.append(_vector(pred, "scores", name, n, "float"))
        det_labels.append(_vector(pred, "labels", name, n, "int"))
        det_counts[i] = n

        name = f"targets[{i}]"
        _check_entry(target, name, ["boxes", "labels"])
        boxes = _boxes(target, name)
        n = len(boxes)
        gt_boxes.append(boxes)
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
            else np.zeros(n)  # replaced by the box area below
        )
        gt_area_given.append("area" in target)
        gt_counts[i] = n

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
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{arg}[{images[j]}]['boxes'][{local[j]}] must be xyxy with x2 >= x1 and "
                f"y2 >= y1, got {boxes[j].tolist()}"
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
    gt_area = np.where(given, gt_area, box_area(gt_boxes))

    # Labels -> dense class indices 0..K-1 over every label seen in either input.
    classes = np.unique(np.concatenate([gt_labels, det_labels]))
    return DetectionSet(
        num_images=num_images,
        classes=classes,
        det_boxes=det_boxes,
        det_scores=det_scores,
        det_labels=np.searchsorted(classes, det_labels),
        det_images=det_images,
        det_local=det_local,
        gt_boxes=gt_boxes,
        gt_labels=np.searchsorted(classes, gt_labels),
        gt_images=gt_images,
        gt_local=gt_local,
        gt_crowd=gt_crowd,
        gt_area=gt_area,
        gt_difficult=gt_difficult,
        det_counts=det_counts,
        gt_counts=gt_counts,
    )
