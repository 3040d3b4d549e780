"""Matching anchors (or proposals) to ground-truth boxes by IoU.

Training a detector starts by deciding, for every anchor, which object it should
predict (Ren et al., "Faster R-CNN", NeurIPS 2015, section 3.1.2):

- an anchor whose best IoU with any ground truth is ``>= high_threshold`` is a
  positive, matched to that ground truth;
- an anchor whose best IoU is ``< low_threshold`` is background (``-1``);
- an anchor in between is ignored by the losses (``-2``): neither clearly an object
  nor clearly background.

RPN uses (0.7, 0.3), the Fast R-CNN head (0.5, 0.5), RetinaNet (0.5, 0.4).

Low-quality matches: a small or oddly shaped object may reach no anchor at
``high_threshold``. With ``allow_low_quality_matches=True`` each ground truth also
claims the anchor(s) with which it has its highest IoU, ties included (the
"second condition" of Faster R-CNN; torchvision's ``set_low_quality_matches_``). One
difference from torchvision: a ground truth that overlaps no anchor at all (best
IoU 0) claims nothing here, where torchvision would turn every zero-IoU anchor into
a positive.
"""
import numpy as np

from nn._checks import check_finite
from nn.tensor import as_array

__all__ = ["Matcher"]


class Matcher:
    """Assign each column (anchor) of an IoU matrix to a row (ground truth) or a flag.

    Args:
        high_threshold (float): best IoU from which an anchor is a positive.
        low_threshold (float): best IoU below which an anchor is background;
            ``low_threshold <= high_threshold``.
        allow_low_quality_matches (bool): also keep, for each ground truth, its
            best-overlapping anchors as positives (see the module docstring).

    Example::

        matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
        matches = matcher(box_iou(gt_boxes, anchors))        # (N,) int64
        labels = np.where(matches >= 0, 1, matches)          # 1, -1 (bg) or -2 (ignore)
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold, low_threshold, allow_low_quality_matches=False):
        self.high_threshold = check_finite(high_threshold, "high_threshold")
        self.low_threshold = check_finite(low_threshold, "low_threshold")
        if low_threshold > high_threshold:
            raise ValueError(
                f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})"
            )
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self):
        return (f"Matcher(high_threshold={self.high_threshold}, "
                f"low_threshold={self.low_threshold}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches})")

    def __call__(self, match_quality_matrix):
        """Match.

        Args:
            match_quality_matrix (ndarray[M, N]): quality (IoU) of ground truth m with
                anchor n, float. M may be 0 (an image without objects: every anchor is
                background) and N may be 0.
        Returns:
            ndarray[N]: int64; the matched ground-truth index in ``[0, M)``, or
            ``BELOW_LOW_THRESHOLD`` (-1), or ``BETWEEN_THRESHOLDS`` (-2).
        """
        quality = as_array(match_quality_matrix)
        if quality.ndim != 2:
            raise ValueError(
                f"match_quality_matrix must have shape (M gt, N anchors), got {quality.shape}"
            )
        if not (np.issubdtype(quality.dtype, np.floating)
                or np.issubdtype(quality.dtype, np.integer)):
            raise TypeError(f"match_quality_matrix must be numeric, got dtype {quality.dtype}")
        if not np.isfinite(quality).all():
            raise ValueError("match_quality_matrix contains non-finite values (NaN or inf)")
        num_gt, num_anchors = quality.shape
        if num_gt == 0 or num_anchors == 0:
            return np.full(num_anchors, self.BELOW_LOW_THRESHOLD, dtype=np.int64)

        # Best ground truth of every anchor; argmax keeps the lowest index on ties.
        all_matches = quality.argmax(axis=0)                                # (N,)
        best_quality = quality[all_matches, np.arange(num_anchors)]        # (N,)
        matches = all_matches.astype(np.int64)
        matches[best_quality < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        between = (best_quality >= self.low_threshold) & (best_quality < self.high_threshold)
        matches[between] = self.BETWEEN_THRESHOLDS

        if self.allow_low_quality_matches:
            # Anchors that are the best (ties included) for some ground truth get back
            # their best match, even below the thresholds.
            best_per_gt = quality.max(axis=1, keepdims=True)               # (M, 1)
            is_best = (quality == best_per_gt) & (best_per_gt > 0)         # (M, N)
            claimed = is_best.any(axis=0)                                  # (N,)
            matches[claimed] = all_matches[claimed]
        return matches
