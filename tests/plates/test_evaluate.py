"""The lab's end-to-end evaluation: matching, error attribution, scoring a reading against a
hand-made scene, the threshold chosen on validation, the whole evaluation and its files."""
import json
import math
import os

import numpy as np
import pytest

from detection.datasets.voc import write_class_names, write_image_sets, write_voc_example
from detection.metrics.matching import match_group_reference
from plates import evaluate as evaluate_module
from plates.classes import PLATE_CLASSES
from plates.crops import crop_windows
from plates.evaluate import (CATEGORIES, PLATE_BETA, attribute_error, choose_plate_threshold,
                             evaluate_reader, match_boxes, scene_truth, score_reading,
                             write_evaluation)
from plates.reader import Plate, PlateReader, Reading, read_characters
from plates.segmenter_data import LABEL_COVERAGE, LABEL_SAMPLES
from plates.targets import crop_region_labels

CROP, PADDING = (40, 120), 0.05
CLASSES = ("car", "plate")


# ------------------------------------------------------------------ a hand-made scene
def hand_scene():
    """A 240x320 scene: a car, a one-row plate "12A3" and a two-row plate "45 67",
    characters as solid rectangles (their regions are themselves)."""
    objects = [{"name": "car", "bbox": (20, 100, 300, 230)},
               {"name": "plate", "bbox": (100, 150, 220, 190)},
               {"name": "plate", "bbox": (30, 20, 90, 72)}]
    for x, name in zip((108, 130, 152, 174), ("1", "2", "char", "3")):
        objects.append({"name": name, "bbox": (x, 158, x + 18, 182),
                        **({"text": "A"} if name == "char" else {})})
    for y, names in ((24, ("4", "5")), (48, ("6", "7"))):
        for x, name in zip((36, 62), names):
            objects.append({"name": name, "bbox": (x, y, x + 20, y + 20)})
    instance = np.zeros((240, 320), np.int32)
    for i, obj in enumerate(objects):
        x1, y1, x2, y2 = obj["bbox"]
        instance[y1:y2, x1:x2] = i + 1
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return image, objects, instance


def perfect_reading(image, truth, drop=()):
    """What a perfect reader reads: the true boxes, and class maps from the true regions."""
    plates = []
    for g, box in enumerate(truth["plate_boxes"]):
        if g in drop:
            continue
        window = crop_windows(box[None], CROP, PADDING)[0]
        class_map = crop_region_labels(truth["regions"], truth["class_of"], window[None], CROP,
                                       LABEL_SAMPLES, LABEL_COVERAGE)[0]
        class_map = np.where(class_map == 255, 0, class_map)
        text, characters = read_characters(class_map, window, CROP, image.shape[:2])
        plates.append(Plate(box=box, score=0.9 - 0.1 * g, text=text, characters=characters,
                            window=window, crop=np.zeros(CROP + (3,), np.uint8),
                            class_map=class_map.astype(np.uint8)))
    detections = {"boxes": truth["boxes"], "scores": np.linspace(1, 0.5, len(truth["boxes"]),
                                                                 dtype=np.float32),
                  "labels": truth["labels"]}
    return Reading(width=image.shape[1], height=image.shape[0], plates=plates,
                   detections=detections)


# ----------------------------------------------------------------------------- matching
def test_match_boxes_equals_coco_greedy_matching():
    rng = np.random.default_rng(0)
    for _ in range(30):
        det = rng.uniform(0, 50, (int(rng.integers(0, 8)), 2))
        det = np.concatenate([det, det + rng.uniform(5, 30, det.shape)], axis=1)
        gt = rng.uniform(0, 50, (int(rng.integers(0, 6)), 2))
        gt = np.concatenate([gt, gt + rng.uniform(5, 30, gt.shape)], axis=1)
        scores = rng.random(len(det))
        gt_of_det, det_of_gt, iou = match_boxes(det, scores, gt, 0.3)
        order = np.argsort(-scores, kind="stable")
        reference = match_group_reference(iou[order], np.zeros(len(gt), bool),
                                          np.zeros(len(gt), bool), 0.3)
        assert np.array_equal(gt_of_det[order], reference)
        for d, g in enumerate(gt_of_det):
            assert g < 0 or det_of_gt[g] == d


