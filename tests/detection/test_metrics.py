"""Tests of detection.metrics: COCO mAP against pycocotools, the vectorized matching
against its loop reference, VOC AP by hand and against a loop reference, explain
mode, PR curves, and the input checks."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detection.metrics import (
    AREA_RANGES, COCO_IOU_THRESHOLDS, coco_evaluate, explain_detections, format_explanation,
    mean_average_precision, plot_precision_recall, precision_recall_curve, voc_ap, voc_evaluate,
)
from detection.metrics.inputs import flatten_detections
from detection.metrics.matching import match_group_reference
from tests.detection.coco_oracle import (STAT_KEYS, assert_matching_equals_reference,
                                         assert_same_as_oracle, run_cocoeval)



# ----------------------------------------------------------------------------- data

def random_detection_set(seed, num_images=12, num_classes=3, crowd_prob=0.1, grid=False,
                         tie_prob=0.3, area_override=False):
    """Detector-like random predictions and targets.

    Ground truths of all sizes (small, medium and large objects), some crowd regions,
    empty images; detections are jittered copies of ground truths (some with the wrong
    class, some duplicates) plus background boxes; some images have tied scores
    (quantized), some no detections. ``grid=True`` snaps every coordinate to a multiple
    of 8, so that IoUs hit thresholds exactly and zero-area boxes occur.
    """
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    for _ in range(num_images):
        num_gt = int(rng.poisson(4)) if rng.random() > 0.15 else 0
        size = np.exp(rng.uniform(np.log(3), np.log(250), size=(num_gt, 2)))
        center = rng.uniform(0, 500, size=(num_gt, 2))
        gt_boxes = np.concatenate([center - size / 2, center + size / 2], axis=1)
        gt_labels = rng.integers(0, num_classes, num_gt)
        parts, labels = [], []
        if num_gt and rng.random() > 0.1:
            k = int(rng.integers(0, 3 * num_gt + 1))
            src = rng.integers(0, num_gt, k)
            wh = np.concatenate([size[src], size[src]], axis=1)
            boxes = gt_boxes[src] + rng.normal(0, 0.15, size=(k, 4)) * wh
            parts.append(np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                                         np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1))
            right = rng.random(k) < 0.85
            labels.append(np.where(right, gt_labels[src], rng.integers(0, num_classes, k)))
        num_bg = int(rng.integers(0, 6)) if rng.random() > 0.2 else 0
        center = rng.uniform(0, 500, (num_bg, 2))
        side = np.exp(rng.uniform(np.log(3), np.log(250), (num_bg, 2)))
        parts.append(np.concatenate([center - side / 2, center + side / 2], axis=1))
        labels.append(rng.integers(0, num_classes, num_bg))
        det_boxes = np.concatenate(parts)
        scores = rng.random(len(det_boxes))
        if rng.random() < tie_prob:
            scores = np.round(scores * 4) / 4
        if grid:
            det_boxes = np.round(det_boxes / 8) * 8
            gt_boxes = np.round(gt_boxes / 8) * 8
        predictions.append({"boxes": det_boxes, "scores": scores, "labels": np.concatenate(labels)})
        target = {"boxes": gt_boxes, "labels": gt_labels,
                  "iscrowd": (rng.random(num_gt) < crowd_prob).astype(np.int64)}
        if area_override:
            target["area"] = rng.uniform(0, 150**2, num_gt)
        targets.append(target)
    return predictions, targets


@st.composite
def detection_sets(draw, max_images=6, max_classes=3):
    """``(predictions, targets)`` from :func:`random_detection_set` with drawn options."""
    return random_detection_set(
        draw(st.integers(0, 2**31 - 1)),
        num_images=draw(st.integers(0, max_images)),
        num_classes=draw(st.integers(1, max_classes)),
        crowd_prob=draw(st.sampled_from([0.0, 0.2, 0.5])),
        grid=draw(st.booleans()),
    )


def coco_oracle(predictions, targets, iou_thresholds=None, max_dets=(1, 10, 100)):
    """pycocotools' COCOeval (bbox) on the same boxes, after evaluate + accumulate + summarize.

    Boxes go to COCO's xywh; ground-truth "area" is the box area (or the given area),
    which is what our default means; image i gets id i + 1, a label its own category id.
    """
    labels = sorted(
        {int(v) for t in targets for v in np.asarray(t["labels"]).reshape(-1)}
        | {int(v) for p in predictions for v in np.asarray(p["labels"]).reshape(-1)}
    )
    images = [{"id": i + 1} for i in range(len(targets))]
    categories = [{"id": c} for c in labels]
    annotations = []
    for i, t in enumerate(targets):
        boxes = np.asarray(t["boxes"], np.float64).reshape(-1, 4)
        crowd = np.asarray(t.get("iscrowd", np.zeros(len(boxes)))).reshape(-1)
        area = (np.asarray(t["area"], np.float64) if "area" in t
                else (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        for j, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(t["labels"][j]),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(area[j]),
                "iscrowd": int(crowd[j]),
            })
    results = []
    for i, p in enumerate(predictions):
        boxes = np.asarray(p["boxes"], np.float64).reshape(-1, 4)
        for j, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            results.append({
                "image_id": i + 1, "category_id": int(p["labels"][j]),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(p["scores"][j]),
            })
    return run_cocoeval(images, categories, annotations, results, "bbox", iou_thresholds,
                        max_dets)


def assert_equal_to_coco(predictions, targets, iou_thresholds=None, max_detections=100):
    oracle = coco_oracle(predictions, targets, iou_thresholds, (1, 10, max_detections))
    ours = mean_average_precision(predictions, targets, iou_thresholds, max_detections)
    evaluation = coco_evaluate(predictions, targets, iou_thresholds, max_detections)
    assert_same_as_oracle(ours, evaluation, oracle, max_detections, atol=1e-6)
    return ours, oracle


def box(x1, y1, x2, y2):
    return [float(x1), float(y1), float(x2), float(y2)]


def pred(boxes, scores, labels):
    return {
        "boxes": np.array(boxes, np.float64).reshape(-1, 4),
        "scores": np.array(scores, np.float64),
        "labels": np.array(labels, np.int64),
    }


def target(boxes, labels, **extra):
    out = {
        "boxes": np.array(boxes, np.float64).reshape(-1, 4),
        "labels": np.array(labels, np.int64),
    }
    out.update({k: np.array(v) for k, v in extra.items()})
    return out


# ------------------------------------------------------------- COCO vs pycocotools

@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("grid", [False, True])
def test_map_equals_pycocotools(seed, grid):
    predictions, targets = random_detection_set(seed, num_images=15, grid=grid)
    ours, oracle = assert_equal_to_coco(predictions, targets)
    assert set(ours) == set(STAT_KEYS) | {"map_per_class"}
    assert all(isinstance(ours[k], float) for k in STAT_KEYS)
    # The data exercise every area range (none of the 12 numbers is undefined).
    assert np.all(oracle.stats > -1)


@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("iou_thresholds, max_detections", [
    ([0.5, 0.75], 10), ([0.0, 0.3, 0.5, 1.0], 100), (None, 12), (0.5, 100),
])
def test_map_equals_pycocotools_custom_settings(seed, iou_thresholds, max_detections):
    predictions, targets = random_detection_set(100 + seed, num_images=10, num_classes=2)
    assert_equal_to_coco(predictions, targets, iou_thresholds, max_detections)


@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(3))
def test_map_equals_pycocotools_with_area_field_and_crowds(seed):
    predictions, targets = random_detection_set(
        200 + seed, num_images=10, crowd_prob=0.4, area_override=True
    )
    assert_equal_to_coco(predictions, targets)


@pytest.mark.oracle
def test_map_equals_pycocotools_many_detections_per_class():
    # More than maxDets detections in one (image, class): truncation at 1, 10 and 100.
    rng = np.random.default_rng(7)
    predictions, targets = [], []
    for _ in range(3):
        centers = rng.uniform(0, 400, (30, 2))
        gts = np.concatenate([centers, centers + 40], axis=1)
        dets = np.repeat(gts, 5, axis=0) + rng.normal(0, 6, (150, 4))
        dets = np.concatenate(
            [np.minimum(dets[:, :2], dets[:, 2:]), np.maximum(dets[:, :2], dets[:, 2:])], axis=1
        )
        predictions.append(pred(dets, rng.random(150), np.zeros(150)))
        targets.append(target(gts, np.zeros(30)))
    assert_equal_to_coco(predictions, targets)


@pytest.mark.oracle
@pytest.mark.parametrize(
    "case", ["no_detections", "no_ground_truth", "detections_without_gt_class"]
)
def test_map_equals_pycocotools_degenerate(case):
    predictions, targets = random_detection_set(5, num_images=6)
    if case == "no_detections":
        predictions = [pred(np.zeros((0, 4)), [], []) for _ in targets]
    elif case == "no_ground_truth":
        targets = [target(np.zeros((0, 4)), []) for _ in targets]
        targets[0] = target([box(0, 0, 10, 10)], [0])  # pycocotools needs one annotation
    else:
        for p in predictions:
            p["labels"] = p["labels"] + 10  # classes absent from the ground truth
    assert_equal_to_coco(predictions, targets)


@pytest.mark.oracle
@settings(max_examples=15)
@given(detection_sets(max_images=5))
def test_map_equals_pycocotools_hypothesis(sets):
    assert_equal_to_coco(*sets)


@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(3))
def test_explain_equals_pycocotools_eval_images(seed):
    # Every (image, class) evaluation of pycocotools, area "all": matched gt id per
    # threshold and the ignore flags must be ours.
    predictions, targets = random_detection_set(300 + seed, num_images=10, crowd_prob=0.3)
    oracle = coco_oracle(predictions, targets)
    explanation = explain_detections(predictions, targets, COCO_IOU_THRESHOLDS)
    gt_ids = np.cumsum([0] + [len(t["labels"]) for t in targets])  # ann id = offset + j + 1
    det_ids = np.cumsum([0] + [len(p["labels"]) for p in predictions])
    checked = 0
    for e in oracle.evalImgs:
        if e is None or tuple(e["aRng"]) != tuple(AREA_RANGES["all"]):
            continue
        image = e["image_id"] - 1
        info = explanation["images"][image]
        for col, det_id in enumerate(e["dtIds"]):
            j = det_id - 1 - det_ids[image]  # loadRes numbers results 1.. in input order
            coco_gt = e["dtMatches"][:, col].astype(np.int64)
            local = info["matched_gt"][:, j]
            ours_gt = np.where(local >= 0, gt_ids[image] + local + 1, 0)
            assert np.array_equal(ours_gt, coco_gt)
            ours_ignored = info["status"][:, j] == "ignored"
            assert np.array_equal(ours_ignored, e["dtIgnore"][:, col].astype(bool))
            checked += 1
    assert checked == sum(len(p["labels"]) for p in predictions)


# --------------------------------------------------- matching vs its loop reference

def _gt_ignore(data, area_names=tuple(AREA_RANGES)):
    ranges = np.array([AREA_RANGES[a] for a in area_names])
    area = data.gt_area[None]
    return data.gt_crowd[None] | (area < ranges[:, :1]) | (area > ranges[:, 1:])


@settings(max_examples=30)
@given(detection_sets(), st.sampled_from([1, 2, 5, 100]))
def test_matching_equals_loop_reference(sets, max_detections):
    data = flatten_detections(*sets)
    thresholds = np.array([0.0, 0.1, 0.5, 0.75, 0.95, 1.0])
    ignore = _gt_ignore(data)
    assert_matching_equals_reference(data, thresholds, ignore, max_detections)


def test_match_group_reference_rules():
    # Detections by decreasing score; gts: 0 regular, 1 regular, 2 crowd (ignored).
    ious = np.array([
        [0.6, 0.6, 0.9],   # tie between regular gts: the last one (1) wins
        [0.7, 0.0, 0.0],   # gt 0 still free
        [0.8, 0.0, 0.0],   # gt 0 taken: no fall-back, unmatched
        [0.0, 0.0, 0.55],  # no regular gt: the crowd region
        [0.0, 0.0, 0.5],   # a crowd region is never used up; IoU == t matches
    ])
    ignore = np.array([False, False, True])
    crowd = np.array([False, False, True])
    assert match_group_reference(ious, ignore, crowd, 0.5).tolist() == [1, 0, -1, 2, 2]
    # t = 1 still matches identical boxes (COCO's min(t, 1 - 1e-10)).
    no = np.array([False])
    assert match_group_reference(np.array([[1.0]]), no, no, 1.0).tolist() == [0]


def test_tied_iou_prefers_last_ground_truth_and_crowd_iou():
    # Two identical gts: COCO takes the later one first. A det half inside a crowd
    # region counts as IoU = inter / det area.
    dets = [box(0, 0, 10, 10), box(0, 0, 10, 10), box(20, 0, 40, 10)]
    gts = [box(0, 0, 10, 10), box(0, 0, 10, 10), box(30, 0, 130, 10)]
    predictions = [pred(dets, [0.9, 0.8, 0.7], [0, 0, 0])]
    targets = [target(gts, [0, 0, 0], iscrowd=[0, 0, 1])]
    info = explain_detections(predictions, targets, 0.5)["images"][0]
    assert info["matched_gt"][0].tolist() == [1, 0, 2]
    assert info["status"][0].tolist() == ["tp", "tp", "ignored"]
    assert info["reason"][0].tolist() == ["", "", "crowd"]
    np.testing.assert_allclose(info["iou"][0], [1.0, 1.0, 0.5])


# ----------------------------------------------------------------- COCO by hand

def test_perfect_detections_score_one():
    targets = [target([box(0, 0, 10, 10), box(50, 50, 150, 150)], [1, 2]),
               target([box(0, 0, 50, 50)], [1])]
    predictions = [
        pred(t["boxes"], np.linspace(0.9, 0.5, len(t["labels"])), t["labels"]) for t in targets
    ]
    result = mean_average_precision(predictions, targets)
    for key in ("map", "map_50", "map_75", "mar_100", "mar_10", "map_small", "map_medium",
                "map_large"):
        assert result[key] == pytest.approx(1.0, abs=1e-12)
    assert result["mar_1"] == pytest.approx(1.0)  # one detection per (image, class) suffices
    assert result["map_per_class"] == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}


def test_false_positive_ranked_first_halves_precision():
    # FP (score 0.9) then TP (0.8): precision 1/2 at every recall point -> AP 0.5.
    predictions = [pred([box(100, 100, 110, 110), box(0, 0, 10, 10)], [0.9, 0.8], [0, 0])]
    targets = [target([box(0, 0, 10, 10)], [0])]
    result = mean_average_precision(predictions, targets)
    assert result["map"] == pytest.approx(0.5)
    assert result["mar_100"] == pytest.approx(1.0)
    assert result["mar_1"] == pytest.approx(0.0)  # the best detection alone is the FP
    # A localization of IoU 0.6 counts for t in {0.5, 0.55, 0.6}: 3 of 10 thresholds.
    predictions = [pred([box(0, 0, 6, 10)], [0.9], [0])]
    assert mean_average_precision(predictions, targets)["map"] == pytest.approx(0.3)


def test_label_without_ground_truth_is_undefined():
    predictions = [pred([box(0, 0, 10, 10), box(0, 0, 10, 10)], [0.9, 0.8], [0, 7])]
    targets = [target([box(0, 0, 10, 10)], [0])]
    result = mean_average_precision(predictions, targets)
    assert result["map_per_class"][7] == -1.0
    assert result["map"] == pytest.approx(1.0)  # class 7 does not count


def test_empty_inputs_give_undefined_or_zero():
    result = mean_average_precision([], [])
    assert all(result[k] == -1.0 for k in STAT_KEYS)
    assert result["map_per_class"] == {}
    empty = pred(np.zeros((0, 4)), [], [])
    targets = [target([box(0, 0, 10, 10)], [3]), target([], [])]
    result = mean_average_precision([empty, empty], targets)
    assert result["map"] == 0.0 and result["mar_100"] == 0.0
    assert result["map_medium"] == -1.0
    assert result["map_per_class"] == {3: 0.0}
    # Empty lists (dtype float64, shape (0,)) are valid empty boxes and labels.
    lists = mean_average_precision([{"boxes": [], "scores": [], "labels": []}],
                                   [{"boxes": [], "labels": []}])
    assert lists["map"] == -1.0


def test_float32_and_integer_inputs_match_float64():
    predictions, targets = random_detection_set(11, num_images=8, grid=True)
    reference = mean_average_precision(predictions, targets)
    as_int = [dict(p, boxes=p["boxes"].astype(np.int32)) for p in predictions]
    assert mean_average_precision(as_int, targets) == reference
    as_f32 = [dict(p, boxes=p["boxes"].astype(np.float32), scores=p["scores"].astype(np.float32))
              for p in predictions]
    cast_back = [dict(p, boxes=p["boxes"].astype(np.float64), scores=p["scores"].astype(np.float64))
                 for p in as_f32]
    assert mean_average_precision(as_f32, targets) == mean_average_precision(cast_back, targets)


@settings(max_examples=20)
@given(detection_sets(), st.integers(0, 2**31 - 1))
def test_invariant_to_detection_order_within_image(sets, seed):
    predictions, targets = sets
    rng = np.random.default_rng(seed)
    # Distinct scores make the order of equal-score detections irrelevant.
    predictions = [dict(p, scores=rng.permutation(len(p["scores"])) / max(len(p["scores"]), 1) + i)
                   for i, p in enumerate(predictions)]
    shuffled = []
    for p in predictions:
        perm = rng.permutation(len(p["scores"]))
        shuffled.append({k: np.asarray(v)[perm] for k, v in p.items()})
    assert mean_average_precision(shuffled, targets) == mean_average_precision(predictions, targets)


@settings(max_examples=20)
@given(detection_sets())
def test_explain_agrees_with_map_counts(sets):
    predictions, targets = sets
    explanation = explain_detections(predictions, targets, COCO_IOU_THRESHOLDS)
    s = explanation["summary"]
    # Every non-ignored gt is either found once or missed; every FP has one kind.
    assert np.array_equal(s["tp"] + s["missed"], s["num_gt"])
    kinds = s["duplicate"] + s["localization"] + s["confusion"] + s["background"]
    assert np.array_equal(kinds, s["fp"])
    num_det = sum(len(p["labels"]) for p in predictions)
    assert np.all(s["tp"] + s["fp"] + s["ignored"] == num_det)
    # Final recall at each threshold (all classes pooled) from the explanation and from COCO.
    evaluation = coco_evaluate(predictions, targets)
    data = flatten_detections(predictions, targets)
    num_gt = np.bincount(data.gt_labels[~data.gt_crowd], minlength=len(data.classes))
    recall = evaluation.recall[:, :, 0, 2]  # (T, K) area all, maxDets 100
    recalled = np.where(recall > -1, recall * num_gt, 0)
    np.testing.assert_allclose(recalled.sum(axis=1), s["tp"], atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_inverted_prediction_boxes_are_empty_boxes(seed):
    # The rule of detection.nms: a predicted box with x2 < x1 or y2 < y1 is an empty
    # box (area 0, IoU 0). It must score exactly as the same box collapsed to zero
    # width and height, for every metric, and it must not raise.
    predictions, targets = random_detection_set(500 + seed, num_images=8)
    rng = np.random.default_rng(seed)
    inverted, collapsed = [], []
    for p in predictions:
        boxes = p["boxes"].copy()
        flip = rng.random(len(boxes)) < 0.3
        boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]  # (x2, y2, x1, y1): both sides inverted
        inverted.append(dict(p, boxes=boxes))
        flat = boxes.copy()
        flat[flip, 2:] = flat[flip, :2]  # the same box with zero width and height
        collapsed.append(dict(p, boxes=flat))
    assert any((p["boxes"][:, 2] < p["boxes"][:, 0]).any() for p in inverted)
    ours = mean_average_precision(inverted, targets)
    assert ours == mean_average_precision(collapsed, targets)
    # Not the same as reading the inverted box as the box between its corners.
    assert ours != mean_average_precision(predictions, targets)
    assert voc_evaluate(inverted, targets)["ap_per_class"] == voc_evaluate(
        collapsed, targets)["ap_per_class"]
    a, b = explain_detections(inverted, targets), explain_detections(collapsed, targets)
    for x, y in zip(a["images"], b["images"]):
        assert np.array_equal(x["status"], y["status"]) and np.array_equal(x["reason"], y["reason"])


def test_inverted_prediction_box_by_hand():
    # A perfect detection inverted in x is a false positive of area 0, inside "small".
    targets = [target([box(0, 0, 10, 10)], [0])]
    predictions = [pred([box(10, 0, 0, 10)], [0.9], [0])]
    result = mean_average_precision(predictions, targets)
    assert result["map"] == 0.0 and result["mar_100"] == 0.0
    info = explain_detections(predictions, targets)["images"][0]
    assert info["status"][0].tolist() == ["fp"] and info["reason"][0].tolist() == ["background"]
    # For "medium" the unmatched area-0 detection is outside the range: ignored.
    medium = explain_detections(predictions, [target([box(0, 0, 50, 50)], [0])], area="medium")
    assert medium["images"][0]["reason"][0].tolist() == ["out_of_area"]


@pytest.mark.oracle
def test_inverted_prediction_boxes_equal_pycocotools_on_empty_boxes():
    # pycocotools reads an xywh box of width 0 as area 0 / IoU 0: ours on the inverted
    # boxes must equal it on the collapsed ones.
    predictions, targets = random_detection_set(510, num_images=10)
    inverted, collapsed = [], []
    for p in predictions:
        boxes = p["boxes"].copy()
        flip = np.arange(len(boxes)) % 3 == 0
        boxes[flip] = boxes[flip][:, [2, 1, 0, 3]]  # x inverted only
        inverted.append(dict(p, boxes=boxes))
        flat = boxes.copy()
        flat[flip, 2] = flat[flip, 0]
        collapsed.append(dict(p, boxes=flat))
    oracle = coco_oracle(collapsed, targets)
    stats = np.array([mean_average_precision(inverted, targets)[k] for k in STAT_KEYS])
    np.testing.assert_allclose(stats, oracle.stats, rtol=0, atol=1e-6)
    evaluation = coco_evaluate(inverted, targets)
    np.testing.assert_allclose(evaluation.precision, oracle.eval["precision"], rtol=0, atol=1e-6)


# ------------------------------------------------------------------- explain mode

def test_explain_error_kinds_by_hand():
    targets = [target([box(0, 0, 10, 10), box(100, 100, 120, 120), box(200, 0, 260, 60)], [0, 1, 0],
                      iscrowd=[0, 0, 1])]
    predictions = [pred(
        [box(0, 0, 10, 10),        # 0: TP on gt 0
         box(0, 0, 10, 9),         # 1: duplicate of gt 0 (IoU 0.9)
         box(0, 0, 10, 3),         # 2: localization (IoU 0.3)
         box(100, 100, 120, 120),  # 3: confusion (class 0 on a class-1 object)
         box(400, 400, 410, 410),  # 4: background
         box(210, 10, 220, 20),    # 5: inside the crowd region: ignored
         box(0, 0, 10, 10)],       # 6: class 0 again but beyond max_detections
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [0] * 7)]
    explanation = explain_detections(predictions, targets, [0.5, 0.95], max_detections=6)
    info = explanation["images"][0]
    assert info["status"][0].tolist() == ["tp", "fp", "fp", "fp", "fp", "ignored", "ignored"]
    assert info["reason"][0].tolist() == [
        "", "duplicate", "localization", "confusion", "background", "crowd", "max_detections"
    ]
    assert info["matched_gt"][0].tolist() == [0, -1, -1, -1, -1, 2, -1]
    np.testing.assert_allclose(info["best_iou"], [1.0, 0.9, 0.3, 0.0, 0.0, 0.0, 0.0])
    assert info["best_gt"].tolist() == [0, 0, 0, -1, -1, -1, -1]
    # At 0.95 the duplicate (IoU 0.9) becomes a localization error.
    assert info["reason"][1, 1] == "localization"
    assert info["missed"].tolist() == [[False, True, False], [False, True, False]]
    assert info["gt_ignored"].tolist() == [False, False, True]
    s = explanation["summary"]
    assert s["tp"].tolist() == [1, 1] and s["fp"].tolist() == [4, 4]
    assert s["duplicate"].tolist() == [1, 0] and s["localization"].tolist() == [1, 2]
    assert s["missed"].tolist() == [1, 1] and s["num_gt"].tolist() == [2, 2]
    text = format_explanation(explanation)
    assert len(text.splitlines()) == 3 and "0.95" in text


def test_explain_area_ranges():
    # A small gt outside "large": ignored; a matched det is ignored, an unmatched small det too.
    targets = [target([box(0, 0, 10, 10), box(100, 100, 250, 250)], [0, 0])]
    dets = [box(0, 0, 10, 10), box(300, 300, 310, 310), box(100, 100, 250, 250)]
    predictions = [pred(dets, [0.9, 0.8, 0.7], [0, 0, 0])]
    info = explain_detections(predictions, targets, 0.5, area="large")["images"][0]
    assert info["status"][0].tolist() == ["ignored", "ignored", "tp"]
    assert info["reason"][0].tolist() == ["ignored_gt", "out_of_area", ""]


def test_explain_empty():
    explanation = explain_detections([], [], [0.5, 0.75])
    assert explanation["images"] == []
    assert explanation["summary"]["tp"].tolist() == [0, 0]
    no_dets = [pred(np.zeros((0, 4)), [], [])]
    explanation = explain_detections(no_dets, [target([box(0, 0, 5, 5)], [1])])
    info = explanation["images"][0]
    assert info["status"].shape == (1, 0) and info["status"].dtype.kind == "U"
    assert info["matched_gt"].dtype == np.int64 and info["iou"].dtype == np.float64
    assert info["missed"].tolist() == [[True]]


# ------------------------------------------------------------------------ PR curves

def test_precision_recall_curve_matches_coco_arrays(tmp_path):
    predictions, targets = random_detection_set(21, num_images=15)
    curves = precision_recall_curve(predictions, targets, iou_threshold=0.5)
    evaluation = coco_evaluate(predictions, targets)
    t50 = int(np.flatnonzero(COCO_IOU_THRESHOLDS == 0.5)[0])
    np.testing.assert_array_equal(curves["precision"], evaluation.precision[t50, :, :, 0, 2].T)
    np.testing.assert_array_equal(curves["scores"], evaluation.scores[t50, :, :, 0, 2].T)
    assert curves["recall"].shape == (101,) and curves["recall"][-1] == 1.0
    single = mean_average_precision(predictions, targets, iou_thresholds=[0.5])["map_per_class"]
    np.testing.assert_allclose(curves["ap"], [single[int(k)] for k in curves["labels"]])
    # Interpolated precision never increases with recall.
    defined = curves["ap"] > -1
    assert np.all(np.diff(curves["precision"][defined], axis=1) <= 0)

    figure = plot_precision_recall(curves, class_names={0: "car", 1: "plate", 2: "digit"},
                                   path=tmp_path / "figs" / "pr.png")
    assert (tmp_path / "figs" / "pr.png").stat().st_size > 1000
    assert [p.name for p in tmp_path.joinpath("figs").iterdir()] == ["pr.png"]  # no temp file left
    assert len(figure.axes[0].get_lines()) == int(defined.sum())


def test_plot_precision_recall_checks_input():
    with pytest.raises(ValueError, match="missing key 'ap'"):
        plot_precision_recall({"labels": [], "recall": [], "precision": []})


# ---------------------------------------------------------------------------- VOC

def voc_ap_loop(recall, precision, use_07_metric):
    """The VOC AP as a loop over recall points / curve points."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = [p for r, p in zip(recall, precision) if r >= t]
            ap += (max(above) if above else 0.0) / 11.0
        return ap
    mrec = [0.0] + list(recall) + [1.0]
    mpre = [0.0] + list(precision) + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    area = 0.0
    for i in range(len(mrec) - 1):
        if mrec[i + 1] != mrec[i]:
            area += (mrec[i + 1] - mrec[i]) * mpre[i + 1]
    return area


