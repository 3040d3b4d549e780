"""Tests of COCO mask mAP (``iou_type="segm"``) and of detection.metrics.masks: mask IoU
against a pixel loop and pycocotools' RLE IoU, the full evaluation against
``COCOeval(iouType="segm")``, the matching against its loop reference, and the input checks."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import detection.metrics.masks as masks_module
from detection.metrics import AREA_RANGES, coco_evaluate, mean_average_precision, mask_iou
from detection.metrics.inputs import flatten_detections
from detection.metrics.masks import mask_area, mask_intersections, masks_to_boxes
from tests.detection.coco_oracle import (STAT_KEYS, assert_matching_equals_reference,
                                         assert_same_as_oracle, run_cocoeval)
from tests.oracles import require



# ----------------------------------------------------------------------------- data

def blob(rng, height, width, radius_range):
    """A random ellipse, sometimes joined with a rectangle: bool (H, W)."""
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    ry, rx = rng.uniform(*radius_range, size=2)
    yy, xx = np.ogrid[:height, :width]
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    if rng.random() < 0.3:
        y0, x0 = int(cy), int(cx)
        mask[y0:y0 + int(ry), max(x0 - int(rx), 0):x0] = True
    return mask


def jitter(rng, mask):
    """A detector-like copy of a mask: shifted, some pixels flipped near it, or cut."""
    step = max(1, int(0.1 * np.sqrt(mask.sum())))  # shifts in proportion to the size
    dy, dx = rng.integers(-step, step + 1, size=2)
    out = np.roll(mask, (dy, dx), axis=(0, 1))
    near = np.roll(out, 2, axis=0) | np.roll(out, -2, axis=0) | np.roll(out, 2, axis=1)
    out = out ^ (near & (rng.random(mask.shape) < rng.uniform(0, 0.1)))
    if rng.random() < 0.2:
        out[: rng.integers(0, mask.shape[0]), :] = False  # a partial detection
    return out


def random_segm_set(seed, num_images=8, num_classes=3, crowd_prob=0.15, tie_prob=0.3,
                    area_override=False, with_boxes=False):
    """Random instance masks of all sizes: ground truths (some crowd, some images empty,
    image 1 always)
    and detections (jittered copies, wrong labels, duplicates, background blobs, empty
    masks; some images without detections; tied scores)."""
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    for i in range(num_images):
        height, width = (int(v) for v in rng.integers(60, 240, size=2))
        num_gt = int(rng.poisson(3)) if rng.random() > 0.15 and i != 1 else 0  # image 1 empty
        radius = [(2, 12), (12, 40), (55, 100)]  # mostly small, medium, large objects
        if i == 0:  # image 0: at least one object of each size, none of them crowd
            height, width, num_gt = max(height, 200), max(width, 200), max(num_gt, 3)
        size_class = rng.integers(0, 3, num_gt)
        if i == 0:
            size_class[:3] = [0, 1, 2]
        gt = np.zeros((num_gt, height, width), bool)
        for j in range(num_gt):
            gt[j] = blob(rng, height, width, radius[size_class[j]])
        gt_labels = rng.integers(0, num_classes, num_gt)
        det, det_labels = [], []
        if num_gt and rng.random() > 0.1:
            for j in rng.integers(0, num_gt, int(rng.integers(0, 3 * num_gt + 1))):
                det.append(jitter(rng, gt[j]))
                wrong = rng.random() > 0.85
                det_labels.append(rng.integers(0, num_classes) if wrong else gt_labels[j])
        if rng.random() > 0.2:
            for _ in range(int(rng.integers(0, 5))):
                det.append(blob(rng, height, width, radius[rng.integers(0, 3)]))
                det_labels.append(rng.integers(0, num_classes))
        if det and rng.random() < 0.2:
            det.append(np.zeros((height, width), bool))  # an empty mask
            det_labels.append(rng.integers(0, num_classes))
        det = np.array(det, bool).reshape(-1, height, width)
        scores = rng.random(len(det))
        if rng.random() < tie_prob:
            scores = np.round(scores * 4) / 4
        prediction = {"masks": det, "scores": scores, "labels": np.array(det_labels, np.int64)}
        crowd = rng.random(num_gt) < crowd_prob
        if i == 0:
            crowd[:3] = False
        target = {"masks": gt, "labels": gt_labels, "iscrowd": crowd.astype(np.int64)}
        if area_override:
            target["area"] = rng.uniform(0, 120**2, num_gt)
        if with_boxes:
            prediction["boxes"] = masks_to_boxes(det)
            target["boxes"] = masks_to_boxes(gt)
        predictions.append(prediction)
        targets.append(target)
    return predictions, targets


def encode(mask):
    """pycocotools' compressed RLE of one (H, W) bool mask (column-major, as COCO stores it)."""
    mask_api = require("pycocotools.mask")
    return mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))


