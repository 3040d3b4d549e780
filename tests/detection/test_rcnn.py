"""Tests of detection.rcnn: labels, warping, SVMs, box regression, the detector."""
import numpy as np
import pytest

import nn
from detection.box_coder import BoxCoder
from detection.boxes import box_iou
from detection.rcnn import (RCNN, RCNNConfig, RegionCNN, context_boxes, fit_box_regressors,
                            image_means, label_proposals, sample_regions, train_svms,
                            warp_regions, warp_regions_batch)


# ------------------------------------------------------------ labels
def test_label_proposals_hand_made():
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    gt_labels = np.array([1, 2])
    proposals = np.array([
        [0, 0, 10, 10],      # IoU 1 with object 0        -> class 1
        [0, 0, 10, 20],      # IoU 0.5 with object 0      -> class 1 (>= 0.5)
        [0, 0, 10, 25],      # IoU 0.4                    -> ignored with (0.5, 0.3)
        [22, 22, 40, 40],    # IoU 0.81 with object 1     -> class 2
        [50, 50, 60, 60],    # no overlap                 -> background
        [0, 0, 10, 40],      # IoU 0.25                   -> background
    ], np.float32)
    labels, matched, best = label_proposals(proposals, gt, gt_labels, fg_iou=0.5, bg_iou=0.3)
    np.testing.assert_array_equal(labels, [1, 1, -1, 2, 0, 0])
    np.testing.assert_array_equal(matched, [0, 0, 0, 1, -1, 0])
    np.testing.assert_allclose(best, [1.0, 0.5, 0.4, 0.81, 0.0, 0.25])
    fine_tune, _, _ = label_proposals(proposals, gt, gt_labels, 0.5, 0.5)
    np.testing.assert_array_equal(fine_tune, [1, 1, 0, 2, 0, 0])


def test_label_proposals_without_objects_and_without_proposals():
    labels, matched, best = label_proposals(np.zeros((3, 4)), np.zeros((0, 4)), [])
    np.testing.assert_array_equal(labels, [0, 0, 0])
    np.testing.assert_array_equal(matched, [-1, -1, -1])
    labels, matched, best = label_proposals(np.zeros((0, 4)), [[0, 0, 5, 5]], [1])
    assert labels.shape == (0,) and labels.dtype == np.int64


def test_label_proposals_rejects_bad_thresholds_and_lengths():
    with pytest.raises(ValueError, match="bg_iou"):
        label_proposals(np.zeros((1, 4)), [[0, 0, 1, 1]], [1], 0.3, 0.5)
    with pytest.raises(ValueError, match="gt_labels"):
        label_proposals(np.zeros((1, 4)), [[0, 0, 1, 1]], [1, 2])


# ------------------------------------------------------------ warping
def bilinear_loop(image, y, x):
    """roi_align's sample: zero beyond one pixel off the image, clamped inside."""
    height, width = image.shape[:2]
    if y < -1 or y > height or x < -1 or x > width:
        return np.zeros(image.shape[2])
    y, x = min(max(y, 0.0), height - 1), min(max(x, 0.0), width - 1)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * image[y0, x0] + (1 - ly) * lx * image[y0, x1]
            + ly * (1 - lx) * image[y1, x0] + ly * lx * image[y1, x1])


