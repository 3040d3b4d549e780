"""Tests of detection.selective_search: felzenszwalb and selective_search."""
import numpy as np
import pytest
from scipy import ndimage


from detection.boxes import box_iou
from detection.selective_search import (_segment, convert_color, felzenszwalb, grid_edges,
                                        hierarchical_grouping, region_features,
                                        region_neighbours, selective_search, sorted_edges,
                                        stable_argsort)
from tests.oracles import require


# ------------------------------------------------------------ slow reference
def felzenszwalb_loop(image, scale, sigma, min_size):
    """The paper's algorithm as a plain loop: one edge at a time, union-find on lists."""
    image = image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image
    image = image[:, :, None] if image.ndim == 2 else image
    height, width = image.shape[:2]
    smooth = ndimage.gaussian_filter(image, [sigma, sigma, 0.0], mode="reflect")
    a, b, weights = grid_edges(smooth)
    order = np.argsort(weights, kind="stable")
    edges = list(zip(a[order].tolist(), b[order].tolist(), weights[order].tolist()))
    parent = list(range(height * width))
    size = [1] * (height * width)
    internal = [0.0] * (height * width)

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    def union(x, y):
        new, old = min(x, y), max(x, y)
        parent[old] = new
        size[new] = size[x] + size[y]
        return new

    k = scale / 255.0
    for u, v, w in edges:
        x, y = find(u), find(v)
        if x == y:
            continue
        tx = float(np.float32(internal[x] + k / size[x]))
        ty = float(np.float32(internal[y] + k / size[y]))
        if w < min(tx, ty):
            internal[union(x, y)] = w
    for u, v, _ in edges:
        x, y = find(u), find(v)
        if x != y and (size[x] < min_size or size[y] < min_size):
            union(x, y)
    roots = np.array([find(p) for p in range(height * width)])
    return np.unique(roots, return_inverse=True)[1].reshape(height, width)


