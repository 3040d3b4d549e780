"""Procedural noise: the raw material of asphalt, walls, foliage, dirt and lighting.

Value noise (Perlin, "An image synthesizer", SIGGRAPH 1985, uses gradients; random
values at lattice points are the simpler variant): draw random values on a coarse grid
and interpolate them smoothly up to the image size. Summing octaves of halving cell
size and amplitude ``persistence ** octave`` gives fractal ("1/f") noise, whose mix
of large blobs and fine grain reads as a natural texture.

The interpolation is Pillow's bicubic resize of a float ("F" mode) image: one C call
per octave, no Python loop over pixels.
"""
import numpy as np
from PIL import Image

__all__ = ["value_noise", "fractal_noise"]


def value_noise(rng, height, width, cell):
    """Smooth random field with features about ``cell`` pixels across.

    Args:
        rng (np.random.Generator): randomness.
        height (int): output height.
        width (int): output width.
        cell (float): lattice spacing in pixels (> 0).

    Returns:
        ndarray[height, width]: float32, roughly zero-mean, values in about [-1, 1].
    """
    grid_h = max(int(np.ceil(height / cell)) + 2, 2)
    grid_w = max(int(np.ceil(width / cell)) + 2, 2)
    lattice = rng.uniform(-1.0, 1.0, size=(grid_h, grid_w)).astype(np.float32)
    # Smooth fields need no full-resolution bicubic: interpolate bicubically at 1/factor
    # of the size, then bilinearly up (several times cheaper, visually the same).
    factor = int(np.clip(cell // 8, 1, 8))
    # Resize the lattice to the size it spans, then crop: the cells keep their size.
    full_h = max(int(round(grid_h * cell / factor)), 1)
    full_w = max(int(round(grid_w * cell / factor)), 1)
    out_h, out_w = -(-height // factor), -(-width // factor)
    image = Image.fromarray(lattice, mode="F").resize((full_w, full_h), Image.BICUBIC)
    top = int(rng.integers(0, max(full_h - out_h, 0) + 1))
    left = int(rng.integers(0, max(full_w - out_w, 0) + 1))
    image = image.crop((left, top, left + out_w, top + out_h))
    if factor > 1:
        image = image.resize((out_w * factor, out_h * factor), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32)[:height, :width]


def fractal_noise(rng, height, width, cell, octaves=4, persistence=0.5):
    """Sum of ``octaves`` value-noise layers of cell ``cell / 2**k`` and weight ``persistence**k``.

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
    total = np.zeros((height, width), dtype=np.float32)
    weight_sum = 0.0
    for octave in range(octaves):
        size = cell / 2 ** octave
        if size < 1.0:
            break
        weight = persistence ** octave
        total += weight * value_noise(rng, height, width, size)
        weight_sum += weight
    return total / weight_sum
