"""Tests of detection.anchors.AnchorGenerator."""
import math

import numpy as np
import pytest

from detection.anchors import AnchorGenerator, generate_base_anchors
from tests.oracles import require


def anchors_loop(sizes, aspect_ratios, image_size, feature_sizes, offset=0.0):
    """Anchors one at a time, in the documented order (level, y, x, ratio, size)."""
    out = []
    for level_sizes, ratios, (height, width) in zip(sizes, aspect_ratios, feature_sizes):
        stride_y, stride_x = image_size[0] // height, image_size[1] // width
        for y in range(height):
            for x in range(width):
                for ratio in ratios:
                    for size in level_sizes:
                        h_ratio = np.sqrt(np.float32(ratio))
                        w_ratio = np.float32(1) / h_ratio
                        w = np.float32(w_ratio * np.float32(size))
                        h = np.float32(h_ratio * np.float32(size))
                        half_w, half_h = np.round(w / 2), np.round(h / 2)
                        cx, cy = (x + offset) * stride_x, (y + offset) * stride_y
                        out.append([cx - half_w, cy - half_h, cx + half_w, cy + half_h])
    return np.array(out, np.float32).reshape(-1, 4)


def test_base_anchors_hand_values():
    base = generate_base_anchors((32,), (0.5, 1.0, 2.0))
    # w = 32 / sqrt(r), h = 32 · sqrt(r): (45.25, 22.63), (32, 32), (22.63, 45.25),
    # halved and rounded.
    np.testing.assert_array_equal(
        base, [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])
    assert base.dtype == np.float32
    two = generate_base_anchors((16, 32), (1.0, 2.0))   # ratio-major: (r0,s0), (r0,s1), (r1,s0)
    np.testing.assert_array_equal(two[:2], [[-8, -8, 8, 8], [-16, -16, 16, 16]])
    np.testing.assert_array_equal(two[2], [-6, -11, 6, 11])


def test_aspect_ratio_is_height_over_width_and_area_is_size_squared():
    base = generate_base_anchors((256,), (0.25, 1.0, 4.0), dtype=np.float64)
    widths = base[:, 2] - base[:, 0]
    heights = base[:, 3] - base[:, 1]
    np.testing.assert_allclose(heights / widths, [0.25, 1.0, 4.0], rtol=0.01)
    np.testing.assert_allclose(widths * heights, 256 ** 2, rtol=0.01)


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_pyramid_matches_loop_reference(offset):
    sizes = ((16, 24), (32,), (64,))
    ratios = ((0.5, 1.0, 2.0), (1.0,), (0.5, 2.0))
    image_size = (64, 96)
    feature_sizes = [(8, 12), (4, 6), (2, 3)]
    generator = AnchorGenerator(sizes, ratios, offset=offset)
    anchors = generator(image_size, feature_sizes)
    expected = anchors_loop(sizes, ratios, image_size, feature_sizes, offset)
    assert anchors.shape == (8 * 12 * 6 + 4 * 6 * 1 + 2 * 3 * 2, 4)
    np.testing.assert_array_equal(anchors, expected)
    assert generator.num_anchors_per_location() == [6, 1, 2]
    levels = generator.grid_anchors(image_size, feature_sizes)
    assert [len(level) for level in levels] == [576, 24, 12]


