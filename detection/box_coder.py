"""Box coding: the regression targets of R-CNN, Faster R-CNN, RetinaNet.

A detector does not regress box corners directly. It predicts *deltas* that move
and rescale a reference box (an anchor or a proposal) P into the box G, in units
of P's own size so that the targets of small and large boxes look alike
(Girshick et al., "Rich feature hierarchies ...", CVPR 2014, appendix C; Ren et al.,
"Faster R-CNN", NeurIPS 2015, eq. 2):

    dx = wx · (Gx - Px) / Pw        dw = ww · log(Gw / Pw)
    dy = wy · (Gy - Py) / Ph        dh = wh · log(Gh / Ph)

with (Px, Py, Pw, Ph) the center and size of P. Decoding inverts it:

    Gx = Px + Pw · dx / wx          Gw = Pw · exp(min(dw / ww, clip))
    Gy = Py + Ph · dy / wy          Gh = Ph · exp(min(dh / wh, clip))

The weights ``(wx, wy, ww, wh)`` scale the targets to unit-ish variance: ``(1, 1, 1, 1)``
for RPN and RetinaNet, ``(10, 10, 5, 5)`` for the Fast R-CNN box head (torchvision's
values). ``clip = log(1000 / 16)`` stops ``exp`` from overflowing on a wild early
prediction: no box grows more than 62.5x its reference in one step.
"""
import math

import numpy as np

from nn._checks import check_finite, check_positive
from nn.tensor import Tensor, as_array, stack
from detection.boxes import as_boxes

__all__ = ["BoxCoder", "DEFAULT_BBOX_XFORM_CLIP"]

DEFAULT_BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _check_deltas(deltas, boxes, name="deltas"):
    if deltas.ndim != 2 or deltas.shape[1] % 4 != 0 or deltas.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, 4·K), got {deltas.shape}")
    if deltas.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"{name} has {deltas.shape[0]} rows but boxes has {boxes.shape[0]}; they must match"
        )
    if not np.isfinite(deltas).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


