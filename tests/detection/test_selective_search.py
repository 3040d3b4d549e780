"""Tests of detection.selective_search: felzenszwalb and selective_search."""
import numpy as np
import pytest
from scipy import ndimage


from detection.selective_search import felzenszwalb, grid_edges
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


def blocky_image(rng, height, width, block=4, colours=3):
    """Flat blocks of a few colours: many edges of exactly equal weight."""
    palette = rng.integers(0, 256, (colours, 3))
    cells = rng.integers(0, colours, (height // block + 1, width // block + 1))
    image = np.repeat(np.repeat(palette[cells], block, 0), block, 1)[:height, :width]
    return image.astype(np.uint8)


def shapes_image(rng, size=64):
    """Rectangles and a gradient with noise: long runs of merges through one region."""
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.stack([xx * 2.0, yy * 3.0, (xx + yy) * 1.0], axis=-1) + rng.normal(0, 4, (size, size, 3))
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
