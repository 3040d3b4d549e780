"""Character regions: what the digit segmenter learns to label.

The plate scenes come with an *instance* map (``SegmentationObject``): every pixel of a
character's ink carries the index of that character. The segmenter works on small
plate crops (48 x 144 by default, 32 x 96 in the first version), where a character is
6-9 px wide, its strokes 1-3 px and its neighbours one or two pixels away. Labelling
the crop with the *ink* fails twice (measured on the 336 test plates at 512 px,
``docs/results.md``):

- thin strokes vanish when the plate is shrunk, so a character falls apart into pieces
  ("M" into three, "4" into a stem and a diagonal), and
- neighbouring characters touch, so two characters become one blob.

Reading the *ground-truth* ink maps with ``segmentation.instances.read_plate`` gives the
right text for only 61-66% of the plates at 32 x 96 (79% at 48 x 144): no segmenter
trained on those labels can read more. So the segmenter labels each character's
**region**, as OCR's "character segmentation" does, built in three steps:

1. **Region = filled convex hull of the ink** (``character_regions``), at the scene's
   resolution: one solid blob per character, which cannot fall apart. A pixel inside
   the hulls of two characters (tilted neighbours) belongs to neither, unless it is
   ink of one of them.
2. **Area vote when cropping** (``crop_region_labels``): each crop pixel is split into
   ``samples x samples`` sub-pixels; it is a character pixel when at least ``coverage``
   of them fall on characters, and then it belongs to the character covering most of
   them. Nearest-neighbour resampling would instead keep or drop a thin part at random
   depending on where the sample lands, making labels the image cannot predict.
3. **Separation** (``separate_instances``): a pixel of a character with a pixel of
   *another* character among its 8 neighbours becomes background, so that characters
   are always at least one pixel apart. This is the U-Net paper's answer to touching
   objects (Ronneberger et al., 2015, Sec. 3: "the separation background labels
   between touching cells"); then each 8-connected blob of a label map is one character.

4. **Weights on the gaps** (``separation_weights``): the one-pixel gaps are a tiny part
   of the loss, so a network learns them last and, early on, joins neighbours. The
   U-Net paper weighs its loss with ``w0 · exp(-(d1 + d2)² / 2σ²)`` (``d1``, ``d2`` the
   distances to the nearest and second-nearest object); with gaps of one pixel that
   is, in effect, a weight ``w0`` on the background pixels that see two characters in
   their 3x3 neighbourhood, which is what we use.

With these labels the ground truth reads 98.2% of the test plates at 32 x 96 (83.3% when
``read_plate`` drops blobs under 2 pixels as noise: dots shrink to one pixel) and 99.7% at
48 x 144 either way.

Class ids are those of ``plates.classes`` (0 background, 3..12 the digits,
13 other character, 255 ignore for crop pixels outside the image).
"""
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from plates.classes import IGNORE_INDEX
from plates.crops import _check_size, _sample_positions
from segmentation.weights import separate_instances

__all__ = ["character_regions", "crop_region_labels", "crop_coverage"]

# A pixel centre counts as inside a hull up to this slack (pixel units), so that the
# centres of the ink pixels themselves, which lie strictly inside, are never lost to
# rounding, and centres exactly on a hull edge count as inside.
_HULL_SLACK = 1e-9


def _check_instance_map(instance_map, name):
    if not isinstance(instance_map, np.ndarray) or instance_map.ndim != 2 \
            or not np.issubdtype(instance_map.dtype, np.integer):
        got = (f"{instance_map.dtype} {instance_map.shape}" if isinstance(instance_map, np.ndarray)
               else type(instance_map).__name__)
        raise ValueError(f"{name} must be a 2-D integer ndarray (H, W) of instance ids, got {got}")
    if instance_map.size and instance_map.min() < 0:
        raise ValueError(f"{name} must hold ids >= 0 (0 = no object), got {instance_map.min()}")


