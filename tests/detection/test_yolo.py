"""Tests of detection.yolo: the loss against a per-cell loop, its gradient, the target
encoding and decoding, inference on hand-made outputs, the model, and overfitting."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nn
from detection.boxes import box_iou
from detection.yolo import (
    YOLO, YOLOConfig, assign_predictors, decode_output, encode_targets, postprocess, yolo_loss,
)
from tests.detection.scenes import overfit, rendered_pair


# ------------------------------------------------------------------ loop reference

def iou_loop(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = w * h if w > 0 and h > 0 else 0.0
    union = (max(a[2] - a[0], 0) * max(a[3] - a[1], 0) + max(b[2] - b[0], 0)
             * max(b[3] - b[1], 0) - inter)
    return inter / union if union > 0 else 0.0


def yolo_loss_loop(output, targets, image_size, boxes_per_cell, num_classes,
                   lambda_coord=5.0, lambda_noobj=0.5):
    """The paper's loss, one image, one cell and one predictor at a time."""
    height, width = image_size
    n, sy, sx, _ = output.shape
    terms = dict(coord=0.0, size=0.0, object=0.0, no_object=0.0, cls=0.0)
    for i in range(n):
        # Which object each cell stands for: the largest box (first on ties).
        owner = {}
        for g, (box, label) in enumerate(zip(targets[i]["boxes"], targets[i]["labels"])):
            x1, x2 = min(max(box[0], 0), width), min(max(box[2], 0), width)
            y1, y2 = min(max(box[1], 0), height), min(max(box[3], 0), height)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            col = min(math.floor(cx * sx / width), sx - 1)
            row = min(math.floor(cy * sy / height), sy - 1)
            area = (x2 - x1) * (y2 - y1)
            if (row, col) not in owner or area > owner[(row, col)]["area"]:
                owner[(row, col)] = dict(area=area, box=(x1, y1, x2, y2), label=int(label),
                                         x=cx * sx / width - col, y=cy * sy / height - row,
                                         sw=math.sqrt((x2 - x1) / width),
                                         sh=math.sqrt((y2 - y1) / height))
        for row in range(sy):
            for col in range(sx):
                cell = output[i, row, col]
                preds = [cell[5 * j:5 * j + 5] for j in range(boxes_per_cell)]
                obj = owner.get((row, col))
                if obj is None:
                    for p in preds:
                        terms["no_object"] += lambda_noobj * p[4] ** 2
                    continue
                ious = []
                for px, py, pw, ph, _ in preds:
                    cx, cy = (col + px) * width / sx, (row + py) * height / sy
                    w, h = pw ** 2 * width, ph ** 2 * height
                    ious.append(iou_loop((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
                                         obj["box"]))
                r = ious.index(max(ious))
                for j, (px, py, pw, ph, pc) in enumerate(preds):
                    if j == r:
                        dx, dy = px - obj["x"], py - obj["y"]
                        dw, dh = pw - obj["sw"], ph - obj["sh"]
                        terms["coord"] += lambda_coord * (dx ** 2 + dy ** 2)
                        terms["size"] += lambda_coord * (dw ** 2 + dh ** 2)
                        terms["object"] += (pc - ious[r]) ** 2
                    else:
                        terms["no_object"] += lambda_noobj * pc ** 2
                for c in range(num_classes):
                    target = 1.0 if obj["label"] == c + 1 else 0.0
                    terms["cls"] += (cell[5 * boxes_per_cell + c] - target) ** 2
    return {k: v / n for k, v in terms.items()}


def random_case(seed, num_images=3, grid=(4, 5), image_size=(64, 80), b=2, c=3):
    """Random outputs and objects: shared cells (a second object centred in an object's
    cell, sometimes of equal area), boxes reaching outside the image, an empty image,
    predictions near the objects so that the IoUs are not all 0."""
    rng = np.random.default_rng(seed)
    height, width = image_size
    targets = []
    for i in range(num_images):
        g = 0 if i == 1 else int(rng.integers(1, 7))
        centre = rng.uniform(0, 1, (g, 2)) * [width, height]
        size = rng.uniform(2, 40, (g, 2))
        if g >= 2:
            centre[1] = centre[0] + rng.uniform(-1, 1, 2)  # same cell (most of the time)
            if rng.random() < 0.5:
                size[1] = size[0][::-1]  # equal area: the first one wins
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        targets.append({"boxes": boxes, "labels": rng.integers(1, c + 1, g)})
    sy, sx = grid
    out = rng.normal(0, 0.5, (num_images, sy, sx, 5 * b + c))
    boxes_part = out[..., :5 * b].reshape(num_images, sy, sx, b, 5)
    boxes_part[..., :2] = rng.uniform(0, 1, (num_images, sy, sx, b, 2))
    boxes_part[..., 2:4] = rng.uniform(0.05, 0.6, (num_images, sy, sx, b, 2))
    return out, targets


@pytest.mark.parametrize("seed", range(12))
def test_loss_equals_per_cell_loop(seed):
    b, c, grid, size = 2 + seed % 2, 3, (4, 5), (64, 80)
    output, targets = random_case(seed, grid=grid, image_size=size, b=b, c=c)
    encoded = encode_targets(targets, grid, size, c)
    responsible, iou = assign_predictors(output, encoded, b)
    losses = yolo_loss(nn.Tensor(output), encoded, responsible, iou, 5.0, 0.5)
    reference = yolo_loss_loop(output, targets, size, b, c)
    for ours, theirs in (("coord", "coord"), ("size", "size"), ("object", "object"),
                         ("no_object", "no_object"), ("class", "cls")):
        assert losses[ours].item() == pytest.approx(reference[theirs], rel=1e-10, abs=1e-12)
    assert losses["loss"].item() == pytest.approx(sum(reference.values()), rel=1e-10)
    # The cases do hold shared cells and overlapping predictions.
    assert encoded.dropped.sum() >= 1 or seed % 4 == 3
    assert iou[responsible].max() > 0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.integers(1, 3), st.integers(1, 6))
