"""Tests of nn.functional.roi_align / roi_pool and the RoIAlign / RoIPool modules.

The slow references below transcribe torchvision's definitions one sample (or one
cell) at a time, in the feature map's dtype as torchvision's C++ kernels compute.
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nn
from nn.functional.roi import roi_align, roi_pool, roi_align_forward, roi_align_backward
from tests.oracles import require
from tests.strategies import roi_boxes

FLT_MAX = float(np.finfo(np.float32).max)


# ------------------------------------------------------------ slow references
def bilinear_taps(y, x, height, width):
    """The (h, w, weight) cells one RoIAlign sample reads (torchvision's rules)."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx),
            (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)]


def roi_align_samples(roi, output_size, spatial_scale, sampling_ratio, aligned, dtype):
    """For each bin (i, j): the list of sample points and the divisor ``count``.

    Arithmetic in ``dtype`` (numpy scalars), as torchvision's kernel in type T.
    """
    t = np.dtype(dtype).type
    oh, ow = output_size
    _, x1, y1, x2, y2 = roi
    offset = t(0.5) if aligned else t(0.0)
    start_x = t(x1) * t(spatial_scale) - offset
    start_y = t(y1) * t(spatial_scale) - offset
    roi_w = (t(x2) * t(spatial_scale) - offset) - start_x
    roi_h = (t(y2) * t(spatial_scale) - offset) - start_y
    if not aligned:
        roi_w = max(roi_w, t(1.0))
        roi_h = max(roi_h, t(1.0))
    bin_h, bin_w = roi_h / t(oh), roi_w / t(ow)
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / t(oh)))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / t(ow)))
    count = max(grid_h * grid_w, 1)
    bins = {}
    for i in range(oh):
        for j in range(ow):
            points = []
            for a in range(grid_h):
                y = start_y + t(i) * bin_h + t(a + 0.5) * bin_h / t(grid_h)
                for b in range(grid_w):
                    x = start_x + t(j) * bin_w + t(b + 0.5) * bin_w / t(grid_w)
                    points.append((float(y), float(x)))
            bins[i, j] = points
    return bins, count


