"""Explain mode: why is my mAP low? The COCO verdict on every detection and ground truth.

For each IoU threshold, every detection is a true positive (``"tp"``), a false
positive (``"fp"``) or ``"ignored"``, with the ground truth it matched and the IoU —
exactly the matching behind :func:`detection.metrics.mean_average_precision`. False
positives are sorted into the error types of Hoiem et al., "Diagnosing Error in
Object Detectors" (ECCV 2012), also used by TIDE (Bolya et al., ECCV 2020):

- ``"duplicate"``: overlaps a ground truth of its class with ``IoU >= t``, but a
  higher-scoring detection took it first (non-maximum suppression let it through);
- ``"localization"``: the best IoU with a ground truth of its class is in ``[0.1, t)``;
- ``"confusion"``: otherwise, ``IoU >= 0.1`` with a ground truth of another class;
- ``"background"``: ``IoU < 0.1`` with every ground truth (hallucinated object).

Only the non-ignored ground truths count for these kinds. An ignored detection has a
reason too: ``"crowd"`` (inside a crowd region), ``"ignored_gt"`` (matched an object
outside the area range), ``"out_of_area"`` (unmatched, itself outside the area range)
or ``"max_detections"`` (beyond ``max_detections`` in its image and class). A ground
truth no detection matched is *missed*: the recall lost.
"""
import numpy as np

from detection.metrics.coco import (
    _check_area, _check_iou_thresholds, _check_max_detections, _evaluate,
)
from detection.metrics.inputs import flatten_detections
from detection.metrics.matching import pair_iou

__all__ = ["explain_detections", "format_explanation", "FP_KINDS", "IGNORE_REASONS"]

FP_KINDS = ("duplicate", "localization", "confusion", "background")
IGNORE_REASONS = ("crowd", "ignored_gt", "out_of_area", "max_detections")
BACKGROUND_IOU = 0.1  # below this overlap a detection "sees" no object (Hoiem et al.)


def _best_iou_per_det(det_boxes, det_images, det_labels, data, gt_valid, same_class):
    """Highest IoU of each detection with a valid ground truth of its image.

    Args:
        det_boxes (ndarray[D, 4]): float64 xyxy.
        det_images (ndarray[D]): int64.
        det_labels (ndarray[D]): int64 class index.
        data (DetectionSet): the ground truths (flat, image-major).
        gt_valid (ndarray[G]): bool, ground truths to consider.
        same_class (bool): True: only the detection's class; False: only other classes.
    Returns:
        tuple: ``best_iou`` ndarray[D] float64 (-1 if there is no such ground truth),
        ``best_gt`` ndarray[D] int64 flat gt index of the first one with that IoU (-1 if none).
    """
    num_det = len(det_boxes)
    # Ground truths are stored image by image: image i owns [gt_first[i], gt_first[i] + n_i).
    gt_first = np.cumsum(data.gt_counts) - data.gt_counts
    count = data.gt_counts[det_images]
    pair_det = np.repeat(np.arange(num_det), count)  # (P,)
    pair_start = np.cumsum(count) - count
    pair_gt = gt_first[det_images][pair_det] + np.arange(len(pair_det)) - pair_start[pair_det]
    iou = pair_iou(det_boxes[pair_det], data.gt_boxes[pair_gt], np.zeros(len(pair_det), bool))
    same = data.gt_labels[pair_gt] == det_labels[pair_det]
    usable = gt_valid[pair_gt] & (same if same_class else ~same)
    key = np.where(usable, iou, -1.0)
    best = np.full(num_det, -1.0)
    first = np.zeros(num_det, np.int64)
    has = count > 0
    if len(pair_det):
        # Segment maximum, then the first pair reaching it (reduceat needs non-empty segments).
        best[has] = np.maximum.reduceat(key, pair_start[has])
        is_best = key == best[pair_det]
        position = np.where(is_best, np.arange(len(key)), len(key))
        first[has] = np.minimum.reduceat(position, pair_start[has])
    found = best >= 0
    if len(pair_gt):
        best_gt = np.where(found, pair_gt[np.minimum(first, len(pair_gt) - 1)], -1)
    else:
        best_gt = np.full(num_det, -1, np.int64)
    return best, best_gt


