"""The lab's end-to-end evaluation: how well does the two-stage reader read held-out scenes?

Every test scene goes through ``PlateReader.read`` exactly as a photo would (the
detector on the letterboxed small copy, the segmenter on crops of the full frame), and
is scored at four levels:

1. **Detection** on the full frames: COCO mAP and AP50 per class (car, plate) of every
   detection (``detection.metrics.mean_average_precision``), boxes in the frame's pixels.
2. **Segmentation** of the crops cut from the *detected* plate boxes: the ground truth
   of a crop is the scene's character regions sampled into the same window
   (``plates.targets``: the labels the segmenter learns), so a loose box costs pixels
   here too. Per-class IoU and Dice, pixel accuracy; beside them the same metrics on
   crops of the *ground-truth* boxes (the segmenter alone, as it was trained).
3. **End to end**: every ground-truth plate counts. A plate is read when a reported
   plate (score >= the reader's threshold) matches it (IoU >= 0.5, greedy by score, one
   to one) and its text equals the truth spelt the segmenter's way (digits, ``#`` for
   other characters, rows split by a space: ``plates.reading.text_to_class_text``); a
   missed plate is a failure. Precision: of the reported plates, the share matching a
   plate, and the share read right. Characters: a predicted character matches a
   ground-truth character of the same label at box IoU >= 0.5 (greedy by score).
4. **Error attribution**: each plate read wrong gets the first cause that applies, in
   this order (``CATEGORIES``): no matching detection (*missed plate*); a box with
   IoU < 0.7 (*loose/tight box*); one predicted character covering half of two true
   ones (*merged*); two predicted characters each mostly inside one true one
   (*split*); a true character no prediction overlaps (IoU < 0.3: *missed character*);
   a one-to-one pair (IoU >= 0.5) of different classes (*wrong class*); a predicted
   character inside no true one (*extra character*); otherwise the characters are
   right but not their order or rows (*order or rows*). Plates are also grouped by their
   width in the frame (``WIDTH_BINS``).

``choose_plate_threshold`` picks the reader's plate threshold on the validation scenes
(the best F2 of plate detection at IoU 0.5: recall weighs twice, ``PLATE_BETA``),
``evaluate_reader`` runs the above and
``write_evaluation`` writes ``evaluation.json`` and the figures.
"""
import json
import math
import os
import time

import numpy as np
from tqdm import tqdm

from detection.boxes import box_iou
from detection.datasets.voc import VOCDataset, read_label_map, read_rgb
from detection.metrics import mean_average_precision, precision_recall_curve
from nn.io import write_json
from plates.classes import IGNORE_INDEX, SEGMENTER_CLASSES, segmenter_label
from plates.crops import crop_plates, plate_texts
from plates.reader import load_image
from plates.reading import read_plate, text_to_class_text
from plates.segmenter import CHARACTER_CLASSES, NUM_CLASSES, class_colors, predict
from plates.segmenter_data import LABEL_COVERAGE, LABEL_SAMPLES
from plates.targets import character_regions, crop_region_labels
from segmentation.metrics import ConfusionMatrix

__all__ = ["MATCH_IOU", "TIGHT_IOU", "CHAR_IOU", "WIDTH_BINS", "CATEGORIES", "scene_truth",
           "match_boxes", "attribute_error", "score_reading", "PLATE_BETA",
           "choose_plate_threshold",
           "evaluate_reader",
           "write_evaluation", "EVALUATION_FILE"]

MATCH_IOU = 0.5  # a reported plate matches a true plate from this box IoU
TIGHT_IOU = 0.7  # a matched box below this IoU is "loose/tight"
CHAR_IOU = 0.5  # a predicted character matches a true one from this box IoU
OVERLAP_IOU = 0.3  # below this a true character is "missed" by every prediction
WIDTH_BINS = (0, 120, 160, 200, 280, math.inf)  # plate widths in the frame's pixels
# The reader's plate threshold is the best F-beta on the validation scenes with this
# beta: recall weighs twice. On the lab run of docs/results.md F1 chose 0.42 and the
# test scenes lost 8 plates (recall 0.976, precision 0.988); F2 chose 0.28: 2 lost,
# precision 0.966, 90.2% of the plates read instead of 89.1%.
PLATE_BETA = 2.0
CATEGORIES = ("correct", "missed plate", "loose/tight box", "merged characters",
              "split character", "missed character", "wrong class", "extra character",
              "order or rows")