def loop_roi_align(x, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoIAlign one box, one bin, one sample at a time."""
    n, height, width, channels = x.shape
    oh, ow = output_size
    out = np.zeros((len(rois), oh, ow, channels), dtype=x.dtype)
    for k, roi in enumerate(rois):
        image = x[int(roi[0])].astype(np.float64)
        bins, count = roi_align_samples(roi, output_size, spatial_scale, sampling_ratio,
                                        aligned, x.dtype)
        for (i, j), points in bins.items():
            total = np.zeros(channels)
            for y, xx in points:
                for h, w, weight in bilinear_taps(y, xx, height, width):
                    total += weight * image[h, w]
            out[k, i, j] = total / count
    return out


def loop_roi_align_grad_x(x, rois, grad, output_size, spatial_scale, sampling_ratio, aligned):
    """d(sum(grad · roi_align(x)))/dx: each sample sends weight·grad to its cells."""
    n, height, width, channels = x.shape
    result = np.zeros(x.shape)
    for k, roi in enumerate(rois):
        b = int(roi[0])
        bins, count = roi_align_samples(roi, output_size, spatial_scale, sampling_ratio,
                                        aligned, x.dtype)
        for (i, j), points in bins.items():
            for y, xx in points:
                for h, w, weight in bilinear_taps(y, xx, height, width):
                    result[b, h, w] += weight * grad[k, i, j] / count
    return result


def round_half_away(v):
    """C's round() on a Python float."""
    magnitude = abs(v)
    whole = math.floor(magnitude)
    if magnitude - whole >= 0.5:
        whole += 1
    return int(math.copysign(whole, v))


def loop_roi_pool(x, rois, output_size, spatial_scale=1.0):
    """RoIPool one box, one bin, one cell at a time; returns (out, argmax)."""
    t = x.dtype.type
    n, height, width, channels = x.shape
    oh, ow = output_size
    out = np.zeros((len(rois), oh, ow, channels), dtype=x.dtype)
    argmax = np.full(out.shape, -1, dtype=np.int64)
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        start_w = round_half_away(float(t(x1) * t(spatial_scale)))
        start_h = round_half_away(float(t(y1) * t(spatial_scale)))
        end_w = round_half_away(float(t(x2) * t(spatial_scale)))
        end_h = round_half_away(float(t(y2) * t(spatial_scale)))
        roi_w = max(end_w - start_w + 1, 1)
        roi_h = max(end_h - start_h + 1, 1)
        bin_h, bin_w = t(roi_h) / t(oh), t(roi_w) / t(ow)
        for i in range(oh):
            for j in range(ow):
                h0 = min(max(int(math.floor(t(i) * bin_h)) + start_h, 0), height)
                h1 = min(max(int(math.ceil(t(i + 1) * bin_h)) + start_h, 0), height)
                w0 = min(max(int(math.floor(t(j) * bin_w)) + start_w, 0), width)
                w1 = min(max(int(math.ceil(t(j + 1) * bin_w)) + start_w, 0), width)
                if h1 <= h0 or w1 <= w0:
                    continue
                best = np.full(channels, -FLT_MAX)
                where = np.full(channels, -1)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        value = x[int(b), h, w].astype(np.float64)
                        better = value > best
                        best = np.where(better, value, best)
                        where = np.where(better, h * width + w, where)
                out[k, i, j] = best
                argmax[k, i, j] = where
    return out, argmax


def loop_roi_pool_grad_x(x, rois, grad, argmax):
    n, height, width, channels = x.shape
    result = np.zeros(x.shape)
    for k, roi in enumerate(rois):
        for i in range(grad.shape[1]):
            for j in range(grad.shape[2]):
                for c in range(channels):
                    cell = argmax[k, i, j, c]
                    if cell >= 0:
                        result[int(roi[0]), cell // width, cell % width, c] += grad[k, i, j, c]
    return result


# -------------------------------------------------------------------- helpers
def random_rois(rng, num_images, height, width, count, spatial_scale=1.0, overhang=1.5):
    lo = np.array([-overhang, -overhang])
    hi = np.array([width + overhang, height + overhang])
    a = rng.uniform(lo, hi, size=(count, 2))
    b = rng.uniform(lo, hi, size=(count, 2))
    corners = np.concatenate([np.minimum(a, b), np.maximum(a, b)], axis=1) / spatial_scale
    index = rng.integers(0, num_images, size=(count, 1))
    return np.concatenate([index, corners], axis=1)


def tolerance(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}


def distance_to_kinks(rois, output_size, spatial_scale, sampling_ratio, aligned):
    """Smallest distance of any quantity at which RoIAlign is not smooth.

    The output is piecewise smooth in the box: it kinks where a sample crosses an
    integer coordinate (a new cell, the border clamps at 0 / size-1, the zero
    region beyond -1 / size), where ``aligned=False`` clamps a length to 1, and
    where the adaptive grid ``ceil(length / bins)`` jumps.
    """
    worst = np.inf
    for roi in rois:
        bins, _ = roi_align_samples(roi, output_size, spatial_scale, sampling_ratio,
                                    aligned, np.float64)
        for points in bins.values():
            for y, x in points:
                worst = min(worst, abs(y - round(y)), abs(x - round(x)))
        lengths = (roi[3:5] - roi[1:3]) * spatial_scale
        if not aligned:
            worst = min(worst, float(np.min(np.abs(lengths - 1))))
        if sampling_ratio <= 0:
            ratios = lengths / np.array(output_size[::-1])
            worst = min(worst, float(np.min(np.abs(ratios - np.round(ratios)))))
    return worst


def smooth_rois(rng, num_images, height, width, count, output_size, spatial_scale,
                sampling_ratio, aligned, margin=1e-3):
    """Random RoIs whose every sample keeps ``margin`` away from a kink."""
    for _ in range(200):
        rois = random_rois(rng, num_images, height, width, count, spatial_scale)
        if distance_to_kinks(rois, output_size, spatial_scale, sampling_ratio, aligned) > margin:
            return rois
    raise AssertionError("could not draw RoIs away from the kinks")


# ------------------------------------------------------- RoIAlign: exact values
@pytest.mark.parametrize("aligned, expected", [
    (False, [[7.5, 8, 8.5, 9], [10, 10.5, 11, 11.5], [12.5, 13, 13.5, 14], [15, 15.5, 16, 16.5]]),
    (True, [[4.5, 5.0, 5.5, 6.0], [7.0, 7.5, 8.0, 8.5], [9.5, 10.0, 10.5, 11.0],
            [12.0, 12.5, 13.0, 13.5]]),
])
def test_roi_align_detectron2_5x5_example(aligned, expected):
    # Detectron2's tests/layers/test_roi_align.py: arange(25) as a 5x5 map, box [1, 1, 3, 3]
    x = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    out = roi_align(x, np.array([[0, 1, 1, 3, 3]], np.float32), (4, 4), 1.0, 0, aligned)
    assert out.shape == (1, 4, 4, 1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data[0, :, :, 0], expected, rtol=0, atol=1e-6)


def test_roi_align_empty_box_is_zero_with_zero_gradient():
    # Detectron2's empty-box case: a zero-height box with aligned=True has no sample
    x = nn.Tensor(np.random.default_rng(0).random((1, 5, 5, 1)), requires_grad=True)
    out = roi_align(x, np.array([[0, 3, 4, 5, 4]], np.float64), 7, 1.0, 0, aligned=True)
    assert out.shape == (1, 7, 7, 1)
    assert np.all(out.data == 0)
    out.sum().backward()
    assert np.all(x.grad == 0)


def test_roi_align_whole_map_aligned_with_one_sample_per_cell_is_identity():
    # aligned=True and a box covering the map exactly: bin (i, j) samples cell centre (i, j)
    x = np.random.default_rng(1).random((1, 6, 5, 3))
    out = roi_align(x, np.array([[0, 0, 0, 5, 6]], np.float64), (6, 5), 1.0, 1, aligned=True)
    np.testing.assert_allclose(out.data[0], x[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sampling_ratio, aligned", [(2, False), (2, True), (0, False),
                                                     (-1, True), (1, False), (3, True)])
def test_roi_align_matches_loop_reference(dtype, seed, sampling_ratio, aligned):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 7, 9, 3)).astype(dtype)
    rois = random_rois(rng, 2, 7, 9, 6, spatial_scale=0.5).astype(dtype)
    out = roi_align(x, rois, (3, 4), 0.5, sampling_ratio, aligned)
    assert out.dtype == dtype
    expected = loop_roi_align(x, rois, (3, 4), 0.5, sampling_ratio, aligned)
    np.testing.assert_allclose(out.data, expected, **tolerance(dtype))


