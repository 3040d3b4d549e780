"""Tests of detection.box_coder.BoxCoder."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import nn
from nn import Tensor
from detection.box_coder import BoxCoder, DEFAULT_BBOX_XFORM_CLIP
from tests.oracles import require
from tests.strategies import xyxy_boxes


def encode_loop(gt, proposals, weights):
    """Faster R-CNN's parameterisation, one box at a time."""
    wx, wy, ww, wh = weights
    out = []
    for (gx1, gy1, gx2, gy2), (px1, py1, px2, py2) in zip(gt.tolist(), proposals.tolist()):
        pw, ph = px2 - px1, py2 - py1
        gw, gh = gx2 - gx1, gy2 - gy1
        pcx, pcy = px1 + pw / 2, py1 + ph / 2
        gcx, gcy = gx1 + gw / 2, gy1 + gh / 2
        out.append([wx * (gcx - pcx) / pw, wy * (gcy - pcy) / ph,
                    ww * math.log(gw / pw), wh * math.log(gh / ph)])
    return np.array(out).reshape(-1, 4)


def positive_boxes(rng, count, dtype=np.float64):
    corners = rng.uniform(-50, 50, (count, 2))
    return np.concatenate([corners, corners + rng.uniform(1, 40, (count, 2))], 1).astype(dtype)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encode_matches_loop_reference(weights, dtype):
    rng = np.random.default_rng(0)
    gt, proposals = positive_boxes(rng, 9, dtype), positive_boxes(rng, 9, dtype)
    deltas = BoxCoder(weights).encode(gt, proposals)
    assert deltas.dtype == dtype and deltas.shape == (9, 4)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(deltas, encode_loop(gt, proposals, weights), rtol=tol, atol=tol)


def test_hand_case():
    coder = BoxCoder()
    proposal = np.array([[0.0, 0.0, 10.0, 20.0]])
    gt = np.array([[5.0, 0.0, 15.0, 40.0]])       # center moves by (5, 10), height doubles
    np.testing.assert_allclose(coder.encode(gt, proposal), [[0.5, 0.5, 0.0, math.log(2)]])
    np.testing.assert_allclose(coder.decode(np.zeros((1, 4)), proposal), proposal)
    weighted = BoxCoder((10, 10, 5, 5)).encode(gt, proposal)
    np.testing.assert_allclose(weighted, [[5.0, 5.0, 0.0, 5 * math.log(2)]])


@given(xyxy_boxes(max_boxes=10, allow_empty=False), xyxy_boxes(max_boxes=10, allow_empty=False),
       st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 7.0)]))
def test_decode_inverts_encode(gt, proposals, weights):
    count = min(len(gt), len(proposals))
    gt, proposals = gt[:count], proposals[:count]
    coder = BoxCoder(weights, bbox_xform_clip=1e9)        # no clamp: exact inverse
    back = coder.decode(coder.encode(gt, proposals), proposals)
    scale = np.abs(np.concatenate([gt, proposals])).max(initial=1.0)
    np.testing.assert_allclose(back, gt, rtol=1e-9, atol=1e-9 * scale)


def test_default_clip_is_within_log_1000_over_16_and_clamps_growth():
    coder = BoxCoder()
    assert coder.bbox_xform_clip == pytest.approx(math.log(1000 / 16))
    assert DEFAULT_BBOX_XFORM_CLIP == pytest.approx(math.log(62.5))
    box = np.array([[0.0, 0.0, 2.0, 4.0]])
    out = coder.decode(np.array([[0.0, 0.0, 50.0, 50.0]]), box)   # exp(50) would overflow float32
    np.testing.assert_allclose(out[0, 2] - out[0, 0], 2 * 62.5)
    np.testing.assert_allclose(out[0, 3] - out[0, 1], 4 * 62.5)
    huge = np.array([[0, 0, 1e4, 1e4]], np.float32)
    assert np.isfinite(coder.decode(huge, box.astype(np.float32))).all()


def test_decode_per_class_deltas():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    rng = np.random.default_rng(1)
    boxes = positive_boxes(rng, 5)
    deltas = rng.normal(size=(5, 3 * 4))
    out = coder.decode(deltas, boxes)
    assert out.shape == (5, 12)
    for k in range(3):
        group = slice(4 * k, 4 * k + 4)
        np.testing.assert_allclose(out[:, group], coder.decode(deltas[:, group], boxes))