def character_regions(instance_map, character_ids):
    """Replace each character's ink by its filled convex hull.

    Args:
        instance_map (ndarray[H, W] int): 0 for no object, ``i`` for object ``i``
            (the ``SegmentationObject`` convention: 1-based index in the annotation).
        character_ids (sequence[int]): the instance ids that are characters; every
            other id (cars, plates) becomes 0 in the result.

    Returns:
        ndarray[H, W] int32: 0 or the character id owning the pixel. Ink pixels keep
        their own id; a non-ink pixel takes the id of the one hull containing its
        centre, and stays 0 when it lies in several hulls or none.
    """
    _check_instance_map(instance_map, "instance_map")
    ids = np.unique(np.asarray(character_ids, dtype=np.int64).reshape(-1))
    if ids.size and ids.min() <= 0:
        raise ValueError(f"character_ids must be positive instance ids, got {ids.min()}")
    # Each object's bounding box in one pass over the image; a character's hull lies in
    # its box, so all the work below happens in the window holding the characters.
    boxes = ndimage.find_objects(instance_map)
    char_boxes = [(char_id, boxes[char_id - 1]) for char_id in ids
                  if char_id <= len(boxes) and boxes[char_id - 1] is not None]
    regions = np.zeros(instance_map.shape, dtype=np.int32)  # (H, W)
    if not char_boxes:
        return regions
    wy0 = min(box[0].start for _, box in char_boxes)
    wy1 = max(box[0].stop for _, box in char_boxes)
    wx0 = min(box[1].start for _, box in char_boxes)
    wx1 = max(box[1].stop for _, box in char_boxes)
    window = instance_map[wy0:wy1, wx0:wx1]
    is_char = np.zeros(max(int(window.max()), int(ids.max())) + 1, dtype=bool)
    is_char[ids] = True
    ink = np.where(is_char[window], window, 0).astype(np.int32)
    claims = np.zeros(ink.shape, dtype=np.int16)  # hulls containing each pixel centre
    owner = np.zeros(ink.shape, dtype=np.int32)
    for char_id, (rows, cols) in char_boxes:
        box = (slice(rows.start - wy0, rows.stop - wy0), slice(cols.start - wx0, cols.stop - wx0))
        mine = ink[box] == char_id  # (h, w) within the character's box
        # The hull of the ink *pixels* (unit squares), i.e. of their corners; in each row
        # the leftmost and rightmost squares span the others, so their corners suffice.
        ys = np.flatnonzero(mine.any(axis=1))
        left = mine[ys].argmax(axis=1)
        right = mine.shape[1] - mine[ys, ::-1].argmax(axis=1)  # one past the last pixel
        corners = np.concatenate([np.stack([xs, ys + dy], axis=1)
                                  for xs in (left, right) for dy in (0, 1)]).astype(np.float64)
        try:
            hull = ConvexHull(corners)
        except QhullError:  # cannot happen for unit squares; keep the ink alone
            continue
        gy, gx = np.mgrid[0:rows.stop - rows.start, 0:cols.stop - cols.start]
        centres = np.stack([gx.ravel() + 0.5, gy.ravel() + 0.5], axis=1)  # (P, 2) as (x, y)
        # Inside a convex hull = on the inner side of every facet: n·p + offset <= 0.
        inside = (centres @ hull.equations[:, :2].T + hull.equations[:, 2]
                  <= _HULL_SLACK).all(axis=1).reshape(gy.shape)
        claims[box] += inside
        owner[box][inside] = char_id
    fill = (ink == 0) & (claims == 1)
    ink[fill] = owner[fill]
    regions[wy0:wy1, wx0:wx1] = ink
    return regions


def _check_crop_geometry(windows, size, samples):
    """Checked ``(windows ndarray[K, 4] float64, h, w, samples)`` of crop windows."""
    windows = np.asarray(windows, dtype=np.float64)
    if windows.ndim != 2 or windows.shape[1] != 4 or not np.isfinite(windows).all() \
            or (windows[:, 2:] <= windows[:, :2]).any():
        raise ValueError(f"windows must be (K, 4) finite xyxy boxes with x2 > x1 and y2 > y1, "
                         f"got shape {windows.shape}")
    height, width = _check_size(size)
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    return windows, height, width, int(samples)


def _subpixel_read(image_map, windows, height, width, s):
    """``image_map`` read at the sub-pixel centres of crops ``s`` times finer than
    ``(height, width)``: ndarray[K, height·s, width·s], 0 (False) outside the image."""
    image_h, image_w = image_map.shape
    # Sub-pixel centres: (K, h·s) rows and (K, w·s) columns in image pixels.
    ys, xs = _sample_positions(windows, height * s, width * s)
    rows, cols = np.floor(ys).astype(np.intp), np.floor(xs).astype(np.intp)
    inside = (((rows >= 0) & (rows < image_h))[:, :, None]
              & ((cols >= 0) & (cols < image_w))[:, None, :])
    values = image_map[rows.clip(0, image_h - 1)[:, :, None],
                       cols.clip(0, image_w - 1)[:, None, :]]
    return np.where(inside, values, 0).astype(image_map.dtype, copy=False)