@given(
    rois=roi_boxes(num_images=2, height=6, width=8, spatial_scale=0.5, malformed=True),
    output_size=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    sampling_ratio=st.integers(-1, 3),
    aligned=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
@settings(deadline=None, max_examples=40)
def test_roi_align_matches_loop_reference_hypothesis(rois, output_size, sampling_ratio,
                                                     aligned, seed):
    x = np.random.default_rng(seed).standard_normal((2, 6, 8, 2))
    out = roi_align(x, rois, output_size, 0.5, sampling_ratio, aligned)
    expected = loop_roi_align(x, rois, output_size, 0.5, sampling_ratio, aligned)
    assert out.shape == (len(rois), *output_size, 2)
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("output_size, sampling_ratio, taps", [
    ((2, 2), 2, 4),   # bins of ~12 cells, 2 samples: each sample's two cells (2G = 4 taps)
    ((1, 1), 0, 26),  # one bin, ~25 adaptive samples: the contiguous window of cells
])
def test_roi_align_large_bins_both_footprints(output_size, sampling_ratio, taps):
    from nn.functional.roi import _axis_samples

    rng = np.random.default_rng(14)
    x = rng.standard_normal((1, 30, 30, 2))
    rois = np.array([[0, 2.3, 1.6, 26.8, 27.1], [0, 0.4, 3.3, 25.2, 24.9]])
    samples = _axis_samples(rois[:, 2], rois[:, 4], 30, output_size[0], 1.0, sampling_ratio,
                            False, x.dtype)
    assert samples.cells.shape[2] == taps
    grad = rng.standard_normal((2, *output_size, 2))
    xt = nn.Tensor(x, requires_grad=True)
    out = roi_align(xt, rois, output_size, 1.0, sampling_ratio, False)
    np.testing.assert_allclose(out.data, loop_roi_align(x, rois, output_size, 1.0, sampling_ratio),
                               rtol=1e-10, atol=1e-10)
    out.backward(grad)
    expected = loop_roi_align_grad_x(x, rois, grad, output_size, 1.0, sampling_ratio, False)
    np.testing.assert_allclose(xt.grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sampling_ratio, aligned", [(2, False), (0, True), (-1, False)])
def test_roi_align_grad_x_matches_loop_reference(dtype, sampling_ratio, aligned):
    rng = np.random.default_rng(3)
    x = nn.Tensor(rng.standard_normal((2, 6, 7, 3)).astype(dtype), requires_grad=True)
    rois = random_rois(rng, 2, 6, 7, 5).astype(dtype)
    grad = rng.standard_normal((5, 2, 3, 3)).astype(dtype)
    roi_align(x, rois, (2, 3), 1.0, sampling_ratio, aligned).backward(grad)
    assert x.grad.dtype == dtype
    expected = loop_roi_align_grad_x(x.data, rois, grad, (2, 3), 1.0, sampling_ratio, aligned)
    np.testing.assert_allclose(x.grad, expected, **tolerance(dtype))


@pytest.mark.parametrize("sampling_ratio, aligned", [(2, False), (2, True), (0, False), (0, True)])
def test_roi_align_gradcheck_x_and_boxes(sampling_ratio, aligned):
    rng = np.random.default_rng(4)
    x = nn.Tensor(rng.standard_normal((2, 5, 6, 2)), requires_grad=True)
    rois = smooth_rois(rng, 2, 5, 6, 3, (2, 3), 0.5, sampling_ratio, aligned)
    rois[:, 0] = [0, 1, 1]
    # per-image (K_i, 4) boxes: central differences must not perturb a batch index
    first = nn.Tensor(rois[:1, 1:].copy(), requires_grad=True)
    second = nn.Tensor(rois[1:, 1:].copy(), requires_grad=True)
    assert nn.gradcheck(
        lambda a, b0, b1: roi_align(a, [b0, b1], (2, 3), 0.5, sampling_ratio, aligned),
        (x, first, second), eps=1e-6, atol=1e-6, rtol=1e-4)
    # (K, 5) boxes: the same coordinate gradient, exactly zero for the batch index
    first.grad = second.grad = None
    roi_align(x, [first, second], (2, 3), 0.5, sampling_ratio, aligned).sum().backward()
    boxes = nn.Tensor(rois, requires_grad=True)
    roi_align(x, boxes, (2, 3), 0.5, sampling_ratio, aligned).sum().backward()
    np.testing.assert_allclose(boxes.grad[:, 1:], np.concatenate([first.grad, second.grad]))
    assert np.all(boxes.grad[:, 0] == 0)


@given(seed=st.integers(0, 2**31 - 1), sampling_ratio=st.integers(-1, 3), aligned=st.booleans())
@settings(deadline=None, max_examples=15)
def test_roi_align_box_gradient_matches_central_differences_of_reference(seed, sampling_ratio,
                                                                         aligned):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 6, 5, 2))
    rois = smooth_rois(rng, 2, 6, 5, 3, (2, 2), 1.0, sampling_ratio, aligned)
    grad = rng.standard_normal((3, 2, 2, 2))
    boxes = nn.Tensor(rois.copy(), requires_grad=True)
    roi_align(x, boxes, (2, 2), 1.0, sampling_ratio, aligned).backward(grad)
    eps = 1e-6
    numeric = np.zeros_like(rois)
    for k in range(rois.shape[0]):
        for c in range(1, 5):
            plus, minus = rois.copy(), rois.copy()
            plus[k, c] += eps
            minus[k, c] -= eps
            f_plus = np.sum(grad * loop_roi_align(x, plus, (2, 2), 1.0, sampling_ratio, aligned))
            f_minus = np.sum(grad * loop_roi_align(x, minus, (2, 2), 1.0, sampling_ratio, aligned))
            numeric[k, c] = (f_plus - f_minus) / (2 * eps)
    np.testing.assert_allclose(boxes.grad, numeric, rtol=1e-4, atol=1e-6)


