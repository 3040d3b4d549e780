"""Character regions: hull filling and area-vote crops."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plates.classes import IGNORE_INDEX
from plates.targets import character_regions, crop_coverage, crop_region_labels
from segmentation.weights import separate_instances


# ------------------------------------------------------------------ character_regions
def test_hull_fills_an_l_shape_and_drops_other_objects():
    ink = np.zeros((8, 8), np.int32)
    ink[1:7, 1] = 1  # the stem of an "L" ...
    ink[6, 1:6] = 1  # ... and its foot
    ink[0, 7] = 2  # an object that is not a character (a plate, say)
    regions = character_regions(ink, [1])
    # The hull of the L's pixel squares is the triangle (1,1)-(2,1)-(6,6)-(1,7)...: every
    # pixel centre on or below the diagonal from the stem's top to the foot's end.
    expected = np.zeros((8, 8), np.int32)
    for y in range(8):
        for x in range(8):
            cx, cy = x + 0.5, y + 0.5
            # corners (1,1), (2,1), (6,6), (6,7), (1,7): inside iff right of x=1, left of
            # the edge (2,1)-(6,6), above y=7, below y=1
            edge = (6 - 1) * (cx - 2) - (6 - 2) * (cy - 1)  # <= 0 on the inner side
            if 1 <= cx <= 6 and 1 <= cy <= 7 and edge <= 1e-9:
                expected[y, x] = 1
    np.testing.assert_array_equal(regions, expected)
    assert regions[0, 7] == 0  # not a character
    assert (regions[ink == 1] == 1).all()  # ink is always kept


def test_pixels_in_two_hulls_belong_to_neither_unless_ink():
    ink = np.zeros((5, 7), np.int32)
    ink[2, 0] = ink[2, 6] = 1  # the ends of a horizontal bar ...
    ink[0, 3] = ink[4, 3] = 2  # ... and of a vertical one: the hulls cross at (2, 3)
    regions = character_regions(ink, [1, 2])
    expected = np.zeros((5, 7), np.int32)
    expected[2, :] = 1
    expected[:, 3] = 2
    expected[2, 3] = 0  # in both hulls, ink of neither
    np.testing.assert_array_equal(regions, expected)
    ink[2, 3] = 1  # now it is ink of the bar: it stays the bar's
    expected[2, 3] = 1
    np.testing.assert_array_equal(character_regions(ink, [1, 2]), expected)


def _regions_loop(instance_map, character_ids):
    """The documented rule, pixel by pixel over the whole map."""
    from scipy.spatial import ConvexHull
    h, w = instance_map.shape
    hulls = {}
    for char_id in character_ids:
        ys, xs = np.nonzero(instance_map == char_id)
        if ys.size:
            corners = [(x + dx, y + dy) for y, x in zip(ys, xs) for dx in (0, 1) for dy in (0, 1)]
            hulls[char_id] = ConvexHull(np.array(corners, np.float64)).equations
    out = np.zeros((h, w), np.int32)
    for y in range(h):
        for x in range(w):
            if instance_map[y, x] in hulls:
                out[y, x] = instance_map[y, x]
                continue
            owners = [c for c, eq in hulls.items()
                      if (eq[:, :2] @ (x + 0.5, y + 0.5) + eq[:, 2] <= 1e-9).all()]
            out[y, x] = owners[0] if len(owners) == 1 else 0
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), h=st.integers(6, 30), w=st.integers(6, 30))
def test_character_regions_equal_pixel_loop(seed, h, w):
    # Characters anywhere (also on the border), other objects with smaller and larger ids,
    # and a character id that is not in the map: the work window must not matter.
    rng = np.random.default_rng(seed)
    instance_map = np.zeros((h, w), np.int32)
    for object_id in range(1, 9):
        y, x = rng.integers(0, h), rng.integers(0, w)
        dy, dx = rng.integers(1, 5, size=2)
        instance_map[y:y + dy, x:x + dx] = object_id
        instance_map[np.clip(y + rng.integers(-3, 4, 3), 0, h - 1),
                     np.clip(x + rng.integers(-3, 4, 3), 0, w - 1)] = object_id
    character_ids = sorted(rng.choice(np.arange(1, 11), size=4, replace=False).tolist())
    np.testing.assert_array_equal(character_regions(instance_map, character_ids),
                                  _regions_loop(instance_map, character_ids))


def test_character_regions_do_not_depend_on_where_the_characters_are():
    ink = np.zeros((9, 12), np.int32)
    ink[1:8, 2] = 4
    ink[7, 2:6] = 4
    ink[2, 7:11] = 5
    ink[2:8, 10] = 5
    alone = character_regions(ink, [4, 5])
    scene = np.full((40, 50), 9, np.int32)  # a car with a larger id all around
    scene[25:34, 30:42] = ink
    scene[0:3, 0:3] = 2  # a small non-character object far away
    placed = character_regions(scene, [4, 5])
    np.testing.assert_array_equal(placed[25:34, 30:42], alone)
    assert not placed[:25].any() and not placed[34:].any()
    assert not placed[:, :30].any() and not placed[:, 42:].any()


def test_character_regions_empty_and_errors():
    empty = np.zeros((5, 7), np.uint8)
    np.testing.assert_array_equal(character_regions(empty, []), np.zeros((5, 7), np.int32))
    np.testing.assert_array_equal(character_regions(empty, [3]), np.zeros((5, 7), np.int32))
    with pytest.raises(ValueError, match="instance_map"):
        character_regions(np.zeros((2, 2), np.float32), [1])
    with pytest.raises(ValueError, match="character_ids"):
        character_regions(np.zeros((2, 2), np.int32), [0])


# ------------------------------------------------------------------ crop_region_labels
def _labels_loop(region_map, class_of, window, size, samples, coverage):
    """Pixel by pixel: sub-pixel centres, nearest ids, vote, then separation."""
    h, w = size
    x1, y1, x2, y2 = window
    image_h, image_w = region_map.shape
    instances = np.zeros((h, w), np.int64)
    for i in range(h):
        for j in range(w):
            ids = []
            for a in range(samples):
                for b in range(samples):
                    y = y1 + (i * samples + a + 0.5) / (h * samples) * (y2 - y1)
                    x = x1 + (j * samples + b + 0.5) / (w * samples) * (x2 - x1)
                    r, c = int(np.floor(y)), int(np.floor(x))
                    inside = 0 <= r < image_h and 0 <= c < image_w
                    ids.append(int(region_map[r, c]) if inside else 0)
            chars = [v for v in ids if v]
            if chars and len(chars) >= coverage * len(ids) - 1e-12:
                counts = {v: chars.count(v) for v in chars}
                top = max(counts.values())
                instances[i, j] = min(v for v, n in counts.items() if n == top)
    labels = np.asarray(class_of)[separate_instances(instances)].astype(np.uint8)
    for i in range(h):
        for j in range(w):
            cy = y1 + (i + 0.5) / h * (y2 - y1)
            cx = x1 + (j + 0.5) / w * (x2 - x1)
            if not (0 <= cy < image_h and 0 <= cx < image_w):
                labels[i, j] = IGNORE_INDEX
    return labels


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 3]), st.sampled_from([0.25, 0.5, 1.0]))
def test_crop_region_labels_equals_loop(seed, samples, coverage):
    rng = np.random.default_rng(seed)
    region_map = np.zeros((20, 30), np.int32)
    for k in range(1, 5):  # a few blobs
        y, x = rng.integers(0, 16), rng.integers(0, 26)
        region_map[y:y + rng.integers(1, 5), x:x + rng.integers(1, 5)] = k
    class_of = np.array([0, 3, 7, 13, 3])
    windows = np.array([[-3.2, -1.5, 25.7, 12.0], [2.0, 4.0, 31.0, 22.5]])
    labels = crop_region_labels(region_map, class_of, windows, (6, 9), samples, coverage)
    assert labels.shape == (2, 6, 9) and labels.dtype == np.uint8
    for k in range(2):
        np.testing.assert_array_equal(
            labels[k], _labels_loop(region_map, class_of, windows[k], (6, 9), samples, coverage))


def test_crop_region_labels_identity_window_and_empty():
    region_map = np.zeros((4, 6), np.int32)
    region_map[1:3, 0:2] = 1
    region_map[1:3, 4:6] = 2
    class_of = np.array([0, 5, 13])
    labels = crop_region_labels(region_map, class_of, [[0, 0, 6, 4]], (4, 6), samples=3)
    np.testing.assert_array_equal(labels[0], class_of[region_map])  # 1:1, nothing touches
    labels = crop_region_labels(region_map, class_of, [[-6, 0, 6, 4]], (4, 12), samples=2)
    assert (labels[0, :, :6] == IGNORE_INDEX).all()  # left half outside the image
    empty = crop_region_labels(region_map, class_of, np.zeros((0, 4)), (4, 6))
    assert empty.shape == (0, 4, 6) and empty.dtype == np.uint8


@pytest.mark.parametrize("kwargs, match", [
    (dict(class_of=np.array([0, 1])), "class_of"),
    (dict(windows=np.array([[0, 0, 0, 4]])), "windows"),
    (dict(size=(0, 3)), "size"),
    (dict(samples=0), "samples"),
    (dict(coverage=0.0), "coverage"),
])
def test_crop_region_labels_errors(kwargs, match):
    args = dict(region_map=np.array([[0, 2]], np.int32), class_of=np.array([0, 3, 4]),
                windows=np.array([[0, 0, 2, 1]]), size=(1, 2))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        crop_region_labels(**args)


def test_crop_coverage_is_the_covered_share_of_each_crop_pixel():
    mask = np.zeros((4, 6), bool)
    mask[1:3, 0:2] = True
    mask[0, 5] = True
    # One crop pixel per image pixel: the mask itself.
    share = crop_coverage(mask, [[0, 0, 6, 4]], (4, 6))
    assert share.dtype == np.float32 and share.shape == (1, 4, 6)
    np.testing.assert_array_equal(share[0], mask)
    # Half the resolution: each crop pixel covers 2x2 image pixels.
    half = crop_coverage(mask, [[0, 0, 6, 4]], (2, 3), samples=2)
    np.testing.assert_allclose(half[0], [[0.5, 0, 0.25], [0.5, 0, 0]])
    # Outside the image nothing is covered; a window on the right half sees one pixel.
    outside = crop_coverage(mask, [[-6, 0, 6, 4], [3, 0, 6, 4]], (4, 12), samples=1)
    assert not outside[0, :, :6].any()
    np.testing.assert_array_equal(outside[0, :, 6:], mask)
    assert outside[1].sum() == pytest.approx(4.0)  # pixel (0, 5) spans 4 columns 0.25 px wide
    assert crop_coverage(mask, np.zeros((0, 4)), (2, 3)).shape == (0, 2, 3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(mask=np.zeros((2, 2), np.uint8)), "mask"),
    (dict(mask=np.zeros(4, bool)), "mask"),
    (dict(windows=np.array([[0, 0, 0, 4]])), "windows"),
    (dict(size=(0, 3)), "size"),
    (dict(samples=0), "samples"),
])
def test_crop_coverage_errors(kwargs, match):
    args = dict(mask=np.zeros((2, 2), bool), windows=np.array([[0, 0, 2, 2]]), size=(2, 2))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        crop_coverage(**args)