def coco_segm_oracle(predictions, targets, iou_thresholds=None, max_dets=(1, 10, 100)):
    """pycocotools' COCOeval(iouType="segm") on the same masks (RLE), after evaluate +
    accumulate + summarize. Ground-truth "area" is the mask area (or the given area)."""
    mask_api = require("pycocotools.mask")
    labels = sorted(
        {int(v) for t in targets for v in np.asarray(t["labels"]).reshape(-1)}
        | {int(v) for p in predictions for v in np.asarray(p["labels"]).reshape(-1)}
    )
    images = []
    for i, (p, t) in enumerate(zip(predictions, targets)):
        shape = max(np.asarray(t["masks"]).shape[1:], np.asarray(p["masks"]).shape[1:], (0, 0))
        images.append({"id": i + 1, "height": int(shape[0]), "width": int(shape[1])})
    annotations = []
    for i, t in enumerate(targets):
        crowd = np.asarray(t.get("iscrowd", np.zeros(len(t["labels"])))).reshape(-1)
        for j, mask in enumerate(t["masks"]):
            rle = encode(mask)
            area = float(t["area"][j]) if "area" in t else float(mask_api.area(rle))
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(t["labels"][j]),
                "segmentation": rle, "area": area, "iscrowd": int(crowd[j]),
                "bbox": mask_api.toBbox(rle).tolist(),
            })
    results = []
    for i, p in enumerate(predictions):
        size = (images[i]["height"], images[i]["width"])
        for j, mask in enumerate(np.asarray(p["masks"], bool).reshape(-1, *size)):
            results.append({
                "image_id": i + 1, "category_id": int(p["labels"][j]),
                "segmentation": encode(mask), "score": float(p["scores"][j]),
            })
    categories = [{"id": c} for c in labels]
    return run_cocoeval(images, categories, annotations, results, "segm", iou_thresholds,
                        max_dets)


def assert_equal_to_coco_segm(predictions, targets, iou_thresholds=None, max_detections=100):
    oracle = coco_segm_oracle(predictions, targets, iou_thresholds, (1, 10, max_detections))
    ours = mean_average_precision(predictions, targets, iou_thresholds, max_detections,
                                  iou_type="segm")
    evaluation = coco_evaluate(predictions, targets, iou_thresholds, max_detections,
                               iou_type="segm")
    assert_same_as_oracle(ours, evaluation, oracle, max_detections, atol=1e-12)
    return ours, oracle


# ------------------------------------------------------------------------ mask IoU

def mask_iou_loop(masks1, masks2, crowd):
    """Pixel sets, one pair at a time."""
    out = np.zeros((len(masks1), len(masks2)))
    for i, a in enumerate(masks1):
        for j, b in enumerate(masks2):
            inter = int(np.logical_and(a, b).sum())
            union = int(a.sum()) if crowd[j] else int(np.logical_or(a, b).sum())
            out[i, j] = inter / union if inter else 0.0
    return out