def test_roi_align_box_gradient_float32_matches_float64():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 8, 8, 4))
    rois = smooth_rois(rng, 1, 8, 8, 4, (3, 3), 1.0, 2, True)
    grads = []
    for dtype in (np.float32, np.float64):
        boxes = nn.Tensor(rois.astype(dtype), requires_grad=True)
        roi_align(x.astype(dtype), boxes, 3, 1.0, 2, True).sum().backward()
        assert boxes.grad.dtype == dtype
        grads.append(boxes.grad)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-3, atol=1e-4)


def test_roi_align_box_outside_the_map_reads_zero_and_gets_zero_gradient():
    x = nn.Tensor(np.random.default_rng(6).random((1, 4, 4, 2)), requires_grad=True)
    boxes = nn.Tensor(np.array([[0, 10.2, 10.3, 14.1, 13.7]]), requires_grad=True)
    out = roi_align(x, boxes, 2, 1.0, 2, False)
    assert np.all(out.data == 0)
    out.sum().backward()
    assert np.all(x.grad == 0)
    assert np.all(boxes.grad == 0)


def test_roi_align_list_of_boxes_equals_batch_index_form_and_passes_gradients():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 6, 6, 2))
    per_image = [random_rois(rng, 1, 6, 6, count)[:, 1:] for count in (2, 0, 3)]
    rois = np.concatenate(
        [np.concatenate([np.full((len(b), 1), i), b], axis=1) for i, b in enumerate(per_image)])
    listed = roi_align(x, per_image, 3, 1.0, 2, False)
    stacked = roi_align(x, rois, 3, 1.0, 2, False)
    np.testing.assert_array_equal(listed.data, stacked.data)

    tensors = [nn.Tensor(b.copy(), requires_grad=True) for b in per_image]
    roi_align(x, tensors, 3, 1.0, 2, False).sum().backward()
    full = nn.Tensor(rois.copy(), requires_grad=True)
    roi_align(x, full, 3, 1.0, 2, False).sum().backward()
    np.testing.assert_allclose(np.concatenate([t.grad for t in tensors]), full.grad[:, 1:])


