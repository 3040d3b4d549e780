"""Pascal VOC average precision: the 11-point (VOC2007) and all-point (VOC2010+) AP.

Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010,
section 4.2, and the development kit's ``VOCevaldet.m`` / ``VOCap.m``.

Matching (one IoU threshold, default 0.5) differs from COCO's:

- the detections of a class are visited by decreasing score over the whole data set;
- each detection looks only at the ground truth of its image and class with the
  highest IoU (the first one on ties). If that IoU is ``> t`` (strictly) and the
  ground truth is *difficult*, the detection is ignored; if it is not yet taken, the
  detection is a true positive and takes it; otherwise (taken, or IoU ``<= t``) it is
  a false positive. There is no fall-back to the second-best ground truth.
- difficult ground truths do not count in the number of positives.

AP of a class, from the cumulated ``recall_i = TP_i / npos`` and
``precision_i = TP_i / (TP_i + FP_i)``:

- all-point: the area under the precision envelope ``p(r) = max_{r' >= r} precision(r')``,
  ``AP = sum_i (r_i - r_{i-1}) p(r_i)``;
- 11-point: ``AP = 1/11 sum_{t in {0, 0.1, ..., 1}} max_{r_i >= t} precision_i``.

Boxes are continuous ``xyxy`` (no "+1" pixel as in the original MATLAB code), and ties
in score keep the input order (a stable sort).
"""
import numpy as np

from detection.metrics.inputs import flatten_detections
from detection.metrics.matching import pair_iou

__all__ = ["voc_ap", "voc_evaluate"]


def _check_curve(recall, precision):
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    for name, value in (("recall", recall), ("precision", precision)):
        if value.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} must be finite")
    if recall.shape != precision.shape:
        raise ValueError(
            "recall and precision must have the same shape, "
            f"got {recall.shape} and {precision.shape}"
        )
    return recall, precision