def random_masks(rng, n, height, width):
    masks = np.zeros((n, height, width), bool)
    for i in range(n):
        masks[i] = blob(rng, height, width, (1, max(2, min(height, width) // 2)))
    return masks


@pytest.mark.parametrize("seed", range(6))
def test_mask_iou_equals_pixel_loop(seed):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 70, size=2))
    a = random_masks(rng, int(rng.integers(0, 7)), height, width)
    b = random_masks(rng, int(rng.integers(0, 7)), height, width)
    if len(a) and len(b):
        a[0] = b[-1]  # an identical pair
        b[0] = False  # an empty mask
    crowd = rng.random(len(b)) < 0.4
    ours = mask_iou(a, b, crowd)
    assert ours.shape == (len(a), len(b)) and ours.dtype == np.float64
    np.testing.assert_array_equal(ours, mask_iou_loop(a, b, crowd))
    np.testing.assert_array_equal(mask_area(a), a.sum(axis=(1, 2)))
    # Integer 0/1 masks are the same masks.
    np.testing.assert_array_equal(mask_iou(a.astype(np.uint8), b.astype(np.int64), crowd), ours)


def test_mask_iou_by_hand():
    a = np.zeros((2, 4, 4), bool)
    a[0, :2, :2] = True      # 4 pixels
    a[1] = False             # empty
    b = np.zeros((2, 4, 4), bool)
    b[0, :2, :] = True       # 8 pixels, 4 in common with a[0]
    b[1, :, :] = True        # 16 pixels, crowd
    iou = mask_iou(a, b, iscrowd=[0, 1])
    np.testing.assert_array_equal(iou, [[4 / 8, 4 / 4], [0.0, 0.0]])
    empty = mask_iou(np.zeros((0, 3, 5), bool), np.ones((2, 3, 5), bool))
    assert empty.shape == (0, 2) and empty.dtype == np.float64


def test_mask_intersections_exact_across_chunks(monkeypatch):
    # Chunks of a few pixels (and a chunk size that does not divide the pixel count)
    # must give the same exact counts as one product.
    rng = np.random.default_rng(3)
    a = rng.random((5, 37, 53)) < 0.5
    b = rng.random((4, 37, 53)) < 0.5
    whole = mask_intersections(a, b)
    expected = (a.reshape(5, -1).astype(np.int64) @ b.reshape(4, -1).T.astype(np.int64))
    np.testing.assert_array_equal(whole, expected)
    monkeypatch.setattr(masks_module, "_CHUNK_BYTES", 4 * 9 * 101)  # 101 pixels per chunk
    np.testing.assert_array_equal(mask_intersections(a, b), expected)


def test_masks_to_boxes():
    masks = np.zeros((3, 6, 8), bool)
    masks[0, 1:4, 2:7] = True
    masks[1, 5, 0] = True
    boxes = masks_to_boxes(masks)
    np.testing.assert_array_equal(boxes, [[2, 1, 7, 4], [0, 5, 1, 6], [0, 0, 0, 0]])
    assert masks_to_boxes(np.zeros((0, 6, 8), bool)).shape == (0, 4)


@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(4))
def test_mask_iou_equals_pycocotools(seed):
    mask_api = require("pycocotools.mask")
    rng = np.random.default_rng(10 + seed)
    a = random_masks(rng, 6, 45, 71)
    b = random_masks(rng, 5, 45, 71)
    b[1] = False
    crowd = np.array([0, 1, 0, 1, 0], np.uint8)
    rle_a = mask_api.encode(np.asfortranarray(a.transpose(1, 2, 0).astype(np.uint8)))
    rle_b = mask_api.encode(np.asfortranarray(b.transpose(1, 2, 0).astype(np.uint8)))
    oracle = np.asarray(mask_api.iou(rle_a, rle_b, crowd.tolist()))
    np.testing.assert_array_equal(mask_iou(a, b, crowd), oracle)
    np.testing.assert_array_equal(mask_area(a), mask_api.area(rle_a))


# ------------------------------------------------------------- mAP vs pycocotools

@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(6))
def test_segm_map_equals_pycocotools(seed):
    predictions, targets = random_segm_set(seed, num_images=10, crowd_prob=0.3)
    ours, oracle = assert_equal_to_coco_segm(predictions, targets)
    assert set(ours) == set(STAT_KEYS) | {"map_per_class"}
    # The data exercise the three area ranges and crowd regions.
    assert np.all(oracle.stats[[0, 3, 4, 5]] > -1)
    assert any(t["iscrowd"].any() for t in targets)
    assert len(targets[1]["labels"]) == 0
    assert any(len(p["labels"]) == 0 for p in predictions)


@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(3))
def test_segm_map_equals_pycocotools_crowds_area_field_and_boxes(seed):
    predictions, targets = random_segm_set(
        100 + seed, num_images=8, crowd_prob=0.4, area_override=seed != 2, with_boxes=seed == 1,
    )
    assert_equal_to_coco_segm(predictions, targets)


@pytest.mark.oracle
@pytest.mark.parametrize("iou_thresholds, max_detections", [
    ([0.5, 0.75], 10), ([0.0, 0.3, 0.5, 1.0], 100), (None, 12),
])
def test_segm_map_equals_pycocotools_custom_settings(iou_thresholds, max_detections):
    predictions, targets = random_segm_set(200, num_images=8, num_classes=2)
    assert_equal_to_coco_segm(predictions, targets, iou_thresholds, max_detections)