def test_roi_align_boxes_in_any_image_order():
    rng = np.random.default_rng(8)
    x = nn.Tensor(rng.standard_normal((3, 5, 5, 2)), requires_grad=True)
    rois = random_rois(rng, 3, 5, 5, 9)
    rois[:, 0] = [2, 0, 1, 0, 2, 1, 1, 0, 2]
    boxes = nn.Tensor(rois, requires_grad=True)
    out = roi_align(x, boxes, 2, 1.0, 2, True)
    np.testing.assert_allclose(out.data, loop_roi_align(x.data, rois, (2, 2), 1.0, 2, True),
                               rtol=1e-10, atol=1e-10)
    out.sum().backward()
    # the same boxes sorted by image give the same gradients, permuted
    order = np.argsort(rois[:, 0], kind="stable")
    sorted_boxes = nn.Tensor(rois[order], requires_grad=True)
    roi_align(x.data, sorted_boxes, 2, 1.0, 2, True).sum().backward()
    np.testing.assert_allclose(boxes.grad[order], sorted_boxes.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("boxes", [np.zeros((0, 5)), [np.zeros((0, 4)), np.zeros((0, 4))], []])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roi_align_and_pool_empty_boxes(boxes, dtype):
    x = nn.Tensor(np.ones((2, 4, 4, 3), dtype), requires_grad=True)
    for op in (lambda: roi_align(x, boxes, (2, 3)), lambda: roi_pool(x, boxes, (2, 3))):
        out = op()
        assert out.shape == (0, 2, 3, 3)
        assert out.dtype == dtype
        x.grad = None
        out.sum().backward()
        assert x.grad.shape == x.shape
        assert np.all(x.grad == 0)


def test_roi_align_empty_boxes_get_an_empty_box_gradient():
    x = nn.Tensor(np.ones((2, 4, 4, 3)), requires_grad=True)
    boxes = nn.Tensor(np.zeros((0, 4)), requires_grad=True)
    out = roi_align(x, [boxes], (2, 3), 1.0, 2)
    assert out.shape == (0, 2, 3, 3)
    out.sum().backward()
    assert boxes.grad.shape == (0, 4)
    assert np.all(x.grad == 0)


def test_roi_align_kernel_backward_without_any_gradient_requested():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 4, 4, 2))
    out, cache = roi_align_forward(x, random_rois(rng, 1, 4, 4, 2)[:, 1:], np.zeros(2, int),
                                   (2, 2), 1.0, 2, False)
    assert roi_align_backward(np.ones_like(out), cache, False, False) == (None, None)


# ------------------------------------------------------------------ RoIPool
def test_roi_pool_hand_computed():
    x = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    # box [1, 1, 3, 3] -> cells 1..3 (L = 3), bins [1, 3) and [2, 4)
    out = roi_pool(x, np.array([[0, 1, 1, 3, 3]], np.float32), 2)
    np.testing.assert_array_equal(out.data[0, :, :, 0], [[12, 13], [17, 18]])


