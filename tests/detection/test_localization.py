"""Tests of detection.localization: the IoU of box pairs, box codes, window sampling and
cropping, the two-headed model (shapes, what each regime trains), slot matching,
overfitting a few windows, bad input."""
import time

import numpy as np
import pytest

import nn
from detection.boxes import box_iou
from detection.localization import (Localizer, compute_features, crop_windows, decode_boxes,
                                    encode_boxes, evaluate_localizer, evaluate_slots,
                                    match_slots, normalize_windows, paired_box_iou, predict,
                                    sample_windows, sort_by_position, window_boxes)


# ------------------------------------------------------------------------------- IoU
def test_paired_iou_by_hand():
    boxes1 = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 4, 2], [1, 1, 1, 5],
                       [0, 0, 10, 10]], np.float32)
    boxes2 = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [2, 0, 6, 2], [0, 0, 3, 3],
                       [2, 3, 7, 5]], np.float32)
    # overlap 1 of union 4 + 4 - 1; the same box; disjoint; half of each (2·2 of 8 + 8 - 4);
    # a zero-width box; a box inside another (10 of 100).
    expected = [1 / 7, 1.0, 0.0, 4 / 12, 0.0, 10 / 100]
    iou = paired_box_iou(boxes1, boxes2)
    assert iou.dtype == np.float32 and iou.shape == (6,)
    np.testing.assert_allclose(iou, expected, rtol=1e-6)


def test_paired_iou_is_the_diagonal_of_box_iou():
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 50, (40, 2, 2))
    boxes1 = np.concatenate([corners[:, 0], corners[:, 0] + rng.uniform(0, 30, (40, 2))], 1)
    boxes2 = np.concatenate([corners[:, 1], corners[:, 1] + rng.uniform(0, 30, (40, 2))], 1)
    np.testing.assert_allclose(paired_box_iou(boxes1, boxes2), np.diag(box_iou(boxes1, boxes2)),
                               rtol=1e-12)
    assert paired_box_iou(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)


@pytest.mark.parametrize("boxes1, boxes2, message", [
    (np.zeros((2, 4)), np.zeros((3, 4)), "as many boxes"),
    (np.zeros((2, 3)), np.zeros((2, 3)), "boxes1"),
    (np.array([[0, 0, np.nan, 1]]), np.zeros((1, 4)), "finite"),
])
def test_paired_iou_bad_input(boxes1, boxes2, message):
    with pytest.raises(ValueError, match=message):
        paired_box_iou(boxes1, boxes2)


# ---------------------------------------------------------------------------- box codes
def test_box_codes_by_hand():
    box = np.array([[16.0, 8.0, 48.0, 24.0]])  # in a 64-pixel window
    np.testing.assert_allclose(encode_boxes(box, 64), [[0.5, 0.25, 0.5, 0.25]])
    np.testing.assert_allclose(encode_boxes(box, 64, "xywh"), [[0.25, 0.125, 0.5, 0.25]])
    np.testing.assert_allclose(decode_boxes(np.array([[0.5, 0.5, 1.0, 1.0]]), 48),
                               [[0, 0, 48, 48]])


@pytest.mark.parametrize("encoding", ["cxcywh", "xywh"])
def test_box_codes_round_trip(encoding):
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 40, (5, 3, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(1, 20, (5, 3, 2))], -1)  # (5, 3, 4)
    codes = encode_boxes(boxes, 48, encoding)
    assert codes.shape == (5, 3, 4) and codes.dtype == np.float32
    np.testing.assert_allclose(decode_boxes(codes, 48, encoding), boxes, atol=1e-4)
    np.testing.assert_allclose(encode_boxes(decode_boxes(codes, 48, encoding), 48, encoding),
                               codes, atol=1e-6)
    # Codes of the same box in windows of other sizes are the same numbers.
    np.testing.assert_allclose(encode_boxes(boxes * 2, 96, encoding), codes, atol=1e-6)


