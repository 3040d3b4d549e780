"""Segmentation metrics from a confusion matrix.

Every metric of semantic segmentation is a function of one matrix: ``M[t, p]`` counts
the pixels whose target class is ``t`` and predicted class is ``p`` (rows = target,
columns = prediction; pixels labelled ``ignore_index`` are left out). From it::

    IoU_k   = M[k, k] / (sum_p M[k, p] + sum_t M[t, k] - M[k, k])   (TP / (TP + FP + FN))
    Dice_k  = 2 M[k, k] / (sum_p M[k, p] + sum_t M[t, k])            (2 TP / (2 TP + FP + FN))
    pixel accuracy = trace(M) / sum(M)

A class absent from both target and prediction has an undefined IoU (0 / 0): it is
reported as NaN and left out of the mean, as in the FCN paper (Long et al., 2015)
and in most benchmark code.

Two ways to use it: the functions below take ``(pred, target, num_classes)`` for one
batch (``pixel_accuracy`` needs no class count: ``(pred, target)``); ``ConfusionMatrix`` accumulates over a whole dataset, which is what an
evaluation loop needs (a mean of per-batch IoUs is not the dataset's IoU).
"""
import numpy as np

from nn._checks import check_int, check_same_shape, check_shape

__all__ = [
    "confusion_matrix", "ConfusionMatrix", "iou_per_class", "mean_iou", "pixel_accuracy",
    "dice_per_class",
]


def _check_pair_of_maps(pred, target):
    """``pred`` and ``target`` as ndarrays of integer class ids with the same shape."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    check_same_shape(pred, "pred", target, "target")
    for name, array in (("pred", pred), ("target", target)):
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise TypeError(f"{name} must hold integer class ids, got dtype {array.dtype}")
    return pred, target


def _check_labels(pred, target, num_classes, ignore_index):
    num_classes = check_int(num_classes, "num_classes", 1)
    pred, target = _check_pair_of_maps(pred, target)
    valid = target != ignore_index if ignore_index is not None else np.ones(target.shape, bool)
    t = target[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(
            f"target holds class ids outside [0, {num_classes}) that are not ignore_index={ignore_index}"
        )
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"pred holds class ids outside [0, {num_classes}) at non-ignored pixels")
    return p, t


def confusion_matrix(pred, target, num_classes, ignore_index=255):
    """Count (target, prediction) pairs over all non-ignored pixels.

    Args:
        pred (ndarray[...] int): predicted class ids, e.g. ``(N, H, W)``.
        target (ndarray[...] int): target class ids, same shape.
        num_classes (int): K.
        ignore_index (int or None): target pixels with this value are not counted.
    Returns:
        ndarray[K, K] int64: ``M[t, p]``, rows are targets, columns predictions.
    """
    p, t = _check_labels(pred, target, num_classes, ignore_index)
    # One bincount over the flattened pair index t·K + p: no Python loop, no np.add.at.
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _as_confusion(confusion):
    confusion = np.asarray(confusion)
    check_shape(confusion, "confusion", ("K", "K"))
    return confusion.astype(np.float64)


def _iou_from_confusion(confusion):
    m = _as_confusion(confusion)
    tp = np.diag(m)
    union = m.sum(axis=0) + m.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def _dice_from_confusion(confusion):
    m = _as_confusion(confusion)
    tp = np.diag(m)
    total = m.sum(axis=0) + m.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 2 * tp / np.where(total > 0, total, 1), np.nan)


def _mean_over(values, classes):
    if classes is not None:
        classes = np.asarray(classes, dtype=np.int64)
        if classes.size and (classes.min() < 0 or classes.max() >= values.size):
            raise ValueError(f"classes must be ids in [0, {values.size}), got {classes.tolist()}")
        values = values[classes]
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


class ConfusionMatrix:
    """A confusion matrix accumulated batch by batch over a dataset.

    Example::

        cm = ConfusionMatrix(num_classes=14)
        for images, targets in loader:
            cm.update(model_predictions, targets)
        print(cm.mean_iou(classes=range(3, 14)))

    Args:
        num_classes (int): K.
        ignore_index (int or None): target value that is not counted.
    """

    def __init__(self, num_classes, ignore_index=255):
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, target):
        """Add the pixels of one batch. Returns self."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        return self

    def reset(self):
        self.matrix[...] = 0

    def iou_per_class(self):
        """ndarray[K] float64: IoU of each class, NaN where the class is absent from both."""
        return _iou_from_confusion(self.matrix)

    def dice_per_class(self):
        """ndarray[K] float64: Dice (F1) of each class, NaN where absent from both."""
        return _dice_from_confusion(self.matrix)

    def mean_iou(self, classes=None):
        """Mean IoU over ``classes`` (default all), skipping classes absent from both."""
        return _mean_over(self.iou_per_class(), classes)

    def pixel_accuracy(self):
        """Fraction of non-ignored pixels whose class is right (NaN with no pixels)."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def __repr__(self):
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())})"


def iou_per_class(pred, target, num_classes, ignore_index=255):
    """Intersection over union of each class.

    Args:
        pred, target (ndarray[...] int): class ids of the same shape.
        num_classes (int): K.
        ignore_index (int or None): target value left out.
    Returns:
        ndarray[K] float64: ``TP / (TP + FP + FN)``; NaN for a class absent from both.
    """
    return _iou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def mean_iou(pred, target, num_classes, ignore_index=255, classes=None):
    """Mean of ``iou_per_class`` over ``classes`` (default: all), absent classes left out.

    Returns:
        float: the mean IoU, NaN when no class is present at all.
    """
    return _mean_over(iou_per_class(pred, target, num_classes, ignore_index), classes)


def pixel_accuracy(pred, target, *, ignore_index=255):
    """Fraction of non-ignored pixels predicted right (NaN when every pixel is ignored).

    It needs no class count: a pixel is right when its predicted id equals its target id.

    Args:
        pred, target (ndarray[...] int): class ids of the same shape.
        ignore_index (int or None): target value left out (keyword only).
    Returns:
        float: ``trace(M) / sum(M)`` of the confusion matrix ``M``.
    """
    pred, target = _check_pair_of_maps(pred, target)
    valid = target != ignore_index if ignore_index is not None else np.ones(target.shape, bool)
    total = int(valid.sum())
    return float(np.sum(pred[valid] == target[valid]) / total) if total else float("nan")


def dice_per_class(pred, target, num_classes, ignore_index=255):
    """Dice coefficient ``2 TP / (2 TP + FP + FN)`` of each class (NaN when absent from both).

    Returns:
        ndarray[K] float64.
    """
    return _dice_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))
