"""COCO's greedy matching of detections to ground truths, vectorized over images.

COCO (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014; the rules
below are those of the reference evaluation code, pycocotools' ``COCOeval``) matches
each (image, class) *group* on its own. Inside a group, detections are visited by
decreasing score (a stable sort, so equal scores keep their input order), at most
``max_detections`` of them. For one IoU threshold ``t``, each detection takes

1. among the still-free, *non-ignored* ground truths with ``IoU >= t``, the one with
   the highest IoU (on ties, the last one in input order);
2. only if there is none: among the free *ignored* ground truths (crowd regions, or
   objects outside the evaluated area range) with ``IoU >= t``, the highest IoU.

A crowd region is never used up: any number of detections may fall into it. A
detection matched to an ignored ground truth is ignored (neither true nor false
positive). The threshold used is ``min(t, 1 - 1e-10)``, so that ``t = 1`` still
matches identical boxes. For a crowd region the "IoU" is the intersection over the
*detection's* area (``inter / area(det)``): a detection inside a crowd counts fully.

The IoU is of boxes, or of instance masks for COCO's ``segm`` evaluation
(:func:`pair_overlap`); the matching rules are the same for both.

The matching is sequential over the detections of one group, but the groups are
independent. So the fast version here takes "the k-th detection of every group" at
once, for k = 0, 1, ..., and handles all IoU thresholds and area ranges in the same
array operations. The loop reference :func:`match_detections_reference` follows the
rules above literally, one group and one detection at a time; the tests compare the two.
"""
from dataclasses import dataclass

import numpy as np

from detection.metrics.masks import iou_from_counts, mask_area, mask_intersections

__all__ = [
    "DetectionGroups", "group_detections", "pair_iou", "pair_overlap", "match_detections",
    "match_detections_reference", "match_group_reference",
]


@dataclass
class DetectionGroups:
    """Detections sorted into (image, class) groups, and every (det, gt) pair of a group.

    "Kept" detections are the first ``max_detections`` by score of their group; the
    others take no part in the evaluation (COCO's ``maxDets`` is per image *and* class).

    Attributes:
        det_index (ndarray[Dk]): int64 flat index of each kept detection, in
            *evaluation order*: by class, then decreasing score, ties by image and then
            by input order (the order in which COCO accumulates a class's detections).
        det_rank (ndarray[Dk]): int64 position of the detection inside its group, 0 = best.
        det_group (ndarray[Dk]): int64 group id ``image * K + class``.
        pair_det (ndarray[P]): int64 position (into ``det_index``) of the pair's detection.
        pair_gt (ndarray[P]): int64 flat index of the pair's ground truth.
        pair_iou (ndarray[P]): float64 IoU of the pair, of boxes or of masks as
            ``data.iou_type`` says (inter / det area for crowd gts).
    """

    det_index: np.ndarray
    det_rank: np.ndarray
    det_group: np.ndarray
    pair_det: np.ndarray
    pair_gt: np.ndarray
    pair_iou: np.ndarray


def pair_iou(det_boxes, gt_boxes, gt_crowd):
    """IoU of matching rows of two box arrays, COCO's crowd rule included.

    ``IoU = inter / (area(d) + area(g) - inter)``, or ``inter / area(d)`` when ``g``
    is a crowd region; 0 when the boxes do not overlap (never NaN, even for empty boxes).

    Args:
        det_boxes (ndarray[P, 4]): xyxy, float64.
        gt_boxes (ndarray[P, 4]): xyxy, float64.
        gt_crowd (ndarray[P]): bool.
    Returns:
        ndarray[P]: float64 in [0, 1].
    """
    w = np.minimum(det_boxes[:, 2], gt_boxes[:, 2]) - np.maximum(det_boxes[:, 0], gt_boxes[:, 0])
    h = np.minimum(det_boxes[:, 3], gt_boxes[:, 3]) - np.maximum(det_boxes[:, 1], gt_boxes[:, 1])
    overlap = (w > 0) & (h > 0)
    inter = np.where(overlap, w * h, 0.0)
    det_area = (det_boxes[:, 2] - det_boxes[:, 0]) * (det_boxes[:, 3] - det_boxes[:, 1])
    gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    union = np.where(gt_crowd, det_area, det_area + gt_area - inter)
    # union > 0 wherever the boxes overlap, so only the non-overlapping pairs need the guard.
    return np.divide(inter, union, out=np.zeros_like(inter), where=overlap)


