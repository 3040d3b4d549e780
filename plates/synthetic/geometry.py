"""Plane projective warps (homographies) and supersampled inverse mapping.

A plate is drawn flat, in its own canonical frame, then placed in the scene by a
homography ``H`` (3x3), which models rotation, shear and perspective at once
(Hartley & Zisserman, "Multiple View Geometry", 2nd ed., ch. 2 and 4.1):

    [x', y', w']^T = H [u, v, 1]^T,        (x, y) = (x' / w', y' / w')

``H`` is fitted to four corner correspondences with the direct linear transform
(DLT, H&Z algorithm 4.1, with ``H[2, 2] = 1``: 8 equations, 8 unknowns).

To render, every scene pixel is mapped *back* to the canonical frame (inverse
mapping, so there are no holes) at ``s x s`` sub-pixel positions; a layer's coverage
of a pixel is the fraction of its sub-samples that land inside that layer. The image
and every mask are computed from the very same sub-samples, so a mask is the warped
layer thresholded at coverage 0.5 and the image's anti-aliasing agrees with it.

Pixel convention: pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``;
its centre is ``(col + 0.5, row + 0.5)`` (the same in the canonical frame).
"""
import numpy as np

__all__ = ["homography_from_points", "apply_homography", "quad_region", "inverse_map_grid",
           "inverse_map"]


def homography_from_points(src, dst):
    """The homography mapping 4 source points onto 4 destination points (DLT).

    Args:
        src (ndarray[4, 2]): ``(x, y)`` points, float, no three collinear.
        dst (ndarray[4, 2]): their images.

    Returns:
        ndarray[3, 3]: float64 ``H`` with ``H[2, 2] = 1`` and ``dst ~ H @ [src, 1]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != (4, 2) or dst.shape != (4, 2):
        raise ValueError(f"src and dst must have shape (4, 2), got {src.shape} and {dst.shape}")
    u, v = src[:, 0], src[:, 1]
    x, y = dst[:, 0], dst[:, 1]
    zeros, ones = np.zeros(4), np.ones(4)
    # x (h31 u + h32 v + 1) = h11 u + h12 v + h13, and the same for y: two rows per point.
    rows_x = np.stack([u, v, ones, zeros, zeros, zeros, -u * x, -v * x], axis=1)  # (4, 8)
    rows_y = np.stack([zeros, zeros, zeros, u, v, ones, -u * y, -v * y], axis=1)  # (4, 8)
    a = np.concatenate([rows_x, rows_y])                                            # (8, 8)
    b = np.concatenate([x, y])                                                      # (8,)
    h = np.linalg.solve(a, b)
    return np.append(h, 1.0).reshape(3, 3)


def apply_homography(h, points):
    """Map ``(x, y)`` points through the homography ``h``.

    Args:
        h (ndarray[3, 3]): homography.
        points (ndarray[..., 2]): points, float.

    Returns:
        ndarray[..., 2]: mapped points, float64.
    """
    points = np.asarray(points, dtype=np.float64)
    mapped = points @ h[:, :2].T + h[:, 2]           # (..., 3) homogeneous
    return mapped[..., :2] / mapped[..., 2:3]


def quad_region(quad, height, width):
    """The pixel rectangle covering a quadrilateral, clipped to the image.

    Args:
        quad (ndarray[4, 2]): corner points ``(x, y)``.
        height (int): image height.
        width (int): image width.

    Returns:
        tuple[int, int, int, int]: ``(x0, y0, x1, y1)`` half-open pixel bounds; empty
        (``x1 <= x0`` or ``y1 <= y0``) when the quad lies outside the image.
    """
    x0 = max(int(np.floor(quad[:, 0].min())), 0)
    y0 = max(int(np.floor(quad[:, 1].min())), 0)
    x1 = min(int(np.ceil(quad[:, 0].max())), width)
    y1 = min(int(np.ceil(quad[:, 1].max())), height)
    return x0, y0, x1, y1


def inverse_map_grid(h_inv, region, supersample):
    """Canonical-frame pixel indices of the sub-sample grid of a region.

    Sub-sample ``(i, j)`` of the grid lies at scene position
    ``(x0 + (j + 0.5) / s, y0 + (i + 0.5) / s)``: pixel ``(r, c)`` of the region owns the
    grid block ``[r s, (r + 1) s) x [c s, (c + 1) s)``.

    Args:
        h_inv (ndarray[3, 3]): homography from scene to canonical frame.
        region (tuple[int, int, int, int]): ``(x0, y0, x1, y1)`` scene pixel bounds.
        supersample (int): ``s``, sub-samples per pixel along each axis.

    Returns:
        tuple[ndarray, ndarray]: ``(rows, cols)``, each ``ndarray[h * s, w * s]`` int64: the
        canonical pixel hit by each sub-sample (``floor`` of its mapped position; may lie
        outside the canonical image, which the caller treats as "not covered").
    """
    x0, y0, x1, y1 = region
    offsets = (np.arange(supersample) + 0.5) / supersample                 # (s,)
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1)        # (w·s,)
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1)        # (h·s,)
    # Homogeneous coordinates of the (h·s) x (w·s) sub-sample grid, one product each.
    num_u = h_inv[0, 0] * xs[None, :] + h_inv[0, 1] * ys[:, None] + h_inv[0, 2]
    num_v = h_inv[1, 0] * xs[None, :] + h_inv[1, 1] * ys[:, None] + h_inv[1, 2]
    den = h_inv[2, 0] * xs[None, :] + h_inv[2, 1] * ys[:, None] + h_inv[2, 2]
    cols = np.floor(num_u / den).astype(np.int64)                           # (h·s, w·s)
    rows = np.floor(num_v / den).astype(np.int64)
    return rows, cols


def inverse_map(h_inv, region, supersample):
    """Canonical-frame pixel indices of the sub-samples of every pixel of a region.

    Args:
        h_inv (ndarray[3, 3]): homography from scene to canonical frame.
        region (tuple[int, int, int, int]): ``(x0, y0, x1, y1)`` scene pixel bounds.
        supersample (int): ``s``, sub-samples per pixel along each axis (``s * s`` in all).

    Returns:
        tuple[ndarray, ndarray]: ``(rows, cols)``, each ``ndarray[h, w, s * s]`` int64:
        ``inverse_map_grid``'s samples grouped by pixel.
    """
    x0, y0, x1, y1 = region
    rows, cols = inverse_map_grid(h_inv, region, supersample)
    height, width, s = y1 - y0, x1 - x0, supersample

    def per_pixel(grid):
        # (h·s, w·s) -> (h, s, w, s) -> (h, w, s, s) -> (h, w, s·s)
        return grid.reshape(height, s, width, s).transpose(0, 2, 1, 3).reshape(height, width, s * s)

    return per_pixel(rows), per_pixel(cols)