@pytest.mark.oracle
@pytest.mark.parametrize(
    "case", ["no_detections", "no_ground_truth", "classes_absent", "images_without_detections"]
)
def test_segm_map_equals_pycocotools_degenerate(case):
    predictions, targets = random_segm_set(5, num_images=6)
    if case == "no_detections":
        predictions = [
            {"masks": np.zeros((0,) + t["masks"].shape[1:], bool), "scores": [], "labels": []}
            for t in targets
        ]
    elif case == "no_ground_truth":
        first = targets[0]["masks"].shape[1:]
        targets = [{"masks": [], "labels": []} for _ in targets]
        # pycocotools needs one annotation
        one = np.zeros((1,) + first, bool)
        one[0, :10, :10] = True
        targets[0] = {"masks": one, "labels": np.array([0])}
    elif case == "classes_absent":
        for p in predictions:
            p["labels"] = p["labels"] + 10  # classes absent from the ground truth
    else:
        for i in range(0, len(predictions), 2):
            predictions[i] = {"masks": [], "scores": [], "labels": []}
    assert_equal_to_coco_segm(predictions, targets)


@pytest.mark.oracle
def test_segm_map_equals_pycocotools_many_detections_per_image():
    # More than maxDets masks in one (image, class): truncation at 1, 10 and 100.
    rng = np.random.default_rng(7)
    height, width = 90, 120
    gt = random_masks(rng, 25, height, width)
    det = np.array([jitter(rng, gt[j]) for j in np.repeat(np.arange(25), 5)])
    labels = np.zeros(len(det), int)
    predictions = [{"masks": det, "scores": rng.random(len(det)), "labels": labels}]
    targets = [{"masks": gt, "labels": np.zeros(25, int)}]
    assert_equal_to_coco_segm(predictions, targets)


# ------------------------------------------------------------- segm without oracle

@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 4), st.sampled_from([1, 3, 100]))
def test_segm_matching_equals_loop_reference(seed, num_images, max_detections):
    predictions, targets = random_segm_set(seed, num_images=num_images, crowd_prob=0.3)
    data = flatten_detections(predictions, targets, "segm")
    thresholds = np.array([0.0, 0.1, 0.5, 0.75, 0.95, 1.0])
    ranges = np.array([AREA_RANGES[a] for a in AREA_RANGES])
    ignore = data.gt_crowd[None] | (data.gt_area[None] < ranges[:, :1]) | (
        data.gt_area[None] > ranges[:, 1:])
    assert_matching_equals_reference(data, thresholds, ignore, max_detections)


def test_segm_on_filled_boxes_equals_bbox():
    # Masks that fill integer boxes have the boxes' areas and IoUs: both evaluations agree.
    rng = np.random.default_rng(0)
    predictions, targets = [], []
    height, width = 120, 160
    yy, xx = np.mgrid[:height, :width]

    def fill(boxes):
        x1, y1, x2, y2 = (boxes[:, k, None, None] for k in range(4))
        return (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)

    for _ in range(5):
        corner = rng.integers(0, 100, (6, 2))
        size = rng.integers(1, 60, (6, 2))
        gt = np.concatenate([corner, np.minimum(corner + size, [width, height])], axis=1)
        det = gt[rng.integers(0, 6, 9)] + rng.integers(-5, 6, (9, 4))
        det = np.clip(det, 0, [width, height] * 2)
        det = np.concatenate([np.minimum(det[:, :2], det[:, 2:]),
                              np.maximum(det[:, :2], det[:, 2:])], axis=1)
        labels = rng.integers(0, 2, 9)
        scores = rng.random(9)
        predictions.append({"boxes": det.astype(float), "masks": fill(det), "scores": scores,
                            "labels": labels})
        targets.append({"boxes": gt.astype(float), "masks": fill(gt),
                        "labels": rng.integers(0, 2, 6),
                        "iscrowd": (rng.random(6) < 0.2).astype(int)})
    bbox = mean_average_precision(predictions, targets)
    segm = mean_average_precision(predictions, targets, iou_type="segm")
    assert bbox == segm
    assert bbox["map"] > 0.05  # the data are not trivially empty