@pytest.mark.parametrize("call, error, message", [
    (lambda: encode_boxes(np.zeros((2, 4)), 64, "xyxy"), ValueError, "encoding"),
    (lambda: encode_boxes(np.zeros((2, 3)), 64), ValueError, r"\(\.\.\., 4\)"),
    (lambda: encode_boxes(np.zeros((2, 4)), 0), ValueError, "window_size"),
    (lambda: encode_boxes([[0, 0, 1, 1]], 64), TypeError, "boxes"),
    (lambda: decode_boxes(np.zeros((2, 5)), 64), ValueError, "codes"),
    (lambda: decode_boxes(np.full((1, 4), np.inf), 64), ValueError, "finite"),
])
def test_box_codes_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --------------------------------------------------------------------------------- data
def test_sort_by_position():
    boxes = np.array([[[30, 0, 40, 10], [0, 20, 10, 30], [0, 0, 10, 10], [12, 5, 20, 9]]])
    np.testing.assert_array_equal(sort_by_position(boxes), [[2, 1, 3, 0]])


def _row_of_objects():
    """Five 10x20 objects 4 px apart in a row, a large object, a small one inside it, one
    touching the image border."""
    row = np.array([[40 + 14 * i, 40, 50 + 14 * i, 60] for i in range(5)], np.float32)
    others = np.array([[20, 100, 100, 150], [50, 120, 60, 130], [0, 170, 20, 190]], np.float32)
    return np.concatenate([row, others])


def _check_windows(boxes, windows, members, image_size, num_objects, size_ratio=0.5,
                   max_cut=0.5):
    """Every rule of ``sample_windows``, checked window by window."""
    height, width = image_size
    longer = (boxes[:, 2:] - boxes[:, :2]).max(axis=1)
    for window, group in zip(windows, members):
        x0, y0, x1, y1 = window
        assert x1 - x0 == pytest.approx(y1 - y0, rel=1e-5)            # square
        assert x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height  # inside the image
        assert len(set(group.tolist())) == num_objects
        centres = (boxes[group, 0] + boxes[group, 2]) / 2
        assert list(centres) == sorted(centres)                      # left to right
        for index, box in enumerate(boxes):
            inter = max(min(x1, box[2]) - max(x0, box[0]), 0) \
                * max(min(y1, box[3]) - max(y0, box[1]), 0)
            shown = inter / ((box[2] - box[0]) * (box[3] - box[1]))
            if index in group:
                assert shown == pytest.approx(1.0)                  # whole
                assert box[0] > 0 and box[1] > 0 and box[2] < width and box[3] < height
            elif longer[index] >= size_ratio * longer[group].min():
                assert shown <= max_cut + 1e-6                       # no second object


@pytest.mark.parametrize("num_objects", [1, 2, 3])
def test_sampled_windows_follow_the_rules(num_objects):
    boxes = _row_of_objects()
    found = []
    for seed in range(20):
        windows, members = sample_windows(boxes, (200, 160), seed, num_objects=num_objects)
        assert windows.dtype == np.float32 and members.dtype == np.int64
        assert members.shape == (len(windows), num_objects)
        _check_windows(boxes, windows, members, (200, 160), num_objects)
        found += [tuple(g) for g in members.tolist()]
    # The object at the border (7) is never an object of a window; groups are runs of
    # neighbours in the row, or the large object, or the small one inside it (the large
    # one is then cut by the window).
    assert all(7 not in group for group in found)
    expected = {1: {(i,) for i in range(7)},
                2: {(i, i + 1) for i in range(4)},
                3: {(i, i + 1, i + 2) for i in range(3)}}[num_objects]
    assert set(found) == expected


def test_object_positions_in_windows_vary():
    boxes = np.array([[60, 60, 80, 80]], np.float32)
    codes = []
    for seed in range(30):
        windows, members = sample_windows(boxes, (200, 200), seed, scale_range=(1.5, 2.5))
        codes.append(encode_boxes(window_boxes(boxes[members], windows, 64), 64)[0, 0])
    codes = np.array(codes)
    assert codes[:, 0].std() > 0.05 and codes[:, 1].std() > 0.05  # centre
    assert codes[:, 2].min() >= 1 / 2.5 - 1e-6 and codes[:, 2].max() <= 1 / 1.5 + 1e-6