def pair_overlap(data, det, gt):
    """IoU of (detection, ground truth) pairs of the same image, boxes or masks.

    Box IoU (:func:`pair_iou`) when ``data.iou_type`` is "bbox"; mask IoU when it is
    "segm" (:mod:`detection.metrics.masks`: pixel counts, crowd rule
    ``inter / |det|``), computed image by image with one matrix product over the
    distinct detections and ground truths of the pairs.

    Args:
        data (DetectionSet): flat detections and ground truths.
        det (ndarray[P]): int64 flat detection index of each pair.
        gt (ndarray[P]): int64 flat ground-truth index, in the same image.
    Returns:
        ndarray[P]: float64 in [0, 1].
    """
    if data.iou_type == "bbox":
        return pair_iou(data.det_boxes[det], data.gt_boxes[gt], data.gt_crowd[gt])
    iou = np.zeros(len(det))
    images = data.det_images[det]
    order = np.argsort(images, kind="stable")
    uniq, starts = np.unique(images[order], return_index=True)
    # A loop over images (each one GEMM), not over pairs.
    for image, sel in zip(uniq.tolist(), np.split(order, starts[1:])):
        rows, row_of = np.unique(data.det_local[det[sel]], return_inverse=True)
        cols, col_of = np.unique(data.gt_local[gt[sel]], return_inverse=True)
        det_masks, gt_masks = data.det_masks[image], data.gt_masks[image]
        if len(rows) < len(det_masks):  # detections beyond max_detections: left out
            det_masks = det_masks[rows]   # (d, H, W)
        if len(cols) < len(gt_masks):
            gt_masks = gt_masks[cols]     # (g, H, W)
        inter = mask_intersections(det_masks, gt_masks)  # (d, g)
        iou[sel] = iou_from_counts(
            inter[row_of, col_of], data.det_area[det[sel]], mask_area(gt_masks)[col_of],
            data.gt_crowd[gt[sel]],
        )
    return iou


def group_detections(data, max_detections):
    """Sort detections into (image, class) groups and list the (det, gt) pairs of each group.

    Args:
        data (DetectionSet): flat detections and ground truths.
        max_detections (int): detections kept per image and class, by score.
    Returns:
        DetectionGroups: the kept detections and their pairs, pairs ordered by
        ``det_index`` position and, inside one detection, by ground-truth input order.
    """
    num_classes = len(data.classes)
    det_group = data.det_images * num_classes + data.det_labels
    gt_group = data.gt_images * num_classes + data.gt_labels

    # Two stable sorts give (group, -score) order with ties in input order; the rank
    # of a detection is its position in its group.
    by_score = np.argsort(-data.det_scores, kind="stable")
    order = by_score[np.argsort(det_group[by_score], kind="stable")]
    group_sorted = det_group[order]
    is_start = np.ones(len(order), bool)
    is_start[1:] = group_sorted[1:] != group_sorted[:-1]
    start_pos = np.flatnonzero(is_start)
    rank = np.empty(len(order), np.int64)
    group_size = np.diff(np.append(start_pos, len(order)))
    rank[order] = np.arange(len(order)) - np.repeat(start_pos, group_size)

    # Kept detections in evaluation order: by class, then score, ties by image and rank
    # (pycocotools' per-class concatenation over images followed by a stable sort).
    det_index = by_score[rank[by_score] < max_detections]
    det_index = det_index[np.argsort(data.det_labels[det_index], kind="stable")]
    det_rank, det_group = rank[det_index], det_group[det_index]

    # Ground truths of a group are contiguous after a stable sort by group.
    gt_order = np.argsort(gt_group, kind="stable")
    gt_group_sorted = gt_group[gt_order]
    gt_first = np.searchsorted(gt_group_sorted, det_group, side="left")  # (Dk,)
    gt_count = np.searchsorted(gt_group_sorted, det_group, side="right") - gt_first

    # One pair per (kept det, gt of its group): det j repeated gt_count[j] times.
    pair_det = np.repeat(np.arange(len(det_index)), gt_count)  # (P,)
    pair_start = np.cumsum(gt_count) - gt_count
    within = np.arange(len(pair_det)) - pair_start[pair_det]
    pair_gt = gt_order[gt_first[pair_det] + within]
    iou = pair_overlap(data, det_index[pair_det], pair_gt)
    return DetectionGroups(det_index, det_rank, det_group, pair_det, pair_gt, iou)