def test_match_boxes_respects_labels_and_empty_inputs():
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    gt_of_det, det_of_gt, _ = match_boxes(boxes, [1.0], boxes, 0.5, np.array([1]), np.array([2]))
    assert gt_of_det.tolist() == [-1] and det_of_gt.tolist() == [-1]
    gt_of_det, det_of_gt, iou = match_boxes(np.zeros((0, 4)), [], boxes)
    assert gt_of_det.shape == (0,) and det_of_gt.tolist() == [-1] and iou.shape == (0, 1)


# ---------------------------------------------------------------------- error attribution
TRUE = np.array([[0, 0, 10, 20], [12, 0, 22, 20], [24, 0, 34, 20]], np.float32)
LABELS = np.array([2, 3, 4])


@pytest.mark.parametrize("matched, iou, pred, labels, expected", [
    (False, 0.0, TRUE, LABELS, "missed plate"),
    (True, 0.6, TRUE, LABELS, "loose/tight box"),
    (True, 0.9, np.array([[0, 0, 22, 20], [24, 0, 34, 20]]), np.array([2, 4]),
     "merged characters"),
    (True, 0.9, np.array([[0, 0, 10, 20], [12, 0, 17, 20], [17, 0, 22, 20], [24, 0, 34, 20]]),
     np.array([2, 3, 3, 4]), "split character"),
    (True, 0.9, TRUE[[0, 2]], LABELS[[0, 2]], "missed character"),
    (True, 0.9, TRUE, np.array([2, 9, 4]), "wrong class"),
    (True, 0.9, np.concatenate([TRUE, [[40, 0, 45, 20]]]), np.array([2, 3, 4, 5]),
     "extra character"),
    (True, 0.9, TRUE, LABELS, "order or rows"),
])
def test_attribute_error(matched, iou, pred, labels, expected):
    category, flags = attribute_error(matched, iou, pred, labels, TRUE, LABELS)
    assert category == expected and flags[expected]
    assert set(flags) == set(CATEGORIES[1:])
    assert [name for name in CATEGORIES[1:] if flags[name]][0] == expected