def test_sample_windows_is_seeded_and_handles_no_objects():
    boxes = _row_of_objects()
    a = sample_windows(boxes, (200, 160), 5)
    b = sample_windows(boxes, (200, 160), np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for empty in (np.zeros((0, 4)), boxes[:1]):
        windows, members = sample_windows(empty, (200, 160), 0, num_objects=2)
        assert windows.shape == (0, 4) and members.shape == (0, 2)
        assert windows.dtype == np.float32 and members.dtype == np.int64


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(num_objects=0), ValueError, "num_objects"),
    (dict(scale_range=(0.5, 2.0)), ValueError, "scale_range"),
    (dict(scale_range=(2.0, 1.5)), ValueError, "scale_range"),
    (dict(scale_range=2.0), ValueError, "scale_range"),
    (dict(size_ratio=0.0), ValueError, "size_ratio"),
    (dict(max_cut=1.0), ValueError, "max_cut"),
    (dict(image_size=(0, 10)), ValueError, "image_size"),
    (dict(attempts=1.5), TypeError, "attempts"),
])
def test_sample_windows_bad_input(kwargs, error, message):
    arguments = dict(boxes=_row_of_objects(), image_size=(200, 160), generator=0)
    with pytest.raises(error, match=message):
        sample_windows(**{**arguments, **kwargs})


def test_crop_windows_copies_pixels_and_resamples():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    windows = np.array([[8, 4, 40, 36], [0, 0, 50, 50]], np.float32)
    crops = crop_windows(image, windows, 32)
    assert crops.shape == (2, 32, 32, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[0], image[4:36, 8:40])  # one pixel per pixel
    # A 2x larger window: each output pixel averages a 2x2 block (samples at its pixel
    # centres, the adaptive grid).
    half = crop_windows(image.astype(np.float32), np.array([[8, 4, 40, 36]]), 16)[0]
    blocks = image[4:36, 8:40].astype(np.float32).reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(half, blocks, rtol=1e-5)
    assert crop_windows(image, np.zeros((0, 4)), 32).shape == (0, 32, 32, 3)


def test_window_boxes_by_hand():
    windows = np.array([[10, 20, 50, 60]], np.float32)         # side 40 -> 80 pixels: x2
    boxes = np.array([[[20, 30, 30, 50], [10, 20, 50, 60]]], np.float32)
    np.testing.assert_allclose(window_boxes(boxes, windows, 80),
                               [[[20, 20, 40, 60], [0, 0, 80, 80]]])
    with pytest.raises(ValueError, match="boxes must have shape"):
        window_boxes(boxes[0], windows, 80)


def test_crop_bad_input():
    with pytest.raises(ValueError, match="image must be 3-D"):
        crop_windows(np.zeros((4, 4)), np.zeros((1, 4)), 8)
    with pytest.raises(ValueError, match="size"):
        crop_windows(np.zeros((4, 4, 3)), np.zeros((1, 4)), 0)


# -------------------------------------------------------------------------------- model
@pytest.mark.parametrize("slots", [1, 3])
def test_model_shapes(slots):
    model = Localizer(num_classes=5, image_size=32, num_slots=slots, widths=(4, 4, 8, 8), hidden=16)
    cls_logits, box_codes = model(nn.Tensor(np.zeros((2, 32, 32, 3), np.float32)))
    assert cls_logits.shape == (2, slots, 5) and box_codes.shape == (2, slots, 4)
    windows = np.zeros((6, 32, 32, 3), np.uint8)
    prediction = predict(model, windows, batch_size=4)
    assert prediction["boxes"].shape == (6, slots, 4)
    assert prediction["labels"].shape == (6, slots) and prediction["labels"].dtype == np.int64
    np.testing.assert_allclose(prediction["probabilities"].sum(-1), 1, rtol=1e-5)
    assert model.training  # predict restores the mode
    rebuilt = Localizer(**model.config())
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize("call, error, message", [
    (lambda: Localizer(3, image_size=36), ValueError, "multiple of the stride 8"),
    (lambda: Localizer(0), ValueError, "num_classes"),
    (lambda: Localizer(3, widths=(8, 8, 8)), ValueError, "widths"),
    (lambda: Localizer(3, stride=2), ValueError, "stride"),
    (lambda: Localizer(3, image_size=32)(nn.Tensor(np.zeros((1, 48, 48, 3), np.float32))),
     ValueError, r"\(N, 32, 32, 3\)"),
    (lambda: Localizer(3).set_regime("train"), ValueError, "regime"),
    (lambda: Localizer(3, image_size=32, num_slots=2).loss(
        np.zeros((2, 32, 32, 3), np.uint8), np.zeros((2, 1), np.int64),
        np.zeros((2, 1, 4), np.float32)), ValueError, "2 object"),
])
def test_model_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def _batch(rng, count=8, size=32, slots=1, classes=4):
    windows = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, (count, slots))
    codes = rng.uniform(0.2, 0.8, (count, slots, 4)).astype(np.float32)
    return windows, labels, codes