def crop_region_labels(region_map, class_of, windows, size, samples=4, coverage=0.5):
    """Class maps of crop windows, by area vote over sub-pixels, characters separated.

    Crop pixel ``(i, j)`` of window ``(X1, Y1, X2, Y2)`` covers the image rectangle
    ``[X1 + j·Δx, X1 + (j+1)·Δx) x [Y1 + i·Δy, ...)`` with ``Δx = (X2 - X1) / w`` (the
    geometry of ``plates.crops.crop_plates``). Its ``samples²`` sub-pixel
    centres each read the region map (nearest pixel). The pixel belongs to the instance
    read most often (ties: the smaller id) when the character sub-pixels are at least
    ``coverage`` of all, else to the background. Then ``separate_instances`` and the
    class lookup.

    Args:
        region_map (ndarray[H, W] int): instance ids, 0 background (``character_regions``).
        class_of (ndarray[M] int): class id of each instance id (``class_of[0]`` unused),
            ``M > region_map.max()``.
        windows (ndarray[K, 4]): xyxy crop windows in image pixels (``crop_windows``).
        size (tuple[int, int]): crop ``(h, w)``.
        samples (int): sub-pixels per axis (4: 16 votes per pixel).
        coverage (float): in (0, 1], the share of character sub-pixels needed.

    Returns:
        ndarray[K, h, w] uint8: class ids, ``IGNORE_INDEX`` where the pixel centre lies
        outside the image.
    """
    _check_instance_map(region_map, "region_map")
    class_of = np.asarray(class_of)
    if class_of.ndim != 1 or not np.issubdtype(class_of.dtype, np.integer) \
            or class_of.size <= region_map.max(initial=0):
        raise ValueError(f"class_of must be a 1-D integer array longer than the largest id "
                         f"{region_map.max(initial=0)}, got {class_of.dtype} {class_of.shape}")
    windows, height, width, s = _check_crop_geometry(windows, size, samples)
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage!r}")
    count = len(windows)
    image_h, image_w = region_map.shape
    if count == 0:
        return np.zeros((0, height, width), dtype=np.uint8)

    ids = _subpixel_read(region_map, windows, height, width, s)  # outside: 0, no character
    votes = ids.reshape(count, height, s, width, s).transpose(0, 1, 3, 2, 4)
    votes = votes.reshape(count * height * width, s * s)  # (K·h·w, s²) ids per crop pixel
    # Votes per (pixel, id) with one bincount; argmax takes the first maximum, i.e. the
    # smallest id among ties. (Ids are small: the objects of one image.)
    m = int(votes.max(initial=0)) + 1
    pixel = np.arange(votes.shape[0])[:, None]  # (K·h·w, 1)
    counts = np.bincount((pixel * m + votes).ravel(), minlength=votes.shape[0] * m)
    counts = counts.reshape(votes.shape[0], m)  # (K·h·w, M): column 0 is "no character"
    if m == 1:  # no character anywhere
        instances = np.zeros((count, height, width), np.int64)
    else:
        best = 1 + counts[:, 1:].argmax(axis=1)
        share = 1 - counts[:, 0] / (s * s)  # character sub-pixels
        instances = np.where(share >= coverage - 1e-12, best, 0).reshape(count, height, width)
    instances = separate_instances(instances)
    labels = class_of[instances].astype(np.uint8)  # (K, h, w)
    # Ignore where the pixel centre lies outside the image (as crop_plates).
    cy, cx = _sample_positions(windows, height, width)  # pixel centres (K, h), (K, w)
    centre_inside = (((cy >= 0) & (cy < image_h))[:, :, None]
                     & ((cx >= 0) & (cx < image_w))[:, None, :])
    labels[~centre_inside] = IGNORE_INDEX
    return labels


def crop_coverage(mask, windows, size, samples=4):
    """The share of each crop pixel that a boolean image mask covers (area by sub-pixels).

    The crop geometry of ``crop_region_labels``: crop pixel ``(i, j)`` of a window
    covers ``samples²`` sub-pixel centres, each reads the mask at its nearest pixel
    (outside the image: not covered); the share is the fraction that read True.

    Args:
        mask (ndarray[H, W] bool): e.g. where a scene's plate decorations are.
        windows (ndarray[K, 4]): xyxy crop windows in image pixels (``crop_windows``).
        size (tuple[int, int]): crop ``(h, w)``.
        samples (int): sub-pixels per axis.

    Returns:
        ndarray[K, h, w] float32 in [0, 1].
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != bool:
        raise ValueError(f"mask must be a 2-D bool array, got {mask.dtype} {mask.shape}")
    windows, height, width, s = _check_crop_geometry(windows, size, samples)
    count = len(windows)
    if count == 0:
        return np.zeros((0, height, width), np.float32)
    hits = _subpixel_read(mask, windows, height, width, s)  # (K, h·s, w·s), outside False
    return hits.reshape(count, height, s, width, s).mean(axis=(2, 4), dtype=np.float32)