def blocky_image(rng, height, width, block=4, colors=3):
    """Flat blocks of a few colors: many edges of exactly equal weight."""
    palette = rng.integers(0, 256, (colors, 3))
    cells = rng.integers(0, colors, (height // block + 1, width // block + 1))
    image = np.repeat(np.repeat(palette[cells], block, 0), block, 1)[:height, :width]
    return image.astype(np.uint8)


def shapes_image(rng, size=64):
    """Rectangles and a gradient with noise: long runs of merges through one region."""
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.stack([xx * 2.0, yy * 3.0, (xx + yy) * 1.0], axis=-1)
    image = image + rng.normal(0, 4, (size, size, 3))
    for _ in range(4):
        x1, y1 = rng.integers(0, size - 8, 2)
        x2, y2 = x1 + rng.integers(4, size // 2), y1 + rng.integers(4, size // 2)
        image[y1:y2, x1:x2] = rng.uniform(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


# ------------------------------------------------------------ felzenszwalb
@pytest.mark.parametrize("seed", range(6))
def test_felzenszwalb_matches_loop_on_small_images(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(3, 30, 2)
    noise = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    blocks = blocky_image(rng, height, width)
    for image in (noise, blocks, noise[:, :, 0]):
        for scale, sigma, min_size in [(1.0, 0.8, 0), (50.0, 0.0, 4), (300.0, 0.8, 20)]:
            expected = felzenszwalb_loop(image, scale, sigma, min_size)
            np.testing.assert_array_equal(felzenszwalb(image, scale, sigma, min_size), expected)


@pytest.mark.parametrize("seed", range(3))
def test_felzenszwalb_matches_loop_on_larger_images(seed):
    # 64x64: the chunked rounds and the scalar fallback both run.
    rng = np.random.default_rng(seed)
    image = shapes_image(rng)
    for scale, min_size in [(20.0, 10), (100.0, 30)]:
        expected = felzenszwalb_loop(image, scale, 0.8, min_size)
        np.testing.assert_array_equal(felzenszwalb(image, scale, 0.8, min_size), expected)


def test_felzenszwalb_float_input_equals_scaled_uint8():
    image = shapes_image(np.random.default_rng(3), 32)
    np.testing.assert_array_equal(felzenszwalb(image, 50.0),
                                  felzenszwalb(image.astype(np.float32) / np.float32(255), 50.0))


@pytest.mark.parametrize("seed", range(4))
def test_felzenszwalb_properties(seed):
    rng = np.random.default_rng(seed)
    image = shapes_image(rng, 48)
    min_size = int(rng.integers(5, 60))
    labels = felzenszwalb(image, float(rng.uniform(1, 300)), 0.8, min_size)
    assert labels.shape == (48, 48) and labels.dtype == np.int64
    count = labels.max() + 1
    sizes = np.bincount(labels.ravel())
    assert sizes.size == count and (sizes > 0).all()              # ids 0..S-1, all used
    first = np.unique(labels.ravel(), return_index=True)[1]
    assert (np.diff(first) > 0).all()                           # numbered by first pixel
    if count > 1:
        assert sizes.min() >= min_size
    eight = np.ones((3, 3), dtype=bool)
    for segment in range(count):
        assert ndimage.label(labels == segment, structure=eight)[1] == 1   # 8-connected


def test_felzenszwalb_min_size_larger_than_image_gives_one_segment():
    image = shapes_image(np.random.default_rng(0), 16)
    np.testing.assert_array_equal(felzenszwalb(image, 1.0, 0.8, 1000), np.zeros((16, 16)))


def test_felzenszwalb_flat_image_is_one_segment_and_scale_zero_splits_all():
    flat = np.full((5, 7, 3), 90, dtype=np.uint8)
    np.testing.assert_array_equal(felzenszwalb(flat, 1.0, 0.0, 0), np.zeros((5, 7)))
    noise = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(felzenszwalb(noise, 0.0, 0.0, 0),
                                  np.arange(35).reshape(5, 7))


@pytest.mark.parametrize("seed", range(4))
def test_stable_argsort_equals_numpy_stable_sort(seed):
    rng = np.random.default_rng(seed)
    ties = rng.integers(0, 5, 300).astype(np.float64)            # long runs of equal values
    mixed = np.concatenate([rng.random(200), np.zeros(50), rng.random(50).round(1)])
    rng.shuffle(mixed)
    for values in (ties, mixed, rng.random(1000), np.zeros(7), np.zeros(0), np.ones(1)):
        np.testing.assert_array_equal(stable_argsort(values), np.argsort(values, kind="stable"))


def test_sorted_edges_are_shared_across_k_unchanged():
    # selective_search segments one sorted graph at several k: each result equals a fresh
    # felzenszwalb, and segmenting leaves the shared edges as they were.
    image = shapes_image(np.random.default_rng(7), 48) / 255.0
    edges = sorted_edges(image, 0.8)
    copies = [e.copy() for e in edges]
    for k in (50, 300, 50, 20):
        np.testing.assert_array_equal(_segment(image.shape[:2], edges, float(k), k),
                                      felzenszwalb(image, k, 0.8, k))
    for edge, copy in zip(edges, copies):
        np.testing.assert_array_equal(edge, copy)


@pytest.mark.parametrize("bad, error", [
    ([[1, 2], [3, 4]], TypeError),
    (np.zeros((4, 4), dtype=np.int32), TypeError),
    (np.zeros((0, 4, 3), dtype=np.uint8), ValueError),
    (np.zeros((4,), dtype=np.uint8), ValueError),
    (np.full((4, 4), np.nan), ValueError),
])
def test_felzenszwalb_rejects_bad_images(bad, error):
    with pytest.raises(error, match="image"):
        felzenszwalb(bad)


@pytest.mark.parametrize("kwargs, name", [
    ({"scale": -1.0}, "scale"), ({"sigma": -0.5}, "sigma"), ({"min_size": -1}, "min_size"),
    ({"min_size": 2.5}, "min_size"), ({"scale": float("inf")}, "scale"), ({"scale": "1"}, "scale"),
])
def test_felzenszwalb_rejects_bad_parameters(kwargs, name):
    with pytest.raises((TypeError, ValueError), match=name):
        felzenszwalb(np.zeros((4, 4, 3), dtype=np.uint8), **kwargs)


@pytest.mark.oracle
@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera"])
def test_felzenszwalb_equals_scikit_image(name):
    skimage = require("skimage")
    from skimage.segmentation import felzenszwalb as reference
    image = getattr(skimage.data, name)()[::2, ::2]
    for scale, sigma, min_size in [(1.0, 0.8, 20), (100.0, 0.5, 50), (300.0, 1.0, 10)]:
        expected = reference(image, scale=scale, sigma=sigma, min_size=min_size)
        np.testing.assert_array_equal(felzenszwalb(image, scale, sigma, min_size), expected)


@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(3))
def test_felzenszwalb_equals_scikit_image_on_noise(seed):
    require("skimage")
    from skimage.segmentation import felzenszwalb as reference
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    for scale, sigma, min_size in [(10.0, 0.0, 5), (50.0, 0.8, 20)]:
        expected = reference(image, scale=scale, sigma=sigma, min_size=min_size)
        np.testing.assert_array_equal(felzenszwalb(image, scale, sigma, min_size), expected)


# ------------------------------------------------------------ selective search
def rectangles_scene(rng, size=96, count=3):
    """Flat rectangles on a noisy background, and their boxes (xyxy)."""
    image = rng.normal(120, 6, (size, size, 3))
    boxes = []
    for _ in range(count):
        w, h = rng.integers(12, size // 2, 2)
        x1, y1 = rng.integers(0, size - w), rng.integers(0, size - h)
        image[y1:y1 + h, x1:x1 + w] = rng.uniform(0, 255, 3)
        boxes.append([x1, y1, x1 + w, y1 + h])
    return np.clip(image, 0, 255).astype(np.uint8), np.array(boxes, np.float32)


def neighbours_loop(labels):
    pairs = set()
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            for dy, dx in ((0, 1), (1, 0), (1, 1), (-1, 1)):
                v, u = y + dy, x + dx
                if 0 <= v < height and 0 <= u < width and labels[y, x] != labels[v, u]:
                    pairs.add(tuple(sorted((labels[y, x], labels[v, u]))))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def test_region_neighbours_equal_pixel_loop():
    labels = felzenszwalb(shapes_image(np.random.default_rng(1), 32), 30.0, 0.8, 5)
    np.testing.assert_array_equal(region_neighbours(labels), neighbours_loop(labels))


def test_region_features_boxes_sizes_and_histograms():
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 1, (20, 30, 3))
    labels = felzenszwalb(image, 50.0, 0.8, 10)
    features = region_features(image, labels)
    for segment in range(labels.max() + 1):
        ys, xs = np.nonzero(labels == segment)
        assert features["size"][segment] == ys.size
        np.testing.assert_array_equal(features["boxes"][segment],
                                      [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        pixels = image[labels == segment]                         # (n, 3)
        expected = np.concatenate([np.histogram(pixels[:, c], bins=25, range=(0, 1))[0]
                                   for c in range(3)]) / (3.0 * ys.size)
        np.testing.assert_allclose(features["color"][segment], expected, atol=1e-12)
    np.testing.assert_allclose(features["texture"].sum(axis=1), 1.0)
    assert features["texture"].shape[1] == 3 * 8 * 10


def test_merged_histogram_is_size_weighted_average_of_parts():
    # Merging two regions' histograms (what the grouping does) equals the histogram
    # computed afresh on the union of their pixels.
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 1, (24, 24, 3))
    labels = felzenszwalb(image, 50.0, 0.8, 10)
    i, j = region_neighbours(labels)[0]
    merged = np.where(labels == j, i, labels)
    merged = np.unique(merged, return_inverse=True)[1].reshape(labels.shape)
    parts, whole = region_features(image, labels), region_features(image, merged)
    target = merged[labels == i][0]
    si, sj = parts["size"][i], parts["size"][j]
    for key in ("color", "texture"):
        average = (si * parts[key][i] + sj * parts[key][j]) / (si + sj)
        np.testing.assert_allclose(whole[key][target], average, atol=1e-12)


@pytest.mark.parametrize("similarity", ["CTSF", "TSF", "F", "S"])
def test_hierarchical_grouping_builds_a_full_tree(similarity):
    image = shapes_image(np.random.default_rng(5), 40) / 255.0
    labels = felzenszwalb(image, 50.0, 0.8, 10)
    count = labels.max() + 1
    boxes, merges = hierarchical_grouping(image, labels, similarity)
    assert boxes.shape == (2 * count - 1, 4) and merges.shape == (count - 1, 2)
    np.testing.assert_array_equal(boxes[-1], [0, 0, 40, 40])          # the whole image
    used = merges.ravel()
    assert np.unique(used).size == used.size                            # each region once
    assert (merges < np.arange(count, 2 * count - 1)[:, None]).all()    # parents exist
    for index, (i, j) in enumerate(merges):
        union = np.concatenate([np.minimum(boxes[i, :2], boxes[j, :2]),
                                np.maximum(boxes[i, 2:], boxes[j, 2:])])
        np.testing.assert_array_equal(boxes[count + index], union)


def test_hierarchical_grouping_merges_most_similar_first():
    # Size similarity alone: the two smallest neighbours merge first.
    labels = np.repeat(np.array([[0, 0, 0, 1], [2, 2, 3, 3]]), 4, axis=0).repeat(4, axis=1)
    image = np.zeros(labels.shape + (3,))
    _, merges = hierarchical_grouping(image, labels, "S")
    sizes = np.bincount(labels.ravel())
    first = sorted(merges[0].tolist())
    pair_sizes = {tuple(p): sizes[p[0]] + sizes[p[1]] for p in region_neighbours(labels).tolist()}
    assert pair_sizes[tuple(first)] == min(pair_sizes.values())


@pytest.mark.parametrize("seed", range(3))
def test_selective_search_boxes_valid_unique_and_recall(seed):
    rng = np.random.default_rng(seed)
    image, truth = rectangles_scene(rng)
    boxes = selective_search(image)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 96).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert np.unique(boxes, axis=0).shape[0] == boxes.shape[0]
    # Rectangles that are not hidden by later ones are found almost exactly.
    assert (box_iou(truth, boxes).max(axis=1) >= 0.7).mean() >= 2 / 3


def test_selective_search_is_reproducible_and_generator_changes_the_order_only():
    image, _ = rectangles_scene(np.random.default_rng(0))
    first, again = selective_search(image), selective_search(image)
    np.testing.assert_array_equal(first, again)
    other = selective_search(image, generator=7)
    np.testing.assert_array_equal(np.unique(first, axis=0), np.unique(other, axis=0))


def test_selective_search_quality_mode_finds_a_superset_of_strategies():
    image, _ = rectangles_scene(np.random.default_rng(1), size=48)
    fast = selective_search(image, "fast")
    quality = selective_search(image, "quality", ks=(50, 100), color_spaces=("hsv", "lab"))
    fast_set = {tuple(b) for b in fast.tolist()}
    assert fast_set <= {tuple(b) for b in quality.tolist()}


@pytest.mark.parametrize("kwargs, error", [
    ({"mode": "slow"}, ValueError), ({"color_spaces": ("xyz",)}, ValueError),
    ({"similarities": ("Q",)}, ValueError), ({"ks": (-5,)}, ValueError),
    ({"sigma": -1.0}, ValueError), ({"min_size": 2.5}, ValueError),
    ({"generator": -1}, ValueError), ({"generator": "seed"}, TypeError),
])
def test_selective_search_rejects_bad_options(kwargs, error):
    with pytest.raises(error):
        selective_search(np.zeros((8, 8, 3), np.uint8), **kwargs)


def test_selective_search_rejects_non_rgb():
    with pytest.raises(ValueError, match="image"):
        selective_search(np.zeros((8, 8), np.uint8))


@pytest.mark.oracle
def test_color_spaces_equal_scikit_image():
    skimage = require("skimage")
    rgb = np.random.default_rng(0).uniform(0, 1, (16, 16, 3))
    np.testing.assert_allclose(convert_color(rgb, "hsv"), skimage.color.rgb2hsv(rgb), atol=1e-12)
    lab = skimage.color.rgb2lab(rgb)
    scaled = np.stack([lab[..., 0] / 100, (lab[..., 1] + 128) / 255, (lab[..., 2] + 128) / 255], -1)
    np.testing.assert_allclose(convert_color(rgb, "lab"), scaled, atol=1e-4)
