"""Procedural noise: the raw material of asphalt, walls, foliage, dirt and lighting.

Value noise (Perlin, "An image synthesizer", SIGGRAPH 1985, uses gradients; random
values at lattice points are the simpler variant): draw random values on a coarse grid
and interpolate them smoothly up to the image size. Summing octaves of halving cell
size and amplitude ``persistence ** octave`` gives fractal ("1/f") noise, whose mix
of large blobs and fine grain reads as a natural texture.

The interpolation is Pillow's bicubic resize of a float ("F" mode) image: one C call,
no Python loop over pixels. Fractal noise sums its octaves on the lattice of the finest
one (each coarser lattice is first interpolated onto it) and interpolates that sum to
the image once, so its cost is that of one octave at full size.
"""
import numpy as np
from PIL import Image

__all__ = ["value_noise", "fractal_noise"]


def _resize(lattice, width, height, resample):
    return Image.fromarray(np.ascontiguousarray(lattice, dtype=np.float32), mode="F").resize(
        (max(int(width), 1), max(int(height), 1)), resample)


def _interpolate(rng, lattice, cell, height, width):
    """Bicubic interpolation of a lattice with ``cell`` pixels between points, cropped at a
    random offset to ``(height, width)``.

    Smooth fields need no full-resolution bicubic: they are interpolated bicubically at
    ``1 / factor`` of the size (``factor = cell // 4``, at most 8: at least four samples
    per cell), then bilinearly up.
    """
    grid_h, grid_w = lattice.shape
    factor = int(np.clip(cell // 4, 1, 8))
    # Resize the lattice to the size it spans, then crop: the cells keep their size.
    full_h = max(int(round(grid_h * cell / factor)), 1)
    full_w = max(int(round(grid_w * cell / factor)), 1)
    out_h, out_w = -(-height // factor), -(-width // factor)
    image = _resize(lattice, full_w, full_h, Image.BICUBIC)
    top = int(rng.integers(0, max(full_h - out_h, 0) + 1))
    left = int(rng.integers(0, max(full_w - out_w, 0) + 1))
    if factor > 1:
        image = image.resize((out_w * factor, out_h * factor), Image.BILINEAR,
                             box=(left, top, left + out_w, top + out_h))
        return np.asarray(image)[:height, :width]
    return np.asarray(image)[top:top + height, left:left + width]


def _lattice_shape(height, width, cell):
    return max(int(np.ceil(height / cell)) + 2, 2), max(int(np.ceil(width / cell)) + 2, 2)


def value_noise(rng, height, width, cell):
    """Smooth random field with features about ``cell`` pixels across.

    Args:
        rng (np.random.Generator): randomness.
        height (int): output height.
        width (int): output width.
        cell (float): lattice spacing in pixels (> 0).

    Returns:
        ndarray[height, width]: float32, roughly zero-mean, values in about [-1, 1]
        (read-only: a view of Pillow's buffer).
    """
    lattice = rng.uniform(-1.0, 1.0, size=_lattice_shape(height, width, cell))
    return _interpolate(rng, lattice.astype(np.float32), cell, height, width)


def fractal_noise(rng, height, width, cell, octaves=4, persistence=0.5):
    """Sum of ``octaves`` value-noise layers of cell ``cell / 2**k`` and weight ``persistence**k``.

    The octaves are summed on the finest lattice (cell ``cell / 2**(K-1)``), each coarser
    lattice interpolated (bicubic) onto it at a random offset; the sum is then
    interpolated to the image like ``value_noise``.

    Args:
        rng (np.random.Generator): randomness.
        height (int): output height.
        width (int): output width.
        cell (float): cell size of the coarsest octave, pixels.
        octaves (int): number of layers (>= 1); layers finer than 1 pixel are skipped.
        persistence (float): amplitude ratio between successive octaves.

    Returns:
        ndarray[height, width]: float32 normalized to unit maximum amplitude (about [-1, 1]).
    """
    sizes = [cell / 2 ** k for k in range(octaves) if cell / 2 ** k >= 1.0] or [cell]
    finest = sizes[-1]
    grid_h, grid_w = _lattice_shape(height, width, finest)
    total = np.zeros((grid_h, grid_w), dtype=np.float32)
    weight_sum = 0.0
    for octave, size in enumerate(sizes):
        weight = persistence ** octave
        ratio = int(round(size / finest))          # 2 ** (K - 1 - octave) fine cells per cell
        coarse = rng.uniform(-1.0, 1.0, size=(-(-grid_h // ratio) + 2, -(-grid_w // ratio) + 2))
        if ratio > 1:
            up = np.asarray(_resize(coarse, coarse.shape[1] * ratio, coarse.shape[0] * ratio,
                                    Image.BICUBIC))
            top = int(rng.integers(0, up.shape[0] - grid_h + 1))
            left = int(rng.integers(0, up.shape[1] - grid_w + 1))
            coarse = up[top:top + grid_h, left:left + grid_w]
        else:
            coarse = coarse[:grid_h, :grid_w]
        total += np.float32(weight) * coarse.astype(np.float32)
        weight_sum += weight
    return _interpolate(rng, total / np.float32(weight_sum), finest, height, width)
