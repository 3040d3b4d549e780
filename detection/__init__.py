from detection.boxes import (box_area, box_iou, generalized_box_iou, box_convert,
                             clip_boxes_to_image, remove_small_boxes, generalized_box_iou_loss)
from detection.nms import nms, batched_nms, soft_nms