def test_empty_inputs_and_dtypes():
    coder = BoxCoder()
    assert coder.encode(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)
    out = coder.decode(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    assert out.shape == (0, 4) and out.dtype == np.float32
    assert coder.decode(np.zeros((0, 8)), np.zeros((0, 4))).shape == (0, 8)
    assert coder.decode_tensor(Tensor(np.zeros((0, 4))), np.zeros((0, 4))).shape == (0, 4)
    box = np.array([[0, 0, 4, 4]], np.float32)
    assert coder.decode(np.zeros((1, 4), np.float32), box).dtype == np.float32
    assert coder.decode(np.zeros((1, 4), np.float64), box.astype(np.float64)).dtype == np.float64


def test_errors():
    coder = BoxCoder()
    with pytest.raises(ValueError, match="same shape"):
        coder.encode(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="proposals must have positive width"):
        coder.encode(np.array([[0, 0, 1, 1.0]]), np.array([[0, 0, 0, 1.0]]))
    with pytest.raises(ValueError, match="reference_boxes must have positive width"):
        coder.encode(np.array([[0, 0, 1, 0.0]]), np.array([[0, 0, 1, 1.0]]))
    with pytest.raises(ValueError, match="deltas must have shape"):
        coder.decode(np.zeros((2, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="rows"):
        coder.decode(np.zeros((3, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        coder.decode(np.full((1, 4), np.nan), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="proposals"):
        coder.encode(np.zeros((1, 4)), np.full((1, 4), np.inf))
    with pytest.raises(ValueError, match="weights"):
        BoxCoder((1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="weights"):
        BoxCoder((1.0, 1.0, 1.0))


def test_decode_tensor_matches_decode_and_gradchecks():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    rng = np.random.default_rng(2)
    boxes = positive_boxes(rng, 4)
    deltas = rng.normal(size=(4, 8))
    out = coder.decode_tensor(Tensor(deltas), boxes)
    np.testing.assert_allclose(out.data, coder.decode(deltas, boxes), rtol=1e-12)
    tensor = Tensor(deltas, requires_grad=True)
    assert nn.gradcheck(lambda d: coder.decode_tensor(d, boxes), (tensor,))


def test_decode_tensor_has_no_gradient_through_the_clamp():
    coder = BoxCoder()
    deltas = Tensor(np.array([[0.1, 0.2, 10.0, -0.3]]), requires_grad=True)
    out = coder.decode_tensor(deltas, np.array([[0.0, 0.0, 2.0, 2.0]]))
    out.sum().backward()
    assert deltas.grad[0, 2] == 0.0        # dw clamped: no gradient
    assert deltas.grad[0, 0] != 0.0
    out = coder.decode_tensor(Tensor(np.zeros((1, 4), np.float32)), np.array([[0, 0, 2, 2.0]]))
    assert out.dtype == np.float32


@pytest.mark.oracle
def test_matches_torchvision_box_coder_in_torch():
    torch = require("torch")

    def tv_encode(reference_boxes, proposals, weights):
        # torchvision.models.detection._utils.encode_boxes
        wx, wy, ww, wh = weights
        ex_widths = proposals[:, 2] - proposals[:, 0]
        ex_heights = proposals[:, 3] - proposals[:, 1]
        ex_ctr_x = proposals[:, 0] + 0.5 * ex_widths
        ex_ctr_y = proposals[:, 1] + 0.5 * ex_heights
        gt_widths = reference_boxes[:, 2] - reference_boxes[:, 0]
        gt_heights = reference_boxes[:, 3] - reference_boxes[:, 1]
        gt_ctr_x = reference_boxes[:, 0] + 0.5 * gt_widths
        gt_ctr_y = reference_boxes[:, 1] + 0.5 * gt_heights
        return torch.stack([wx * (gt_ctr_x - ex_ctr_x) / ex_widths,
                            wy * (gt_ctr_y - ex_ctr_y) / ex_heights,
                            ww * torch.log(gt_widths / ex_widths),
                            wh * torch.log(gt_heights / ex_heights)], 1)

    def tv_decode(rel_codes, boxes, weights, clip):
        # torchvision.models.detection._utils.BoxCoder.decode_single
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = weights
        dx, dy = rel_codes[:, 0::4] / wx, rel_codes[:, 1::4] / wy
        dw = torch.clamp(rel_codes[:, 2::4] / ww, max=clip)
        dh = torch.clamp(rel_codes[:, 3::4] / wh, max=clip)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]
        c_to_c_h = torch.tensor(0.5, dtype=pred_ctr_y.dtype) * pred_h
        c_to_c_w = torch.tensor(0.5, dtype=pred_ctr_x.dtype) * pred_w
        return torch.stack((pred_ctr_x - c_to_c_w, pred_ctr_y - c_to_c_h,
                            pred_ctr_x + c_to_c_w, pred_ctr_y + c_to_c_h), dim=2).flatten(1)

    rng = np.random.default_rng(3)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        coder = BoxCoder(weights)
        gt, proposals = positive_boxes(rng, 32, np.float32), positive_boxes(rng, 32, np.float32)
        expected = tv_encode(torch.from_numpy(gt), torch.from_numpy(proposals), weights).numpy()
        np.testing.assert_allclose(coder.encode(gt, proposals), expected, rtol=1e-5, atol=1e-6)
        deltas = (rng.normal(size=(32, 8)) * 3).astype(np.float32)
        expected = tv_decode(torch.from_numpy(deltas), torch.from_numpy(proposals), weights,
                             coder.bbox_xform_clip).numpy()
        np.testing.assert_allclose(coder.decode(deltas, proposals), expected, rtol=1e-6, atol=1e-4)