@pytest.mark.parametrize("context", [0.0, 16 / 227])
def test_warp_regions_equals_pixel_loop(context):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (30, 40, 3)).astype(np.float32)
    boxes = np.array([[3, 4, 20, 28], [10.5, 2.25, 39, 29], [-5, -3, 12, 9]], np.float32)
    size = 8
    crops = warp_regions(image, boxes, size, context)
    centred = image - image.mean(axis=(0, 1))
    dilated = context_boxes(boxes, size, context) if context else boxes.astype(np.float64)
    expected = np.zeros_like(crops)
    for r, (x1, y1, x2, y2) in enumerate(dilated):
        for i in range(size):
            for j in range(size):
                expected[r, i, j] = bilinear_loop(centred, y1 + (i + 0.5) * (y2 - y1) / size - 0.5,
                                                  x1 + (j + 0.5) * (x2 - x1) / size - 0.5)
    np.testing.assert_allclose(crops, expected, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_warp_regions_equals_roi_align(seed):
    # The gather is roi_align with one sample per bin and aligned=True, boxes on, across
    # and off the image included.
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 1, (23, 31, 3)).astype(np.float32)
    corners = rng.uniform(-12, 40, (50, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(0.5, 25, (50, 2))], axis=1)
    crops = warp_regions(image, boxes, 7, 16 / 227)
    centred = (image - image.mean(axis=(0, 1)))[None]
    dilated = context_boxes(boxes, 7, 16 / 227).astype(np.float32)
    expected = nn.functional.roi_align(centred, [dilated], (7, 7), sampling_ratio=1,
                                       aligned=True).data
    np.testing.assert_allclose(crops, expected, atol=1e-5)


def test_warp_regions_batch_equals_one_image_at_a_time():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (3, 20, 24, 3)).astype(np.uint8)
    indices = np.array([2, 0, 0, 1, 2, 1, 0])
    corners = rng.uniform(-5, 20, (7, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(2, 15, (7, 2))], axis=1)
    crops = warp_regions_batch(images, indices, boxes, 6)
    for image_index in range(3):
        mine = indices == image_index
        np.testing.assert_allclose(crops[mine], warp_regions(images[image_index], boxes[mine], 6),
                                   atol=1e-6)
    np.testing.assert_allclose(image_means(images), images.mean(axis=(1, 2)) / 255, atol=1e-6)
    with pytest.raises(ValueError, match="image_indices"):
        warp_regions_batch(images, [0, 3], boxes[:2], 6)
    assert warp_regions_batch(images, [], np.zeros((0, 4)), 6).shape == (0, 6, 6, 3)


def test_context_boxes_leave_the_papers_margin():
    boxes = np.array([[10, 20, 110, 70]], np.float64)
    dilated = context_boxes(boxes, 227, 16 / 227)
    # The original box fills 227 - 32 warped pixels: 16 pixels each side.
    scale = (dilated[0, 2] - dilated[0, 0]) / 227
    np.testing.assert_allclose((boxes[0, 0] - dilated[0, 0]) / scale, 16.0)
    scale_y = (dilated[0, 3] - dilated[0, 1]) / 227
    np.testing.assert_allclose((dilated[0, 3] - boxes[0, 3]) / scale_y, 16.0)


def test_warp_regions_uint8_and_empty():
    image = np.full((10, 10, 3), 255, np.uint8)
    crops = warp_regions(image, np.array([[1, 1, 9, 9]]), 4, 0.0)
    np.testing.assert_allclose(crops, 0.0, atol=1e-6)         # a flat image minus its mean
    assert warp_regions(image, np.zeros((0, 4)), 4).shape == (0, 4, 4, 3)


# ------------------------------------------------------------ SVMs
def test_train_svms_separates_separable_data():
    rng = np.random.default_rng(1)
    n, dim = 300, 6
    x = rng.normal(0, 1, (n, dim))
    true_w = rng.normal(0, 1, (dim, 2))
    margins = x @ true_w
    keep = (np.abs(margins) > 0.3).all(axis=1)                  # a margin around each plane
    x, margins = x[keep], margins[keep]
    targets = np.where(margins > 0, 1.0, -1.0)
    weight, bias = train_svms(x, targets, c=100.0, epochs=500)
    predicted = np.sign(x @ weight + bias)
    assert (predicted == targets).mean() >= 0.99


def test_train_svms_ignores_zero_targets_and_mines_hard_negatives():
    rng = np.random.default_rng(2)
    positives = rng.normal(3, 0.5, (20, 2))
    easy = rng.normal(-3, 0.5, (500, 2))
    hard = rng.normal([1.0, 1.0], 0.2, (10, 2))               # close to the positives
    x = np.concatenate([positives, easy, hard])
    targets = np.concatenate([np.ones(20), -np.ones(510)])[:, None]
    # Only 20 negatives in the first round: the hard ones are likely left out at first.
    weight, bias = train_svms(x, targets, c=100.0, epochs=300, initial_negatives=20,
                              hard_negative_rounds=3, generator=np.random.default_rng(0))
    scores = (x @ weight + bias)[:, 0]
    assert (scores[:20] > 0).all() and (scores[20:] < 0).all()