@pytest.mark.parametrize("coordinate, start", [(2.5, 3), (1.5, 2), (-0.5, -1), (0.49999997, 0)])
def test_roi_pool_rounds_half_away_from_zero(coordinate, start):
    # C's round(): 2.5 -> 3 (NumPy's np.round would give 2)
    x = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1)
    out = roi_pool(x, np.array([[0, coordinate, 0, 6, 0]], np.float32), (1, 1))
    # one row (y1 = y2 = 0); the bin is columns [max(start, 0), 7): the max is at column 6
    assert out.data[0, 0, 0, 0] == 6
    out = roi_pool(x, np.array([[0, 0, 0, coordinate, 0]], np.float32), (1, 1))
    expected = 0 if start < 0 else start  # a box ending before column 0 still covers column 0
    assert out.data[0, 0, 0, 0] == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_roi_pool_matches_loop_reference(dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 9, 11, 3)).astype(dtype)
    rois = random_rois(rng, 2, 9, 11, 7, spatial_scale=0.5).astype(dtype)
    out = roi_pool(x, rois, (3, 4), 0.5)
    expected, _ = loop_roi_pool(x, rois, (3, 4), 0.5)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.data, expected)


@given(
    rois=roi_boxes(num_images=2, height=7, width=9, spatial_scale=0.25, malformed=True,
                   overhang=3.0),
    output_size=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    seed=st.integers(0, 2**31 - 1),
    ties=st.booleans(),
)
@settings(deadline=None, max_examples=40)
def test_roi_pool_matches_loop_reference_hypothesis(rois, output_size, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 7, 9, 2))
    if ties:  # few distinct values: the first maximal cell in row-major order must win
        x = np.round(x)
    x = nn.Tensor(x, requires_grad=True)
    out = roi_pool(x, rois, output_size, 0.25)
    expected, argmax = loop_roi_pool(x.data, rois, output_size, 0.25)
    np.testing.assert_array_equal(out.data, expected)
    grad = rng.standard_normal(out.shape)
    out.backward(grad)
    np.testing.assert_allclose(x.grad, loop_roi_pool_grad_x(x.data, rois, grad, argmax),
                               rtol=1e-12, atol=1e-12)


def test_roi_pool_large_bins_use_high_table_levels():
    # bins of 5..20 cells exercise sparse-table levels up to 2^4 on both axes
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 40, 37, 2))
    rois = np.array([[0, 0, 0, 36, 39], [1, 3.2, 1.7, 30.6, 38.4], [1, 10, 5, 12, 33],
                     [0, -5, -7, 50, 45]])
    out = roi_pool(x, rois, (2, 3), 1.0)
    np.testing.assert_array_equal(out.data, loop_roi_pool(x, rois, (2, 3), 1.0)[0])


def test_roi_pool_gradcheck():
    rng = np.random.default_rng(11)
    # distinct values 0.01 apart keep the argmax fixed under a 1e-6 perturbation
    x = nn.Tensor((rng.permutation(2 * 6 * 7 * 2) * 0.01).reshape(2, 6, 7, 2),
                  requires_grad=True)
    rois = random_rois(rng, 2, 6, 7, 4)
    assert nn.gradcheck(lambda a: roi_pool(a, rois, (2, 3)), (x,))


def test_roi_pool_gives_no_box_gradient():
    x = nn.Tensor(np.random.default_rng(12).random((1, 5, 5, 1)), requires_grad=True)
    boxes = nn.Tensor(np.array([[0, 0.3, 0.2, 3.6, 4.1]]), requires_grad=True)
    roi_pool(x, boxes, 2).sum().backward()
    assert x.grad is not None
    assert boxes.grad is None


def test_roi_pool_bin_outside_the_map_is_zero():
    x = -np.ones((1, 4, 4, 1), np.float32)  # all negative: an empty bin still gives 0
    out = roi_pool(x, np.array([[0, 2, 2, 9, 9]], np.float32), 4)
    assert out.data[0, 0, 0, 0] == -1
    assert out.data[0, 3, 3, 0] == 0


