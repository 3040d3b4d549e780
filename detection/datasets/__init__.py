"""Datasets of detseg: Pascal VOC and COCO readers and writers, and box- and mask-aware
transforms. (The synthetic plate scenes are the lab's: ``plates.synthetic``.)"""
from detection.datasets.voc import (
    VOC_CLASSES, write_voc_example, write_image_sets, write_class_names, read_class_names,
    read_voc_annotation, VOCDataset,
)
from detection.datasets.collate import collate_detection
from detection.datasets.coco import (
    COCODataset, write_coco_ground_truth, write_coco_predictions, voc_to_coco,
)