class BoxCoder:
    """Encode boxes as deltas relative to reference boxes, and decode them back.

    Args:
        weights (tuple of 4 floats): ``(wx, wy, ww, wh)``, positive.
        bbox_xform_clip (float): upper clamp of ``dw / ww`` and ``dh / wh`` before ``exp``.

    Example::

        coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        deltas = coder.encode(matched_gt_boxes, proposals)   # (N, 4) regression targets
        boxes = coder.decode(predicted_deltas, proposals)    # (N, 4) xyxy
    """

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=DEFAULT_BBOX_XFORM_CLIP):
        if len(weights) != 4:
            raise ValueError(f"weights must be 4 positive finite numbers, got {weights}")
        self.weights = tuple(check_positive(w, f"weights[{i}]") for i, w in enumerate(weights))
        self.bbox_xform_clip = check_finite(bbox_xform_clip, "bbox_xform_clip")

    def __repr__(self):
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f})"

    def encode(self, reference_boxes, proposals):
        """Deltas that turn each proposal into its reference (ground-truth) box.

        Args:
            reference_boxes (ndarray[N, 4]): target xyxy boxes G (e.g. matched ground truth).
            proposals (ndarray[N, 4]): reference xyxy boxes P (anchors or proposals).
        Returns:
            ndarray[N, 4]: ``(dx, dy, dw, dh)`` per row, dtype of the inputs combined.
        Raises:
            ValueError: shapes differ, or a box has zero or negative width or height
                (its log-size target would be infinite).
        """
        gt = as_boxes(reference_boxes, "reference_boxes")
        proposals = as_boxes(proposals, "proposals")
        if gt.shape != proposals.shape:
            raise ValueError(
                f"reference_boxes and proposals must have the same shape, got {gt.shape} "
                f"and {proposals.shape}"
            )
        for name, boxes in (("reference_boxes", gt), ("proposals", proposals)):
            if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
                raise ValueError(f"{name} must have positive width and height to be encoded")
        wx, wy, ww, wh = self.weights
        p_w = proposals[:, 2] - proposals[:, 0]
        p_h = proposals[:, 3] - proposals[:, 1]
        p_x = proposals[:, 0] + 0.5 * p_w
        p_y = proposals[:, 1] + 0.5 * p_h
        g_w = gt[:, 2] - gt[:, 0]
        g_h = gt[:, 3] - gt[:, 1]
        g_x = gt[:, 0] + 0.5 * g_w
        g_y = gt[:, 1] + 0.5 * g_h
        dx = wx * (g_x - p_x) / p_w
        dy = wy * (g_y - p_y) / p_h
        dw = ww * np.log(g_w / p_w)
        dh = wh * np.log(g_h / p_h)
        return np.stack([dx, dy, dw, dh], axis=1)   # (N, 4)

    def _reference_geometry(self, boxes):
        """Widths, heights and centers of the reference boxes, each ``(N, 1)``."""
        widths = boxes[:, 2:3] - boxes[:, 0:1]
        heights = boxes[:, 3:4] - boxes[:, 1:2]
        return widths, heights, boxes[:, 0:1] + 0.5 * widths, boxes[:, 1:2] + 0.5 * heights

    def decode(self, deltas, boxes):
        """Apply deltas to reference boxes (ndarrays).

        Args:
            deltas (ndarray[N, 4·K]): ``(dx, dy, dw, dh)`` per box, or K such groups per
                box (per-class deltas of a Fast R-CNN head).
            boxes (ndarray[N, 4]): reference xyxy boxes.
        Returns:
            ndarray[N, 4·K]: decoded xyxy boxes, grouped like ``deltas``, float dtype of
            the inputs combined.
        """
        boxes = as_boxes(boxes)
        deltas = as_array(deltas)
        if not np.issubdtype(deltas.dtype, np.floating):
            deltas = deltas.astype(np.float32)
        _check_deltas(deltas, boxes)
        wx, wy, ww, wh = self.weights
        widths, heights, ctr_x, ctr_y = self._reference_geometry(boxes)
        dx = deltas[:, 0::4] / wx                                        # (N, K)
        dy = deltas[:, 1::4] / wy
        dw = np.minimum(deltas[:, 2::4] / ww, self.bbox_xform_clip)
        dh = np.minimum(deltas[:, 3::4] / wh, self.bbox_xform_clip)
        pred_x = dx * widths + ctr_x
        pred_y = dy * heights + ctr_y
        # torchvision's order of operations, so float32 results match it bit for bit.
        half_w = 0.5 * (np.exp(dw) * widths)
        half_h = 0.5 * (np.exp(dh) * heights)
        out = np.stack([pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h],
                       axis=2)                                           # (N, K, 4)
        return out.reshape(deltas.shape)                                  # (N, 4·K)

    def decode_tensor(self, deltas, boxes):
        """Differentiable ``decode``: gradients flow from the boxes back to ``deltas``.

        Used by losses defined on boxes rather than deltas (GIoU loss on decoded
        predictions). The reference boxes are constants. The clamp at
        ``bbox_xform_clip`` passes no gradient where it is active.

        Args:
            deltas (Tensor[N, 4·K]): predicted deltas.
            boxes (ndarray[N, 4]): reference xyxy boxes (anchors / proposals).
        Returns:
            Tensor[N, 4·K]: decoded xyxy boxes.
        """
        if not isinstance(deltas, Tensor):
            deltas = Tensor(as_array(deltas))
        if not np.issubdtype(deltas.dtype, np.floating):
            deltas = deltas.astype(np.float32)
        boxes = as_boxes(boxes).astype(deltas.dtype, copy=False)
        _check_deltas(deltas.data, boxes)
        wx, wy, ww, wh = self.weights
        widths, heights, ctr_x, ctr_y = self._reference_geometry(boxes)
        dx = deltas[:, 0::4] / wx                                        # (N, K)
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clip(max=self.bbox_xform_clip)
        dh = (deltas[:, 3::4] / wh).clip(max=self.bbox_xform_clip)
        pred_x = dx * widths + ctr_x
        pred_y = dy * heights + ctr_y
        half_w = (dw.exp() * widths) * 0.5
        half_h = (dh.exp() * heights) * 0.5
        out = stack([pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h],
                    axis=2)                                              # (N, K, 4)
        return out.reshape(deltas.shape)                                  # (N, 4·K)