# ------------------------------------------------------------ box regression
def test_box_regression_recovers_a_known_shift():
    rng = np.random.default_rng(3)
    n = 200
    proposals = np.concatenate([rng.uniform(0, 100, (n, 2)), np.zeros((n, 2))], axis=1)
    proposals[:, 2:] = proposals[:, :2] + rng.uniform(10, 50, (n, 2))
    deltas = rng.normal(0, 0.1, (n, 4))                         # the true (tx, ty, tw, th)
    gt = BoxCoder((1, 1, 1, 1)).decode(deltas, proposals)
    mixing = rng.normal(0, 1, (4, 12))
    features = deltas @ mixing                                  # features determine the deltas
    weights = fit_box_regressors(features, proposals, gt, np.full(n, 2), num_classes=2, lam=1e-6)
    assert np.all(weights[0] == 0)                              # class 1 had no proposal
    predicted = np.concatenate([features, np.ones((n, 1))], axis=1) @ weights[1]
    np.testing.assert_allclose(predicted, deltas, atol=1e-6)


def test_sample_regions_quarter_positives():
    labels = np.array([1] * 50 + [0] * 500 + [-1] * 30)
    picked = sample_regions(labels, 128, 0.25, np.random.default_rng(0))
    assert picked.size == 128 and (labels[picked] > 0).sum() == 32
    assert (labels[picked] >= 0).all() and np.unique(picked).size == 128
    np.testing.assert_array_equal(sample_regions(labels, 128, 0.25, generator=0), picked)
    nn.manual_seed(5)
    default = sample_regions(labels, 128, 0.25)              # the default generator
    nn.manual_seed(5)
    np.testing.assert_array_equal(sample_regions(labels, 128, 0.25, generator=None), default)
    with pytest.raises(TypeError, match="generator"):
        sample_regions(labels, 128, 0.25, generator="seed")


# ------------------------------------------------------------ the network and detector
def test_region_cnn_shapes():
    net = RegionCNN(num_classes=2, warp_size=32)
    x = nn.Tensor(np.zeros((5, 32, 32, 3), np.float32))
    assert net(x).shape == (5, 3) and net.features(x).shape == (5, 128)


def scene(rng, size=64):
    """Two flat rectangles (classes 1 and 2) on a noisy background."""
    image = np.clip(rng.normal(0.5, 0.03, (size, size, 3)), 0, 1).astype(np.float32)
    boxes = np.array([[6, 8, 30, 28], [36, 40, 58, 52]], np.float32)
    image[8:28, 6:30] = [0.9, 0.1, 0.1]
    image[40:52, 36:58] = [0.1, 0.2, 0.9]
    return image, {"boxes": boxes, "labels": np.array([1, 2])}


def jittered_proposals(rng, gt, count=60, size=64):
    """Boxes around the objects and random boxes elsewhere."""
    around = gt[rng.integers(0, gt.shape[0], count)] + rng.normal(0, 3, (count, 4))
    corners = rng.uniform(0, size - 10, (count, 2))
    random = np.concatenate([corners, corners + rng.uniform(6, 30, (count, 2))], axis=1)
    boxes = np.concatenate([around, random]).clip(0, size)
    good = (boxes[:, 2] > boxes[:, 0] + 2) & (boxes[:, 3] > boxes[:, 1] + 2)
    return boxes[good].astype(np.float32)