# ------------------------------------------------------------------------------ scoring
def test_scene_truth_of_the_hand_scene():
    image, objects, instance = hand_scene()
    truth = scene_truth(objects, instance, CLASSES)
    assert truth["labels"].tolist() == [1, 2, 2]
    assert truth["texts"] == ["12A3", "45 67"] and truth["class_texts"] == ["12#3", "45 67"]
    assert truth["char_labels"].tolist() == [2, 3, 11, 4, 5, 6, 7, 8]
    assert truth["char_plate"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert np.array_equal(truth["regions"], np.where(instance > 3, instance, 0))
    assert truth["class_of"].tolist() == [0, 0, 0, 0, 2, 3, 11, 4, 5, 6, 7, 8]


def test_a_perfect_reading_scores_every_plate_correct():
    image, objects, instance = hand_scene()
    truth = scene_truth(objects, instance, CLASSES)
    scored = score_reading(perfect_reading(image, truth), truth, CROP, "hand")
    assert [r["category"] for r in scored["records"]] == ["correct", "correct"]
    assert [r["read"] for r in scored["records"]] == ["12#3", "45 67"]
    assert scored["counts"] == {"reported": 2, "reported_matched": 2, "reported_correct": 2,
                                "char_tp": 8, "char_pred": 8, "char_gt": 8}
    # the reported plates' true maps are the maps read (outside the image: 255)
    known = scored["true_maps"] != 255
    assert np.array_equal(scored["predicted_maps"][known], scored["true_maps"][known])
    assert scored["records"][0]["width"] == 120 and scored["records"][0]["iou"] == 1.0


def test_a_missed_plate_and_a_misread_one_are_failures():
    image, objects, instance = hand_scene()
    truth = scene_truth(objects, instance, CLASSES)
    reading = perfect_reading(image, truth, drop=(1,))
    reading.plates[0].characters[2].label = "5"
    reading.plates[0].text = "1253"
    scored = score_reading(reading, truth, CROP)
    assert [r["category"] for r in scored["records"]] == ["wrong class", "missed plate"]
    assert scored["records"][1]["read"] is None and scored["records"][1]["iou"] is None
    assert scored["counts"]["reported"] == 1 and scored["counts"]["reported_correct"] == 0
    assert scored["counts"]["char_tp"] == 3 and scored["counts"]["char_gt"] == 8


# ------------------------------------------------------------------- on a dataset on disk
@pytest.fixture
def hand_dataset(tmp_path):
    image, objects, instance = hand_scene()
    root = tmp_path / "voc"
    class_mask = np.zeros(instance.shape, np.uint8)
    write_voc_example(root, "000000", image, objects, class_mask=class_mask,
                      instance_mask=instance, image_format="png")
    write_image_sets(root, {"train": [], "val": ["000000"], "test": ["000000"]})
    write_class_names(root, PLATE_CLASSES)
    return str(root), image, objects, instance


class PerfectReader:
    """A reader that reads the hand scene perfectly (the truth is known)."""

    detector_classes, plate_label, plate_threshold = CLASSES, 2, 0.5
    crop_size, crop_padding, read_min_area, detector_size = CROP, PADDING, 1, 256
    settings = {"plate_threshold": 0.5, "plate_nms": 0.3, "max_plates": 16, "tta": False}
    segmenter = None
    plate_boxes = PlateReader.plate_boxes

    def __init__(self, truth, drop=()):
        self.truth, self.drop = truth, drop

    def detect(self, image):
        return perfect_reading(image, self.truth).detections

    def read(self, image):
        return perfect_reading(image, self.truth, self.drop)


def test_the_threshold_of_best_f_beta_on_validation(hand_dataset):
    root, _, objects, instance = hand_dataset
    truth = scene_truth(objects, instance, CLASSES)

    class Scored(PerfectReader):
        def detect(self, image):  # plates at 0.9 and 0.8, a false one at 0.85, one at 0.3,
            # the first plate found twice (0.88, IoU 0.8: dropped by plate_nms), a car
            boxes = np.concatenate([truth["plate_boxes"], [[250, 10, 300, 30],
                                                           [250, 40, 300, 60],
                                                           [100, 150, 220, 182],
                                                           [20, 100, 300, 230]]])
            return {"boxes": boxes.astype(np.float32),
                    "scores": np.array([0.9, 0.8, 0.85, 0.3, 0.88, 0.95], np.float32),
                    "labels": np.array([2, 2, 2, 2, 2, 1])}

    chosen = choose_plate_threshold(Scored(truth), root, "val", beta=1)
    # from 0.8: 2 true of 3 reported, recall 1: F1 0.8 (from 0.9: 1 of 1, recall 0.5: 0.667)
    assert chosen["plate_threshold"] == pytest.approx(0.8)
    assert chosen["f1"] == pytest.approx(0.8) and chosen["recall"] == 1.0
    assert chosen["f_beta"] == pytest.approx(0.8) and chosen["beta"] == 1.0
    assert chosen["precision"] == pytest.approx(2 / 3) and chosen["plates"] == 2

    class Late(PerfectReader):
        def detect(self, image):  # plate 1 at 0.9, two false ones at 0.7 and 0.6, plate 2 at 0.5
            boxes = np.concatenate([truth["plate_boxes"][:1], [[250, 10, 300, 30],
                                                               [250, 40, 300, 60]],
                                    truth["plate_boxes"][1:2]])
            return {"boxes": boxes.astype(np.float32),
                    "scores": np.array([0.9, 0.7, 0.6, 0.5], np.float32),
                    "labels": np.array([2, 2, 2, 2])}

    # F1 ties (0.9: P 1, R 0.5; 0.5: P 0.5, R 1; both 2/3) and takes the higher cut;
    # F2 = 5PR / (4P + R) weighs recall: 0.556 at 0.9, 0.833 at 0.5.
    by_f1 = choose_plate_threshold(Late(truth), root, "val", beta=1.0)
    assert by_f1["plate_threshold"] == pytest.approx(0.9) and by_f1["f1"] == pytest.approx(2 / 3)
    by_f2 = choose_plate_threshold(Late(truth), root, "val")  # PLATE_BETA, 2
    assert by_f2["beta"] == PLATE_BETA == 2.0
    assert by_f2["plate_threshold"] == pytest.approx(0.5) and by_f2["recall"] == 1.0
    assert by_f2["f_beta"] == pytest.approx(5 / 6) and by_f2["f1"] == pytest.approx(2 / 3)
    for bad in (0, -1.0, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="beta"):
            choose_plate_threshold(Late(truth), root, "val", beta=bad)


def test_evaluation_of_a_perfect_and_of_a_missing_reader(hand_dataset, tmp_path, monkeypatch):
    root, image, objects, instance = hand_dataset
    truth = scene_truth(objects, instance, CLASSES)
    windows = crop_windows(truth["plate_boxes"], CROP, PADDING)
    true_maps = crop_region_labels(truth["regions"], truth["class_of"], windows, CROP,
                                   LABEL_SAMPLES, LABEL_COVERAGE)
    # the segmenter on the true boxes: the true labels (255 outside the image: background)
    monkeypatch.setattr(evaluate_module, "predict",
                        lambda model, crops, **kw: np.where(true_maps == 255, 0, true_maps))
    results = evaluate_reader(PerfectReader(truth), root, "test")
    assert results["images"] == 1
    assert results["detection"]["map"] == pytest.approx(1.0)
    assert results["detection"]["ap50_per_class"] == pytest.approx({"car": 1.0, "plate": 1.0})
    for boxes in ("detected", "ground_truth"):
        assert results["segmentation"][boxes]["mean_iou"] == pytest.approx(1.0)
        assert results["segmentation"][boxes]["pixel_accuracy"] == pytest.approx(1.0)
    assert results["segmentation"]["ground_truth"]["read_exact"] == 1.0
    end = results["end_to_end"]
    assert end["read_exact"] == 1.0 and end["plate_precision"] == 1.0
    assert end["characters"]["precision"] == 1.0 and end["characters"]["recall"] == 1.0
    assert results["errors"]["correct"] == 2 and results["failures"] == []
    assert sum(b["plates"] for b in results["by_width"]) == 2
    paths = write_evaluation(results, tmp_path / "perfect")
    assert sorted(os.listdir(tmp_path / "perfect")) == ["end_to_end.png", "evaluation.json",
                                                        "failures.png"]
    saved = json.loads(open(paths["json"]).read())
    assert saved["end_to_end"]["read_exact"] == 1.0 and "failures" not in saved

    missing = evaluate_reader(PerfectReader(truth, drop=(0,)), root, "test")
    end = missing["end_to_end"]
    assert end["read_exact"] == 0.5 and end["plate_recall"] == 0.5
    assert end["plate_precision"] == 1.0 and end["characters"]["recall"] == 0.5
    assert missing["errors"]["missed plate"] == 1 and len(missing["failures"]) == 1
    assert missing["plates"][0]["category"] == "missed plate"
    assert missing["plates"][0]["read_on_truth_box"] == "12#3"
    narrow = [b for b in missing["by_width"] if b["plates"]]
    assert [(b["plates"], b["read_exact"]) for b in narrow] == [(1, 1.0), (1, 0.0)]
    write_evaluation(missing, tmp_path / "missing")
    text = open(tmp_path / "missing" / "evaluation.json").read()
    assert "NaN" not in text and not math.isnan(json.loads(text)["end_to_end"]["read_exact"])
