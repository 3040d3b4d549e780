import numpy as np
import pytest

import nn
from detection.backbones import resnet18, resnet_small
from detection.boxes import box_iou
from detection.fpn import FeaturePyramidNetwork
from detection.retinanet import RetinaNet, RetinaNetConfig
from tests.detection.scenes import overfit


def small_config(**overrides):
    base = dict(fpn_channels=8, head_convs=1, width_multiplier=0.5)
    base.update(overrides)
    return RetinaNetConfig(**base)


@pytest.mark.parametrize("make, channels", [(resnet_small, (8, 16, 32, 64)), (resnet18, (16, 32, 64, 128))])
def test_backbone_strides_and_channels(make, channels):
    backbone = make(0.5 if make is resnet_small else 0.25)
    feats = backbone(nn.Tensor(np.zeros((1, 64, 96, 3), np.float32)))
    assert [f.shape[1:] for f in feats] == [
        (64 // s, 96 // s, c) for s, c in zip((4, 8, 16, 32), channels)
    ]


def test_fpn_levels_and_extra_levels():
    fpn = FeaturePyramidNetwork([4, 8], 6, extra_levels=2)
    feats = [nn.Tensor(np.ones((1, 8, 8, 4), np.float32)), nn.Tensor(np.ones((1, 4, 4, 8), np.float32))]
    outs = fpn(feats)
    assert [o.shape for o in outs] == [(1, 8, 8, 6), (1, 4, 4, 6), (1, 2, 2, 6), (1, 1, 1, 6)]
    odd = fpn([nn.Tensor(np.ones((1, 7, 9, 4), np.float32)), nn.Tensor(np.ones((1, 4, 5, 8), np.float32))])
    assert odd[0].shape == (1, 7, 9, 6)


def test_anchor_counts_per_level():
    model = RetinaNet(small_config(levels=(3, 4, 5, 6), anchor_sizes=(16, 32, 64, 128)))
    cls, box, sizes = model(np.zeros((2, 64, 128, 3), np.float32))
    assert sizes == [(8, 16), (4, 8), (2, 4), (1, 2)]
    per_level = [h * w * 9 for h, w in sizes]
    assert cls.shape == (2, sum(per_level), 2) and box.shape == (2, sum(per_level), 4)
    anchors = model.anchors((64, 128), sizes)
    assert anchors.shape == (sum(per_level), 4)
    # The first level's anchors are centred on its stride-8 cells, in (y, x, anchor) order.
    centers = (anchors[:9, :2] + anchors[:9, 2:]) / 2
    np.testing.assert_allclose(centers, 4.0)
    np.testing.assert_allclose((anchors[9:18, :2] + anchors[9:18, 2:]) / 2, [[12.0, 4.0]] * 9)


def test_prior_probability_initialisation():
    model = RetinaNet(small_config())
    cls, _, _ = model(np.zeros((2, 64, 64, 3), np.float32))
    probabilities = 1 / (1 + np.exp(-cls.data))
    np.testing.assert_allclose(probabilities, 0.01, rtol=0.05)


def test_targets_of_a_hand_made_case():
    model = RetinaNet(small_config(levels=(3,), anchor_sizes=(16,), anchor_scales=(1.0,), aspect_ratios=(1.0,)))
    anchors = model.anchors((32, 32), [(4, 4)])  # 16 anchors of 16x16 centred at 4, 12, 20, 28
    gt = np.array([[4.0, 4.0, 20.0, 20.0]], np.float32)  # exactly the anchor centred at (12, 12)
    cls_t, valid, matched, fg = model.assign_targets(anchors, [{"boxes": gt, "labels": np.array([2])}])
    iou = box_iou(gt, anchors)[0]
    assert fg[0].tolist() == (iou >= 0.5).tolist()
    assert np.flatnonzero(fg[0]).tolist() == [5]  # row 1, column 1
    assert cls_t[0, 5].tolist() == [0.0, 1.0]  # label 2 → second class column
    np.testing.assert_array_equal(matched[0, 5], gt[0])
    ignored = (iou >= 0.4) & (iou < 0.5)
    assert (~valid[0]).tolist() == ignored.tolist()
    assert cls_t[0, ~fg[0]].sum() == 0


def test_low_quality_match_keeps_a_small_object():
    model = RetinaNet(small_config(levels=(3,), anchor_sizes=(16,), anchor_scales=(1.0,), aspect_ratios=(1.0,)))
    anchors = model.anchors((32, 32), [(4, 4)])
    tiny = np.array([[10.0, 10.0, 14.0, 14.0]], np.float32)  # IoU 1/16 with its best anchor
    _, _, _, fg = model.assign_targets(anchors, [{"boxes": tiny, "labels": np.array([1])}])
    assert fg[0].sum() == 1


def test_zero_objects_give_finite_loss_and_zero_box_loss():
    model = RetinaNet(small_config())
    images = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    empty = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}
    losses = model.loss(images, [empty, empty])
    assert np.isfinite(losses["classification"].item())
    assert losses["box_regression"].item() == 0.0
    assert losses["num_foreground"] == 0
    losses["loss"].backward()
    assert all(np.all(np.isfinite(p.grad)) for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_loss_backward_reaches_every_parameter(box_loss):
    model = RetinaNet(small_config(box_loss=box_loss))
    images = np.random.default_rng(0).standard_normal((1, 64, 64, 3)).astype(np.float32)
    target = {"boxes": np.array([[8, 8, 40, 30]], np.float32), "labels": np.array([1])}
    losses = model.loss(images, [target])
    assert losses["num_foreground"] > 0 and losses["box_regression"].item() > 0
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_predict_output_format():
    model = RetinaNet(small_config(score_threshold=0.0, detections_per_image=7))
    out = model.predict(np.zeros((2, 32, 32, 3), np.float32))
    assert len(out) == 2
    for det in out:
        assert det["boxes"].shape == (7, 4) and det["boxes"].dtype == np.float32
        assert det["scores"].shape == (7,) and np.all(np.diff(det["scores"]) <= 0)
        assert set(det["labels"].tolist()) <= {1, 2}
        assert det["boxes"].min() >= 0 and det["boxes"].max() <= 32


def test_predict_without_detections_returns_typed_empty_arrays():
    model = RetinaNet(small_config())
    out = model.predict(np.zeros((1, 32, 32, 3), np.float32), score_threshold=0.999)
    assert out[0]["boxes"].shape == (0, 4) and out[0]["boxes"].dtype == np.float32
    assert out[0]["scores"].shape == (0,) and out[0]["scores"].dtype == np.float32
    assert out[0]["labels"].shape == (0,) and out[0]["labels"].dtype == np.int64


def test_matching_counts_per_level_follow_object_size():
    """A plate-sized box is matched on the finest level, a car-sized one on coarse levels."""
    model = RetinaNet(small_config(levels=(3, 4, 5, 6), anchor_sizes=(16, 32, 64, 128),
                                   aspect_ratios=(0.25, 0.5, 1.0)))
    sizes = [(32, 32), (16, 16), (8, 8), (4, 4)]
    anchors = model.anchors((256, 256), sizes)
    starts = np.cumsum([0] + [h * w * 9 for h, w in sizes])
    targets = [{"boxes": np.array([[100, 150, 132, 158]], np.float32), "labels": np.array([2])},
               {"boxes": np.array([[40, 30, 200, 180]], np.float32), "labels": np.array([1])}]
    _, _, _, fg = model.assign_targets(anchors, targets)
    level_of = np.searchsorted(starts, np.arange(len(anchors)), side="right") - 1
    plate_levels, car_levels = set(level_of[fg[0]]), set(level_of[fg[1]])
    assert plate_levels == {0}
    assert car_levels and min(car_levels) >= 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(backbone="vgg"), "backbone"),
        (dict(levels=(3, 5), anchor_sizes=(16, 32)), "consecutive"),
        (dict(levels=(3, 4), anchor_sizes=(16,)), "anchor_sizes"),
        (dict(box_loss="l2"), "box_loss"),
        (dict(fg_iou=0.3, bg_iou=0.4), "bg_iou"),
        (dict(width_multiplier=0.0), "width_multiplier"),
        (dict(width_multiplier=-1.0), "width_multiplier"),
        (dict(width_multiplier=float("nan")), "width_multiplier"),
        (dict(width_multiplier=float("inf")), "width_multiplier"),
        (dict(num_classes=0), "num_classes"),
        (dict(levels=(1, 2), anchor_sizes=(16, 32)), "levels"),
        (dict(levels=(6, 7), anchor_sizes=(16, 32)), "backbone level"),
        (dict(levels=(), anchor_sizes=()), "levels"),
        (dict(fpn_channels=0), "fpn_channels"),
        (dict(fpn_channels=7, head_norm="group"), "fpn_channels"),
        (dict(head_convs=-1), "head_convs"),
        (dict(head_norm="batch"), "head_norm"),
        (dict(anchor_sizes=(16, 0, 64)), "anchor_sizes"),
        (dict(anchor_sizes=(16, float("nan"), 64)), "anchor_sizes"),
        (dict(anchor_scales=()), "anchor_scales"),
        (dict(anchor_scales=(1.0, -2.0)), "anchor_scales"),
        (dict(aspect_ratios=(0.0,)), "aspect_ratios"),
        (dict(aspect_ratios=(float("inf"),)), "aspect_ratios"),
        (dict(fg_iou=float("nan")), "fg_iou"),
        (dict(bg_iou=-0.1), "bg_iou"),
        (dict(fg_iou=1.5), "fg_iou"),
        (dict(focal_alpha=float("nan")), "focal_alpha"),
        (dict(focal_alpha=1.5), "focal_alpha"),
        (dict(focal_gamma=-1.0), "focal_gamma"),
        (dict(focal_gamma=float("inf")), "focal_gamma"),
        (dict(smooth_l1_beta=-1.0), "smooth_l1_beta"),
        (dict(smooth_l1_beta=float("nan")), "smooth_l1_beta"),
        (dict(prior_probability=float("nan")), "prior_probability"),
        (dict(score_threshold=float("nan")), "score_threshold"),
        (dict(score_threshold=1.5), "score_threshold"),
        (dict(topk_per_level=0), "topk_per_level"),
        (dict(nms_threshold=float("nan")), "nms_threshold"),
        (dict(nms_threshold=-0.5), "nms_threshold"),
        (dict(detections_per_image=0), "detections_per_image"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_config(**overrides).validate()
    with pytest.raises(ValueError, match=message):
        RetinaNet(small_config(**overrides))


@pytest.mark.parametrize("overrides, message", [
    (dict(num_classes=2.5), "num_classes"),
    (dict(num_classes=True), "num_classes"),
    (dict(width_multiplier="1"), "width_multiplier"),
    (dict(levels=(3, 4.0, 5)), "levels"),
    (dict(topk_per_level=10.0), "topk_per_level"),
    (dict(anchor_sizes=(16, "32", 64)), "anchor_sizes"),
    (dict(fg_iou=None), "fg_iou"),
])
def test_config_of_the_wrong_type(overrides, message):
    with pytest.raises(TypeError, match=message):
        small_config(**overrides).validate()


def test_config_accepts_its_edge_values():
    config = small_config(focal_alpha=-1.0, focal_gamma=0.0, smooth_l1_beta=0.0, head_convs=0,
                          fg_iou=0.5, bg_iou=0.5, score_threshold=0.0, nms_threshold=1.0,
                          levels=[3, 4, 5], anchor_sizes=[16, 32, 64], num_classes=np.int64(3))
    assert config.validate() is config


def test_bad_targets():
    model = RetinaNet(small_config())
    images = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="targets"):
        model.loss(images, [])
    with pytest.raises(ValueError, match="labels"):
        model.loss(images, [{"boxes": np.array([[0, 0, 8, 8]], np.float32), "labels": np.array([3])}])


@pytest.mark.slow
def test_tiny_training_run_overfits_two_images():
    nn.manual_seed(0)
    rng = np.random.default_rng(0)
    images = np.full((2, 64, 64, 3), -1.0, np.float32)
    targets = []
    for i, (box, label) in enumerate([((8, 10, 40, 34), 1), ((20, 30, 56, 42), 2)]):
        x1, y1, x2, y2 = box
        images[i, y1:y2, x1:x2] = 1.0 if label == 1 else (0.5, -0.5, 1.0)
        targets.append({"boxes": np.array([box], np.float32), "labels": np.array([label])})
    images += rng.normal(0, 0.05, images.shape).astype(np.float32)
    model = RetinaNet(small_config(fpn_channels=16, width_multiplier=0.5))
    opt = nn.optim.Adam(model.parameters(), lr=3e-3)
    first, last = overfit(model, opt, 120, images, targets)
    assert last < 0.2 * first
    predictions = model.predict(images)
    for det, target in zip(predictions, targets):
        assert det["labels"][0] == target["labels"][0]
        assert box_iou(det["boxes"][:1], target["boxes"])[0, 0] > 0.7
