"""Datasets of detseg: the synthetic plate scenes, Pascal VOC and COCO readers and writers,
and box- and mask-aware transforms."""
from detection.datasets.classes import PLATE_CLASSES, CLASS_TO_ID, IGNORE_INDEX
from detection.datasets.voc import write_voc_example, write_image_sets, read_voc_annotation, VOCDataset
from detection.datasets.crops import crop_plates, PlateCropDataset
from detection.datasets.coco import (
    COCODataset, write_coco_ground_truth, write_coco_predictions, voc_to_coco,
)
from detection.datasets.synthetic import render_scene, generate_plate_dataset