EVALUATION_FILE = "evaluation.json"


# ============================================================================ ground truth
def scene_truth(objects, instance_map, detector_classes):
    """What a scene holds, in the reader's terms.

    Args:
        objects (list[dict]): the scene's annotation (``read_voc_annotation``'s objects).
        instance_map (ndarray[H, W] int): ``SegmentationObject`` (object ``i`` is ``i + 1``).
        detector_classes (tuple[str]): the detector's class names (label 1 first).
    Returns:
        dict: ``boxes``/``labels`` (the detector's objects, for AP), ``plate_boxes``
        ndarray[P, 4] float32, ``texts`` (the plates' true texts) and ``class_texts`` (spelt
        the segmenter's way), ``char_boxes`` ndarray[C, 4], ``char_labels`` ndarray[C]
        (segmenter labels 1..11), ``char_plate`` ndarray[C] (index of the plate holding the
        character's centre, the smallest one; -1 for none), ``regions`` ndarray[H, W]
        int32 (``character_regions``) and ``class_of`` ndarray[len(objects) + 1] int64
        (segmenter label of each instance id).
    """
    detector_objects = [o for o in objects if o["name"] in detector_classes]
    boxes = np.asarray([o["bbox"] for o in detector_objects], np.float32).reshape(-1, 4)
    labels = np.asarray([detector_classes.index(o["name"]) + 1 for o in detector_objects],
                        np.int64)
    plates = plate_texts(objects)
    plate_boxes = np.asarray([objects[i]["bbox"] for i, _ in plates], np.float32).reshape(-1, 4)
    texts = [text for _, text in plates]
    class_of = np.zeros(len(objects) + 1, np.int64)
    for i, obj in enumerate(objects):
        class_of[i + 1] = segmenter_label(obj["name"])
    char_ids = np.flatnonzero(class_of)  # instance ids of the characters
    char_boxes = np.asarray([objects[i - 1]["bbox"] for i in char_ids], np.float32).reshape(-1, 4)
    char_labels = class_of[char_ids]
    # The plate of a character: the smallest plate box holding its centre (plate_texts' rule).
    centres = (char_boxes[:, :2] + char_boxes[:, 2:]) / 2  # (C, 2)
    inside = ((centres[:, None, :] >= plate_boxes[None, :, :2])
              & (centres[:, None, :] <= plate_boxes[None, :, 2:])).all(axis=2)  # (C, P)
    areas = (plate_boxes[:, 2] - plate_boxes[:, 0]) * (plate_boxes[:, 3] - plate_boxes[:, 1])
    char_plate = np.where(inside.any(axis=1),
                          np.where(inside, areas[None, :], np.inf).argmin(axis=1)
                          if len(plate_boxes) else -1, -1).astype(np.int64)
    regions = np.zeros(instance_map.shape, np.int32)
    if char_ids.size:
        # The characters' boxes bound the work (a few percent of a 1024-px scene).
        x0, y0 = np.maximum(np.floor(char_boxes[:, :2].min(axis=0)).astype(int) - 1, 0)
        x1, y1 = np.ceil(char_boxes[:, 2:].max(axis=0)).astype(int) + 1
        regions[y0:y1, x0:x1] = character_regions(
            np.asarray(instance_map[y0:y1, x0:x1], np.int32), char_ids)
    return {"boxes": boxes, "labels": labels, "plate_boxes": plate_boxes, "texts": texts,
            "class_texts": [text_to_class_text(t) for t in texts], "char_boxes": char_boxes,
            "char_labels": char_labels, "char_plate": char_plate, "regions": regions,
            "class_of": class_of}


