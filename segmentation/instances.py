"""From a class map to object instances: connected components, boxes, reading order.

A semantic segmenter labels pixels, not objects. For objects that do not touch (the
U-Net's separation gaps keep them apart, ``segmentation.weights``), the objects are
recovered by connected components: every 8-connected blob of non-background pixels is
one object. Its class is the majority vote of its pixels (a blob half "8", half "3" is
whichever wins), its box the blob's tight box.

Reading order is the order a person reads a line of text: rows top to bottom, each
row left to right. Rows are found by splitting the boxes sorted by their vertical
centre wherever two consecutive centres are further apart than half a box height.
(The license-plate lab reads its characters this way: ``plates.reading``.)
"""
import numpy as np
from scipy import ndimage

__all__ = ["connected_instances", "reading_order"]

IGNORE_INDEX = 255  # label-map value counted for no class

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def connected_instances(class_map, num_classes=None, background=0, ignore_index=IGNORE_INDEX,
                        min_area=4, return_masks=False, return_votes=False):
    """Split a predicted class map into one instance per connected blob.

    Args:
        class_map (ndarray[H, W] int): class id per pixel.
        num_classes (int | None): K; ids must lie in [0, K) (or equal ``ignore_index``).
            None: one more than the largest id in the map.
        background (int): the class that is not an object.
        ignore_index (int or None): pixels treated as background too.
        min_area (int): blobs with fewer pixels are dropped (specks of noise).
        return_masks (bool): also return a boolean mask per instance.
        return_votes (bool): also return ``votes`` ndarray[I, K] int64, the pixels of
            each instance per predicted class.
    Returns:
        dict: ``labels`` ndarray[I] int64 (majority class), ``boxes`` ndarray[I, 4]
        float32 (tight xyxy, continuous: ``x2 = last column + 1``), ``areas`` ndarray[I]
        int64, ``scores`` ndarray[I] float32 (fraction of the blob's pixels that voted
        for its class) and, on request, ``masks`` ndarray[I, H, W] bool. Instances are
        in the order of ``scipy.ndimage.label`` (raster order of their first pixel).
    """
    class_map = np.asarray(class_map)
    if class_map.ndim != 2:
        raise ValueError(f"class_map must be 2-D (H, W), got shape {class_map.shape}")
    if not np.issubdtype(class_map.dtype, np.integer):
        raise TypeError(f"class_map must hold integer class ids, got dtype {class_map.dtype}")
    if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 1:
        raise ValueError(f"min_area must be a positive integer, got {min_area!r}")
    ids = class_map.astype(np.int64)
    foreground = ids != background
    if ignore_index is not None:
        foreground &= ids != ignore_index
    if num_classes is None:
        num_classes = int(max(ids[foreground].max(initial=0), background)) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    bad = foreground & ((ids < 0) | (ids >= num_classes))
    if bad.any():
        raise ValueError(f"class_map holds ids outside [0, {num_classes}) that are not "
                         f"ignore_index")

    components, count = ndimage.label(foreground, structure=_EIGHT_CONNECTED)
    height, width = class_map.shape
    empty = {
        "labels": np.zeros(0, np.int64), "boxes": np.zeros((0, 4), np.float32),
        "areas": np.zeros(0, np.int64), "scores": np.zeros(0, np.float32),
    }
    if return_masks:
        empty["masks"] = np.zeros((0, height, width), bool)
    if return_votes:
        empty["votes"] = np.zeros((0, num_classes), np.int64)
    if count == 0:
        return empty

    # votes[c, k] = pixels of component c+1 predicted as class k: one bincount.
    comp = components[foreground] - 1
    votes = np.bincount(comp * num_classes + ids[foreground], minlength=count * num_classes)
    votes = votes.reshape(count, num_classes)
    areas = votes.sum(axis=1)
    labels = votes.argmax(axis=1)
    scores = votes[np.arange(count), labels] / areas

    slices = ndimage.find_objects(components)
    boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices], np.float32)

    keep = np.flatnonzero(areas >= min_area)
    result = {
        "labels": labels[keep].astype(np.int64),
        "boxes": boxes[keep],
        "areas": areas[keep].astype(np.int64),
        "scores": scores[keep].astype(np.float32),
    }
    if return_votes:
        result["votes"] = votes[keep].astype(np.int64)
    if return_masks:
        result["masks"] = components[None, :, :] == (keep + 1)[:, None, None]
    return result


def reading_order(boxes, row_gap=0.5, height=None):
    """Indices that put character boxes in reading order, and the row of each.

    Args:
        boxes (ndarray[I, 4]): xyxy boxes of the characters of one plate.
        row_gap (float): a new row starts where consecutive vertical centres differ by
            more than ``row_gap`` times the character height.
        height (float, optional): the character height; default the median box height.
    Returns:
        tuple: ``order`` ndarray[I] int64 and ``rows`` ndarray[I] int64 (row of each
        box in the returned order, 0 = top).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (I, 4), got {boxes.shape}")
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    if height is None:
        height = np.median(boxes[:, 3] - boxes[:, 1])
    by_y = np.argsort(cy, kind="stable")
    new_row = np.diff(cy[by_y]) > row_gap * max(height, 1e-6)
    row_of = np.empty(len(boxes), np.int64)
    row_of[by_y] = np.concatenate([[0], np.cumsum(new_row)])
    order = np.lexsort((cx, row_of))  # primary key: row, then x
    return order.astype(np.int64), row_of[order]


