"""Tests of detection.roi_heads: RoI targets, sampling, the multi-task loss, postprocessing."""
import numpy as np
import pytest

import nn
from detection.box_coder import BoxCoder
from detection.boxes import box_iou, clip_boxes_to_image
from detection.nms import nms
from detection.roi_heads import RoIHeads, check_targets


def make_heads(**overrides):
    settings = dict(in_channels=3, num_classes=3, spatial_scale=1 / 8, representation_size=16,
                    generator=0)
    settings.update(overrides)
    nn.manual_seed(0)
    return RoIHeads(**settings)


def test_targets_of_hand_made_proposals():
    heads = make_heads()
    gt = np.array([[0, 0, 10, 10], [40, 40, 60, 60]], np.float32)
    gt_labels = np.array([2, 1])
    proposals = np.array([[0, 0, 10, 10],     # IoU 1 with gt 0 -> class 2
                          [0, 0, 10, 18],     # IoU 10/18 = 0.56 -> class 2
                          [0, 0, 10, 25],     # IoU 0.4 -> background
                          [8, 8, 18, 18],     # IoU 4/196 = 0.02 -> not sampled
                          [45, 40, 65, 60],   # IoU 15/25 = 0.6 with gt 1 -> class 1
                          [100, 100, 110, 110]], np.float32)  # nothing -> not sampled
    labels, matched = heads.assign_targets(proposals, gt, gt_labels)
    assert labels.tolist() == [2, 2, 0, -1, 1, -1]
    assert matched.tolist() == [0, 0, -1, -1, 1, -1]
    # torchvision's lower bound 0: everything not foreground is background
    labels, _ = make_heads(bg_iou_low=0.0).assign_targets(proposals, gt, gt_labels)
    assert labels.tolist() == [2, 2, 0, 0, 1, 0]


def test_targets_without_objects():
    proposals = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    labels, matched = make_heads().assign_targets(proposals, *empty)
    assert labels.tolist() == [-1, -1] and matched.tolist() == [-1, -1]
    labels, _ = make_heads(bg_iou_low=0.0).assign_targets(proposals, *empty)
    assert labels.tolist() == [0, 0]


def test_sample_adds_ground_truth_and_respects_fractions():
    rng = np.random.default_rng(0)
    heads = make_heads(batch_size_per_image=64, positive_fraction=0.25)
    gt = np.array([[20, 20, 80, 80], [100, 30, 160, 60]], np.float32)
    labels_gt = np.array([1, 2])
    # many proposals around both objects (foreground and background), and far away
    jitter = rng.uniform(-15, 15, (300, 4)).astype(np.float32)
    proposals = np.concatenate([gt[0] + jitter[:150], gt[1] + jitter[150:]])
    proposals = np.concatenate([proposals, [[200, 200, 220, 220]]]).astype(np.float32)
    rois, labels, regression, matched = heads.select_training_samples(
        [proposals, np.zeros((0, 4), np.float32)],
        [(gt, labels_gt), (gt[:1], labels_gt[:1])])
    assert len(rois) == 2
    assert rois[0].shape == (64, 4) and labels[:64].tolist().count(0) == 48
    assert (labels[:64] > 0).sum() == 16
    # the second image has no proposals: its ground truth is its only (foreground) RoI
    np.testing.assert_array_equal(rois[1], gt[:1])
    assert labels[64:].tolist() == [1]
    # targets: the encoded matched ground truth of each foreground RoI, zeros elsewhere
    all_rois = np.concatenate(rois)
    coder = BoxCoder(weights=(10, 10, 5, 5))
    assert matched[64:].tolist() == [0]
    for roi, label, target, index in zip(all_rois[:64], labels, regression, matched):
        if label == 0:
            assert np.all(target == 0) and index == -1
            continue
        iou = box_iou(gt, roi[None])[:, 0]
        assert iou.max() >= 0.5 and label == labels_gt[iou.argmax()] and index == iou.argmax()
        np.testing.assert_allclose(target, coder.encode(gt[iou.argmax()][None], roi[None])[0],
                                   rtol=1e-5, atol=1e-6)