# ================================================================================= matching
def match_boxes(det_boxes, det_scores, gt_boxes, iou_threshold=MATCH_IOU, det_labels=None,
                gt_labels=None):
    """Greedy one-to-one matching: detections by decreasing score (stable), each taking
    the free ground truth of highest IoU >= ``iou_threshold`` (of its label, if given).

    Args:
        det_boxes (ndarray[D, 4]), det_scores (ndarray[D]), gt_boxes (ndarray[G, 4]).
        det_labels (ndarray[D]), gt_labels (ndarray[G]): optional; pairs of different
            labels never match.
    Returns:
        tuple: ``gt_of_det`` ndarray[D] int64 and ``det_of_gt`` ndarray[G] int64 (-1 for
        no match), ``iou`` ndarray[D, G] float64.
    """
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    iou = box_iou(det_boxes, gt_boxes).astype(np.float64) if len(det_boxes) and len(gt_boxes) \
        else np.zeros((len(det_boxes), len(gt_boxes)))
    candidates = iou.copy()
    if det_labels is not None:
        candidates[np.asarray(det_labels)[:, None] != np.asarray(gt_labels)[None, :]] = -1.0
    gt_of_det = np.full(len(det_boxes), -1, np.int64)
    det_of_gt = np.full(len(gt_boxes), -1, np.int64)
    # One detection at a time (their order decides), vectorized over the ground truths.
    for d in np.argsort(-np.asarray(det_scores, np.float64), kind="stable"):
        free = np.where(det_of_gt < 0, candidates[d], -1.0)
        if len(free) and free.max() >= iou_threshold:
            g = int(free.argmax())
            gt_of_det[d], det_of_gt[g] = g, d
    return gt_of_det, det_of_gt, iou


def _intersections(a, b):
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)  # (A, B)


def attribute_error(matched, plate_iou, pred_boxes, pred_labels, gt_boxes, gt_labels):
    """Why a plate was read wrong (module docstring, step 4).

    Args:
        matched (bool): a reported plate matches it. plate_iou (float): that box's IoU.
        pred_boxes (ndarray[P, 4]), pred_labels (ndarray[P]): the characters read, in the
            frame's pixels; gt_boxes (ndarray[G, 4]), gt_labels (ndarray[G]): the true ones.
    Returns:
        tuple: the category (one of ``CATEGORIES[1:]``) and ``flags``, a dict category ->
        bool of every cause found (the category is the first true one).
    """
    pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    flags = dict.fromkeys(CATEGORIES[1:], False)
    flags["missed plate"] = not matched
    flags["loose/tight box"] = bool(matched and plate_iou < TIGHT_IOU)
    inter = _intersections(pred_boxes, gt_boxes)  # (P, G)
    area_p = np.prod(pred_boxes[:, 2:] - pred_boxes[:, :2], axis=1)
    area_g = np.prod(gt_boxes[:, 2:] - gt_boxes[:, :2], axis=1)
    cover_g = inter / np.maximum(area_g[None, :], 1e-9)  # share of each true char inside p
    cover_p = inter / np.maximum(area_p[:, None], 1e-9)  # share of each p inside a true char
    iou = inter / np.maximum(area_p[:, None] + area_g[None, :] - inter, 1e-9)
    if matched:
        flags["merged characters"] = bool(((cover_g >= 0.5).sum(axis=1) >= 2).any())
        flags["split character"] = bool(((cover_p >= 0.5).sum(axis=0) >= 2).any())
        alone = (iou.max(axis=0, initial=0) < OVERLAP_IOU) & (cover_g.max(axis=0, initial=0) < 0.5)
        flags["missed character"] = bool(alone.any())
        _, det_of_gt, _ = match_boxes(pred_boxes, -np.arange(len(pred_boxes)), gt_boxes, CHAR_IOU)
        paired = det_of_gt >= 0
        flags["wrong class"] = bool((pred_labels[det_of_gt[paired]] != gt_labels[paired]).any())
        flags["extra character"] = bool((cover_p.max(axis=1, initial=0) < 0.5).any())
    flags["order or rows"] = matched and not any(flags.values())
    category = next(name for name in CATEGORIES[1:] if flags[name])
    return category, flags