@pytest.mark.slow
def test_rcnn_overfits_two_images():
    nn.manual_seed(0)
    rng = np.random.default_rng(0)
    model = RCNN(RCNNConfig(num_classes=2, warp_size=16, widths=(8, 16), feature_dim=32,
                            score_threshold=0.0))
    data = [scene(rng) for _ in range(2)]
    proposals = [jittered_proposals(rng, target["boxes"]) for _, target in data]
    prepared = [model.prepare(image, target, p) for (image, target), p in zip(data, proposals)]
    crops = np.concatenate([p["crops"] for p in prepared])
    labels = np.concatenate([p["labels"] for p in prepared])
    optimizer = nn.optim.Adam(model.net.parameters(), lr=3e-3)
    for step in range(150):
        batch = sample_regions(labels, 64, 0.25, rng)
        loss = model.fine_tune_step(crops[batch], labels[batch], optimizer)
    assert loss < 0.2
    model.fit_heads_from(prepared)
    for (image, target), p in zip(data, proposals):
        out = model.detect(image, p)
        for box, label in zip(target["boxes"], target["labels"]):
            same = out["labels"] == label
            assert same.any()
            best = np.argmax(out["scores"] * same - 1e9 * ~same)
            assert box_iou(box[None], out["boxes"][best][None])[0, 0] >= 0.5
        assert set(model.timings) >= {"warp", "features", "heads"}


def test_rcnn_state_dict_round_trip_and_mismatch():
    model = RCNN(RCNNConfig(num_classes=2, warp_size=16, widths=(8, 16), feature_dim=32))
    model.svm_weight = np.random.default_rng(0).normal(size=model.svm_weight.shape)
    other = RCNN(RCNNConfig(num_classes=2, warp_size=16, widths=(8, 16), feature_dim=32))
    other.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(other.svm_weight, model.svm_weight)
    state = model.state_dict()
    state["svm_bias"] = np.zeros(5)
    with pytest.raises(ValueError, match="svm_bias"):
        other.load_state_dict(state)


def test_rcnn_detect_without_proposals_returns_empty():
    model = RCNN(RCNNConfig(num_classes=2, warp_size=16, widths=(8, 16), feature_dim=32))
    out = model.detect(np.zeros((20, 20, 3), np.float32), np.zeros((0, 4), np.float32))
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,)
    assert out["labels"].dtype == np.int64


def test_label_regions_class_iou_per_class():
    model = RCNN(RCNNConfig(num_classes=2, warp_size=16, widths=(8, 16), feature_dim=32))
    target = {"boxes": np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32),
              "labels": np.array([1, 2])}
    proposals = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    regions = model.label_regions(target, proposals)
    # The first proposal is object 0 itself and overlaps object 1 (class 2) by 1/3: an
    # SVM negative for neither class (>= 0.3), though its best object is of class 1.
    np.testing.assert_allclose(regions["class_iou"][:2], [[1.0, 1 / 3], [0.0, 0.0]])
    np.testing.assert_allclose(regions["class_iou"][2:], [[1.0, 1 / 3], [1 / 3, 1.0]])
    np.testing.assert_array_equal(regions["labels"], [1, 0, 1, 2])
    np.testing.assert_array_equal(regions["matched_labels"], [1, 0, 1, 2])
    assert regions["num_gt"] == 2
    empty = model.label_regions({"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}, proposals)
    assert empty["class_iou"].shape == (2, 2) and not empty["class_iou"].any()


def test_rcnn_softmax_scoring_gives_probabilities():
    nn.manual_seed(0)
    model = RCNN(RCNNConfig(num_classes=2, warp_size=16, widths=(8, 16), feature_dim=32,
                            softmax_threshold=0.0))
    image, target = scene(np.random.default_rng(1))
    proposals = jittered_proposals(np.random.default_rng(2), target["boxes"])
    out = model.detect(image, proposals, scoring="softmax")
    assert out["scores"].dtype == np.float32 and len(out["scores"]) > 0
    # Without box regression a detection is a proposal; its score is that proposal's
    # softmax probability of the detected class.
    with nn.no_grad():
        logits = model.net(model.warp(image, proposals)).data.astype(np.float64)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for box, score, label in zip(out["boxes"], out["scores"], out["labels"]):
        index = np.flatnonzero((np.abs(proposals.clip(0, 64) - box) < 1e-4).all(axis=1))
        assert index.size >= 1
        np.testing.assert_allclose(score, probabilities[index[0], label], rtol=1e-4)
    with pytest.raises(ValueError, match="scoring"):
        model.detect(image, proposals, scoring="max")