def _one_step(model, regime, batch):
    """One Adam step of ``regime``; the parameters and buffers before and after."""
    parameters = model.set_regime(regime)
    model.zero_grad()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    optimizer = nn.optim.Adam(parameters, lr=1e-2)
    model.train()
    losses = model.loss(*batch)
    optimizer.zero_grad()
    losses["loss"].backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    return losses, changed, {n for n, p in model.named_parameters() if p.grad is not None}


def test_what_each_regime_trains():
    rng = np.random.default_rng(0)
    model = Localizer(4, image_size=32, widths=(4, 4, 8, 8), hidden=16)
    batch = _batch(rng)
    names = set(model.state_dict())
    head = {k for k in names if k.startswith("box_head.")}
    statistics = {k for k in names if "running" in k or "num_batches" in k}
    # (b) a frozen classifier: only the box head moves; batch-norm statistics stay.
    losses, changed, with_grad = _one_step(model, "localize", batch)
    assert set(losses) == {"loss", "box", "giou"}
    assert changed == head and with_grad == head
    assert model.trunk[1].training is False and model.box_head.training is True
    # (a) the classifier: everything but the box head (statistics included).
    losses, changed, with_grad = _one_step(model, "classify", batch)
    assert set(losses) == {"loss", "cls"}
    assert changed == names - head and not with_grad & head
    # (c) end to end: everything; the loss is cls + box_weight · box.
    losses, changed, with_grad = _one_step(model, "finetune", batch)
    assert changed == names and with_grad == names - statistics
    assert losses["loss"].item() == pytest.approx(
        losses["cls"] + 20.0 * losses["box"] + 2.0 * losses["giou"], rel=1e-5)
    assert model.trunk[1].training is True


def test_frozen_features_do_not_change_in_localize():
    rng = np.random.default_rng(1)
    model = Localizer(4, image_size=32, widths=(4, 4, 8, 8), hidden=16)
    windows = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    model.set_regime("localize")
    model.eval()
    before = model.features(nn.Tensor(normalize_windows(windows))).data
    for _ in range(3):
        _one_step(model, "localize", _batch(rng))
    model.eval()
    np.testing.assert_array_equal(model.features(nn.Tensor(normalize_windows(windows))).data,
                                  before)


def test_the_box_head_trains_on_precomputed_features_alike():
    rng = np.random.default_rng(2)
    model = Localizer(4, image_size=32, widths=(4, 4, 8, 8), hidden=16)
    windows, labels, codes = _batch(rng, count=6)
    model.set_regime("localize")
    model.train()
    features = compute_features(model, windows, batch_size=4)
    assert features.shape == (6, 16) and features.dtype == np.float32
    from_windows = model.loss(windows, labels, codes)
    from_features = model.head_loss(features, labels, codes)
    assert from_features["loss"].item() == pytest.approx(from_windows["loss"].item(), rel=1e-5)
    from_features["loss"].backward()
    assert all(p.grad is not None for p in model.box_head.parameters())
    assert compute_features(model, windows[:0]).shape == (0, 16)