# ================================================================================ the scenes
def _scenes(root, split):
    """``(image_id, image path, objects, instance mask path)`` of every scene of a split."""
    voc = VOCDataset(root, split, return_instance_masks=True)
    for index in range(len(voc)):
        record = voc._records[index]
        yield (record["image_id"], record["image_path"], voc.annotation(index)["objects"],
               record["instance_mask_path"])


def choose_plate_threshold(reader, root, split="val", beta=None, progress=False):
    """The plate threshold of best F-beta (plates found at IoU >= 0.5) on a split's scenes.

    Every plate the reader would report at any threshold (the detector's plates from its
    own score threshold, after the reader's ``plate_nms``, ``PlateReader.plate_boxes``) is
    matched to the true plates; at each score the precision P and recall R of the plates
    at or above it give ``F_beta = (1 + beta²) P R / (beta² P + R)``; the score of the
    best is the threshold (the higher one among equals). ``beta > 1`` weighs recall more:
    a missed plate is a plate the reader fails, a spurious one an extra entry whose text
    is rarely a plate's.

    Args:
        reader (PlateReader): its ``detect`` and ``plate_boxes`` are used.
        root (str): the scenes (VOC layout); split (str): the image set.
        beta (float | None): > 0; None: ``PLATE_BETA``.
        progress (bool): show a progress bar.
    Returns:
        dict: ``plate_threshold``, ``beta``, ``f_beta``, ``f1``, ``precision``, ``recall``
        (at that threshold), ``plates``, ``images`` (the reader's current threshold and
        NaNs when the split holds no plate).
    """
    beta = PLATE_BETA if beta is None else beta
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < math.inf:
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    scores, hits, total, images = [], [], 0, 0
    scenes = list(_scenes(root, split))
    for _, image_path, objects, _ in tqdm(scenes, desc=f"{split}: plate threshold", unit="img",
                                          disable=not progress, leave=False):
        detections = reader.detect(read_rgb(image_path))
        plates = reader.plate_boxes(detections, threshold=0.0)
        truth = np.asarray([o["bbox"] for o in objects if o["name"] == "plate"],
                           np.float32).reshape(-1, 4)
        gt_of_det, _, _ = match_boxes(detections["boxes"][plates], detections["scores"][plates],
                                      truth)
        scores.append(detections["scores"][plates])
        hits.append(gt_of_det >= 0)
        total += len(truth)
        images += 1
    scores = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    hits = np.concatenate(hits) if hits else np.zeros(0, bool)
    if total == 0 or len(scores) == 0:
        return {"plate_threshold": reader.plate_threshold, "beta": float(beta),
                "f_beta": float("nan"), "f1": float("nan"), "precision": float("nan"),
                "recall": float("nan"), "plates": total, "images": images}
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    true_pos = np.cumsum(hits)
    precision = true_pos / np.arange(1, len(scores) + 1)
    recall = true_pos / total
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    b2 = float(beta) ** 2
    f_beta = (1 + b2) * precision * recall / np.maximum(b2 * precision + recall, 1e-12)
    # Only the last detection of a run of equal scores is a possible cut.
    last_of_score = np.append(scores[1:] != scores[:-1], True)
    f_beta = np.where(last_of_score, f_beta, -1.0)
    best = int(np.flatnonzero(f_beta == f_beta.max())[0])  # the first (highest score) of the best
    return {"plate_threshold": float(scores[best]), "beta": float(beta),
            "f_beta": float(f_beta[best]), "f1": float(f1[best]),
            "precision": float(precision[best]), "recall": float(recall[best]),
            "plates": total, "images": images}


def _width_bin(width):
    return int(np.searchsorted(np.asarray(WIDTH_BINS[1:-1]), width, side="right"))


def _bin_name(k):
    low, high = WIDTH_BINS[k], WIDTH_BINS[k + 1]
    return f"< {high:g} px" if low == 0 else (f">= {low:g} px" if math.isinf(high)
                                              else f"{low:g}-{high:g} px")