def explain_detections(predictions, targets, iou_thresholds=0.5, max_detections=100, area="all"):
    """For every detection and IoU threshold: TP, FP (of which kind) or ignored, and why.

    Args:
        predictions (list[dict]): per image ``boxes`` (D_i, 4) xyxy, ``scores`` (D_i,),
            ``labels`` (D_i,) int.
        targets (list[dict]): per image ``boxes`` (G_i, 4), ``labels`` (G_i,), optional
            ``iscrowd`` and ``area`` (G_i,).
        iou_thresholds (float | sequence[float]): the T thresholds to explain.
        max_detections (int): detections kept per image and class (COCO's last maxDets).
        area (str): COCO area range, "all", "small", "medium" or "large".
    Returns:
        dict with
        ``iou_thresholds`` ndarray[T] float64;
        ``images``: a list with one dict per image, arrays indexed like the inputs:
            ``status`` ndarray[T, D_i] str ("tp" | "fp" | "ignored"),
            ``reason`` ndarray[T, D_i] str ("" for a TP, a kind of :data:`FP_KINDS`
            for a FP, one of :data:`IGNORE_REASONS` for an ignored detection),
            ``matched_gt`` ndarray[T, D_i] int64 (index into the image's targets, -1),
            ``iou`` ndarray[T, D_i] float64 (IoU with the matched gt, 0 if none; for a
            crowd region the intersection over the detection's area),
            ``best_gt``/``best_iou`` ndarray[D_i] int64/float64 (the non-ignored gt of
            the same class with the highest IoU, -1/0 if none overlaps),
            ``missed`` ndarray[T, G_i] bool (non-ignored gt matched by no detection),
            ``gt_ignored`` ndarray[G_i] bool;
        ``summary``: dict of ndarray[T] int64 totals over the data set: ``tp``, ``fp``,
            ``ignored``, one entry per FP kind, ``missed``, and ``num_gt`` (non-ignored
            ground truths, the same for every threshold).
    """
    thresholds = _check_iou_thresholds(iou_thresholds)
    max_detections = _check_max_detections(max_detections, 1)
    _check_area(area)
    data = flatten_detections(predictions, targets)
    evaluation = _evaluate(data, thresholds, (area,), (max_detections,))
    groups = evaluation.groups
    num_thr, num_det, num_gt = len(thresholds), len(data.det_boxes), len(data.gt_boxes)
    kept = groups.det_index  # (Dk,) flat detection index
    match = evaluation.match[0]  # (T, Dk) flat gt index or -1
    ignored = evaluation.det_ignored[0]  # (T, Dk)
    gt_ignore = evaluation.gt_ignore[0]  # (G,)
    matched = match >= 0
    safe = np.maximum(match, 0)

    status = np.full((num_thr, num_det), "ignored", dtype="<U7")
    reason = np.full((num_thr, num_det), "max_detections", dtype="<U14")
    matched_gt = np.full((num_thr, num_det), -1, np.int64)
    iou = np.zeros((num_thr, num_det))
    if len(kept):
        status[:, kept] = np.where(ignored, "ignored", np.where(matched, "tp", "fp"))
        matched_gt[:, kept] = np.where(matched, data.gt_local[safe] if num_gt else -1, -1)
        if num_gt:
            gt_boxes = data.gt_boxes[safe.ravel()]
            matched_iou = pair_iou(
                np.repeat(data.det_boxes[kept][None], num_thr, axis=0).reshape(-1, 4),
                gt_boxes, data.gt_crowd[safe.ravel()],
            ).reshape(num_thr, -1)
            iou[:, kept] = np.where(matched, matched_iou, 0.0)

    # Why each false positive failed (and why each ignored detection is ignored).
    det_images, det_labels = data.det_images[kept], data.det_labels[kept]
    gt_valid = ~gt_ignore  # crowd regions are always ignored
    kept_boxes = data.det_boxes[kept]
    same_iou, same_gt = _best_iou_per_det(kept_boxes, det_images, det_labels, data, gt_valid, True)
    other_iou, _ = _best_iou_per_det(kept_boxes, det_images, det_labels, data, gt_valid, False)
    thr = thresholds[:, None]
    fp_kind = np.select(
        [
            same_iou >= np.minimum(thr, 1 - 1e-10),
            same_iou >= BACKGROUND_IOU,
            other_iou >= BACKGROUND_IOU,
        ],
        ["duplicate", "localization", "confusion"],
        default="background",
    )  # (T, Dk)
    if num_gt:
        ignore_kind = np.where(
            matched, np.where(data.gt_crowd[safe], "crowd", "ignored_gt"), "out_of_area"
        )
    else:
        ignore_kind = np.full(match.shape, "out_of_area")
    if len(kept):
        reason[:, kept] = np.where(ignored, ignore_kind, np.where(matched, "", fp_kind))

    # Missed ground truths: non-ignored and taken by no detection.
    taken = np.zeros((num_thr, num_gt), bool)
    t_idx, j_idx = np.nonzero(matched)
    taken[t_idx, match[t_idx, j_idx]] = True
    missed = ~taken & ~gt_ignore[None, :]

    # Reported best match: a same-class ground truth that overlaps at all.
    best_iou = np.zeros(num_det)
    best_gt = np.full(num_det, -1, np.int64)
    overlaps = same_iou > 0
    best_iou[kept] = np.where(overlaps, same_iou, 0.0)
    best_gt[kept] = np.where(overlaps, data.gt_local[np.maximum(same_gt, 0)] if num_gt else -1, -1)

    # Split the flat arrays back into images.
    det_cuts = np.cumsum(data.det_counts)[:-1]
    gt_cuts = np.cumsum(data.gt_counts)[:-1]
    per_image = zip(
        np.split(status, det_cuts, axis=1), np.split(reason, det_cuts, axis=1),
        np.split(matched_gt, det_cuts, axis=1), np.split(iou, det_cuts, axis=1),
        np.split(best_gt, det_cuts), np.split(best_iou, det_cuts),
        np.split(missed, gt_cuts, axis=1), np.split(gt_ignore, gt_cuts),
    )
    keys = ("status", "reason", "matched_gt", "iou", "best_gt", "best_iou", "missed", "gt_ignored")
    images = [dict(zip(keys, arrays)) for arrays in per_image] if data.num_images else []

    counted = status != "ignored"
    summary = {
        "tp": np.sum(status == "tp", axis=1),
        "fp": np.sum(status == "fp", axis=1),
        "ignored": np.sum(~counted, axis=1),
    }
    for kind in FP_KINDS:
        summary[kind] = np.sum((status == "fp") & (reason == kind), axis=1)
    summary["missed"] = missed.sum(axis=1)
    summary["num_gt"] = np.full(num_thr, int(np.sum(~gt_ignore)))
    summary = {k: v.astype(np.int64) for k, v in summary.items()}
    return {"iou_thresholds": thresholds, "images": images, "summary": summary, "area": area}


def format_explanation(explanation):
    """A text table of an explanation's summary, one row per IoU threshold.

    Args:
        explanation (dict): from :func:`explain_detections`.
    Returns:
        str: columns IoU, TP, FP (duplicate, localization, confusion, background),
        ignored, missed / ground truths.
    """
    s = explanation["summary"]
    header = (
        f"{'IoU':>5} {'TP':>7} {'FP':>7} {'dupl.':>7} {'local.':>7} {'confus.':>7} "
        f"{'backgr.':>7} {'ignored':>7} {'missed':>7} {'of GT':>7}"
    )
    lines = [header]
    for t, thr in enumerate(explanation["iou_thresholds"]):
        lines.append(
            f"{thr:5.2f} {s['tp'][t]:7d} {s['fp'][t]:7d} {s['duplicate'][t]:7d} "
            f"{s['localization'][t]:7d} {s['confusion'][t]:7d} {s['background'][t]:7d} "
            f"{s['ignored'][t]:7d} {s['missed'][t]:7d} {s['num_gt'][t]:7d}"
        )
    return "\n".join(lines)