def test_loss_equals_per_cell_loop_hypothesis(seed, b, c, s):
    output, targets = random_case(seed, num_images=2, grid=(s, s + 1), image_size=(48, 50),
                                  b=b, c=c)
    encoded = encode_targets(targets, (s, s + 1), (48, 50), c)
    responsible, iou = assign_predictors(output, encoded, b)
    losses = yolo_loss(nn.Tensor(output), encoded, responsible, iou, 2.0, 0.25)
    reference = yolo_loss_loop(output, targets, (48, 50), b, c, 2.0, 0.25)
    assert losses["loss"].item() == pytest.approx(sum(reference.values()), rel=1e-10, abs=1e-12)


def test_loss_float32_close_to_float64():
    output, targets = random_case(3)
    encoded = encode_targets(targets, (4, 5), (64, 80), 3)
    r64, iou64 = assign_predictors(output, encoded, 2)
    r32, iou32 = assign_predictors(output.astype(np.float32), encoded, 2)
    assert np.array_equal(r64, r32) and iou32.dtype == np.float32
    l64 = yolo_loss(nn.Tensor(output), encoded, r64, iou64)["loss"]
    l32 = yolo_loss(nn.Tensor(output.astype(np.float32)), encoded, r32, iou32)["loss"]
    assert l32.dtype == np.float32
    assert l32.item() == pytest.approx(l64.item(), rel=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_loss_gradcheck(seed):
    output, targets = random_case(seed, num_images=2, grid=(3, 4), image_size=(48, 64))
    encoded = encode_targets(targets, (3, 4), (48, 64), 3)
    responsible, iou = assign_predictors(output, encoded, 2)  # held fixed: constants
    x = nn.Tensor(output, requires_grad=True)

    def total(t):
        return yolo_loss(t, encoded, responsible, iou, 5.0, 0.5)["loss"]

    assert nn.gradcheck(total, (x,), eps=1e-6, atol=1e-7, rtol=1e-5)
    # Every term has a gradient of its own.
    for key in ("coord", "size", "object", "no_object", "class"):
        x = nn.Tensor(output, requires_grad=True)
        assert nn.gradcheck(lambda t: yolo_loss(t, encoded, responsible, iou)[key], (x,),
                            atol=1e-7, rtol=1e-5)


def test_loss_gradient_by_hand():
    # One cell, one object, B = 1, C = 1: every derivative is written out.
    targets = [{"boxes": np.array([[8.0, 8.0, 24.0, 24.0]]), "labels": np.array([1])}]
    encoded = encode_targets(targets, (1, 1), (32, 32), 1)
    output = np.array([0.4, 0.6, 0.5, 0.7, 0.3, 0.9]).reshape(1, 1, 1, 6)
    responsible, iou = assign_predictors(output, encoded, 1)
    x = nn.Tensor(output, requires_grad=True)
    yolo_loss(x, encoded, responsible, iou, 5.0, 0.5)["loss"].backward()
    sw = math.sqrt(0.5)
    expected = [5 * 2 * (0.4 - 0.5), 5 * 2 * (0.6 - 0.5), 5 * 2 * (0.5 - sw), 5 * 2 * (0.7 - sw),
                2 * (0.3 - iou[0, 0, 0, 0]), 2 * (0.9 - 1.0)]
    np.testing.assert_allclose(x.grad.reshape(-1), expected, rtol=1e-12)


# ----------------------------------------------------------------- target encoding

def test_encode_targets_by_hand():
    # 64 x 64 image, 4 x 4 grid of 16-px cells.
    boxes = np.array([
        [4, 4, 20, 12],     # centre (12, 8): cell (0, 0), area 128
        [10, 6, 14, 10],    # centre (12, 8) too, area 16: dropped (the smaller)
        [40, 40, 72, 56],   # clipped to [40, 40, 64, 56], centre (52, 48): cell (3, 3), area 384
        [56, 56, 64, 64],   # centre (60, 60): cell (3, 3), area 64: dropped
        [16, 16, 24, 24],   # centre (20, 20): cell (1, 1), area 64
        [18, 18, 26, 26],   # centre (22, 22): cell (1, 1), area 64: a tie, the first one wins
        [64, 20, 64, 28],   # centre (64, 24) on the right edge: the last column, cell (1, 3)
    ], np.float64)
    labels = np.array([1, 2, 2, 1, 2, 1, 1])
    t = encode_targets([{"boxes": boxes, "labels": labels}, {"boxes": [], "labels": []}],
                       (4, 4), (64, 64), 2)
    assert t.object_mask.shape == (2, 4, 4) and t.classes.dtype == np.float32
    assert sorted(zip(*np.nonzero(t.object_mask[0]))) == [(0, 0), (1, 1), (1, 3), (3, 3)]
    np.testing.assert_array_equal(t.dropped, [3, 0])
    assert not t.object_mask[1].any() and t.labels[1].max() == 0 and t.classes[1].max() == 0
    np.testing.assert_allclose(t.coords[0, 0, 0], [12 / 16, 8 / 16, math.sqrt(16 / 64),
                                                   math.sqrt(8 / 64)], rtol=1e-12)
    assert t.labels[0, 0, 0] == 1 and t.labels[0, 1, 1] == 2  # the tie: the first box
    np.testing.assert_array_equal(t.boxes[0, 1, 1], [16, 16, 24, 24])
    np.testing.assert_array_equal(t.boxes[0, 3, 3], [40, 40, 64, 56])  # clipped
    np.testing.assert_allclose(t.coords[0, 3, 3], [52 / 16 - 3, 48 / 16 - 3, math.sqrt(24 / 64),
                                                   math.sqrt(16 / 64)], rtol=1e-12)
    np.testing.assert_array_equal(t.classes[0, 3, 3], [0, 1])
    np.testing.assert_allclose(t.coords[0, 1, 3], [1.0, 0.5, 0.0, math.sqrt(8 / 64)], rtol=1e-12)
    assert t.image_size == (64, 64)


@pytest.mark.parametrize("seed", range(5))
def test_encode_decode_round_trip(seed):
    # A perfect output written from the target tensor (the object's coordinates in one
    # predictor, confidence 1, its class) decodes to the objects the grid keeps, and
    # postprocess returns exactly those with score 1.
    rng = np.random.default_rng(seed)
    height, width, sy, sx, b, c = 96, 128, 6, 8, 2, 3
    targets = []
    for _ in range(3):
        g = int(rng.integers(0, 8))
        xy = rng.uniform(0, [width - 10, height - 10], (g, 2))
        wh = rng.uniform(3, 60, (g, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [width, height])], axis=1)
        targets.append({"boxes": boxes, "labels": rng.integers(1, c + 1, g)})
    t = encode_targets(targets, (sy, sx), (height, width), c)
    slot = int(rng.integers(0, b))
    output = np.zeros((3, sy, sx, 5 * b + c), np.float64)
    output[..., 5 * slot:5 * slot + 4] = t.coords
    output[..., 5 * slot + 4] = t.object_mask
    output[..., 5 * b:] = t.classes
    boxes, confidence, probs = decode_output(output, (height, width), b)
    assert boxes.shape == (3, sy, sx, b, 4) and confidence.shape == (3, sy, sx, b)
    assert probs.shape == (3, sy, sx, c)
    np.testing.assert_allclose(boxes[..., slot, :][t.object_mask], t.boxes[t.object_mask],
                               atol=1e-9)
    # Every kept object is in the cell of its own centre: x, y within [0, 1].
    kept = t.coords[t.object_mask]
    assert np.all((kept[:, :2] >= 0) & (kept[:, :2] <= 1))
    detections = postprocess(output, (height, width), b, score_threshold=0.5, nms_threshold=1.0)
    for i, d in enumerate(detections):
        mask = t.object_mask[i]
        order = np.lexsort(t.boxes[i][mask].T[::-1])
        mine = np.lexsort(d["boxes"].T[::-1])
        np.testing.assert_allclose(d["boxes"][mine], t.boxes[i][mask][order], atol=1e-4)
        np.testing.assert_array_equal(d["labels"][mine], t.labels[i][mask][order])
        np.testing.assert_array_equal(d["scores"], np.ones(mask.sum(), np.float32))
        assert len(d["boxes"]) == len(targets[i]["labels"]) - t.dropped[i]