def test_voc_ap_by_hand():
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2.0 / 3.0])
    # All-point: 0.5 at precision 1, then 0.5 at the envelope 2/3.
    assert voc_ap(recall, precision) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # 11-point: t = 0..0.5 (6 points) see 1, t = 0.6..1 (5 points) see 2/3.
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert voc_ap([], []) == 0.0 and voc_ap([], [], use_07_metric=True) == 0.0
    assert voc_ap([1.0], [1.0]) == 1.0 and voc_ap([1.0], [1.0], True) == pytest.approx(1.0)


@pytest.mark.parametrize("use_07_metric", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_voc_ap_equals_loop(seed, use_07_metric):
    rng = np.random.default_rng(seed)
    hits = rng.random(40) < 0.5
    tp = np.cumsum(hits)
    recall = tp / max(tp[-1] + 3, 1)
    precision = tp / np.arange(1, 41)
    expected = voc_ap_loop(recall, precision, use_07_metric)
    assert voc_ap(recall, precision, use_07_metric) == pytest.approx(expected, abs=1e-12)


def test_voc_ap_checks_input():
    with pytest.raises(ValueError, match="same shape"):
        voc_ap([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match="finite"):
        voc_ap([np.nan], [1.0])
    with pytest.raises(ValueError, match="1-D"):
        voc_ap([[0.1]], [[1.0]])


def voc_evaluate_loop(predictions, targets, iou_threshold, use_07_metric):
    """Pascal VOC's devkit algorithm, one class and one detection at a time."""
    labels = sorted({int(v) for t in targets for v in t["labels"]}
                    | {int(v) for p in predictions for v in p["labels"]})
    ap = {}
    for c in labels:
        gts = {}
        for i, t in enumerate(targets):
            mine = np.asarray(t["labels"]) == c
            difficult = np.asarray(t.get("difficult", np.zeros(len(mine))))
            gts[i] = (np.asarray(t["boxes"])[mine], difficult[mine] != 0)
        npos = sum(int((~d).sum()) for _, d in gts.values())
        dets = [(float(s), i, np.asarray(b)) for i, p in enumerate(predictions)
                for b, s, l in zip(p["boxes"], p["scores"], p["labels"]) if l == c]
        dets = [dets[j] for j in np.argsort([-d[0] for d in dets], kind="stable")]
        taken = {i: np.zeros(len(g[0]), bool) for i, g in gts.items()}
        tp, fp = [], []
        for _, i, b in dets:
            boxes, difficult = gts[i]
            best, jbest = -1.0, -1
            for j, g in enumerate(boxes):
                w = min(b[2], g[2]) - max(b[0], g[0])
                h = min(b[3], g[3]) - max(b[1], g[1])
                inter = w * h if w > 0 and h > 0 else 0.0
                union = (b[2] - b[0]) * (b[3] - b[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
                iou = inter / union if inter > 0 else 0.0
                if iou > best:
                    best, jbest = iou, j
            if best > iou_threshold:
                if difficult[jbest]:
                    tp.append(0), fp.append(0)
                elif not taken[i][jbest]:
                    taken[i][jbest] = True
                    tp.append(1), fp.append(0)
                else:
                    tp.append(0), fp.append(1)
            else:
                tp.append(0), fp.append(1)
        if npos == 0:
            ap[c] = -1.0
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap[c] = voc_ap_loop(rec, prec, use_07_metric)
    return ap


@pytest.mark.parametrize("use_07_metric", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_voc_evaluate_equals_loop(seed, use_07_metric):
    predictions, targets = random_detection_set(400 + seed, num_images=10, grid=seed % 2 == 1)
    rng = np.random.default_rng(seed)
    for t in targets:
        t["difficult"] = rng.random(len(t["labels"])) < 0.2
    result = voc_evaluate(predictions, targets, 0.5, use_07_metric)
    reference = voc_evaluate_loop(predictions, targets, 0.5, use_07_metric)
    assert result["ap_per_class"].keys() == reference.keys()
    for c in reference:
        assert result["ap_per_class"][c] == pytest.approx(reference[c], abs=1e-12)
    defined = [v for v in reference.values() if v > -1]
    assert result["map"] == pytest.approx(np.mean(defined))


def test_voc_evaluate_by_hand():
    targets = [target([box(0, 0, 10, 10), box(20, 20, 30, 30), box(50, 50, 60, 60)], [1, 1, 1],
                      difficult=[0, 0, 1])]
    predictions = [pred(
        [box(0, 0, 10, 10), box(0, 0, 10, 10), box(50, 50, 60, 60), box(80, 80, 90, 90),
         box(20, 20, 30, 30)],
        [0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 1, 1, 1])]
    result = voc_evaluate(predictions, targets)
    # TP, FP (taken), ignored (difficult), FP, TP: npos = 2
    np.testing.assert_allclose(result["recall"][1], [0.5, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(result["precision"][1], [1.0, 0.5, 0.5, 1 / 3, 0.5])
    assert result["ap_per_class"][1] == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    assert result["map"] == pytest.approx(0.75)
    # IoU exactly at the threshold does not match in VOC (strict >).
    half = [pred([box(0, 0, 10, 10)], [0.9], [1])]
    assert voc_evaluate(half, [target([box(0, 0, 20, 10)], [1])], 0.5)["map"] == 0.0
    assert voc_evaluate([], [])["map"] == -1.0


# --------------------------------------------------------------------- input checks

GOOD_PRED = {"boxes": np.array([[0.0, 0.0, 10.0, 10.0]]), "scores": np.array([0.5]),
             "labels": np.array([1])}
GOOD_TARGET = {"boxes": np.array([[0.0, 0.0, 10.0, 10.0]]), "labels": np.array([1])}


def bad_pred(**changes):
    return [dict(GOOD_PRED, **changes)], [GOOD_TARGET]


def bad_target(**changes):
    return [GOOD_PRED], [dict(GOOD_TARGET, **changes)]


@pytest.mark.parametrize("inputs, error, match", [
    (([GOOD_PRED], [GOOD_TARGET, GOOD_TARGET]), ValueError, "same length"),
    ((GOOD_PRED, [GOOD_TARGET]), TypeError, "list with one dict per image"),
    (([[1, 2]], [GOOD_TARGET]), TypeError, r"predictions\[0\] must be a dict"),
    (([{"boxes": GOOD_PRED["boxes"], "labels": [1]}], [GOOD_TARGET]), ValueError,
     r"missing key.*scores"),
    (([GOOD_PRED], [{"boxes": GOOD_TARGET["boxes"]}]), ValueError,
     r"targets\[0\] is missing key.*labels"),
    (bad_pred(boxes=np.zeros((1, 5))), ValueError, r"shape \(N, 4\)"),
    (bad_pred(scores=np.array([0.5, 0.4])), ValueError, r"scores.*shape \(1,\)"),
    (bad_target(labels=np.array([1, 2])), ValueError, r"labels.*shape \(1,\)"),
    (bad_pred(labels=np.array([1.0])), TypeError, "integer"),
    (bad_pred(boxes=np.array([[0.0, 0.0, np.inf, 1.0]])), ValueError, "not finite"),
    (bad_target(boxes=np.array([[0.0, np.nan, 1.0, 1.0]])), ValueError,
     r"targets\[0\]\['boxes'\]\[0\] is not finite"),
    (bad_pred(scores=np.array([np.nan])), ValueError, r"scores'\]\[0\] is not finite"),
    (bad_target(boxes=np.array([[5.0, 0.0, 1.0, 1.0]])), ValueError,
     r"targets\[0\]\['boxes'\]\[0\] must be xyxy with x2 >= x1"),
    (bad_target(area=np.array([-1.0])), ValueError, "area"),
    (bad_target(iscrowd=np.array([0.5])), TypeError, "bool or integer"),
    (bad_pred(boxes=np.array([["a", "b", "c", "d"]])), TypeError, "float or int"),
])
def test_bad_inputs_raise_clear_errors(inputs, error, match):
    for fn in (mean_average_precision, voc_evaluate, explain_detections, precision_recall_curve):
        with pytest.raises(error, match=match):
            fn(*inputs)


def test_bad_settings_raise_clear_errors():
    ok = ([GOOD_PRED], [GOOD_TARGET])
    with pytest.raises(ValueError, match="iou_thresholds must lie in"):
        mean_average_precision(*ok, iou_thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match="iou_thresholds"):
        mean_average_precision(*ok, iou_thresholds=[])
    with pytest.raises(ValueError, match="max_detections must be >= 10"):
        mean_average_precision(*ok, max_detections=5)
    with pytest.raises(TypeError, match="max_detections must be an int"):
        mean_average_precision(*ok, max_detections=100.0)
    with pytest.raises(ValueError, match="area must be one of"):
        explain_detections(*ok, area="tiny")
    with pytest.raises(ValueError, match="single float"):
        precision_recall_curve(*ok, iou_threshold=[0.5, 0.7])
    with pytest.raises(ValueError, match="iou_threshold must lie in"):
        voc_evaluate(*ok, iou_threshold=2.0)