def voc_ap(recall, precision, use_07_metric=False):
    """Pascal VOC average precision of one precision-recall curve.

    Args:
        recall (ndarray[N]): float, cumulated recall after each detection (non-decreasing).
        precision (ndarray[N]): float, cumulated precision after each detection.
        use_07_metric (bool): True for the VOC2007 11-point AP, False for the all-point
            area under the precision envelope (VOC2010 and later).
    Returns:
        float: AP in [0, 1]; 0 for an empty curve.
    """
    recall, precision = _check_curve(recall, precision)
    if use_07_metric:
        # The same floats as the reference code's np.arange(0., 1.1, 0.1).
        points = np.arange(0.0, 1.1, 0.1)  # (11,)
        above = recall[None, :] >= points[:, None]  # (11, N)
        best = np.where(above, precision[None, :], -np.inf).max(axis=1, initial=-np.inf)
        return float(np.sum(np.where(np.isfinite(best), best, 0.0) / 11.0))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the envelope, from the right
    change = np.flatnonzero(mrec[1:] != mrec[:-1])  # where recall moves
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def _check_threshold(iou_threshold):
    number = (int, float, np.floating, np.integer)
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, number):
        raise TypeError(f"iou_threshold must be a float, got {type(iou_threshold).__name__}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    return float(iou_threshold)


def voc_match(data, iou_threshold):
    """VOC matching of every detection, vectorized over images and classes.

    Args:
        data (DetectionSet): flat detections and ground truths.
        iou_threshold (float): t; a match needs ``IoU > t``.
    Returns:
        tuple: ``order`` ndarray[D] int64 flat detection indices sorted by class, then
        decreasing score (stable); ``tp``, ``fp`` ndarray[D] bool in that order (a
        detection on a difficult ground truth is neither).
    """
    num_classes = len(data.classes)
    by_score = np.argsort(-data.det_scores, kind="stable")
    order = by_score[np.argsort(data.det_labels[by_score], kind="stable")]
    num_det = len(order)

    # (det, gt) pairs of the same image and class: det j repeated over its group's gts.
    det_group = data.det_images[order] * num_classes + data.det_labels[order]
    gt_group = data.gt_images * num_classes + data.gt_labels
    gt_order = np.argsort(gt_group, kind="stable")
    gt_group_sorted = gt_group[gt_order]
    first = np.searchsorted(gt_group_sorted, det_group, side="left")
    count = np.searchsorted(gt_group_sorted, det_group, side="right") - first  # (D,)
    pair_det = np.repeat(np.arange(num_det), count)  # (P,)
    pair_start = np.cumsum(count) - count
    pair_gt = gt_order[first[pair_det] + np.arange(len(pair_det)) - pair_start[pair_det]]
    # VOC has no crowd regions: every pair's IoU is the plain one.
    iou = pair_iou(data.det_boxes[order[pair_det]], data.gt_boxes[pair_gt],
                   np.zeros(len(pair_gt), bool))

    # Each detection's best ground truth: the highest IoU, the first one on ties.
    has_pairs = count > 0
    seg = pair_start[has_pairs]
    best_iou = np.full(num_det, -1.0)
    best_gt = np.full(num_det, -1, np.int64)
    if len(pair_det):
        best_iou[has_pairs] = np.maximum.reduceat(iou, seg)
        is_best = iou == best_iou[pair_det]
        first_best = np.minimum.reduceat(np.where(is_best, np.arange(len(iou)), len(iou)), seg)
        best_gt[has_pairs] = pair_gt[first_best]
    hit = best_iou > iou_threshold
    difficult = np.zeros(num_det, bool)
    difficult[hit] = data.gt_difficult[best_gt[hit]]
    candidate = np.flatnonzero(hit & ~difficult)
    # Of the detections aiming at the same ground truth, the first visited takes it.
    by_gt = candidate[np.argsort(best_gt[candidate], kind="stable")]
    first_of_gt = np.ones(len(by_gt), bool)
    first_of_gt[1:] = best_gt[by_gt[1:]] != best_gt[by_gt[:-1]]
    tp = np.zeros(num_det, bool)
    tp[by_gt[first_of_gt]] = True
    fp = ~tp & ~difficult
    return order, tp, fp


def voc_evaluate(predictions, targets, iou_threshold=0.5, use_07_metric=False):
    """Pascal VOC detection evaluation: AP per class and its mean.

    Args:
        predictions (list[dict]): per image ``boxes`` (D_i, 4) xyxy, ``scores`` (D_i,),
            ``labels`` (D_i,) int.
        targets (list[dict]): per image ``boxes`` (G_i, 4) xyxy, ``labels`` (G_i,) int,
            optional ``difficult`` (G_i,) bool/int (``iscrowd`` is not used by VOC).
        iou_threshold (float): a detection matches with ``IoU > iou_threshold``.
        use_07_metric (bool): VOC2007 11-point AP instead of the all-point AP.
    Returns:
        dict: ``map`` float, the mean AP over classes with at least one non-difficult
        ground truth (-1 if there is none); ``ap_per_class`` dict ``label -> AP``
        (-1 for a label without non-difficult ground truth); ``recall`` and
        ``precision``: dicts ``label -> ndarray[N_k]`` float64, the cumulated curves
        over the class's detections by decreasing score (empty without ground truth).
    """
    iou_threshold = _check_threshold(iou_threshold)
    data = flatten_detections(predictions, targets)
    order, tp, fp = voc_match(data, iou_threshold)
    num_classes = len(data.classes)
    cls = data.det_labels[order]
    seg_start = np.searchsorted(cls, np.arange(num_classes), side="left")
    seg_end = np.searchsorted(cls, np.arange(num_classes), side="right")
    npos = np.bincount(data.gt_labels[~data.gt_difficult], minlength=num_classes)
    ap, recall, precision = {}, {}, {}
    # A loop over classes (not boxes): each class is one vectorized curve.
    for k, label in enumerate(data.classes.tolist()):
        if npos[k] == 0:
            ap[label] = -1.0
            recall[label] = np.zeros(0)
            precision[label] = np.zeros(0)
            continue
        tp_cum = np.cumsum(tp[seg_start[k]:seg_end[k]])
        fp_cum = np.cumsum(fp[seg_start[k]:seg_end[k]])
        recall[label] = tp_cum / npos[k]
        precision[label] = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        ap[label] = voc_ap(recall[label], precision[label], use_07_metric)
    defined = [v for v in ap.values() if v > -1]
    return {
        "map": float(np.mean(defined)) if defined else -1.0,
        "ap_per_class": ap,
        "recall": recall,
        "precision": precision,
    }