def test_target_normalisation_is_0_1_and_0_2():
    heads = make_heads()
    proposal = np.array([[0, 0, 20, 10]], np.float32)
    gt = np.array([[2, 1, 22, 11]], np.float32)
    target = heads.box_coder.encode(gt, proposal)[0]
    # dx = (2 / 20) / 0.1, dy = (1 / 10) / 0.1, dw = dh = log(1) / 0.2
    np.testing.assert_allclose(target, [1.0, 1.0, 0.0, 0.0], atol=1e-6)


def test_loss_against_a_loop():
    rng = np.random.default_rng(0)
    heads = make_heads()
    s, k = 12, 3
    logits = nn.Tensor(rng.standard_normal((s, k)).astype(np.float32), requires_grad=True)
    deltas = nn.Tensor(rng.standard_normal((s, 4 * k)).astype(np.float32), requires_grad=True)
    labels = np.array([0, 1, 2, 0, 0, 2, 1, 0, 0, 0, 2, 0])
    targets = (rng.standard_normal((s, 4)) * (labels > 0)[:, None]).astype(np.float32)
    losses = heads.compute_loss(logits, deltas, labels, targets)
    ce, box, beta = 0.0, 0.0, 1.0 / 9
    for i in range(s):
        row = logits.data[i].astype(np.float64)
        ce += -(row[labels[i]] - np.log(np.exp(row).sum()))
        if labels[i] > 0:
            for c in range(4):  # only the true class's four deltas
                d = float(deltas.data[i, 4 * labels[i] + c]) - float(targets[i, c])
                box += 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta
    np.testing.assert_allclose(losses["classification"].item(), ce / s, rtol=1e-5)
    np.testing.assert_allclose(losses["box_regression"].item(), box / s, rtol=1e-5)
    assert losses["num_foreground"] == 5 and losses["num_rois"] == s
    (losses["classification"] + losses["box_regression"]).backward()
    # the deltas of the other classes get no gradient
    grad = deltas.grad.reshape(s, k, 4)
    for i in range(s):
        for c in range(k):
            assert np.any(grad[i, c] != 0) == (labels[i] > 0 and c == labels[i])


def test_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    heads = make_heads()
    logits = nn.Tensor(rng.standard_normal((6, 3)), requires_grad=True)
    deltas = nn.Tensor(rng.standard_normal((6, 12)), requires_grad=True)
    labels = np.array([0, 1, 2, 0, 2, 0])
    targets = rng.standard_normal((6, 4)) * (labels > 0)[:, None]

    def total(a, b):
        out = heads.compute_loss(a, b, labels, targets)
        return out["classification"] + out["box_regression"]

    assert nn.gradcheck(total, [logits, deltas])


def test_loss_of_zero_rois_is_zero_with_a_graph():
    heads = make_heads()
    features = nn.Tensor(np.ones((1, 8, 8, 3), np.float32), requires_grad=True)
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    losses = heads.loss(features, [np.array([[0, 0, 4, 4]], np.float32)], [empty])
    assert losses["num_rois"] == 0
    assert losses["classification"].item() == 0 and losses["box_regression"].item() == 0
    (losses["classification"] + losses["box_regression"]).backward()


