"""Tests of detection.mask_rcnn: mask targets, the mask head and loss, pasting, the model."""
import numpy as np
import pytest

import nn
from detection.mask_rcnn import (MaskHead, MaskRCNN, MaskRCNNConfig, check_masks,
                                 paste_masks_in_image, project_masks_on_boxes)
from tests.detection.scenes import overfit, rendered_pair


def tiny_config(**overrides):
    settings = dict(width_multiplier=0.5, feature_channels=8, representation_size=16,
                    mask_channels=8, mask_pool_size=7)
    settings.update(overrides)
    return MaskRCNNConfig(**settings)


def test_mask_targets_of_hand_made_boxes():
    masks = np.zeros((2, 40, 40), bool)
    masks[0, 10:20, 10:20] = True       # a 10x10 square
    masks[1, 0:40, 0:20] = True         # the left half of the image
    boxes = np.array([[10, 10, 20, 20],    # exactly object 0: all ones
                      [10, 10, 30, 20],    # object 0 in its left half: columns 1, 1, 0, 0
                      [10, 10, 30, 20],    # the same box on object 1: left half again
                      [20, 0, 40, 40]],    # object 1 outside the box: all zeros
                     np.float32)
    targets = project_masks_on_boxes(masks, boxes, np.array([0, 0, 1, 1]), 4)
    assert targets.shape == (4, 4, 4) and targets.dtype == np.float32
    np.testing.assert_array_equal(targets[0], 1)
    np.testing.assert_array_equal(targets[1], [[1, 1, 0, 0]] * 4)
    np.testing.assert_array_equal(targets[2], [[1, 1, 0, 0]] * 4)
    np.testing.assert_array_equal(targets[3], 0)
    assert project_masks_on_boxes(masks, np.zeros((0, 4)), np.zeros(0, int), 4).shape == (0, 4, 4)
    with pytest.raises(ValueError, match="matched_idxs must index"):
        project_masks_on_boxes(masks, boxes[:1], np.array([2]), 4)
    with pytest.raises(ValueError, match="one per box"):
        project_masks_on_boxes(masks, boxes, np.array([0]), 4)


def test_mask_targets_follow_the_majority_of_each_cell():
    # a box whose 28x28 cells are 2x2 pixels: a cell is 1 when its pixels mostly are
    rng = np.random.default_rng(0)
    blocks = rng.random((28, 28)) < 0.5
    mask = np.kron(blocks, np.ones((2, 2), bool))[None]                  # (1, 56, 56)
    padded = np.zeros((1, 70, 70), bool)
    padded[:, 7:63, 7:63] = mask
    targets = project_masks_on_boxes(padded, np.array([[7, 7, 63, 63]], np.float32),
                                     np.array([0]), 28)
    np.testing.assert_array_equal(targets[0], blocks.astype(np.float32))


