"""Ground truth of a detection batch: one dict per image, checked once for every detector.

Every detector here trains on the same targets: a list with one dict per image,
``{"boxes": (G, 4) xyxy, "labels": (G,) ints}``, torchvision's convention. An image
without objects has ``G = 0`` (``[]`` is read as ``(0, 4)``). The detectors differ only
in a few rules, which are the arguments of ``check_detection_targets``:

- the largest label (RetinaNet and YOLO have no background class: labels ``1..K``;
  the R-CNN family counts background as class 0: labels ``1..K - 1``);
- whether an empty box (``x2 == x1`` or ``y2 == y1``) is allowed;
- the float dtype of the boxes returned.
"""
import numpy as np

__all__ = ["check_detection_targets", "BOX_EXTENTS"]

# What a target box must satisfy beyond being finite xyxy: nothing, x2 >= x1 and y2 >= y1,
# or x2 > x1 and y2 > y1.
BOX_EXTENTS = ("any", "ordered", "positive")


def _read_boxes(boxes, name, dtype):
    """``boxes`` as an ndarray[G, 4] of ``dtype`` (an empty one as ``(0, 4)``), or a ValueError."""
    boxes = np.asarray(boxes, dtype)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (G, 4), got {boxes.shape}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{name} holds non-finite coordinates")
    return boxes


def check_detection_targets(targets, max_label, num_images=None, box_extent="any",
                            dtype=np.float32, read_boxes=None):
    """Validated ground truth per image, or a ValueError/TypeError naming the entry.

    Args:
        targets (list of dict): per image ``boxes`` (G, 4) xyxy and ``labels`` (G,) ints.
        max_label (int): the largest valid label; labels lie in ``1..max_label``.
        num_images (int, optional): N, the expected length (not checked when None).
        box_extent (str): ``"any"`` (finite is enough), ``"ordered"`` (``x2 >= x1`` and
            ``y2 >= y1``: empty boxes allowed) or ``"positive"`` (``x2 > x1`` and ``y2 > y1``).
        dtype (numpy dtype): float dtype of the boxes returned.
        read_boxes (callable, optional): ``read_boxes(array_like, name) -> ndarray[G, 4]``
            that checks the shape and the finiteness of one image's boxes (e.g.
            ``detection.boxes.as_boxes``); its result is cast to ``dtype``. By default the
            boxes are cast to ``dtype`` first, then checked.
    Returns:
        list of tuple: ``(boxes ndarray[G, 4] dtype, labels ndarray[G] int64)`` per image.
    Raises:
        TypeError: ``targets`` is not a list or tuple.
        ValueError: a wrong length, an entry that is not a dict with ``boxes`` and
            ``labels``, a wrong box shape, a non-finite coordinate, a box breaking
            ``box_extent``, labels that are not ``G`` integers in ``1..max_label``.
    """
    if box_extent not in BOX_EXTENTS:
        raise ValueError(f"box_extent must be one of {BOX_EXTENTS}, got {box_extent!r}")
    if not isinstance(targets, (list, tuple)):
        raise TypeError(f"targets must be a list of dicts, got {type(targets).__name__}")
    if num_images is not None and len(targets) != num_images:
        raise ValueError(f"got {num_images} images but {len(targets)} targets")
    checked = []
    for i, target in enumerate(targets):
        if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
            raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels'")
        name = f"targets[{i}]['boxes']"
        if read_boxes is None:
            boxes = _read_boxes(target["boxes"], name, dtype)
        else:
            boxes = read_boxes(target["boxes"], name).astype(dtype, copy=False)
        x1, y1, x2, y2 = boxes.T
        if box_extent == "ordered" and np.any((x2 < x1) | (y2 < y1)):
            raise ValueError(f"{name} must be xyxy with x2 >= x1 and y2 >= y1")
        if box_extent == "positive" and np.any((x2 <= x1) | (y2 <= y1)):
            raise ValueError(f"{name} must have positive widths and heights")
        labels = np.asarray(target["labels"])
        if labels.shape != (boxes.shape[0],) or (
                labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise ValueError(f"targets[{i}]['labels'] must be {boxes.shape[0]} integers, "
                             f"got {labels.dtype} {labels.shape}")
        if labels.size and (labels.min() < 1 or labels.max() > max_label):
            raise ValueError(f"targets[{i}]['labels'] must lie in 1..{max_label}, "
                             f"got {labels.tolist()}")
        checked.append((boxes, labels.astype(np.int64)))
    return checked