def test_segm_perfect_masks_score_one_and_a_miss_scores_zero():
    masks = np.zeros((2, 50, 60), bool)
    masks[0, 5:15, 5:20] = True
    masks[1, 20:48, 10:58] = True
    targets = [{"masks": masks, "labels": np.array([1, 2])}]
    perfect = [{"masks": masks, "scores": np.array([0.9, 0.8]), "labels": np.array([1, 2])}]
    result = mean_average_precision(perfect, targets, iou_type="segm")
    for key in ("map", "mar_100", "map_small", "map_medium"):  # 150 and 1344 pixels
        assert result[key] == pytest.approx(1.0, abs=1e-12)
    assert result["map_large"] == -1.0
    # The same boxes but masks of disjoint pixels (a checkerboard split) never match.
    checker = (np.indices((50, 60)).sum(axis=0) % 2).astype(bool)
    split = [{"masks": masks & checker, "scores": np.array([0.9, 0.8]), "labels": np.array([1, 2])}]
    other = [{"masks": masks & ~checker, "labels": np.array([1, 2])}]
    assert mean_average_precision(split, other, iou_type="segm")["map"] == 0.0
    assert mean_average_precision(
        [dict(split[0], boxes=masks_to_boxes(masks))], [dict(other[0], boxes=masks_to_boxes(masks))]
    )["map"] == pytest.approx(1.0)  # with box IoU they would be perfect


def test_segm_empty_inputs():
    result = mean_average_precision([], [], iou_type="segm")
    assert all(result[k] == -1.0 for k in STAT_KEYS)
    empty = {"masks": np.zeros((0, 8, 8), bool), "scores": np.zeros(0), "labels": np.zeros(0, int)}
    one = np.zeros((1, 8, 8), bool)
    one[0, 2:5, 2:5] = True
    result = mean_average_precision([empty, {"masks": [], "scores": [], "labels": []}],
                                    [{"masks": one, "labels": [3]}, {"masks": [], "labels": []}],
                                    iou_type="segm")
    assert result["map"] == 0.0 and result["map_per_class"] == {3: 0.0}


GOOD_PRED = {"masks": np.ones((1, 4, 5), bool), "scores": np.array([0.5]), "labels": np.array([1])}
GOOD_TARGET = {"masks": np.ones((1, 4, 5), bool), "labels": np.array([1])}


@pytest.mark.parametrize("pred_changes, target_changes, error, match", [
    ({"masks": None}, {}, ValueError, r"predictions\[0\] is missing key.*masks"),
    ({}, {"masks": None}, ValueError, r"targets\[0\] is missing key.*masks"),
    ({"masks": np.ones((1, 4, 5), np.float32)}, {}, TypeError, "threshold mask probabilities"),
    ({"masks": np.ones((4, 5), bool)}, {}, ValueError, r"masks'\] must have shape \(N, H, W\)"),
    ({"masks": np.ones((1, 4, 6), bool)}, {}, ValueError,
     r"same \(H, W\), got \(4, 6\) and \(4, 5\)"),
    ({"scores": np.array([0.5, 0.1])}, {}, ValueError, r"scores'\] must have shape \(1,\)"),
    ({"boxes": np.zeros((2, 4))}, {}, ValueError, r"boxes'\] must have shape \(1, 4\)"),
    ({}, {"labels": np.array([1, 1])}, ValueError, r"labels'\] must have shape \(1,\)"),
])
def test_segm_bad_inputs_raise_clear_errors(pred_changes, target_changes, error, match):
    pred = {k: v for k, v in dict(GOOD_PRED, **pred_changes).items() if v is not None}
    target = {k: v for k, v in dict(GOOD_TARGET, **target_changes).items() if v is not None}
    with pytest.raises(error, match=match):
        mean_average_precision([pred], [target], iou_type="segm")


def test_bad_iou_type_raises():
    with pytest.raises(ValueError, match="iou_type must be one of"):
        mean_average_precision([GOOD_PRED], [GOOD_TARGET], iou_type="mask")
    with pytest.raises(ValueError, match="iscrowd must be"):
        mask_iou(np.ones((1, 2, 2), bool), np.ones((2, 2, 2), bool), iscrowd=[1])
    with pytest.raises(ValueError, match="same \\(H, W\\)"):
        mask_iou(np.ones((1, 2, 2), bool), np.ones((2, 2, 3), bool))