def _segmentation_summary(matrix, crops):
    iou, dice = matrix.iou_per_class(), matrix.dice_per_class()
    characters = list(CHARACTER_CLASSES)
    return {"crops": int(crops), "mean_iou": matrix.mean_iou(classes=characters),
            "mean_dice": float(np.nanmean(dice[characters])) if np.isfinite(dice[characters]).any()
            else float("nan"),
            "pixel_accuracy": matrix.pixel_accuracy(),
            "iou_per_class": {name: float(v) for name, v in zip(SEGMENTER_CLASSES, iou)},
            "dice_per_class": {name: float(v) for name, v in zip(SEGMENTER_CLASSES, dice)}}


def score_reading(reading, truth, crop_size, image_id=""):
    """Score one scene's reading against its truth (module docstring, steps 2-4).

    Args:
        reading (Reading): ``PlateReader.read`` of the scene.
        truth (dict): ``scene_truth`` of the scene.
        crop_size (tuple[int, int]): the segmenter's crops (for the crops' true labels).
        image_id (str): names the scene in the records.
    Returns:
        dict: ``records`` (one per true plate: box, width, true text, text read, score and
        IoU of the matching reported plate or None, category), ``predicted_maps`` and
        ``true_maps`` (ndarray[P, h, w]: the reported plates' class maps and their true
        labels), ``counts`` (``reported``, ``reported_matched``, ``reported_correct``,
        ``char_tp``, ``char_pred``, ``char_gt``) and ``matches`` (``det_of_gt``).
    """
    plates = reading.plates
    height, width = crop_size
    true_maps = np.zeros((0, height, width), np.uint8)
    predicted_maps = np.zeros((0, height, width), np.uint8)
    if plates:
        windows = np.stack([p.window for p in plates])
        true_maps = crop_region_labels(truth["regions"], truth["class_of"], windows, crop_size,
                                       LABEL_SAMPLES, LABEL_COVERAGE)
        predicted_maps = np.stack([p.class_map for p in plates]).astype(np.uint8)

    plate_boxes = np.asarray([p.box for p in plates], np.float32).reshape(-1, 4)
    plate_scores = np.asarray([p.score for p in plates], np.float32)
    gt_of_det, det_of_gt, iou = match_boxes(plate_boxes, plate_scores, truth["plate_boxes"])
    counts = {"reported": len(plates), "reported_matched": int((gt_of_det >= 0).sum()),
              "reported_correct": sum(g >= 0 and plates[d].text == truth["class_texts"][g]
                                      for d, g in enumerate(gt_of_det))}

    # Characters: every character read in the frame against every true one.
    chars = [c for p in plates for c in p.characters]
    char_boxes = np.asarray([c.box for c in chars], np.float32).reshape(-1, 4)
    char_labels = np.asarray([_label_id(c.label) for c in chars], np.int64)
    char_scores = np.asarray([c.score for c in chars], np.float32)
    char_match, _, _ = match_boxes(char_boxes, char_scores, truth["char_boxes"], CHAR_IOU,
                                   char_labels, truth["char_labels"])
    counts.update(char_tp=int((char_match >= 0).sum()), char_pred=len(chars),
                  char_gt=len(truth["char_boxes"]))

    records = []
    for g, (box, text, class_text) in enumerate(zip(truth["plate_boxes"], truth["texts"],
                                                    truth["class_texts"])):
        d = int(det_of_gt[g])
        plate = plates[d] if d >= 0 else None
        read = plate.text if plate is not None else None
        if read == class_text:
            category = "correct"
        else:
            mine = truth["char_plate"] == g
            pred = plate.characters if plate is not None else []
            category, _ = attribute_error(
                plate is not None, float(iou[d, g]) if d >= 0 else 0.0,
                np.asarray([c.box for c in pred], np.float32).reshape(-1, 4),
                np.asarray([_label_id(c.label) for c in pred], np.int64),
                truth["char_boxes"][mine], truth["char_labels"][mine])
        plate_width = float(box[2] - box[0])
        records.append({
            "image": image_id, "box": [round(float(v), 2) for v in box],
            "width": round(plate_width, 2), "text": text, "truth": class_text, "read": read,
            "score": None if plate is None else round(plate.score, 4),
            "iou": None if plate is None else round(float(iou[d, g]), 4),
            "category": category, "width_bin": _width_bin(plate_width)})
    return {"records": records, "predicted_maps": predicted_maps, "true_maps": true_maps,
            "counts": counts, "matches": det_of_gt}