def match_detections(groups, iou_thresholds, gt_ignore, gt_crowd):
    """Greedy COCO matching for every IoU threshold and ignore pattern at once.

    Args:
        groups (DetectionGroups): from :func:`group_detections`.
        iou_thresholds (ndarray[T]): float64 thresholds ``t``; ``IoU >= min(t, 1 - 1e-10)`` matches.
        gt_ignore (ndarray[A, G]): bool, which ground truths are ignored, one row per
            area range (crowd regions are always ignored).
        gt_crowd (ndarray[G]): bool, crowd regions (never used up).
    Returns:
        ndarray[A, T, Dk]: int32 (int64 beyond 2**31 gts) flat index of the ground truth
        matched by each kept detection (order of ``groups.det_index``), -1 when unmatched.
    """
    num_areas, num_gt = gt_ignore.shape
    thresholds = np.minimum(np.asarray(iou_thresholds, np.float64), 1 - 1e-10)
    num_thr = len(thresholds)
    num_det = len(groups.det_index)
    index_type = np.int32 if num_gt < 2**31 else np.int64
    match = np.full((num_areas, num_thr, num_det), -1, index_type)
    matched = np.zeros((num_areas, num_thr, num_gt), bool)  # gt used up, per area and threshold

    # A pair below the lowest threshold can never match: drop it before the loop
    # (on detector-like data this removes most pairs).
    usable = groups.pair_iou >= thresholds.min()
    pair_det = groups.pair_det[usable]
    # Visit order: by rank, so that step k is one contiguous block holding the k-th
    # detection of every group; only detections with at least one pair can match.
    pair_count = np.bincount(pair_det, minlength=num_det)
    step_det = np.flatnonzero(pair_count > 0)
    step_det = step_det[np.argsort(groups.det_rank[step_det], kind="stable")]
    counts = pair_count[step_det]
    # Pairs of the reordered detections: gather each detection's contiguous pair run.
    first_pair = np.cumsum(pair_count) - pair_count
    pair_owner = np.repeat(np.arange(len(step_det)), counts)  # (P,) position in step_det
    new_start = np.cumsum(counts) - counts
    gather = first_pair[step_det][pair_owner] + np.arange(len(pair_owner)) - new_start[pair_owner]
    pair_gt = groups.pair_gt[usable][gather]
    pair_iou_ = groups.pair_iou[usable][gather]

    ranks = groups.det_rank[step_det]
    step_bounds = np.flatnonzero(np.diff(ranks)) + 1
    step_bounds = np.concatenate([[0], step_bounds, [len(step_det)]])
    for d0, d1 in zip(step_bounds[:-1], step_bounds[1:]):
        if d1 <= d0:
            continue
        p0, p1 = new_start[d0], new_start[d1 - 1] + counts[d1 - 1]
        seg = new_start[d0:d1] - p0  # start of each detection's pairs in the block
        owner = pair_owner[p0:p1] - d0  # (P_k,) which detection of the block
        gt = pair_gt[p0:p1]
        iou = pair_iou_[p0:p1]
        free = ~matched[:, :, gt] | gt_crowd[gt]  # (A, T, P_k)
        good = free & (iou >= thresholds[:, None])
        ignored = gt_ignore[:, None, gt]  # (A, 1, P_k)
        key_regular = np.where(good & ~ignored, iou, -1.0)
        key_ignored = np.where(good & ignored, iou, -1.0)
        best_regular = np.maximum.reduceat(key_regular, seg, axis=2)  # (A, T, n_k)
        best_ignored = np.maximum.reduceat(key_ignored, seg, axis=2)
        # Rule 2 only applies when rule 1 found nothing.
        use_regular = best_regular >= 0
        best = np.where(use_regular, best_regular, best_ignored)
        key = np.where(use_regular[:, :, owner], key_regular, key_ignored)
        hit = (key == best[:, :, owner]) & (key >= 0)
        # Ties: the last pair (in gt input order) with the best key wins, as in COCO.
        chosen = np.maximum.reduceat(np.where(hit, np.arange(p1 - p0), -1), seg, axis=2)
        a_idx, t_idx, j_idx = np.nonzero(chosen >= 0)
        chosen_gt = gt[chosen[a_idx, t_idx, j_idx]]
        matched[a_idx, t_idx, chosen_gt] = True
        match[a_idx, t_idx, step_det[d0 + j_idx]] = chosen_gt
    return match


