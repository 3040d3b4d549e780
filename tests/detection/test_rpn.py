"""Tests of detection.rpn: anchors, targets, sampling, loss and proposals."""
import numpy as np
import pytest

import nn
from detection.box_coder import BoxCoder
from detection.boxes import box_iou, clip_boxes_to_image
from detection.nms import nms
from detection.rpn import RegionProposalNetwork, RPNHead, check_box_list


def make_rpn(**overrides):
    settings = dict(in_channels=4, stride=8, anchor_sizes=(16, 32), aspect_ratios=(0.5, 1.0))
    settings.update(overrides)
    return RegionProposalNetwork(**settings)


def iou_loop(a, b):
    """IoU of two xyxy boxes, written out."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def labels_loop(anchors, gt, high=0.7, low=0.3):
    """The paper's rule anchor by anchor: 1 positive, 0 negative, -1 ignored, matched gt."""
    labels, matched = [], []
    ious = [[iou_loop(g, a) for a in anchors] for g in gt]
    best_per_gt = [max(row) for row in ious]
    for j in range(len(anchors)):
        column = [row[j] for row in ious]
        best = max(column)
        index = column.index(best)
        claimed = any(ious[g][j] == best_per_gt[g] and best_per_gt[g] > 0 for g in range(len(gt)))
        if best >= high or claimed:
            labels.append(1)
            matched.append(index)
        elif best < low:
            labels.append(0)
            matched.append(-1)
        else:
            labels.append(-1)
            matched.append(-1)
    return np.array(labels), np.array(matched)


def test_head_shapes_follow_the_anchor_order():
    nn.manual_seed(0)
    head = RPNHead(4, 3)
    objectness, deltas = head(nn.Tensor(np.ones((2, 5, 6, 4), np.float32)))
    assert objectness.shape == (2, 5 * 6 * 3) and deltas.shape == (2, 5 * 6 * 3, 4)
    # location (y=1, x=2), anchor a=1 is row (1·6 + 2)·3 + 1 of the flattened outputs
    full = head.objectness(nn.functional.relu(head.conv(nn.Tensor(np.ones((2, 5, 6, 4),
                                                                          np.float32)))))
    assert objectness.data[1, (1 * 6 + 2) * 3 + 1] == full.data[1, 1, 2, 1]


def test_anchors_are_three_by_three_centred_on_cells():
    rpn = RegionProposalNetwork(8, 8)  # default scales and ratios
    assert rpn.num_anchors == 9
    anchors = rpn.anchors((64, 96), (8, 12))
    assert anchors.shape == (8 * 12 * 9, 4) and anchors.dtype == np.float32
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    np.testing.assert_allclose(centres[:9], 4.0)
    np.testing.assert_allclose(centres[9 * 13], [12.0, 12.0])  # row 1, column 1
    sizes = np.sqrt((anchors[:9, 2] - anchors[:9, 0]) * (anchors[:9, 3] - anchors[:9, 1]))
    np.testing.assert_allclose(sorted(sizes), sorted([16, 32, 128] * 3), rtol=0.05)


def test_targets_of_hand_made_anchors_and_boxes():
    rpn = make_rpn()
    anchors = np.array([[0, 0, 10, 10],      # IoU 1 with gt 0
                        [1, 0, 11, 10],      # IoU 9/11 = 0.82 -> positive
                        [4, 0, 14, 10],      # IoU 6/14 = 0.43 -> ignored
                        [7, 0, 17, 10],      # IoU 3/17 = 0.18 -> negative
                        [50, 50, 70, 60],    # IoU 0.5 with gt 1 and its best anchor -> positive
                        [90, 90, 99, 99]],   # nothing -> negative
                       np.float32)
    gt = np.array([[0, 0, 10, 10], [50, 50, 70, 70]], np.float32)
    labels, matched = rpn.assign_targets(anchors, [gt, np.zeros((0, 4), np.float32)])
    assert labels[0].tolist() == [1, 1, -1, 0, 1, 0]
    np.testing.assert_array_equal(matched[0, [0, 1]], gt[[0, 0]])
    np.testing.assert_array_equal(matched[0, 4], gt[1])
    assert np.all(matched[0, [2, 3, 5]] == 0)
    assert labels[1].tolist() == [0] * 6  # no object: every anchor is negative
    assert labels.dtype == np.int64 and matched.dtype == np.float32


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_targets_against_a_loop(seed):
    rng = np.random.default_rng(seed)
    rpn = make_rpn()
    anchors = rpn.anchors((48, 64), (6, 8))
    xy = rng.uniform(0, 40, (3, 2))
    gt = np.concatenate([xy, xy + rng.uniform(6, 30, (3, 2))], 1).astype(np.float32)
    labels, matched = rpn.assign_targets(anchors, [gt])
    expected, index = labels_loop(anchors.astype(np.float64), gt.astype(np.float64))
    np.testing.assert_array_equal(labels[0], expected)
    np.testing.assert_array_equal(matched[0][expected == 1], gt[index[expected == 1]])