def evaluate_reader(reader, root, split="test", progress=False, gallery=12, max_images=None):
    """Evaluate a ``PlateReader`` end to end on a split of a plate dataset (module docstring).

    Args:
        reader (PlateReader): the two stages and their settings.
        root (str): the dataset (VOC layout with ``SegmentationObject``), full resolution.
        split (str): the held-out split.
        progress (bool): a progress bar.
        gallery (int): keep the pictures of the first ``gallery`` plates read wrong.
        max_images (int, optional): only the first images of the split.
    Returns:
        dict: ``detection``, ``segmentation`` (``detected`` and ``ground_truth`` boxes),
        ``end_to_end``, ``errors``, ``by_width``, ``timing``, ``plates`` (one record per
        true plate) and ``settings``; plus ``failures`` (pictures for the gallery, not JSON).
    """
    scenes = list(_scenes(root, split))[:max_images]
    crop_size = reader.crop_size
    detected_matrix = ConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE_INDEX)
    truth_matrix = ConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE_INDEX)
    predictions, targets, records, failures, read_ms = [], [], [], [], []
    counts = dict.fromkeys(("reported", "reported_matched", "reported_correct", "char_tp",
                            "char_pred", "char_gt", "detected_crops", "truth_crops",
                            "truth_read"), 0)
    start = time.perf_counter()
    for image_id, image_path, objects, instance_path in tqdm(
            scenes, desc=f"{split}: read", unit="img", disable=not progress, leave=False):
        clock = time.perf_counter()
        image = load_image(image_path)
        reading = reader.read(image)
        json.dumps(reading.to_json(image_path))  # what `python -m plates read` writes
        read_ms.append(1000 * (time.perf_counter() - clock))
        truth = scene_truth(objects, read_label_map(instance_path), reader.detector_classes)
        predictions.append(reading.detections)
        targets.append({"boxes": truth["boxes"], "labels": truth["labels"]})

        scored = score_reading(reading, truth, crop_size, image_id)
        for key, value in scored["counts"].items():
            counts[key] += value
        detected_matrix.update(scored["predicted_maps"], scored["true_maps"])
        counts["detected_crops"] += len(scored["predicted_maps"])

        # The segmenter alone: crops of the true plate boxes.
        truth_reads = [None] * len(truth["plate_boxes"])
        if len(truth["plate_boxes"]):
            crops, _, windows = crop_plates(image, truth["plate_boxes"], crop_size,
                                            reader.crop_padding)
            maps = predict(reader.segmenter, crops, batch_size=len(crops),
                           tta=bool(reader.settings["tta"]))
            truth_matrix.update(maps, crop_region_labels(truth["regions"], truth["class_of"],
                                                         windows, crop_size, LABEL_SAMPLES,
                                                         LABEL_COVERAGE))
            truth_reads = [read_plate(m, min_area=reader.read_min_area)["text"] for m in maps]
            counts["truth_crops"] += len(crops)
            counts["truth_read"] += sum(r == t for r, t in zip(truth_reads, truth["class_texts"]))
        for g, record in enumerate(scored["records"]):
            record["read_on_truth_box"] = truth_reads[g]
            records.append(record)
            if record["category"] != "correct" and len(failures) < gallery:
                d = int(scored["matches"][g])
                failures.append(_failure_picture(image, truth["plate_boxes"][g],
                                                 reading.plates[d] if d >= 0 else None,
                                                 record, reader))

    seconds = time.perf_counter() - start
    return _summarize(records, counts, predictions, targets, detected_matrix, truth_matrix,
                      failures, read_ms, seconds, reader, split, len(scenes))


def _label_id(text):
    """Segmenter label of a character's text ('0'..'9' -> 1..10, '#' -> 11)."""
    return 11 if text == "#" else 1 + int(text)