def test_order_matches_a_head_output_reshape():
    """A head's (N, H, W, A·K) output reshaped to (N, H·W·A, K) lines up with the anchors."""
    generator = AnchorGenerator(((8, 16),), ((0.5, 1.0, 2.0),))
    height, width, num_anchors, num_classes = 3, 5, 6, 2
    anchors = generator((24, 40), [(height, width)])
    # A "head" that writes, for anchor slot a at (y, x), the center of the anchor it means.
    strides = np.array([40 // width, 24 // height])
    head = np.zeros((1, height, width, num_anchors * num_classes))
    for y in range(height):
        for x in range(width):
            for a in range(num_anchors):
                slot = slice(a * num_classes, (a + 1) * num_classes)
                head[0, y, x, slot] = [x * strides[0], y * strides[1]]
    flat = head.reshape(1, height * width * num_anchors, num_classes)          # (N, H·W·A, K)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    np.testing.assert_allclose(flat[0], centers)
    # and the anchor shape cycles through the A slots at every location
    per_location = anchors.reshape(height * width, num_anchors, 4)
    shapes = per_location[:, :, 2:] - per_location[:, :, :2]
    assert np.array_equal(shapes, np.broadcast_to(shapes[0], shapes.shape))


def test_strides_given_or_computed():
    generator = AnchorGenerator(((32,),), ((1.0,),))
    assert generator.level_strides((100, 64), [(25, 8)]) == [(4, 8)]
    explicit = AnchorGenerator(((32,),), ((1.0,),), strides=(8,))
    assert explicit.level_strides((100, 64), [(13, 8)]) == [(8, 8)]
    anchors = explicit((100, 64), [(2, 2)])
    np.testing.assert_array_equal(anchors[:, 0], [-16, -8, -16, -8])


def test_feature_maps_and_single_ratio_tuple_are_accepted():
    generator = AnchorGenerator(((32,), (64,)), ((0.5, 1.0),))
    assert generator.aspect_ratios == ((0.5, 1.0), (0.5, 1.0))
    feature_maps = [np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 4, 4, 3), np.float32)]
    np.testing.assert_array_equal(generator((64, 64), feature_maps),
                                  generator((64, 64), [(8, 8), (4, 4)]))
    assert generator((64, 64), [(8, 8), (4, 4)]).dtype == np.float32
    in_float64 = AnchorGenerator(((32,),), ((1.0,),), dtype=np.float64)
    assert in_float64((8, 8), [(1, 1)]).dtype == np.float64


def test_errors():
    with pytest.raises(ValueError, match="aspect_ratios has 2 levels"):
        AnchorGenerator(((32,), (64,), (128,)), ((1.0,), (2.0,)))
    with pytest.raises(ValueError, match="sizes"):
        AnchorGenerator(((32, -1),))
    with pytest.raises(ValueError, match="aspect_ratios"):
        AnchorGenerator(((32,),), (1.0, 2.0))
    with pytest.raises(ValueError, match="aspect_ratios"):
        AnchorGenerator(((32,),), ((0.0,),))
    generator = AnchorGenerator(((32,), (64,)), ((1.0,),))
    with pytest.raises(ValueError, match="one .H, W. per level"):
        generator((64, 64), [(8, 8)])
    with pytest.raises(ValueError, match="feature_sizes"):
        generator((64, 64), [(8, 0), (4, 4)])
    with pytest.raises(ValueError, match="stride would be 0"):
        generator((64, 64), [(128, 128), (4, 4)])
    with pytest.raises(ValueError, match="image_size"):
        generator((64,), [(8, 8), (4, 4)])
    with pytest.raises(ValueError, match="strides"):
        AnchorGenerator(((32,), (64,)), strides=(8,))
    with pytest.raises(ValueError, match="offset"):
        AnchorGenerator(offset=1.5)


@pytest.mark.oracle
def test_matches_torchvision_anchor_generator_in_torch():
    torch = require("torch")

    def tv_anchors(sizes, aspect_ratios, image_size, grid_sizes):
        # torchvision.models.detection.anchor_utils.AnchorGenerator, in torch ops
        cell_anchors = []
        for scales, ratios in zip(sizes, aspect_ratios):
            scales = torch.as_tensor(scales, dtype=torch.float32)
            ratios = torch.as_tensor(ratios, dtype=torch.float32)
            h_ratios = torch.sqrt(ratios)
            w_ratios = 1 / h_ratios
            ws = (w_ratios[:, None] * scales[None, :]).view(-1)
            hs = (h_ratios[:, None] * scales[None, :]).view(-1)
            cell_anchors.append((torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round())
        strides = [[image_size[0] // g[0], image_size[1] // g[1]] for g in grid_sizes]
        anchors = []
        for (gh, gw), (sh, sw), base in zip(grid_sizes, strides, cell_anchors):
            shifts_x = torch.arange(0, gw, dtype=torch.int32) * sw
            shifts_y = torch.arange(0, gh, dtype=torch.int32) * sh
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return torch.cat(anchors).numpy()

    sizes = ((32,), (64,), (128,), (256,), (512,))
    ratios = ((0.5, 1.0, 2.0),) * 5
    image_size = (320, 416)
    grid_sizes = [(80, 104), (40, 52), (20, 26), (10, 13), (5, 7)]
    ours = AnchorGenerator(sizes, ratios)(image_size, grid_sizes)
    np.testing.assert_array_equal(ours, tv_anchors(sizes, ratios, image_size, grid_sizes))
    assert math.prod(ours.shape) == 4 * 3 * sum(h * w for h, w in grid_sizes)