@pytest.mark.parametrize("encoding", ["cxcywh", "xywh"])
def test_box_losses_vanish_for_a_perfect_box(encoding):
    codes = np.array([[[0.5, 0.4, 0.3, 0.6]], [[0.2, 0.3, 0.5, 0.4]]], np.float32)
    model = Localizer(3, image_size=32, widths=(4, 4, 8, 8), hidden=16, encoding=encoding)
    model.set_regime("localize")
    windows = np.zeros((2, 32, 32, 3), np.uint8)
    labels = np.zeros((2, 1), np.int64)
    _constant_boxes(model, codes[0])
    first = model.loss(windows[:1], labels[:1], codes[:1])
    assert first["box"] == pytest.approx(0, abs=1e-7)
    assert first["giou"] == pytest.approx(0, abs=1e-6)
    # The second box against the first, computed apart: smooth L1 of the codes (beta
    # 0.02) and 1 - GIoU of the decoded boxes.
    second = model.loss(windows[1:], labels[1:], codes[1:])
    difference = np.abs(codes[0, 0] - codes[1, 0])
    smooth_l1 = np.where(difference < 0.02, 0.5 * difference ** 2 / 0.02, difference - 0.01)
    assert second["box"] == pytest.approx(smooth_l1.mean(), rel=1e-5)
    (ax1, ay1, ax2, ay2), = decode_boxes(codes[0], 1, encoding)
    (bx1, by1, bx2, by2), = decode_boxes(codes[1], 1, encoding)
    inter = max(min(ax2, bx2) - max(ax1, bx1), 0) * max(min(ay2, by2) - max(ay1, by1), 0)
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    assert second["giou"] == pytest.approx(1 - inter / union + (hull - union) / hull, rel=1e-4)


def test_the_giou_loss_is_bounded_for_inverted_boxes():
    # Negative predicted sizes are empty boxes: the GIoU loss stays in [0, 2].
    model = Localizer(3, image_size=32, num_slots=2, widths=(4, 4, 8, 8), hidden=16)
    model.set_regime("localize")
    windows = np.zeros((1, 32, 32, 3), np.uint8)
    labels = np.zeros((1, 2), np.int64)
    codes = np.array([[[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.2, 0.2]]], np.float32)
    _constant_boxes(model, [[0.5, 0.5, -3.0, 0.4], [0.3, 0.3, -1.0, -2.0]])
    losses = model.loss(windows, labels, codes)
    assert 1.0 <= losses["giou"] <= 2.0
    losses["loss"].backward()
    assert np.all(np.isfinite(model.box_head[-1].bias.grad))


