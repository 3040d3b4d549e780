"""Tests of detection.faster_rcnn: Faster R-CNN (RPN + head, joint training) and Fast R-CNN."""
import numpy as np
import pytest

import nn
from detection.boxes import box_iou
from detection.faster_rcnn import FastRCNN, FasterRCNN, FasterRCNNConfig, TopDownFeature
from tests.detection.scenes import overfit, rendered_pair


def tiny_config(**overrides):
    settings = dict(width_multiplier=0.5, feature_channels=8, representation_size=16)
    settings.update(overrides)
    return FasterRCNNConfig(**settings)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((2, 64, 64, 3)).astype(np.float32)
    targets = [{"boxes": np.array([[4, 8, 40, 36], [40, 40, 60, 50]], np.float32),
                "labels": np.array([1, 2])},
               {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}]
    return images, targets


def test_shapes_of_the_shared_map_and_the_rpn():
    nn.manual_seed(0)
    model = FasterRCNN(tiny_config())
    features, objectness, deltas = model(np.zeros((2, 64, 96, 3), np.float32))
    assert model.stride == 8
    assert features.shape == (2, 8, 12, 8)
    assert objectness.shape == (2, 8 * 12 * 9) and deltas.shape == (2, 8 * 12 * 9, 4)
    coarse = FasterRCNN(tiny_config(feature_level=4))
    assert coarse(np.zeros((1, 64, 96, 3), np.float32))[0].shape == (1, 4, 6, 8)


def test_top_down_feature_sums_the_upsampled_coarser_maps():
    nn.manual_seed(0)
    neck = TopDownFeature([2, 3], 4)
    fine = nn.Tensor(np.random.default_rng(0).standard_normal((1, 4, 4, 2)).astype(np.float32))
    coarse = nn.Tensor(np.random.default_rng(1).standard_normal((1, 2, 2, 3)).astype(np.float32))
    out = neck([fine, coarse])
    top = neck.lateral[1](coarse).data.repeat(2, axis=1).repeat(2, axis=2)
    expected = neck.smooth(nn.Tensor(neck.lateral[0](fine).data + top))
    np.testing.assert_allclose(out.data, expected.data, rtol=1e-5, atol=1e-6)


