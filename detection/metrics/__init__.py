"""Detection metrics: COCO mAP (equal to pycocotools), Pascal VOC AP, explain mode, PR curves.

- :func:`mean_average_precision` — COCO's 12 summary numbers and AP per class, of boxes
  (``iou_type="bbox"``) or instance masks (``iou_type="segm"``).
- :func:`mask_iou` — pairwise IoU of instance masks (COCO's crowd rule included).
- :func:`coco_evaluate` — the full COCO precision/recall arrays.
- :func:`precision_recall_curve` and :func:`plot_precision_recall` — PR curves.
- :func:`voc_ap` and :func:`voc_evaluate` — Pascal VOC AP (all-point and 11-point).
- :func:`explain_detections` — per detection: TP, FP (and which kind) or ignored.
"""
from detection.metrics.coco import (
    AREA_RANGES, COCO_IOU_THRESHOLDS, RECALL_THRESHOLDS, CocoEvaluation, coco_evaluate,
    mean_average_precision, precision_recall_curve,
)
from detection.metrics.masks import mask_area, mask_iou
from detection.metrics.voc import voc_ap, voc_evaluate
from detection.metrics.explain import explain_detections, format_explanation
from detection.metrics.plot import plot_precision_recall