def postprocess_loop(heads, cls_logits, box_deltas, rois, image_size):
    """Image by image, class by class: decode, clip, threshold, NMS; then merge, top-D."""
    k = heads.num_classes
    out, start = [], 0
    for image_rois in rois:
        stop = start + len(image_rois)
        logits = cls_logits[start:stop].astype(np.float64)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        found = []
        for c in range(1, k):
            boxes = heads.box_coder.decode(box_deltas[start:stop, 4 * c:4 * c + 4], image_rois)
            boxes = clip_boxes_to_image(boxes, image_size)
            keep = [j for j in range(len(boxes)) if probs[j, c] > heads.score_threshold
                    and min(boxes[j, 2] - boxes[j, 0], boxes[j, 3] - boxes[j, 1]) >= heads.min_size]
            kept = nms(boxes[keep], probs[keep, c].astype(np.float32), heads.nms_threshold)
            found += [(float(np.float32(probs[keep[j], c])), c, tuple(boxes[keep[j]]))
                      for j in kept]
        found.sort(key=lambda item: -item[0])
        out.append(found[:heads.detections_per_image])
        start = stop
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_postprocess_against_a_loop(seed):
    rng = np.random.default_rng(seed)
    heads = make_heads(detections_per_image=7, score_threshold=0.2)
    rois = []
    for count in (20, 0, 15):
        xy = rng.uniform(0, 50, (count, 2))
        rois.append(np.concatenate([xy, xy + rng.uniform(5, 30, (count, 2))], 1).astype(np.float32))
    r = sum(len(x) for x in rois)
    cls_logits = (2 * rng.standard_normal((r, 3))).astype(np.float32)
    box_deltas = (0.5 * rng.standard_normal((r, 12))).astype(np.float32)
    result = heads.postprocess(cls_logits, box_deltas, rois, (64, 64))
    expected = postprocess_loop(heads, cls_logits, box_deltas, rois, (64, 64))
    assert len(result) == 3
    for got, want in zip(result, expected):
        assert got["boxes"].dtype == np.float32 and got["scores"].dtype == np.float32
        assert got["labels"].dtype == np.int64
        assert len(got["scores"]) == len(want) <= 7
        np.testing.assert_allclose(got["scores"], [w[0] for w in want], rtol=1e-6)
        assert sorted(zip(got["labels"].tolist(), map(tuple, got["boxes"].tolist()))) == \
            sorted((w[1], tuple(float(v) for v in w[2])) for w in want)
    assert result[1]["boxes"].shape == (0, 4)


@pytest.mark.parametrize("pooler", ["pool", "align"])
def test_forward_shapes_and_empty_rois(pooler):
    heads = make_heads(pooler=pooler)
    features = nn.Tensor(np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32))
    rois = [np.array([[0, 0, 30, 30], [8, 8, 40, 60]], np.float32), np.zeros((0, 4), np.float32)]
    cls_logits, box_deltas = heads(features, rois)
    assert cls_logits.shape == (2, 3) and box_deltas.shape == (2, 12)
    predictions = heads.predict(features, [np.zeros((0, 4), np.float32)] * 2, (64, 64))
    assert [p["boxes"].shape for p in predictions] == [(0, 4), (0, 4)]
    assert predictions[0]["labels"].dtype == np.int64


def test_check_targets_errors():
    good = {"boxes": np.array([[0, 0, 5, 5]], np.float32), "labels": np.array([1])}
    assert check_targets([good], 1, 3)[0][1].dtype == np.int64
    with pytest.raises(ValueError, match="got 2 images but 1 targets"):
        check_targets([good], 2, 3)
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\] must lie in 1..2"):
        check_targets([{"boxes": good["boxes"], "labels": np.array([3])}], 1, 3)
    with pytest.raises(ValueError, match="positive widths"):
        check_targets([{"boxes": np.array([[5, 0, 5, 5]]), "labels": np.array([1])}], 1, 3)
    with pytest.raises(ValueError, match="dict with 'boxes' and 'labels'"):
        check_targets([{"boxes": good["boxes"]}], 1, 3)
    with pytest.raises(TypeError, match="list of dicts"):
        check_targets(good, 1, 3)


def test_constructor_errors():
    with pytest.raises(ValueError, match="num_classes"):
        make_heads(num_classes=1)
    with pytest.raises(ValueError, match="pooler"):
        make_heads(pooler="max")
    with pytest.raises(ValueError, match="bg_iou_low"):
        make_heads(bg_iou_low=0.6)