def test_joint_loss_backpropagates_into_every_part():
    nn.manual_seed(0)
    model = FasterRCNN(tiny_config())
    images, targets = batch()
    losses = model.loss(images, targets)
    for key in ("rpn_objectness", "rpn_box_regression", "classification", "box_regression"):
        assert np.isfinite(losses[key].item())
    terms = ("rpn_objectness", "rpn_box_regression", "classification", "box_regression")
    np.testing.assert_allclose(losses["loss"].item(), sum(losses[k].item() for k in terms),
                               rtol=1e-6)
    assert losses["rpn_num_positive"] >= 2 and losses["num_foreground"] >= 2
    losses["loss"].backward()
    for name in ("features.backbone.stem.0.weight", "rpn.head.objectness.weight",
                 "rpn.head.box_deltas.weight", "roi_heads.box_predictor.bbox_pred.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and np.abs(grad).sum() > 0, name


def test_proposals_are_constants_for_the_head():
    """Approximate joint training: the head's loss does not reach the RPN's predictors."""
    nn.manual_seed(0)
    model = FasterRCNN(tiny_config())
    images, targets = batch()
    losses = model.loss(images, targets)
    (losses["classification"] + losses["box_regression"]).backward()
    params = dict(model.named_parameters())
    for name in ("rpn.head.objectness.weight", "rpn.head.box_deltas.weight",
                 "rpn.head.conv.weight"):
        assert params[name].grad is None or not np.any(params[name].grad), name
    assert np.abs(params["features.neck.smooth.weight"].grad).sum() > 0


def test_images_without_objects_all_the_way_through():
    nn.manual_seed(0)
    model = FasterRCNN(tiny_config())
    images = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    empty = [{"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}] * 2
    losses = model.loss(images, empty)
    assert losses["rpn_num_positive"] == 0 and losses["num_foreground"] == 0
    assert losses["rpn_box_regression"].item() == 0 and losses["box_regression"].item() == 0
    assert losses["rpn_objectness"].item() > 0
    losses["loss"].backward()
    with_zero = FasterRCNN(tiny_config(box_bg_iou_low=0.0))
    losses = with_zero.loss(images, empty)
    assert losses["num_rois"] == 128 and losses["classification"].item() > 0  # all background
    predictions = model.predict(images)
    assert len(predictions) == 2
    for p in predictions:
        assert p["boxes"].dtype == np.float32 and p["boxes"].shape[1] == 4
        assert p["scores"].dtype == np.float32 and p["labels"].dtype == np.int64


def test_predict_restores_mode_and_threshold():
    nn.manual_seed(0)
    model = FasterRCNN(tiny_config())
    images, _ = batch()
    model.train()
    predictions = model.predict(images, score_threshold=0.0)
    assert model.training and model.roi_heads.score_threshold == 0.05
    assert all(len(p["boxes"]) == 100 for p in predictions)  # threshold 0: the full 100
    assert all(np.all(np.diff(p["scores"]) <= 0) for p in predictions)
    assert all(np.all((p["labels"] >= 1) & (p["labels"] <= 2)) for p in predictions)
    assert model.rpn.training and model.roi_heads.training


def test_training_and_test_proposal_counts():
    nn.manual_seed(0)
    model = FasterRCNN(tiny_config(rpn_pre_nms_top_n=(400, 200), rpn_post_nms_top_n=(50, 10)))
    images, _ = batch()
    model.train()
    _, proposals, scores = model.proposals(images)
    assert [len(b) for b in proposals] == [50, 50] and [len(s) for s in scores] == [50, 50]
    model.eval()
    _, proposals, _ = model.proposals(images)
    assert [len(b) for b in proposals] == [10, 10]


def test_bad_input_raises_before_any_work():
    model = FasterRCNN(tiny_config())
    images, targets = batch()
    with pytest.raises(ValueError, match="images must have shape"):
        model.loss(images[..., :2], targets)
    with pytest.raises(ValueError, match="got 2 images but 1 targets"):
        model.loss(images, targets[:1])
    with pytest.raises(ValueError, match="must lie in 1..2"):
        model.loss(images, [{"boxes": targets[0]["boxes"], "labels": np.array([1, 3])},
                            targets[1]])
    with pytest.raises(ValueError, match="num_classes"):
        FasterRCNNConfig(num_classes=1).validate()
    with pytest.raises(ValueError, match="pooler"):
        FasterRCNNConfig(pooler="mean").validate()
    with pytest.raises(ValueError, match="feature_level"):
        FasterRCNNConfig(feature_level=6).validate()


def test_fast_rcnn_on_external_proposals():
    nn.manual_seed(0)
    model = FastRCNN(tiny_config(pooler="align"))
    images, targets = batch()
    proposals = [np.array([[4, 8, 40, 36], [0, 0, 30, 30], [30, 30, 63, 63]], np.float32),
                 np.zeros((0, 4), np.float32)]
    cls_logits, box_deltas = model(images, proposals)
    assert cls_logits.shape == (3, 3) and box_deltas.shape == (3, 12)
    losses = model.loss(images, proposals, targets)
    assert losses["num_foreground"] >= 2
    losses["loss"].backward()
    predictions = model.predict(images, proposals, score_threshold=0.0)
    assert predictions[1]["boxes"].shape == (0, 4)
    assert len(predictions[0]["boxes"]) <= 3 * 2
    with pytest.raises(ValueError, match="proposals"):
        model.loss(images, proposals[:1], targets)


def assert_found(predictions, targets, min_iou=0.5, min_score=0.5):
    """Every object has a confident detection of its class on it."""
    for p, t in zip(predictions, targets):
        for box, label in zip(t["boxes"], t["labels"]):
            good = (p["labels"] == label) & (p["scores"] >= min_score)
            assert good.any(), (box, label, p)
            assert box_iou(box[None], p["boxes"][good]).max() >= min_iou, (box, label, p)


@pytest.mark.slow
def test_faster_rcnn_overfits_two_images():
    images, targets = rendered_pair(0)
    assert sum(len(t["boxes"]) for t in targets) >= 2
    nn.manual_seed(0)
    model = FasterRCNN(FasterRCNNConfig(width_multiplier=0.5, feature_channels=32,
                                        representation_size=128))
    optimizer = nn.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    _, last = overfit(model, optimizer, 120, images, targets)
    assert last < 0.5
    assert_found(model.predict(images), targets)


@pytest.mark.slow
def test_fast_rcnn_overfits_two_images_from_proposals():
    images, targets = rendered_pair(0)
    rng = np.random.default_rng(0)
    proposals = []
    for t in targets:  # jittered objects and random boxes, like a proposal method's output
        jitter = np.concatenate([t["boxes"] + rng.normal(0, 3, t["boxes"].shape)
                                 for _ in range(10)]).reshape(-1, 4)
        xy = rng.uniform(0, 100, (60, 2))
        random = np.concatenate([xy, xy + rng.uniform(8, 60, (60, 2))], 1)
        proposals.append(np.clip(np.concatenate([jitter, random]), 0, 128).astype(np.float32))
    nn.manual_seed(0)
    model = FastRCNN(FasterRCNNConfig(width_multiplier=0.5, feature_channels=32,
                                      representation_size=128, box_bg_iou_low=0.0))
    optimizer = nn.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    overfit(model, optimizer, 100, images, proposals, targets)
    assert_found(model.predict(images, proposals), targets)