# ------------------------------------------------------------------------ inference

def test_postprocess_hand_made_output():
    # 64 x 64 image, 2 x 2 grid (32-px cells), B = 2, C = 2.
    out = np.zeros((1, 2, 2, 12), np.float32)
    # Cell (0, 0): predictor 0 a 20 x 20 box centred at (16, 16), confidence 0.9;
    # predictor 1 almost the same box, confidence 0.5. Class probabilities 0.8 / 0.2.
    side = math.sqrt(20 / 64)
    out[0, 0, 0, 0:5] = [0.5, 0.5, side, side, 0.9]
    out[0, 0, 0, 5:10] = [0.55, 0.5, side, side, 0.5]
    out[0, 0, 0, 10:12] = [0.8, 0.2]
    # Cell (1, 1): a negative confidence (clipped to 0) and probabilities out of [0, 1].
    out[0, 1, 1, 0:5] = [0.5, 0.5, side, side, -0.7]
    out[0, 1, 1, 10:12] = [1.5, -0.3]
    # Cell (0, 1): a box reaching outside the image, confidence 0.6, class 2 only.
    out[0, 0, 1, 0:5] = [0.9, 0.1, math.sqrt(0.5), math.sqrt(0.25), 0.6]
    out[0, 0, 1, 10:12] = [0.0, 1.0]
    [d] = postprocess(out, (64, 64), 2, score_threshold=0.15, nms_threshold=0.5)
    # Candidates: 0.72 (class 1) and 0.18 (class 2) from (0,0)/0; 0.40 and 0.10 from
    # (0,0)/1; 0.6 (class 2) from (0,1). The per-class NMS removes the 0.40 duplicate;
    # 0.10 is under the threshold; class 2 keeps 0.6 and 0.18 (IoU 0 between them).
    np.testing.assert_allclose(d["scores"], [0.72, 0.6, 0.18], rtol=1e-6)
    np.testing.assert_array_equal(d["labels"], [1, 2, 2])
    np.testing.assert_allclose(d["boxes"][0], [6, 6, 26, 26], atol=1e-4)
    # (0, 1): centre (32 + 0.9·32, 0.1·32) = (60.8, 3.2), 32 x 16: clipped to the image.
    np.testing.assert_allclose(d["boxes"][1], [44.8, 0, 64, 11.2], atol=1e-4)
    assert d["scores"].dtype == np.float32 and d["labels"].dtype == np.int64
    # With NMS off (threshold 1) the duplicate comes back; a high threshold leaves nothing.
    [d] = postprocess(out, (64, 64), 2, score_threshold=0.15, nms_threshold=1.0)
    np.testing.assert_allclose(d["scores"], [0.72, 0.6, 0.4, 0.18], rtol=1e-6)
    [d] = postprocess(out, (64, 64), 2, score_threshold=0.9)
    assert d["boxes"].shape == (0, 4) and d["scores"].shape == (0,) and d["labels"].shape == (0,)
    # At most detections_per_image, the best ones.
    [d] = postprocess(out, (64, 64), 2, score_threshold=0.0, detections_per_image=2)
    np.testing.assert_allclose(d["scores"], [0.72, 0.6], rtol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_postprocess_batch_equals_image_by_image(seed):
    # One NMS over the batch must give each image exactly its own detections.
    rng = np.random.default_rng(seed)
    out = rng.uniform(-0.2, 1.0, (4, 3, 3, 2 * 5 + 2)).astype(np.float32)
    out[1] = out[0]  # two identical images: no suppression across images
    for limit in (100, 3):
        batch = postprocess(out, (48, 48), 2, 0.1, 0.4, detections_per_image=limit)
        assert len(batch) == 4
        for i in range(4):
            [alone] = postprocess(out[i:i + 1], (48, 48), 2, 0.1, 0.4, detections_per_image=limit)
            for key in ("boxes", "scores", "labels"):
                np.testing.assert_array_equal(batch[i][key], alone[key])
            assert len(batch[i]["scores"]) <= limit
        assert len(batch[0]["scores"]) > 3 or limit == 3
    np.testing.assert_array_equal(batch[0]["boxes"], batch[1]["boxes"])
    assert postprocess(np.zeros((0, 3, 3, 12), np.float32), (48, 48), 2) == []


# ---------------------------------------------------------------------------- model

def test_model_shapes_loss_and_predict():
    nn.manual_seed(0)
    model = YOLO(YOLOConfig(num_classes=3, boxes_per_cell=2, width_multiplier=0.5,
                            head_channels=16))
    images = np.random.default_rng(0).normal(size=(2, 64, 96, 3)).astype(np.float32)
    output = model(images)
    assert output.shape == (2, 4, 6, 13) and output.dtype == np.float32
    targets = [{"boxes": np.array([[4, 8, 40, 36], [50, 10, 60, 20]], np.float32),
                "labels": np.array([1, 3])},
               {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}]
    losses = model.loss(images, targets)
    assert set(losses) == {"coord", "size", "object", "no_object", "class", "loss",
                           "num_objects", "dropped"}
    assert losses["num_objects"] == 2 and losses["dropped"] == 0
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    predictions = model.predict(images, score_threshold=0.0)
    assert len(predictions) == 2 and predictions[0]["boxes"].shape[1] == 4
    assert len(predictions[0]["boxes"]) <= 100
    coarse = YOLO(YOLOConfig(stride=32, width_multiplier=0.5, head_channels=16))
    assert coarse(images).shape == (2, 2, 3, 12)


def test_initial_output_is_centred_boxes_without_objects():
    nn.manual_seed(0)
    model = YOLO(YOLOConfig(num_classes=2, boxes_per_cell=3))
    model.eval()
    out = model(np.zeros((1, 64, 64, 3), np.float32)).data
    boxes = out[..., :15].reshape(1, 4, 4, 3, 5)
    np.testing.assert_allclose(boxes[..., 0:2], 0.5, atol=0.1)
    np.testing.assert_allclose(boxes[..., 2], np.broadcast_to([0.2, 0.35, 0.5], (1, 4, 4, 3)),
                               atol=0.1)
    np.testing.assert_allclose(boxes[..., 4], 0.0, atol=0.1)
    np.testing.assert_allclose(out[..., 15:], 0.5, atol=0.1)


def test_bad_input_raises_clear_errors():
    model = YOLO(YOLOConfig(width_multiplier=0.5, head_channels=8))
    images = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="multiples of the stride 16"):
        model(np.zeros((1, 40, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        model(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="1 images but 2 targets"):
        model.loss(images, [{"boxes": [], "labels": []}] * 2)
    with pytest.raises(ValueError, match=r"labels'\] must lie in 1..2"):
        model.loss(images, [{"boxes": [[0, 0, 4, 4]], "labels": [3]}])
    with pytest.raises(ValueError, match="x2 >= x1"):
        model.loss(images, [{"boxes": [[5, 0, 4, 4]], "labels": [1]}])
    with pytest.raises(ValueError, match=r"shape \(G, 4\)"):
        model.loss(images, [{"boxes": [[0, 0, 4]], "labels": [1]}])
    with pytest.raises(TypeError, match="list of dicts"):
        model.loss(images, {"boxes": [], "labels": []})
    with pytest.raises(ValueError, match="stride must be 16 or 32"):
        YOLOConfig(stride=8).validate()
    with pytest.raises(ValueError, match="boxes_per_cell must be a positive int"):
        YOLOConfig(boxes_per_cell=0).validate()
    with pytest.raises(ValueError, match="output must have shape"):
        decode_output(np.zeros((1, 2, 2, 10)), (32, 32), 2)  # no class column
    t = encode_targets([{"boxes": [], "labels": []}], (2, 2), (32, 32), 2)
    with pytest.raises(ValueError, match="does not match the targets' grid"):
        assign_predictors(np.zeros((1, 3, 2, 12)), t, 2)


# ---------------------------------------------------------------------- overfitting


@pytest.mark.slow
def test_yolo_overfits_two_images():
    images, targets = rendered_pair(0)
    encoded = encode_targets(targets, (8, 8), (128, 128), 2)
    assert encoded.object_mask.sum() >= 2 and encoded.dropped.sum() == 0
    nn.manual_seed(0)
    model = YOLO(YOLOConfig(width_multiplier=0.5, head_channels=32))
    optimizer = nn.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    first, last = overfit(model, optimizer, 150, images, targets)
    assert last < 0.1 * first
    for p, t in zip(model.predict(images), targets):
        for box, label in zip(t["boxes"], t["labels"]):
            good = (p["labels"] == label) & (p["scores"] >= 0.5)
            assert good.any(), (box, label, p)
            assert box_iou(box[None], p["boxes"][good]).max() >= 0.5, (box, label, p)