def match_group_reference(ious, gt_ignore, gt_crowd, iou_threshold):
    """Slow, literal COCO matching of one (image, class) group at one threshold.

    Args:
        ious (ndarray[D, G]): float64, detections already sorted by decreasing score.
        gt_ignore (ndarray[G]): bool.
        gt_crowd (ndarray[G]): bool.
        iou_threshold (float): t.
    Returns:
        ndarray[D]: int64 index (into the G ground truths) matched by each detection, or -1.
    """
    num_det, num_gt = ious.shape
    # Non-ignored ground truths first (stable), so a regular match is always preferred.
    gt_visit = sorted(range(num_gt), key=lambda g: bool(gt_ignore[g]))
    taken = [False] * num_gt
    result = np.full(num_det, -1, np.int64)
    for d in range(num_det):
        best_iou = min(iou_threshold, 1 - 1e-10)
        best = -1
        for g in gt_visit:
            if taken[g] and not gt_crowd[g]:
                continue
            if best >= 0 and not gt_ignore[best] and gt_ignore[g]:
                break  # a regular match beats any ignored one
            if ious[d, g] < best_iou:
                continue
            best_iou, best = ious[d, g], g
        if best >= 0:
            taken[best] = True
            result[d] = best
    return result


def _pair_iou_reference(data, d, g):
    """IoU of one (detection, ground truth) pair: boxes, or masks pixel by pixel."""
    if data.iou_type == "bbox":
        return pair_iou(data.det_boxes[d][None], data.gt_boxes[g][None], data.gt_crowd[g][None])[0]
    image = data.det_images[d]
    det_mask = data.det_masks[image][data.det_local[d]]
    gt_mask = data.gt_masks[image][data.gt_local[g]]
    inter = int(np.logical_and(det_mask, gt_mask).sum())
    union = int(det_mask.sum()) if data.gt_crowd[g] else int(np.logical_or(det_mask, gt_mask).sum())
    return inter / union if inter else 0.0


def match_detections_reference(data, iou_thresholds, gt_ignore, max_detections):
    """Loop reference for :func:`group_detections` + :func:`match_detections`.

    Args:
        data (DetectionSet): flat detections and ground truths.
        iou_thresholds (ndarray[T]): float64.
        gt_ignore (ndarray[A, G]): bool.
        max_detections (int): detections kept per image and class.
    Returns:
        dict: ``(flat det index) -> ndarray[A, T]`` int64 matched flat gt index or -1,
        for every kept detection.
    """
    result = {}
    for image in range(data.num_images):
        for cls in range(len(data.classes)):
            dets = np.flatnonzero((data.det_images == image) & (data.det_labels == cls))
            gts = np.flatnonzero((data.gt_images == image) & (data.gt_labels == cls))
            dets = dets[np.argsort(-data.det_scores[dets], kind="stable")][:max_detections]
            ious = np.zeros((len(dets), len(gts)))
            for i, d in enumerate(dets):
                for j, g in enumerate(gts):
                    ious[i, j] = _pair_iou_reference(data, d, g)
            out = np.full((gt_ignore.shape[0], len(iou_thresholds), len(dets)), -1, np.int64)
            for a in range(gt_ignore.shape[0]):
                for t, thr in enumerate(iou_thresholds):
                    local = match_group_reference(ious, gt_ignore[a, gts], data.gt_crowd[gts], thr)
                    if len(gts):
                        out[a, t] = np.where(local >= 0, gts[np.maximum(local, 0)], -1)
            for i, d in enumerate(dets):
                result[int(d)] = out[:, :, i]
    return result