def loss_inputs(seed, num_anchors_per_side=(6, 8)):
    rng = np.random.default_rng(seed)
    rpn = make_rpn(batch_size_per_image=10_000, positive_fraction=1.0)  # samples every anchor
    anchors = rpn.anchors((48, 64), num_anchors_per_side)
    r = anchors.shape[0]
    objectness = nn.Tensor(rng.standard_normal((2, r)).astype(np.float32), requires_grad=True)
    deltas = nn.Tensor((0.3 * rng.standard_normal((2, r, 4))).astype(np.float32),
                       requires_grad=True)
    gt = [np.array([[4, 6, 30, 22], [30, 20, 60, 44]], np.float32), np.zeros((0, 4), np.float32)]
    return rpn, anchors, objectness, deltas, gt


def test_loss_against_a_loop():
    rpn, anchors, objectness, deltas, gt = loss_inputs(0)
    losses = rpn.compute_loss(objectness, deltas, anchors, gt)
    coder = BoxCoder()
    bce, smooth, sampled, positives = 0.0, 0.0, 0, 0
    beta = 1.0 / 9
    for i in range(2):
        labels, index = labels_loop(anchors.astype(np.float64), gt[i].astype(np.float64)) \
            if len(gt[i]) else (np.zeros(len(anchors), int), None)
        for j in range(len(anchors)):
            if labels[j] < 0:
                continue
            sampled += 1
            x = float(objectness.data[i, j])
            p = 1 / (1 + np.exp(-x))
            bce += -np.log(p) if labels[j] == 1 else -np.log(1 - p)
            if labels[j] == 1:
                positives += 1
                target = coder.encode(gt[i][index[j]][None].astype(np.float64),
                                      anchors[j][None].astype(np.float64))[0]
                for d in deltas.data[i, j].astype(np.float64) - target:
                    smooth += 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta
    assert losses["num_sampled"] == sampled and losses["num_positive"] == positives
    np.testing.assert_allclose(losses["objectness"].item(), bce / sampled, rtol=1e-5)
    np.testing.assert_allclose(losses["box_regression"].item(), smooth / sampled, rtol=1e-4)
    (losses["objectness"] + losses["box_regression"]).backward()
    assert objectness.grad is not None and np.abs(deltas.grad).sum() > 0


def test_loss_gradient_matches_finite_differences():
    rpn, anchors, objectness, deltas, gt = loss_inputs(1, (3, 4))
    x64 = nn.Tensor(objectness.data.astype(np.float64), requires_grad=True)
    d64 = nn.Tensor(deltas.data.astype(np.float64), requires_grad=True)

    def total(o, d):
        out = rpn.compute_loss(o, d, anchors, gt)
        return out["objectness"] + out["box_regression"]

    assert nn.gradcheck(total, [x64, d64])


def test_sampler_fractions():
    rpn = make_rpn(in_channels=4, anchor_sizes=(8, 16, 32), aspect_ratios=(0.5, 1.0, 2.0),
                   generator=0)
    anchors = rpn.anchors((256, 256), (32, 32))
    r = anchors.shape[0]
    objectness = nn.Tensor(np.zeros((2, r), np.float32))
    deltas = nn.Tensor(np.zeros((2, r, 4), np.float32))
    many = np.array([[x, y, x + 100, y + 100] for x in (0, 120) for y in (0, 120)], np.float32)
    few = np.array([[100, 100, 108, 104]], np.float32)
    labels, _ = rpn.assign_targets(anchors, [many, few])
    losses = rpn.compute_loss(objectness, deltas, anchors, [many, few])
    # image 0 has more than 128 positives: 128 of them + 128 negatives; image 1 only a few
    # positives, filled up with negatives to 256
    assert (labels[0] == 1).sum() > 128
    few_positives = int((labels[1] == 1).sum())
    assert 1 <= few_positives < 10
    assert losses["num_positive"] == 128 + few_positives
    assert losses["num_sampled"] == 512


def make_proposal_case(seed, n=2, pre=(50, 30), post=(20, 10), threshold=0.7):
    rng = np.random.default_rng(seed)
    rpn = make_rpn(pre_nms_top_n=pre, post_nms_top_n=post, nms_threshold=threshold)
    anchors = rpn.anchors((48, 64), (6, 8))
    r = anchors.shape[0]
    objectness = rng.standard_normal((n, r)).astype(np.float32)
    deltas = (0.2 * rng.standard_normal((n, r, 4))).astype(np.float32)
    return rpn, anchors, objectness, deltas