def _failure_picture(image, box, plate, record, reader, context=0.6):
    """What the gallery shows of a plate read wrong: the frame around it, the crop and
    class map the reader used (or, for a missed plate, those of the true box)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    pad_x, pad_y = context * (x2 - x1), context * (y2 - y1) + 0.3 * (x2 - x1)
    left, top = int(max(0, x1 - pad_x)), int(max(0, y1 - pad_y))
    right = int(min(image.shape[1], math.ceil(x2 + pad_x)))
    bottom = int(min(image.shape[0], math.ceil(y2 + pad_y)))
    if plate is not None:
        crop, class_map = plate.crop, plate.class_map
        detected = np.asarray(plate.box, np.float64) - [left, top, left, top]
    else:
        crops, _, _ = crop_plates(image, np.asarray([box], np.float32), reader.crop_size,
                                  reader.crop_padding)
        crop = crops[0]
        class_map = predict(reader.segmenter, crops, tta=bool(reader.settings["tta"]))[0]
        detected = None
    return {"region": image[top:bottom, left:right].copy(),
            "truth_box": np.asarray(box, np.float64) - [left, top, left, top],
            "detected_box": detected, "crop": crop, "class_map": class_map.astype(np.uint8),
            "record": record}


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else float("nan")


def _summarize(records, counts, predictions, targets, detected_matrix, truth_matrix, failures,
               read_ms, seconds, reader, split, images):
    names = reader.detector_classes
    detection = mean_average_precision(predictions, targets)
    curves = precision_recall_curve(predictions, targets, iou_threshold=0.5)
    detection["map_per_class"] = {names[int(k) - 1]: float(v)
                                  for k, v in detection["map_per_class"].items()}
    detection["ap50_per_class"] = {names[int(k) - 1]: float(ap)
                                   for k, ap in zip(curves["labels"], curves["ap"]) if ap >= 0}
    total = len(records)
    correct = sum(r["category"] == "correct" for r in records)
    matched = sum(r["iou"] is not None for r in records)
    category_counts = {name: sum(r["category"] == name for r in records) for name in CATEGORIES}
    by_width = []
    for k in range(len(WIDTH_BINS) - 1):
        members = [r for r in records if r["width_bin"] == k]
        ious = [r["iou"] for r in members if r["iou"] is not None]
        by_width.append({
            "bin": _bin_name(k), "low": WIDTH_BINS[k], "high": WIDTH_BINS[k + 1],
            "plates": len(members),
            "detected": _ratio(sum(r["iou"] is not None for r in members), len(members)),
            "read_exact": _ratio(sum(r["category"] == "correct" for r in members), len(members)),
            "read_on_truth_box": _ratio(sum(r["read_on_truth_box"] == r["truth"]
                                            for r in members), len(members)),
            "mean_box_iou": float(np.mean(ious)) if ious else float("nan")})
    return {
        "split": split, "images": images,
        "settings": {**reader.settings, "detector_size": reader.detector_size,
                     "crop_size": list(reader.crop_size), "crop_padding": reader.crop_padding},
        "detection": detection,
        "segmentation": {"detected": _segmentation_summary(detected_matrix,
                                                           counts["detected_crops"]),
                         "ground_truth": {**_segmentation_summary(truth_matrix,
                                                                  counts["truth_crops"]),
                                          "read_exact": _ratio(counts["truth_read"],
                                                               counts["truth_crops"])}},
        "end_to_end": {
            "plates": total, "read_exact": _ratio(correct, total), "read": correct,
            "plate_recall": _ratio(matched, total), "reported": counts["reported"],
            "plate_precision": _ratio(counts["reported_matched"], counts["reported"]),
            "read_precision": _ratio(counts["reported_correct"], counts["reported"]),
            "characters": {"precision": _ratio(counts["char_tp"], counts["char_pred"]),
                           "recall": _ratio(counts["char_tp"], counts["char_gt"]),
                           "matched": counts["char_tp"], "predicted": counts["char_pred"],
                           "true": counts["char_gt"]}},
        "errors": category_counts,
        "by_width": by_width,
        "timing": {"seconds": seconds,
                   "read_ms_median": float(np.median(read_ms)) if read_ms else float("nan"),
                   "read_ms_p90": float(np.percentile(read_ms, 90)) if read_ms else float("nan")},
        "plates": records,
        "failures": failures,
    }


# ================================================================================== writing
def write_evaluation(results, out_dir):
    """Write ``evaluation.json`` (everything but the pictures), ``failures.png`` (the
    gallery) and ``end_to_end.png`` (errors by cause, reading by plate width).

    Returns:
        dict: the paths written, by name.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, EVALUATION_FILE),
             "failures": os.path.join(out_dir, "failures.png"),
             "end_to_end": os.path.join(out_dir, "end_to_end.png")}
    data = {k: v for k, v in results.items() if k != "failures"}
    write_json(paths["json"], data)
    plot_failures(results["failures"], paths["failures"])
    plot_end_to_end(results, paths["end_to_end"])
    return paths


