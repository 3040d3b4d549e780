"""detseg.detection: boxes, box coding, anchors, matching, NMS, metrics and detectors.

Each function lives in the module of its topic: ``detection.nms`` is the module and
``detection.nms.nms`` the function (``from detection.nms import nms``). The box
helpers and the other NMS variants are also importable from the package.
"""
from detection.boxes import (box_area, box_iou, generalized_box_iou, box_convert,
                             clip_boxes_to_image, remove_small_boxes, generalized_box_iou_loss)
from detection.nms import batched_nms, soft_nms
