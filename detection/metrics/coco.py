"""COCO mean average precision (mAP) and recall (mAR), equal to pycocotools' ``COCOeval``.

Definitions (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014, and
the reference evaluation code, pycocotools' ``cocoeval.py``):

- Detections are matched to ground truths per (image, class), greedily by score, at
  each IoU threshold ``t`` in 0.50:0.05:0.95 (see :mod:`detection.metrics.matching`).
- For one class, all its detections over the data set are sorted by score (stable, so
  ties keep image order); with ``TP_i`` and ``FP_i`` the counts among the first i,

      recall_i = TP_i / G,     precision_i = TP_i / (TP_i + FP_i + eps)

  where G counts the non-ignored ground truths and eps = 2.2e-16 (``np.spacing(1)``).
- The precision is made monotone (the *envelope*: ``p_i <- max_{j >= i} p_j``) and read
  at the 101 recall points r = 0, 0.01, ..., 1 at the first detection with
  ``recall_i >= r`` (0 if recall never reaches r). AP is the mean of those 101 values;
  mAP averages AP over IoU thresholds and over classes that have ground truths.
- ``iou_type="bbox"`` compares boxes; ``iou_type="segm"`` compares instance masks
  (:mod:`detection.metrics.masks`: IoU of pixel sets, a crowd region's IoU is the
  intersection over the detection's pixels), as ``COCOeval(iouType="segm")``.
- Area ranges (object area = box area, or mask area for "segm", unless the target
  gives ``area``; a detection's area is always its own box or mask area):
  all [0, 1e10], small [0, 32²], medium [32², 96²], large [96², 1e10], bounds included.
  A ground truth outside the range is ignored; an *unmatched* detection outside the
  range is ignored too. Crowd regions (``iscrowd``) are always ignored, and a
  detection falling into one is ignored.
- ``maxDets`` (1, 10, ``max_detections``) keeps the best detections per image *and*
  class. Recall (AR) is the final recall ``TP / G``, averaged over thresholds and classes.
- -1 marks "undefined": a class with no ground truth in the range, or a summary with no
  defined entry at all.

The whole computation is vectorized over images, classes and thresholds; the only
Python loops run over the 4 area ranges x 3 maxDets and over the ranks of the greedy
matching (at most ``max_detections`` steps).
"""
from dataclasses import dataclass

import numpy as np

from detection.metrics.inputs import DetectionSet, flatten_detections
from detection.metrics.matching import DetectionGroups, group_detections, match_detections

__all__ = [
    "COCO_IOU_THRESHOLDS", "RECALL_THRESHOLDS", "AREA_RANGES", "CocoEvaluation",
    "coco_evaluate", "mean_average_precision", "precision_recall_curve",
]