def plot_failures(failures, path):
    """The gallery: one row per plate read wrong (frame, crop, class map), or a note."""
    from matplotlib.figure import Figure

    from detection.visualize import save_figure, show_image

    rows = max(1, len(failures))
    figure = Figure(figsize=(9, 1.6 * rows + 0.4))
    axes = np.asarray(figure.subplots(rows, 3, squeeze=False))
    if not failures:
        for ax in axes.ravel():
            ax.set_axis_off()
        axes[0, 1].text(0.5, 0.5, "every test plate was read exactly", ha="center",
                        va="center", fontsize=11)
    colors = class_colors()
    for row, failure in zip(axes, failures):
        record = failure["record"]
        show_image(row[0], failure["region"])
        x1, y1, x2, y2 = failure["truth_box"]
        row[0].add_patch(_rectangle(x1, y1, x2, y2, "lime"))
        if failure["detected_box"] is not None:
            row[0].add_patch(_rectangle(*failure["detected_box"], "red"))
        row[0].set_title(f"{record['image']}: {record['width']:.0f} px wide "
                         f"(true box green, detected red)", fontsize=7)
        show_image(row[1], failure["crop"])
        row[1].set_title(f"truth {record['truth']!r}", fontsize=8)
        row[2].imshow(colors[failure["class_map"]], interpolation="nearest")
        row[2].set_xticks([])
        row[2].set_yticks([])
        read = "(not detected)" if record["read"] is None else repr(record["read"])
        row[2].set_title(f"read {read}: {record['category']}", fontsize=8, color="red")
    figure.suptitle("test plates read wrong", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def _rectangle(x1, y1, x2, y2, color):
    from matplotlib.patches import Rectangle

    return Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.5)


def plot_end_to_end(results, path):
    """Two panels: plates by outcome (correct and each error cause), and detection and
    exact reading by plate width."""
    from matplotlib.figure import Figure

    from detection.visualize import save_figure

    figure = Figure(figsize=(10, 3.8))
    ax_errors, ax_width = figure.subplots(1, 2)
    counts = [results["errors"][name] for name in CATEGORIES]
    colors = ["tab:green"] + ["tab:red"] * (len(CATEGORIES) - 1)
    positions = np.arange(len(CATEGORIES))
    ax_errors.barh(positions, counts, color=colors)
    ax_errors.set_yticks(positions, CATEGORIES, fontsize=8)
    ax_errors.invert_yaxis()
    for y, count in zip(positions, counts):
        ax_errors.text(count, y, f" {count}", va="center", fontsize=8)
    ax_errors.set_xlabel("test plates")
    ax_errors.set_title(f"outcome of {results['end_to_end']['plates']} plates", fontsize=10)
    bins = results["by_width"]
    x = np.arange(len(bins))
    for offset, key, label in ((-0.2, "detected", "detected (IoU >= 0.5)"),
                               (0.2, "read_exact", "read exactly")):
        values = [b[key] if b[key] is not None and math.isfinite(b[key]) else 0 for b in bins]
        ax_width.bar(x + offset, values, width=0.4, label=label)
    ax_width.set_xticks(x, [f"{b['bin']}\n({b['plates']})" for b in bins], fontsize=8)
    ax_width.set_ylim(0, 1.05)
    ax_width.set_xlabel("plate width in the frame (plates)")
    ax_width.set_title("by plate width", fontsize=10)
    ax_width.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    save_figure(figure, path)