def paste_loop(masks, boxes, image_size):
    """Pixel by pixel: a pixel centre inside the box reads the mask bilinearly."""
    height, width = image_size
    r = masks.shape[1]
    out = np.zeros((len(boxes), height, width))
    for d, (x1, y1, x2, y2) in enumerate(boxes.astype(np.float64)):
        for y in range(height):
            for x in range(width):
                cx, cy = x + 0.5, y + 0.5
                if not (x1 <= cx < x2 and y1 <= cy < y2):
                    continue
                u = min(max((cx - x1) / (x2 - x1) * r - 0.5, 0), r - 1)
                v = min(max((cy - y1) / (y2 - y1) * r - 0.5, 0), r - 1)
                u0, v0 = min(int(np.floor(u)), r - 2), min(int(np.floor(v)), r - 2)
                fu, fv = u - u0, v - v0
                m = masks[d].astype(np.float64)
                out[d, y, x] = ((1 - fv) * ((1 - fu) * m[v0, u0] + fu * m[v0, u0 + 1])
                                + fv * ((1 - fu) * m[v0 + 1, u0] + fu * m[v0 + 1, u0 + 1]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paste_against_a_pixel_loop(seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((4, 6, 6)).astype(np.float32)
    xy = rng.uniform(-5, 20, (4, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 15, (4, 2))], 1).astype(np.float32)
    pasted = paste_masks_in_image(masks, boxes, (18, 22))
    assert pasted.shape == (4, 18, 22) and pasted.dtype == np.float32
    np.testing.assert_allclose(pasted, paste_loop(masks, boxes, (18, 22)), atol=1e-5)


def test_paste_of_a_full_mask_fills_its_box():
    pasted = paste_masks_in_image(np.ones((1, 28, 28), np.float32),
                                  np.array([[3, 5, 11, 9]], np.float32), (16, 16))
    expected = np.zeros((16, 16), np.float32)
    expected[5:9, 3:11] = 1
    np.testing.assert_allclose(pasted[0], expected, atol=1e-6)
    assert paste_masks_in_image(np.zeros((0, 28, 28)), np.zeros((0, 4)), (5, 6)).shape == (0, 5, 6)
    with pytest.raises(ValueError, match="masks must have shape"):
        paste_masks_in_image(np.zeros((2, 28, 28)), np.zeros((1, 4)), (5, 6))


def test_mask_head_shapes():
    nn.manual_seed(0)
    head = MaskHead(8, 3, channels=8, num_convs=4)
    out = head(nn.Tensor(np.ones((5, 14, 14, 8), np.float32)))
    assert out.shape == (5, 28, 28, 3)


def test_mask_loss_against_a_loop():
    rng = np.random.default_rng(0)
    nn.manual_seed(0)
    model = MaskRCNN(tiny_config())
    logits = nn.Tensor(rng.standard_normal((3, 4, 4, 3)).astype(np.float32), requires_grad=True)
    labels = np.array([2, 1, 2])
    targets = (rng.random((3, 4, 4)) < 0.5).astype(np.float32)
    loss = model.mask_loss(logits, labels, targets)
    total = 0.0
    for f in range(3):
        for i in range(4):
            for j in range(4):
                x = float(logits.data[f, i, j, labels[f]])
                p = 1 / (1 + np.exp(-x))
                total += -np.log(p) if targets[f, i, j] else -np.log(1 - p)
    np.testing.assert_allclose(loss.item(), total / 48, rtol=1e-5)
    loss.backward()
    # only the ground-truth class's maps get a gradient
    for f in range(3):
        for k in range(3):
            assert np.any(logits.grad[f, :, :, k] != 0) == (k == labels[f])


def test_mask_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    model = MaskRCNN(tiny_config())
    logits = nn.Tensor(rng.standard_normal((2, 3, 3, 3)), requires_grad=True)
    targets = (rng.random((2, 3, 3)) < 0.5).astype(np.float64)
    assert nn.gradcheck(lambda x: model.mask_loss(x, np.array([1, 2]), targets), [logits])


def test_mask_targets_of_the_model_index_each_images_objects():
    model = MaskRCNN(tiny_config(mask_pool_size=2))  # 4x4 targets
    masks_a = np.zeros((1, 16, 16), bool)
    masks_a[0, :, :8] = True
    masks_b = np.zeros((2, 16, 16), bool)
    masks_b[0, :8] = True
    masks_b[1] = True
    rois = [np.array([[0, 0, 16, 16], [4, 4, 8, 8]], np.float32),
            np.array([[0, 0, 16, 16], [0, 0, 16, 16], [1, 1, 5, 5]], np.float32)]
    labels = np.array([1, 0, 2, 1, 0])
    matched = np.array([0, -1, 0, 1, -1])
    fg_rois, fg_labels, targets = model.mask_targets([masks_a, masks_b], rois, labels, matched)
    np.testing.assert_array_equal(fg_rois[0], rois[0][:1])
    np.testing.assert_array_equal(fg_rois[1], rois[1][:2])
    assert fg_labels.tolist() == [1, 2, 1]
    np.testing.assert_array_equal(targets[0], [[1, 1, 0, 0]] * 4)        # image 0, object 0
    np.testing.assert_array_equal(targets[1], [[1] * 4] * 2 + [[0] * 4] * 2)  # image 1, object 0
    np.testing.assert_array_equal(targets[2], 1)                          # image 1, object 1


def batch():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 64, 64, 3)).astype(np.float32)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 10:30, 6:38] = True
    masks[1, 42:48, 40:58] = True
    targets = [{"boxes": np.array([[6, 10, 38, 30], [40, 42, 58, 48]], np.float32),
                "labels": np.array([1, 2]), "masks": masks},
               {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
                "masks": np.zeros((0, 64, 64), bool)}]
    return images, targets


def test_loss_reaches_the_mask_head_and_predict_gives_masks():
    nn.manual_seed(0)
    model = MaskRCNN(tiny_config())
    images, targets = batch()
    losses = model.loss(images, targets)
    assert losses["mask"].item() > 0 and losses["num_foreground"] >= 2
    losses["loss"].backward()
    assert np.abs(model.mask_head.mask_logits.weight.grad).sum() > 0
    predictions = model.predict(images, score_threshold=0.0)
    for p in predictions:
        assert p["masks"].shape == (len(p["boxes"]), 64, 64) and p["masks"].dtype == bool


def test_images_without_objects_all_the_way_through():
    nn.manual_seed(0)
    model = MaskRCNN(tiny_config())
    images, targets = batch()
    empty = [targets[1], targets[1]]
    losses = model.loss(images, empty)
    assert losses["mask"].item() == 0 and losses["num_foreground"] == 0
    losses["loss"].backward()
    model.roi_heads.score_threshold = 1.0  # nothing passes: the empty path of predict
    predictions = model.predict(images)
    assert [p["masks"].shape for p in predictions] == [(0, 64, 64)] * 2


def test_bad_masks_raise():
    images, targets = batch()
    with pytest.raises(ValueError, match="needs 'masks'"):
        check_masks([{"boxes": targets[0]["boxes"]}], (64, 64))
    with pytest.raises(ValueError, match=r"must have shape \(2, 64, 64\)"):
        check_masks([{"boxes": targets[0]["boxes"], "masks": np.zeros((1, 64, 64))}], (64, 64))
    model = MaskRCNN(tiny_config())
    with pytest.raises(ValueError, match="masks"):
        model.loss(images, [{"boxes": targets[0]["boxes"], "labels": targets[0]["labels"]},
                            targets[1]])
    with pytest.raises(ValueError, match="mask_threshold"):
        MaskRCNNConfig(mask_threshold=1.0).validate()


@pytest.mark.slow
def test_mask_rcnn_overfits_two_images():
    images, targets = rendered_pair(0, masks=True)
    nn.manual_seed(0)
    model = MaskRCNN(MaskRCNNConfig(width_multiplier=0.5, feature_channels=32,
                                    representation_size=128, mask_channels=32))
    optimizer = nn.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    overfit(model, optimizer, 150, images, targets)
    predictions = model.predict(images)
    for p, t in zip(predictions, targets):
        for mask, label in zip(t["masks"], t["labels"]):
            good = (p["labels"] == label) & (p["scores"] >= 0.5)
            assert good.any()
            inter = (p["masks"][good] & mask).sum(axis=(1, 2))
            union = (p["masks"][good] | mask).sum(axis=(1, 2))
            assert (inter / union).max() >= 0.5, (label, inter / union)