def proposals_loop(rpn, anchors, objectness, deltas, image_size, phase):
    """One image at a time: sort, top-k, decode, clip, drop small, NMS, top-n."""
    boxes_out, scores_out = [], []
    for i in range(objectness.shape[0]):
        order = np.argsort(-objectness[i], kind="stable")[:rpn.pre_nms_top_n[phase]]
        boxes = rpn.box_coder.decode(deltas[i][order], anchors[order])
        boxes = clip_boxes_to_image(boxes, image_size)
        scores = objectness[i][order]
        keep = [j for j in range(len(boxes))
                if min(boxes[j, 2] - boxes[j, 0], boxes[j, 3] - boxes[j, 1]) >= rpn.min_size]
        boxes, scores = boxes[keep], scores[keep]
        kept = nms(boxes, scores, rpn.nms_threshold)[:rpn.post_nms_top_n[phase]]
        boxes_out.append(boxes[kept])
        scores_out.append(1 / (1 + np.exp(-scores[kept].astype(np.float64))))
    return boxes_out, scores_out


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_proposals_against_a_loop(training, seed):
    rpn, anchors, objectness, deltas = make_proposal_case(seed)
    rpn.train(training)
    boxes, scores = rpn.propose(objectness, deltas, anchors, (48, 64))
    expected_boxes, expected_scores = proposals_loop(rpn, anchors, objectness, deltas, (48, 64),
                                                     0 if training else 1)
    assert len(boxes) == 2
    for b, s, eb, es in zip(boxes, scores, expected_boxes, expected_scores):
        assert b.dtype == np.float32 and s.dtype == np.float32
        assert b.shape[0] <= (20 if training else 10)
        np.testing.assert_array_equal(b, eb)
        np.testing.assert_allclose(s, es, rtol=1e-6)
        assert np.all(np.diff(s) <= 0)
        iou = box_iou(b, b) - np.eye(len(b))
        assert iou.max() <= 0.7


def test_proposals_hand_made_nms_and_top_k():
    rpn = make_rpn(pre_nms_top_n=(3, 3), post_nms_top_n=(2, 2))
    rpn.eval()
    anchors = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30], [40, 0, 50, 10],
                        [0, 20, 10, 30]], np.float32)
    objectness = np.array([[5.0, 4.0, 3.0, 2.0, -1.0]], np.float32)
    deltas = np.zeros((1, 5, 4), np.float32)  # proposals are the anchors themselves
    boxes, scores = rpn.propose(objectness, deltas, anchors, (64, 64))
    # top 3 by objectness are anchors 0, 1, 2; NMS removes 1 (IoU 10/11 with 0); keep 2
    np.testing.assert_array_equal(boxes[0], anchors[[0, 2]])
    np.testing.assert_allclose(scores[0], 1 / (1 + np.exp(-np.array([5.0, 3.0]))), rtol=1e-6)


def test_proposals_of_different_images_do_not_suppress_each_other():
    rpn = make_rpn()
    rpn.eval()
    anchors = np.array([[0, 0, 10, 10], [30, 30, 40, 40]], np.float32)
    objectness = np.array([[2.0, 1.0], [1.0, 2.0]], np.float32)
    boxes, _ = rpn.propose(objectness, np.zeros((2, 2, 4), np.float32), anchors, (64, 64))
    np.testing.assert_array_equal(boxes[0], anchors)
    np.testing.assert_array_equal(boxes[1], anchors[::-1])


def test_proposals_clip_and_drop_empty_boxes():
    rpn = make_rpn(min_size=1.0)
    anchors = np.array([[-20, -20, -10, -10], [50, 10, 80, 20], [5, 5, 15, 15]], np.float32)
    objectness = np.array([[3.0, 2.0, 1.0]], np.float32)
    boxes, scores = rpn.propose(objectness, np.zeros((1, 3, 4), np.float32), anchors, (32, 64))
    # the first anchor clips to an empty box and goes; the second is clipped to x2 = 64
    np.testing.assert_array_equal(boxes[0], [[50, 10, 64, 20], [5, 5, 15, 15]])
    assert scores[0].shape == (2,)


def test_check_box_list_errors():
    with pytest.raises(TypeError, match="proposals"):
        check_box_list(np.zeros((2, 4)), 1, "proposals")
    with pytest.raises(ValueError, match="one entry per image"):
        check_box_list([np.zeros((2, 4))], 2, "proposals")
    with pytest.raises(ValueError, match=r"proposals\[0\]"):
        check_box_list([np.zeros((2, 3))], 1, "proposals")
    with pytest.raises(ValueError, match="non-finite"):
        check_box_list([np.array([[0, 0, np.nan, 1]])], 1, "proposals")
    assert check_box_list([[]], 1, "proposals")[0].shape == (0, 4)


def test_constructor_errors():
    with pytest.raises(ValueError, match="pre_nms_top_n"):
        make_rpn(pre_nms_top_n=(0, 10))
    with pytest.raises(ValueError, match="nms_threshold"):
        make_rpn(nms_threshold=1.5)