# The same expressions as pycocotools, so that the floats are bit-identical.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = {
    "all": (0.0**2, 1e5**2),
    "small": (0.0**2, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
_EPS = np.spacing(1)  # pycocotools' guard in TP / (TP + FP + eps)


@dataclass
class CocoEvaluation:
    """Everything COCO's ``evaluate`` + ``accumulate`` produce, in pycocotools' layout.

    Attributes:
        classes (ndarray[K]): int64 labels, sorted.
        iou_thresholds (ndarray[T]): float64.
        area_names (tuple[str]): names of the A area ranges.
        max_dets (tuple[int]): the M values of maxDets, increasing.
        precision (ndarray[T, R, K, A, M]): float64 interpolated precision at the
            R = 101 recall points, -1 for classes without ground truth.
        recall (ndarray[T, K, A, M]): float64 final recall, -1 as above.
        scores (ndarray[T, R, K, A, M]): float64 detection score at which each recall
            point is reached (0 if never), -1 as above.
        data (DetectionSet): the flattened inputs.
        groups (DetectionGroups): the kept detections and their (det, gt) pairs.
        match (ndarray[A, T, Dk]): int32 flat gt index matched by each kept detection, -1.
        det_ignored (ndarray[A, T, Dk]): bool, detection neither TP nor FP.
        gt_ignore (ndarray[A, G]): bool.
    """

    classes: np.ndarray
    iou_thresholds: np.ndarray
    area_names: tuple
    max_dets: tuple
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    data: DetectionSet
    groups: DetectionGroups
    match: np.ndarray
    det_ignored: np.ndarray
    gt_ignore: np.ndarray


def _check_iou_thresholds(iou_thresholds):
    if iou_thresholds is None:
        return COCO_IOU_THRESHOLDS.copy()
    thr = np.atleast_1d(np.asarray(iou_thresholds, dtype=np.float64))
    if thr.ndim != 1 or thr.size == 0:
        raise ValueError(
            f"iou_thresholds must be a float or a 1-D sequence of floats, got shape {thr.shape}"
        )
    if not np.all(np.isfinite(thr)) or np.any(thr < 0) or np.any(thr > 1):
        raise ValueError(f"iou_thresholds must lie in [0, 1], got {thr.tolist()}")
    return thr


def _check_max_detections(max_detections, minimum):
    if isinstance(max_detections, bool) or not isinstance(max_detections, (int, np.integer)):
        raise TypeError(f"max_detections must be an int, got {type(max_detections).__name__}")
    if max_detections < minimum:
        raise ValueError(f"max_detections must be >= {minimum}, got {max_detections}")
    return int(max_detections)


def _check_area(area):
    if area not in AREA_RANGES:
        raise ValueError(f"area must be one of {list(AREA_RANGES)}, got {area!r}")
    return area


def _min_true_positives(num_gt, recall_thresholds):
    """Smallest TP count j with ``j / num_gt >= r`` in float64, as pycocotools computes recall.

    Searching the integer TP counts instead of the float recalls lets one
    ``searchsorted`` serve all classes at once without any rounding change.

    Args:
        num_gt (ndarray[K]): int, > 0.
        recall_thresholds (ndarray[R]): float64 in [0, 1].
    Returns:
        ndarray[K, R]: int64.
    """
    n = num_gt.astype(np.float64)[:, None]  # (K, 1)
    base = np.maximum(np.floor(recall_thresholds[None, :] * n) - 1, 0)  # (K, R)
    # The exact answer is ceil(r * n); float rounding moves it by at most one.
    candidates = base[..., None] + np.arange(4)  # (K, R, 4)
    ok = candidates / n[..., None] >= recall_thresholds[None, :, None]
    return (base + np.argmax(ok, axis=-1)).astype(np.int64)


def _interpolated_precision(tp, fp, cls, scores, num_gt):
    """Precision envelope at the recall points, for one threshold, area range and maxDets.

    Args:
        tp, fp (ndarray[n]): bool, detections sorted by class, then decreasing score.
        cls (ndarray[n]): int64 class index, sorted.
        scores (ndarray[n]): float64.
        num_gt (ndarray[K]): int64 non-ignored ground truths per class.
    Returns:
        tuple: precision (K, R), scores (K, R), recall (K,), all float64.
    """
    n = len(tp)
    classes = np.arange(len(num_gt))
    seg_start = np.searchsorted(cls, classes, side="left")  # (K,)
    seg_end = np.searchsorted(cls, classes, side="right")
    npig = np.maximum(num_gt, 1)

    # Running counts over all classes; a class's own counts subtract what came before it.
    tp_run = np.zeros(n + 1, np.int64)
    fp_run = np.zeros(n + 1, np.int64)
    np.cumsum(tp, out=tp_run[1:])
    np.cumsum(fp, out=fp_run[1:])
    tp_before, fp_before = tp_run[seg_start], fp_run[seg_start]  # (K,)
    recall = (tp_run[seg_end] - tp_before) / npig
    seg_len = seg_end - seg_start
    tp_cls = tp_run[1:] - np.repeat(tp_before, seg_len)  # (n,)
    fp_cls = fp_run[1:] - np.repeat(fp_before, seg_len)
    pr = np.zeros(n + 1)  # pr[n] = 0: a sentinel that reduceat may touch
    np.divide(tp_cls, fp_cls + tp_cls + _EPS, out=pr[:n])

    # Recall point r is reached at the first detection of the class with TP count >= need.
    # The running count never decreases, so one searchsorted finds all (class, r) at once:
    # the first position with tp_run >= tp_before + need.
    need = _min_true_positives(npig, RECALL_THRESHOLDS)  # (K, R)
    pos = np.searchsorted(tp_run[1:], tp_before[:, None] + need, side="left")  # (K, R)
    # need == 0 (r = 0) may land on the previous class's trailing false positives.
    pos = np.maximum(pos, seg_start[:, None])
    reached = pos < seg_end[:, None]

    # Envelope at pos = max of pr over [pos, class end): the maximum of each block
    # [pos_r, pos_r+1) by reduceat, then a running maximum from the right.
    ends = seg_end[:, None]  # (K, 1)
    bounds = np.concatenate([np.minimum(pos, ends), ends], axis=1)  # (K, R+1)
    blocks = np.maximum.reduceat(pr, bounds.ravel()).reshape(bounds.shape)[:, :-1]
    # Unreached recall points (a suffix in r) read 0 and must not leak leftwards.
    blocks = np.where(reached, blocks, 0.0)
    precision = np.maximum.accumulate(blocks[:, ::-1], axis=1)[:, ::-1]
    at_score = np.where(reached, np.append(scores, 0.0)[np.minimum(pos, n)], 0.0)
    return precision, at_score, recall


def _accumulate(matched, ignored, det_cls, det_rank, det_scores, num_gt, max_dets):
    """COCO's ``accumulate``: precision at the recall points, for every setting at once.

    Args (detections in evaluation order: by class, then decreasing score):
        matched (ndarray[A, T, Dk]): bool, kept detection matched a ground truth.
        ignored (ndarray[A, T, Dk]): bool, kept detection neither TP nor FP.
        det_cls (ndarray[Dk]): int64 class index.
        det_rank (ndarray[Dk]): int64 rank inside its (image, class) group.
        det_scores (ndarray[Dk]): float64.
        num_gt (ndarray[A, K]): int64 non-ignored ground truths per class.
        max_dets (tuple[int]): M maxDets values.
    Returns:
        tuple: precision (T, R, K, A, M), recall (T, K, A, M), scores (T, R, K, A, M).
    """
    num_areas, num_thr, _ = matched.shape
    num_classes = num_gt.shape[1]
    num_rec = len(RECALL_THRESHOLDS)
    shape = (num_thr, num_rec, num_classes, num_areas, len(max_dets))
    precision, scores = -np.ones(shape), -np.ones(shape)
    recall = -np.ones((num_thr, num_classes, num_areas, len(max_dets)))

    classes = np.arange(num_classes)
    for m, max_det in enumerate(max_dets):
        keep = np.flatnonzero(det_rank < max_det)
        all_kept = len(keep) == len(det_rank)
        # pycocotools reads the score at recall 0 from the class's first detection even
        # when that one is ignored; the ignored detections are dropped below.
        first = np.searchsorted(det_cls[keep], classes, side="left")
        has_det = np.searchsorted(det_cls[keep], classes, side="right") > first
        first_score = np.where(has_det, np.append(det_scores[keep], 0.0)[first], 0.0)
        for a in range(num_areas):
            valid = num_gt[a] > 0
            if not valid.any():
                continue
            ign = ignored[a] if all_kept else ignored[a][:, keep]  # (T, n)
            # A detection ignored at every threshold changes no count: drop it (the
            # envelope and the recall points do not see it).
            live = keep[~ign.all(axis=0)]
            cls, cls_scores = det_cls[live], det_scores[live]
            for t in range(num_thr):
                hit, skip = matched[a, t, live], ignored[a, t, live]
                q, s, rec = _interpolated_precision(
                    hit & ~skip, ~hit & ~skip, cls, cls_scores, num_gt[a]
                )
                if RECALL_THRESHOLDS[0] == 0.0:
                    s[:, 0] = first_score
                precision[t, :, valid, a, m] = q[valid]
                scores[t, :, valid, a, m] = s[valid]
                recall[t, valid, a, m] = rec[valid]
    return precision, recall, scores


def _evaluate(data, iou_thresholds, area_names, max_dets):
    """Match and accumulate; see :func:`coco_evaluate`."""
    ranges = np.array([AREA_RANGES[name] for name in area_names], np.float64)  # (A, 2)
    lo, hi = ranges[:, :1], ranges[:, 1:]
    gt_ignore = data.gt_crowd[None, :] | (data.gt_area[None, :] < lo) | (data.gt_area[None, :] > hi)
    groups = group_detections(data, max_dets[-1])
    match = match_detections(groups, iou_thresholds, gt_ignore, data.gt_crowd)

    det_area = data.det_area[groups.det_index]
    det_outside = (det_area[None, :] < lo) | (det_area[None, :] > hi)  # (A, Dk)
    matched = match >= 0
    # Ignored: matched to an ignored gt, or unmatched and outside the area range.
    det_ignored = np.repeat(det_outside[:, None, :], len(iou_thresholds), axis=1)  # (A, T, Dk)
    a_idx, t_idx, j_idx = np.nonzero(matched)
    det_ignored[a_idx, t_idx, j_idx] = gt_ignore[a_idx, match[a_idx, t_idx, j_idx]]

    num_classes = len(data.classes)
    num_gt = np.stack([
        np.bincount(data.gt_labels[~gt_ignore[a]], minlength=num_classes)
        for a in range(len(area_names))
    ]) if num_classes else np.zeros((len(area_names), 0), np.int64)
    precision, recall, scores = _accumulate(
        matched, det_ignored, data.det_labels[groups.det_index], groups.det_rank,
        data.det_scores[groups.det_index], num_gt, max_dets,
    )
    return CocoEvaluation(
        classes=data.classes, iou_thresholds=np.asarray(iou_thresholds, np.float64),
        area_names=tuple(area_names), max_dets=tuple(max_dets),
        precision=precision, recall=recall, scores=scores, data=data, groups=groups,
        match=match, det_ignored=det_ignored, gt_ignore=gt_ignore,
    )


def coco_evaluate(predictions, targets, iou_thresholds=None, max_detections=100, iou_type="bbox"):
    """COCO evaluation with the full precision/recall arrays (pycocotools' ``eval``).

    Args:
        predictions (list[dict]): per image ``boxes`` (D_i, 4) xyxy, ``scores`` (D_i,),
            ``labels`` (D_i,) int; for "segm" ``masks`` (D_i, H, W) bool.
        targets (list[dict]): per image ``boxes`` (G_i, 4) xyxy, ``labels`` (G_i,) int,
            optional ``iscrowd`` (G_i,) and ``area`` (G_i,) (default: box or mask area);
            for "segm" ``masks`` (G_i, H, W) bool.
        iou_thresholds (sequence[float] | None): default 0.50:0.05:0.95.
        max_detections (int): the last maxDets value (>= 10); maxDets = (1, 10, max_detections).
        iou_type (str): "bbox" (box IoU) or "segm" (mask IoU).
    Returns:
        CocoEvaluation: ``precision`` (T, 101, K, 4, 3), ``recall`` (T, K, 4, 3), ... with
        areas (all, small, medium, large) and maxDets (1, 10, max_detections).
    """
    thresholds = _check_iou_thresholds(iou_thresholds)
    max_detections = _check_max_detections(max_detections, 10)
    data = flatten_detections(predictions, targets, iou_type)
    return _evaluate(data, thresholds, tuple(AREA_RANGES), (1, 10, max_detections))


def _mean_defined(values):
    """Mean of the entries > -1, or -1 if there are none (pycocotools' summarize)."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


def summarize(evaluation):
    """The 12 COCO summary numbers of an evaluation (pycocotools' ``stats``), as a dict.

    Args:
        evaluation (CocoEvaluation): with areas (all, small, medium, large).
    Returns:
        dict[str, float]: map, map_50, map_75, map_small, map_medium, map_large, mar_1,
        mar_10, mar_100 (at the last maxDets), mar_small, mar_medium, mar_large.
    """
    precision, recall = evaluation.precision, evaluation.recall
    thr = evaluation.iou_thresholds
    area = {name: i for i, name in enumerate(evaluation.area_names)}

    def ap(iou=None, area_name="all"):
        p = precision[..., area[area_name], -1]  # (T, R, K)
        if iou is not None:
            p = p[np.isclose(thr, iou, rtol=0.0, atol=1e-12)]
        return _mean_defined(p)

    def ar(m, area_name="all"):
        return _mean_defined(recall[:, :, area[area_name], m])

    return {
        "map": ap(), "map_50": ap(0.5), "map_75": ap(0.75),
        "map_small": ap(area_name="small"), "map_medium": ap(area_name="medium"),
        "map_large": ap(area_name="large"),
        "mar_1": ar(0), "mar_10": ar(1), "mar_100": ar(2),
        "mar_small": ar(2, "small"), "mar_medium": ar(2, "medium"), "mar_large": ar(2, "large"),
    }


def mean_average_precision(predictions, targets, iou_thresholds=None, max_detections=100,
                           iou_type="bbox"):
    """COCO mAP and mAR of detections, equal to pycocotools' ``COCOeval.stats``.

    See the module docstring for the definitions. With ``iou_type="segm"`` the masks are
    compared instead of the boxes, and every figure equals ``COCOeval(iouType="segm")``.

    A predicted box with ``x2 < x1`` or ``y2 < y1`` is read as an empty box, as
    :func:`detection.nms.nms` reads it (area 0, IoU 0 with everything: a false positive
    in the area ranges "all" and "small"); such a target box raises ``ValueError``.

    Args:
        predictions (list[dict]): one dict per image: ``boxes`` (D_i, 4) xyxy float,
            ``scores`` (D_i,) float, ``labels`` (D_i,) int; for "segm" also ``masks``
            (D_i, H, W) bool (``boxes`` then optional).
        targets (list[dict]): one dict per image: ``boxes`` (G_i, 4) xyxy float,
            ``labels`` (G_i,) int; optional ``iscrowd`` (G_i,) bool/int and ``area``
            (G_i,) float (object area for the small/medium/large split; default the box
            area, or the mask area for "segm"); for "segm" also ``masks`` (G_i, H, W)
            bool of the image's size (``boxes`` then optional).
        iou_thresholds (sequence[float] | None): IoU thresholds; default 0.50:0.05:0.95.
            ``map_50``/``map_75`` are -1 if 0.5/0.75 is not among them.
        max_detections (int): detections kept per image and class, the last of COCO's
            maxDets (1, 10, max_detections); must be >= 10. ``mar_100`` is the recall
            at this value whatever it is.
        iou_type (str): "bbox" (box IoU, default) or "segm" (mask IoU).
    Returns:
        dict: the floats ``map, map_50, map_75, map_small, map_medium, map_large, mar_1,
        mar_10, mar_100, mar_small, mar_medium, mar_large`` (-1 where undefined), and
        ``map_per_class``: a dict ``label (int) -> AP (float)`` over all IoU thresholds,
        area "all", for every label seen in predictions or targets (-1 for a label
        with no ground truth).
    Raises:
        TypeError, ValueError: malformed inputs (see :func:`flatten_detections`).
    """
    evaluation = coco_evaluate(predictions, targets, iou_thresholds, max_detections, iou_type)
    result = summarize(evaluation)
    per_class = evaluation.precision[:, :, :, 0, -1]  # (T, R, K)
    result["map_per_class"] = {
        int(label): _mean_defined(per_class[:, :, k]) for k, label in enumerate(evaluation.classes)
    }
    return result


def precision_recall_curve(predictions, targets, iou_threshold=0.5, area="all", max_detections=100,
                           iou_type="bbox"):
    """COCO's interpolated precision-recall curve of every class at one IoU threshold.

    Args:
        predictions (list[dict]): as in :func:`mean_average_precision`.
        targets (list[dict]): as in :func:`mean_average_precision`.
        iou_threshold (float): t in [0, 1].
        area (str): "all", "small", "medium" or "large".
        max_detections (int): detections kept per image and class (>= 1).
        iou_type (str): "bbox" or "segm".
    Returns:
        dict: ``labels`` ndarray[K] int64; ``recall`` ndarray[101] float64, the recall
        points 0, 0.01, ..., 1; ``precision`` ndarray[K, 101] float64, the precision
        envelope at each recall point (0 past the highest recall reached, -1 for a
        class without ground truth); ``scores`` ndarray[K, 101] float64, the score
        threshold reaching that recall; ``ap`` ndarray[K] float64, the mean of each row
        (-1 without ground truth); ``iou_threshold`` float.
    """
    thr = _check_iou_thresholds(iou_threshold)
    if thr.size != 1:
        raise ValueError(f"iou_threshold must be a single float, got {thr.tolist()}")
    _check_area(area)
    max_detections = _check_max_detections(max_detections, 1)
    data = flatten_detections(predictions, targets, iou_type)
    evaluation = _evaluate(data, thr, (area,), (max_detections,))
    precision = evaluation.precision[0, :, :, 0, 0].T  # (K, R)
    defined = precision[:, 0] > -1
    ap = np.where(defined, precision.mean(axis=1), -1.0)
    return {
        "labels": evaluation.classes.copy(),
        "recall": RECALL_THRESHOLDS.copy(),
        "precision": precision,
        "scores": evaluation.scores[0, :, :, 0, 0].T,
        "ap": ap,
        "iou_threshold": float(thr[0]),
    }