# ------------------------------------------------------------------ oracles
def ort_session(node, inputs):
    onnx = require("onnx")
    ort = require("onnxruntime")
    from onnx import TensorProto, helper

    kinds = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}
    graph = helper.make_graph(
        [node], "roi",
        [helper.make_tensor_value_info(name, kinds[array.dtype], array.shape)
         for name, array in inputs.items()],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["K", "C", "oh", "ow"])],
    )
    opset = 16 if node.op_type == "RoiAlign" else 13
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


@pytest.mark.oracle
@pytest.mark.parametrize("aligned, mode", [(True, "half_pixel"), (False, "output_half_pixel")])
@pytest.mark.parametrize("sampling_ratio", [2, 0, 1, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_roi_align_matches_onnxruntime(aligned, mode, sampling_ratio, seed):
    from onnx import helper

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 10, 12, 4)).astype(np.float32)
    rois = random_rois(rng, 2, 10, 12, 20, spatial_scale=0.25).astype(np.float32)
    node = helper.make_node(
        "RoiAlign", ["X", "rois", "batch_indices"], ["Y"], mode="avg", output_height=3,
        output_width=4, sampling_ratio=sampling_ratio, spatial_scale=0.25,
        coordinate_transformation_mode=mode)
    expected = ort_session(node, {
        "X": np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
        "rois": np.ascontiguousarray(rois[:, 1:]),
        "batch_indices": rois[:, 0].astype(np.int64),
    }).transpose(0, 2, 3, 1)
    out = roi_align(x, rois, (3, 4), 0.25, sampling_ratio, aligned)
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.oracle
@pytest.mark.parametrize("integer_boxes", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roi_pool_matches_onnxruntime(integer_boxes, seed):
    from onnx import helper

    rng = np.random.default_rng(seed)
    # Positive features: onnxruntime starts its max at FLT_MIN (> 0), torchvision and
    # detseg at -FLT_MAX, so only all-negative bins would differ (see roi_pool's note).
    x = rng.uniform(0.1, 1.0, (2, 9, 11, 3)).astype(np.float32)
    rois = random_rois(rng, 2, 9, 11, 12, spatial_scale=0.5, overhang=2.0)
    if integer_boxes:
        rois = np.round(rois)
    else:
        rois[:4, 1:] = np.round(rois[:4, 1:] * 2) / 2 + 0.25  # x.25 · 0.5 -> .125, .625 ...
        rois[4:6, 1:] = np.floor(rois[4:6, 1:]) + 1.0         # x.0 · 0.5 -> half-way ties
    rois = rois.astype(np.float32)
    node = helper.make_node("MaxRoiPool", ["X", "rois"], ["Y"], pooled_shape=[3, 4],
                            spatial_scale=0.5)
    expected = ort_session(node, {
        "X": np.ascontiguousarray(x.transpose(0, 3, 1, 2)), "rois": rois,
    }).transpose(0, 2, 3, 1)
    out = roi_pool(x, rois, (3, 4), 0.5)
    np.testing.assert_array_equal(out.data, expected)


# ------------------------------------------------------------------- errors
def _x():
    return np.zeros((2, 4, 4, 1), np.float32)


@pytest.mark.parametrize("op", [roi_align, roi_pool])
@pytest.mark.parametrize("kwargs, error, match", [
    ({"x": np.zeros((4, 4, 1), np.float32)}, ValueError, "x must be a 4-D"),
    ({"x": np.zeros((1, 4, 4, 1), np.int64)}, TypeError, "floating"),
    ({"boxes": np.zeros((3, 4))}, ValueError, r"\(K, 5\)"),
    ({"boxes": np.zeros((3, 5, 1))}, ValueError, r"\(K, 5\)"),
    ({"boxes": np.array([[2, 0, 0, 1, 1]])}, ValueError, r"batch index\) must lie in \[0, 2\)"),
    ({"boxes": np.array([[-1, 0, 0, 1, 1]])}, ValueError, "batch index"),
    ({"boxes": np.array([[0.5, 0, 0, 1, 1]])}, ValueError, "must hold integers"),
    ({"boxes": np.array([[0, 0, np.nan, 1, 1]])}, ValueError, "non-finite"),
    ({"boxes": np.array([[0, 0, 0, np.inf, 1]])}, ValueError, "non-finite"),
    ({"boxes": [np.zeros((1, 5))]}, ValueError, r"boxes\[0\] must have shape \(K_i, 4\)"),
    ({"boxes": [np.zeros((1, 4))] * 3}, ValueError, "list of 3 per-image arrays"),
    ({"boxes": [np.array([[0, 0, np.nan, 1]])]}, ValueError, r"boxes\[0\] has non-finite"),
    ({"boxes": np.array([["a", "b", "c", "d", "e"]])}, TypeError, "real numbers"),
    ({"output_size": 0}, ValueError, "output_size"),
    ({"output_size": (2, 2, 2)}, ValueError, "output_size"),
    ({"output_size": 2.0}, ValueError, "output_size"),
    ({"output_size": True}, ValueError, "output_size"),
    ({"spatial_scale": 0.0}, ValueError, "spatial_scale"),
    ({"spatial_scale": float("nan")}, ValueError, "spatial_scale"),
    ({"spatial_scale": "1"}, TypeError, "spatial_scale"),
])
def test_bad_arguments_raise_clear_errors(op, kwargs, error, match):
    args = {"x": _x(), "boxes": np.array([[0, 0, 0, 2, 2]], np.float32), "output_size": 2,
            "spatial_scale": 1.0}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        op(**args)


@pytest.mark.parametrize("kwargs, error", [
    ({"sampling_ratio": 2.0}, TypeError), ({"sampling_ratio": True}, TypeError),
    ({"aligned": 1}, TypeError),
])
def test_roi_align_bad_sampling_or_aligned(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        roi_align(_x(), np.array([[0, 0, 0, 2, 2]]), 2, **kwargs)


def test_roi_align_refuses_absurd_boxes_for_adaptive_sampling_but_not_for_fixed():
    x = np.random.default_rng(15).random((1, 6, 6, 2))
    absurd = np.array([[0, -1e30, 2, 1e30, 3]])
    with pytest.raises(ValueError, match="adaptive sampling"):
        roi_align(x, absurd, 2, 1.0, 0)
    out = roi_align(x, absurd, 2, 1.0, 2)   # every sample lies far outside: zeros
    np.testing.assert_array_equal(out.data, np.zeros((1, 2, 2, 2)))
    pooled = roi_pool(x, absurd, 2)        # rounded, then clipped to the map
    np.testing.assert_array_equal(pooled.data, loop_roi_pool(x, absurd.clip(-1e6, 1e6), (2, 2))[0])


def test_half_precision_runs_without_warnings():
    x = np.random.default_rng(16).random((1, 6, 6, 2)).astype(np.float16)
    boxes = np.array([[0, 1, 1, 4, 4]], np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. an overflowing cast inside NumPy
        assert roi_align(x, boxes, 2, 1.0, 2).dtype == np.float16
        assert roi_pool(x, boxes, 2).dtype == np.float16
    expected = loop_roi_align(x.astype(np.float32), boxes.astype(np.float32), (2, 2), 1.0, 2)
    np.testing.assert_allclose(roi_align(x, boxes, 2, 1.0, 2).data, expected, atol=2e-3)


# ------------------------------------------------------------------ modules
def test_modules_hold_hyperparameters_and_call_the_functions():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    rois = random_rois(rng, 2, 8, 8, 5, spatial_scale=0.5).astype(np.float32)
    align = nn.RoIAlign((3, 2), 0.5, 2, aligned=True)
    pool = nn.RoIPool(3, 0.5)
    np.testing.assert_array_equal(align(x, rois).data,
                                  roi_align(x, rois, (3, 2), 0.5, 2, True).data)
    np.testing.assert_array_equal(pool(x, rois).data, roi_pool(x, rois, 3, 0.5).data)
    assert list(align.parameters()) == []
    assert align.state_dict() == {}
    assert repr(align) == (
        "RoIAlign(output_size=(3, 2), spatial_scale=0.5, sampling_ratio=2, aligned=True)")
    assert repr(pool) == "RoIPool(output_size=(3, 3), spatial_scale=0.5)"


@pytest.mark.parametrize("make", [
    lambda: nn.RoIAlign(0, 1.0, 2), lambda: nn.RoIAlign(7, -1.0, 2),
    lambda: nn.RoIAlign(7, 1.0, 2.5), lambda: nn.RoIAlign(7, 1.0, 2, aligned="yes"),
    lambda: nn.RoIPool((7,), 1.0), lambda: nn.RoIPool(7, 0),
])
def test_modules_reject_bad_hyperparameters(make):
    with pytest.raises((ValueError, TypeError)):
        make()