def _drawn_windows(rng, count, size=32):
    """Windows of one bright rectangle on a dark background; class = which colour."""
    windows = rng.integers(0, 40, (count, size, size, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, count)
    boxes = np.zeros((count, 4), np.float32)
    for i in range(count):
        w, h = rng.integers(8, 20, 2)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        windows[i, y:y + h, x:x + w, labels[i]] = 230
        boxes[i] = (x, y, x + w, y + h)
    return windows, labels, boxes


def test_overfitting_a_few_windows():
    rng = np.random.default_rng(0)
    windows, labels, boxes = _drawn_windows(rng, 8)
    codes = encode_boxes(boxes, 32)
    model = Localizer(3, image_size=32, widths=(8, 8, 16, 16), hidden=32, stride=4)
    parameters = model.set_regime("finetune")
    optimizer = nn.optim.Adam(parameters, lr=3e-3)
    start = time.perf_counter()
    before = evaluate_localizer(model, windows, labels, boxes)
    for _ in range(250):
        losses = model.loss(windows, labels, codes)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    after = evaluate_localizer(model, windows, labels, boxes)
    assert before["mean_iou"] < 0.5
    assert after["accuracy"] == 1.0 and after["mean_iou"] > 0.85, after
    assert after["iou_50"] == 1.0 and after["both"] == 1.0
    assert time.perf_counter() - start < 30


def _constant_boxes(model, codes):
    """Make the box head predict ``codes`` (ndarray[num_slots, 4]) for every window."""
    last = model.box_head[-1]
    last.weight.data[...] = 0
    last.bias.data[...] = np.asarray(codes, np.float32).reshape(-1)
    return model


def test_evaluate_localizer_counts():
    model = _constant_boxes(Localizer(3, image_size=32, widths=(4, 4, 8, 8), hidden=16),
                            [[0.5, 0.5, 0.4, 0.6]])
    windows = np.zeros((4, 32, 32, 3), np.uint8)
    prediction = predict(model, windows)
    boxes = prediction["boxes"][:, 0].copy()
    labels = prediction["labels"][:, 0].copy()
    boxes[2:] += 1000.0             # two boxes far off: IoU 0
    labels[1] = (labels[1] + 1) % 3  # one wrong class
    result = evaluate_localizer(model, windows, labels, boxes)
    assert result["mean_iou"] == pytest.approx(0.5) and result["iou_50"] == 0.5
    assert result["accuracy"] == 0.75 and result["both"] == 0.25 and result["count"] == 4
    with pytest.raises(ValueError, match="one entry per window"):
        evaluate_localizer(model, windows, labels[:3], boxes)
    with pytest.raises(ValueError, match="one-slot"):
        evaluate_localizer(Localizer(3, image_size=32, num_slots=2), windows, labels, boxes)


# ------------------------------------------------------------------------------ slots
def test_match_slots_by_hand():
    a, b, c = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]
    nowhere = [100, 100, 110, 110]
    predicted = np.array([[a, b],         # two objects, both found
                          [a, a],         # one object, two slots on it: a duplicate
                          [a, nowhere],   # one object, the other slot empty
                          [a, c]],        # three objects, the middle one missed
                         np.float32)
    boxes = [np.array([[a, b]], np.float32), np.array([[a]], np.float32),
             np.array([[a]], np.float32), np.array([[a, b, c]], np.float32)]
    results = [match_slots(predicted[i:i + 1], boxes[i]) for i in range(4)]
    assert results[0]["found"].tolist() == [[True, True]]
    assert results[0]["duplicate"].tolist() == [[False, False]]
    assert results[1]["duplicate"].tolist() == [[False, True]]
    assert results[1]["empty"].tolist() == [[False, False]]
    assert results[2]["empty"].tolist() == [[False, True]]
    assert results[3]["found"].tolist() == [[True, False, True]]
    assert results[3]["ious"].shape == (1, 2, 3)
    np.testing.assert_allclose(results[3]["ious"][0], [[1, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="same W"):
        match_slots(predicted, boxes[3])
    with pytest.raises(ValueError, match="iou_threshold"):
        match_slots(predicted[:1], boxes[0], iou_threshold=1.5)


def test_evaluate_slots_on_fewer_and_more_objects():
    model = _constant_boxes(Localizer(3, image_size=32, num_slots=2, widths=(4, 4, 8, 8),
                                      hidden=16), [[0.25, 0.5, 0.3, 0.5], [0.75, 0.5, 0.3, 0.5]])
    windows = np.zeros((3, 32, 32, 3), np.uint8)
    prediction = predict(model, windows)["boxes"]  # the same two boxes for every window
    labels = predict(model, windows)["labels"]
    exact = evaluate_slots(model, windows, labels, prediction)
    assert exact["recall"] == 1.0 and exact["precision"] == 1.0 and exact["all_found"] == 1.0
    assert exact["mean_iou"] == pytest.approx(1.0) and exact["accuracy"] == 1.0
    fewer = evaluate_slots(model, windows, labels[:, :1], prediction[:, :1])
    assert fewer["recall"] == 1.0 and fewer["precision"] == 0.5
    assert fewer["empty_slots"] == 0.5 and fewer["duplicate_slots"] == 0.0
    scores = predict(model, windows)["scores"]  # slot 2 is the empty one
    assert fewer["empty_slot_score"] == pytest.approx(scores[:, 1].mean())
    assert fewer["object_slot_score"] == pytest.approx(scores[:, 0].mean())
    assert "mean_iou" not in fewer
    far = prediction[:, :1] + 100.0
    more = evaluate_slots(model, windows, np.concatenate([labels, labels[:, :1]], 1),
                          np.concatenate([prediction, far], 1))
    assert more["recall"] == pytest.approx(2 / 3) and more["all_found"] == 0.0
    with pytest.raises(ValueError, match="labels must have shape"):
        evaluate_slots(model, windows, labels[:2], prediction)
