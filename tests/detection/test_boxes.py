"""Tests of detection.boxes: IoU, GIoU, conversions, clipping, GIoU loss."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
from nn import Tensor
from detection.boxes import (
    as_boxes, box_area, box_iou, generalized_box_iou, box_convert, clip_boxes_to_image,
    remove_small_boxes, generalized_box_iou_loss,
)
from tests.oracles import require
from tests.strategies import xyxy_boxes


# ------------------------------------------------------------ slow references
def iou_loop(boxes1, boxes2):
    """IoU by the definition, one pair at a time."""
    out = np.zeros((len(boxes1), len(boxes2)))
    for i, (ax1, ay1, ax2, ay2) in enumerate(boxes1.tolist()):
        for j, (bx1, by1, bx2, by2) in enumerate(boxes2.tolist()):
            iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
            ih = max(0.0, min(ay2, by2) - max(ay1, by1))
            inter = iw * ih
            area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
            area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
            union = area_a + area_b - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def giou_loop(boxes1, boxes2):
    iou = iou_loop(boxes1, boxes2)
    out = np.zeros_like(iou)
    for i, (ax1, ay1, ax2, ay2) in enumerate(boxes1.tolist()):
        for j, (bx1, by1, bx2, by2) in enumerate(boxes2.tolist()):
            area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
            area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
            iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
            ih = max(0.0, min(ay2, by2) - max(ay1, by1))
            union = area_a + area_b - iw * ih
            enclose = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
            out[i, j] = iou[i, j] - ((enclose - union) / enclose if enclose > 0 else 0.0)
    return out


# ----------------------------------------------------------------- hand cases
@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),          # corner overlap: 1 / (4 + 4 - 1)
    ([0, 0, 2, 2], [0, 0, 2, 2], 1.0),            # identical
    ([0, 0, 2, 2], [2, 0, 4, 2], 0.0),            # touching edges
    ([0, 0, 4, 4], [1, 1, 3, 3], 0.25),           # nested
    ([0, 0, 2, 1], [0, 0, 1, 1], 0.5),            # exactly one half
    ([0, 0, 0, 5], [0, 0, 0, 5], 0.0),            # zero-area boxes: 0, not NaN
    ([1, 1, 1, 1], [0, 0, 2, 2], 0.0),            # a point inside a box
    ([3, 3, 1, 1], [0, 0, 4, 4], 0.0),            # an inverted box is empty
])
def test_box_iou_hand_cases(a, b, expected):
    for dtype in (np.float32, np.float64):
        out = box_iou(np.array([a], dtype), np.array([b], dtype))
        assert out.dtype == dtype
        assert out.shape == (1, 1)
        assert out[0, 0] == pytest.approx(expected, rel=1e-6)


def test_box_iou_empty_inputs_keep_shape_and_dtype():
    some = np.array([[0, 0, 1, 1], [1, 1, 2, 2]], np.float32)
    assert box_iou(np.zeros((0, 4), np.float32), some).shape == (0, 2)
    assert box_iou(some, np.zeros((0, 4), np.float32)).shape == (2, 0)
    out = box_iou(np.zeros((0, 4), np.float64), np.zeros((0, 4), np.float64))
    assert out.shape == (0, 0) and out.dtype == np.float64
    assert box_iou([], some).shape == (0, 2)           # an empty list is (0, 4)
    assert box_area(np.zeros((0, 4), np.float32)).shape == (0,)
    assert generalized_box_iou(np.zeros((0, 4)), some).shape == (0, 2)


def test_integer_and_list_inputs_become_float32():
    assert box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3]]).dtype == np.float32
    assert box_area(np.array([[0, 0, 2, 3]], np.int64)).dtype == np.float32
    assert box_area(np.array([[0, 0, 2, 3]], np.int64))[0] == 6.0
    assert box_iou(Tensor(np.array([[0, 0, 1, 1]], np.float64)), [[0, 0, 1, 1]])[0, 0] == 1.0


@pytest.mark.parametrize("bad, error, words", [
    (np.zeros((3, 5)), ValueError, "shape (N, 4)"),
    (np.zeros(4), ValueError, "shape (N, 4)"),
    (np.zeros((2, 2, 4)), ValueError, "shape (N, 4)"),
    (np.array([[0, 0, np.nan, 1]]), ValueError, "non-finite"),
    (np.array([[0, 0, np.inf, 1]]), ValueError, "non-finite"),
    (np.array([["a", "b", "c", "d"]]), TypeError, "numeric"),
    (np.array([[0, 0, 1, 1]], np.complex64), TypeError, "numeric"),
])
def test_bad_boxes_raise_naming_the_argument(bad, error, words):
    good = np.zeros((1, 4))
    with pytest.raises(error, match="boxes1") as info:
        box_iou(bad, good)
    assert words in str(info.value)
    with pytest.raises(error, match="boxes2"):
        generalized_box_iou(good, bad)
    with pytest.raises(error, match="boxes"):
        box_area(bad)


def test_box_area_clamps_inverted_boxes():
    boxes = np.array([[0, 0, 2, 3], [2, 0, 0, 3], [0, 0, 0, 0]], np.float64)
    np.testing.assert_array_equal(box_area(boxes), [6.0, 0.0, 0.0])


# ---------------------------------------------------------- loop references
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_box_iou_and_giou_match_loop_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-10, 10, (7, 4))
    b = rng.uniform(-10, 10, (5, 4))
    a[:, 2:] = a[:, :2] + rng.uniform(0, 8, (7, 2))
    b[:, 2:] = b[:, :2] + rng.uniform(0, 8, (5, 2))
    b[0] = [1, 1, 1, 4]                         # an empty box
    a, b = a.astype(dtype), b.astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(box_iou(a, b), iou_loop(a, b), atol=tol)
    np.testing.assert_allclose(generalized_box_iou(a, b), giou_loop(a, b), atol=tol)
    assert generalized_box_iou(a, b).dtype == dtype


# --------------------------------------------------------------- properties
@given(xyxy_boxes(max_boxes=8), xyxy_boxes(max_boxes=8))
def test_iou_is_symmetric_and_in_unit_interval(a, b):
    iou = box_iou(a, b)
    assert iou.shape == (len(a), len(b))
    assert np.array_equal(iou, box_iou(b, a).T)
    assert np.all((iou >= 0) & (iou <= 1))
    assert not np.isnan(iou).any()


@given(xyxy_boxes(max_boxes=8, grid=True), xyxy_boxes(max_boxes=8, grid=True))
def test_iou_is_symmetric_on_grid_boxes(a, b):
    iou = box_iou(a, b)
    assert np.array_equal(iou, box_iou(b, a).T)
    assert np.all((iou >= 0) & (iou <= 1))


@given(xyxy_boxes(min_boxes=1, max_boxes=8, allow_empty=False),
       st.sampled_from([np.float32, np.float64]))
def test_iou_of_a_box_with_itself_is_one(boxes, dtype):
    boxes = boxes.astype(dtype)
    np.testing.assert_array_equal(np.diag(box_iou(boxes, boxes)), np.ones(len(boxes), dtype))
    np.testing.assert_array_equal(np.diag(generalized_box_iou(boxes, boxes)), np.ones(len(boxes)))


@given(xyxy_boxes(max_boxes=6, grid=True), xyxy_boxes(max_boxes=6, grid=True),
       st.integers(-50, 50), st.integers(-50, 50), st.sampled_from([0.25, 0.5, 2.0, 8.0]))
def test_iou_is_exactly_invariant_to_translation_and_scaling_on_the_grid(a, b, dx, dy, scale):
    # Integer shifts and power-of-two scales are exact in float64: equality is exact.
    shift = np.array([dx, dy, dx, dy], np.float64)
    expected = box_iou(a, b)
    np.testing.assert_array_equal(box_iou(a + shift, b + shift), expected)
    np.testing.assert_array_equal(box_iou(a * scale, b * scale), expected)


@given(xyxy_boxes(max_boxes=6), xyxy_boxes(max_boxes=6),
       st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.floats(1e-2, 1e2))
def test_iou_is_invariant_to_translation_and_scaling(a, b, dx, dy, scale):
    shift = np.array([dx, dy, dx, dy])
    expected = box_iou(a, b)
    moved = box_iou((a + shift) * scale, (b + shift) * scale)
    # Rounding of the moved coordinates is relative to the box sides: compare the
    # pairs whose boxes have sides well above it.
    def min_side(boxes):
        return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    big = (min_side(a)[:, None] > 1e-2) & (min_side(b)[None, :] > 1e-2)
    np.testing.assert_allclose(moved[big], expected[big], atol=1e-7)


@given(xyxy_boxes(max_boxes=8), xyxy_boxes(max_boxes=8))
def test_giou_is_in_range_and_below_iou(a, b):
    giou = generalized_box_iou(a, b)
    assert np.all(giou >= -1 - 1e-12) and np.all(giou <= 1 + 1e-12)
    assert np.all(giou <= box_iou(a, b) + 1e-12)
    assert np.allclose(giou, generalized_box_iou(b, a).T)


def test_giou_of_far_apart_boxes_approaches_minus_one():
    a = np.array([[0, 0, 1, 1]], np.float64)
    b = np.array([[1000, 1000, 1001, 1001]], np.float64)
    assert generalized_box_iou(a, b)[0, 0] < -0.999


# ---------------------------------------------------------------- box_convert
def test_box_convert_hand_case():
    xyxy = np.array([[1, 2, 5, 8]], np.float32)
    np.testing.assert_array_equal(box_convert(xyxy, "xyxy", "xywh"), [[1, 2, 4, 6]])
    np.testing.assert_array_equal(box_convert(xyxy, "xyxy", "cxcywh"), [[3, 5, 4, 6]])
    np.testing.assert_array_equal(box_convert([[3, 5, 4, 6]], "cxcywh", "xyxy"), xyxy)
    np.testing.assert_array_equal(box_convert([[1, 2, 4, 6]], "xywh", "cxcywh"), [[3, 5, 4, 6]])
    assert box_convert(xyxy, "xyxy", "xyxy") is not xyxy
    assert box_convert(xyxy.astype(np.float64), "xyxy", "xywh").dtype == np.float64
    assert box_convert(np.zeros((0, 4)), "xywh", "xyxy").shape == (0, 4)


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
@given(boxes=xyxy_boxes(max_boxes=8))
def test_box_convert_round_trip(fmt, boxes):
    back = box_convert(box_convert(boxes, "xyxy", fmt), fmt, "xyxy")
    np.testing.assert_allclose(back, boxes, atol=1e-10)


def test_box_convert_rejects_unknown_formats():
    with pytest.raises(ValueError, match="in_fmt"):
        box_convert(np.zeros((1, 4)), "yxyx", "xyxy")
    with pytest.raises(ValueError, match="out_fmt"):
        box_convert(np.zeros((1, 4)), "xyxy", "XYWH")


# ------------------------------------------------------- clip and small boxes
def test_clip_boxes_to_image():
    boxes = np.array([[-5, -5, 20, 30], [2, 3, 4, 5], [50, 50, 60, 60]], np.float32)
    out = clip_boxes_to_image(boxes, (10, 15))       # H = 10, W = 15
    np.testing.assert_array_equal(out, [[0, 0, 15, 10], [2, 3, 4, 5], [15, 10, 15, 10]])
    assert out.dtype == np.float32
    assert boxes[0, 0] == -5                           # input untouched
    assert clip_boxes_to_image(np.zeros((0, 4)), (4, 4)).shape == (0, 4)


@pytest.mark.parametrize("size", [(10,), (0, 5), (5, -1), (np.nan, 4), "ab"])
def test_clip_boxes_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="size"):
        clip_boxes_to_image(np.zeros((1, 4)), size)


def test_remove_small_boxes():
    boxes = np.array([[0, 0, 1, 5], [0, 0, 5, 5], [0, 0, 2, 2], [0, 0, 5, 1.999]], np.float64)
    keep = remove_small_boxes(boxes, 2)
    np.testing.assert_array_equal(keep, [1, 2])
    assert keep.dtype == np.int64
    assert remove_small_boxes(np.zeros((0, 4)), 1).dtype == np.int64
    with pytest.raises(ValueError, match="min_size"):
        remove_small_boxes(boxes, -1)
    with pytest.raises(TypeError, match="min_size"):
        remove_small_boxes(boxes, "2")


# --------------------------------------------------------- GIoU loss (Tensors)
def _random_box_pairs(rng, count, dtype=np.float64):
    """Box pairs with distinct coordinates (no max/min ties), some overlapping."""
    first = rng.uniform(0, 10, (count, 2))
    a = np.concatenate([first, first + rng.uniform(1, 5, (count, 2))], axis=1)
    b = a + rng.uniform(-3, 3, (count, 4))
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 0.5)
    b[0] = a[0] + [20, 20, 21, 22]                  # a disjoint pair
    return a.astype(dtype), b.astype(dtype)


def test_giou_loss_gradcheck():
    rng = np.random.default_rng(0)
    a, b = _random_box_pairs(rng, 6)
    ta = Tensor(a, requires_grad=True)
    tb = Tensor(b, requires_grad=True)
    assert nn.gradcheck(lambda x, y: generalized_box_iou_loss(x, y), (ta, tb))
    assert nn.gradcheck(lambda x, y: generalized_box_iou_loss(x, y, reduction="mean"), (ta, tb))


def test_giou_loss_value_is_one_minus_giou():
    rng = np.random.default_rng(1)
    a, b = _random_box_pairs(rng, 8)
    loss = generalized_box_iou_loss(Tensor(a), Tensor(b))
    assert loss.shape == (8,)
    expected = 1 - np.diag(generalized_box_iou(a, b))
    np.testing.assert_allclose(loss.data, expected, atol=1e-6)
    same = generalized_box_iou_loss(Tensor(a), Tensor(a))
    np.testing.assert_allclose(same.data, 0.0, atol=1e-6)


def test_giou_loss_reductions_batch_shape_and_empty():
    rng = np.random.default_rng(2)
    a, b = _random_box_pairs(rng, 6)
    none = generalized_box_iou_loss(a.reshape(2, 3, 4), b.reshape(2, 3, 4))
    assert none.shape == (2, 3)
    total = generalized_box_iou_loss(a, b, reduction="sum").item()
    mean = generalized_box_iou_loss(a, b, reduction="mean").item()
    assert total == pytest.approx(none.data.sum())
    assert mean == pytest.approx(none.data.mean())
    empty = Tensor(np.zeros((0, 4)), requires_grad=True)
    loss = generalized_box_iou_loss(empty, np.zeros((0, 4)), reduction="mean")
    assert loss.item() == 0.0
    loss.backward()
    assert empty.grad.shape == (0, 4)
    assert generalized_box_iou_loss(a.astype(np.float32), b.astype(np.float32)).dtype == np.float32


def test_giou_loss_errors():
    with pytest.raises(ValueError, match="same shape"):
        generalized_box_iou_loss(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="reduction"):
        generalized_box_iou_loss(np.zeros((2, 4)), np.zeros((2, 4)), reduction="avg")
    with pytest.raises(ValueError, match="boxes1"):
        generalized_box_iou_loss(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        generalized_box_iou_loss(np.full((1, 4), np.nan), np.zeros((1, 4)))


@pytest.mark.oracle
def test_giou_loss_matches_torchvision_formula_in_torch():
    torch = require("torch")

    def torchvision_giou_loss(boxes1, boxes2, eps=1e-7):
        # torchvision.ops.generalized_box_iou_loss (reduction="none"), in torch ops.
        x1, y1, x2, y2 = boxes1.unbind(dim=-1)
        x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
        xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)
        xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
        intsctk = torch.zeros_like(x1)
        mask = (ykis2 > ykis1) & (xkis2 > xkis1)
        intsctk[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
        unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
        iouk = intsctk / (unionk + eps)
        xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
        xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
        area_c = (xc2 - xc1) * (yc2 - yc1)
        return 1 - (iouk - ((area_c - unionk) / (area_c + eps)))

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        a, b = _random_box_pairs(rng, 16, dtype)
        ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        expected = torchvision_giou_loss(ta, tb)
        weights = rng.standard_normal(16).astype(dtype)
        (expected * torch.tensor(weights)).sum().backward()
        oa, ob = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
        ours = generalized_box_iou_loss(oa, ob)
        (ours * weights).sum().backward()
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(ours.data, expected.detach().numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(oa.grad, ta.grad.numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(ob.grad, tb.grad.numpy(), rtol=tol, atol=tol)


def test_as_boxes_does_not_copy_float_arrays():
    boxes = np.zeros((3, 4), np.float32)
    assert as_boxes(boxes) is boxes


# ------------------------------------------------- huge coordinates (no overflow)
# float32 holds up to 3.4e38: a box of side 2e19 has an area of 4e38, and the sum of
# two areas overflows from about 1.3e19. float64 overflows its products from ~1e154.
# Powers of two keep the scaled unit boxes exact (2**63 ~ 9.2e18, 2**1020 ~ 1.1e307).
HUGE = [(np.float32, 2.0 ** 63), (np.float32, 2.0 ** 125), (np.float64, 2.0 ** 700),
        (np.float64, 2.0 ** 1020)]


def _huge_boxes(dtype, scale):
    # 0 and 1 identical, 2 half of 0 (IoU 0.5), 3 disjoint from all
    unit = np.array([[1, 1, 3, 3], [1, 1, 3, 3], [1, 1, 2, 3], [-4, -4, -2, -2]], np.float64)
    return (unit * scale).astype(dtype)


@pytest.mark.parametrize("dtype, scale", HUGE)
def test_iou_and_giou_of_huge_boxes_are_exact_and_keep_dtype(dtype, scale):
    boxes = _huge_boxes(dtype, scale)
    iou = box_iou(boxes, boxes)
    giou = generalized_box_iou(boxes, boxes)
    assert iou.dtype == dtype and giou.dtype == dtype
    assert not np.isnan(giou).any()
    np.testing.assert_allclose(iou, iou_loop(boxes / scale, boxes / scale), rtol=1e-6)
    np.testing.assert_allclose(giou, giou_loop(boxes / scale, boxes / scale), rtol=1e-6,
                               atol=1e-6)
    assert iou[0, 1] == 1 and giou[0, 1] == 1 and iou[0, 2] == 0.5 and giou[0, 2] == 0.5
    assert giou[0, 3] == pytest.approx(-(49 - 8) / 49, rel=1e-6)  # enclosing box 7 x 7


def test_box_area_does_not_overflow_in_an_intermediate():
    # width 6e38 does not fit float32, the area 1.2e9 does
    boxes = np.array([[-3e38, -1e-30, 3e38, 1e-30], [0, 0, 1.8e19, 1.8e19]], np.float32)
    area = box_area(boxes)
    assert area.dtype == np.float32
    np.testing.assert_allclose(area, [1.2e9, 3.24e38], rtol=1e-6)
    assert box_area(np.array([[0, 0, 1e20, 1e20]], np.float32))[0] == np.inf  # 1e40
    area64 = box_area(np.array([[0, 0, 1e300, 1e-200], [0, 0, 1e200, 1e200]]))
    np.testing.assert_allclose(area64, [1e100, np.inf])


@pytest.mark.parametrize("dtype, scale", HUGE)
def test_giou_loss_of_huge_boxes_is_finite_with_finite_gradients(dtype, scale):
    boxes = _huge_boxes(dtype, scale)
    a = Tensor(boxes[[0, 0, 0]], requires_grad=True)
    b = Tensor(boxes[[1, 2, 3]], requires_grad=True)
    loss = generalized_box_iou_loss(a, b)
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.data, [0.0, 0.5, 1 + (49 - 8) / 49], rtol=1e-5, atol=1e-6)
    loss.sum().backward()
    assert a.grad.dtype == dtype and np.isfinite(a.grad).all() and np.isfinite(b.grad).all()
    small = Tensor(_huge_boxes(np.float64, 1.0)[[0, 0, 0]], requires_grad=True)
    generalized_box_iou_loss(small, _huge_boxes(np.float64, 1.0)[[1, 2, 3]]).sum().backward()
    # the gradient scales as 1 / scale (the loss is scale-invariant up to eps, whose
    # gradient of order eps / area is all there is for the identical pair)
    np.testing.assert_allclose(a.grad.astype(np.float64) * scale, small.grad, rtol=1e-4,
                               atol=1e-7)


def test_box_convert_center_of_huge_boxes_is_finite():
    boxes = np.array([[2e38, 1e38, 3e38, 3e38]], np.float32)   # x1 + x2 overflows float32
    out = box_convert(boxes, "xyxy", "cxcywh")
    np.testing.assert_allclose(out, [[2.5e38, 2e38, 1e38, 2e38]], rtol=1e-6)
    np.testing.assert_allclose(box_convert(out, "cxcywh", "xyxy"), boxes, rtol=1e-6)
