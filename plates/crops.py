"""Plate crops: the input of stage two (digit segmentation).

Stage one finds plates; stage two segments the characters of each plate. Between
them, every plate box (ground truth for training, the detector's for inference) is
cut out of the image with some context and resampled to one fixed size, together
with its class map, so the segmenter sees plates at a constant scale.

Aspect ratio: we keep it by *growing the crop window*, not by letterboxing or
stretching. The padded plate box is widened (or heightened) around its centre until
it has the output's aspect ratio ``w / h``; the extra margin is real image context
instead of black bars, and characters keep their shape (a plain resize would stretch
a two-row motorbike plate, about 1.3:1, by 2.3x horizontally into a 3:1 crop). The
price: a two-row plate fills only part of the crop's width. Parts of the window
outside the image are black in the crop and ``IGNORE_INDEX`` (255) in the mask.

Resampling: bilinear for the image, nearest for the class map (ids must stay ids),
both sampling at pixel centres: output pixel ``(i, j)`` of crop ``k`` reads the image
at ``x = X1 + (j + 0.5) * (X2 - X1) / w`` (likewise ``y``), ``(X1, Y1, X2, Y2)`` the
crop window. Bilinear does not low-pass filter, so shrinking a plate more than ~2x
aliases; the lab cuts plates from the full-resolution frame, where a plate is
usually 1-4 times the crop's 120 px width. All crops of an
image are sampled at once (index arrays of shape (K, h, w)): no loop over boxes.

A ``PlateCropDataset`` produces ``(crop, mask, text)`` from a VOC dataset: ``text`` is
the plate's characters in reading order (``reading_order``: rows top to bottom, left
to right in a row, robust to tilted plates; rows joined by a space, the convention of
the generator's plate text ``"29-B1 123.45"``).
"""
import os
from numbers import Integral, Real

import numpy as np

from plates.classes import CHAR, DIGIT_IDS, IGNORE_INDEX, PLATE_CLASSES, to_segmenter_labels
from detection.datasets.voc import VOCDataset, read_label_map, read_rgb
from nn.data import Dataset

CROP_SIZE = (40, 120)  # (h, w) of the digit segmenter's crops
CROP_PADDING = 0.05  # margin around the plate box, relative to its size

__all__ = ["CROP_SIZE", "CROP_PADDING", "crop_windows", "crop_plates", "crop_to_image", "reading_order", "plate_texts",
           "PlateCropDataset"]


def _check_size(size):
    if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(
            isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"size must be a pair (height, width) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _check_boxes(boxes):
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.issubdtype(boxes.dtype, np.number):
        raise ValueError(f"boxes must be a numeric (K, 4) array of xyxy boxes, got shape "
                         f"{boxes.shape}")
    boxes = boxes.astype(np.float64)
    if not np.isfinite(boxes).all():
        raise ValueError("boxes must be finite")
    if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        raise ValueError("boxes must have x2 > x1 and y2 > y1 (continuous xyxy)")
    return boxes


def crop_windows(boxes, size=CROP_SIZE, padding=CROP_PADDING):
    """The crop window of each box: padded, then grown to the aspect ratio of ``size``.

    ``padding`` is relative: each side moves out by ``padding`` times the box's width
    (left, right) or height (top, bottom). Then the shorter side grows around the centre
    until ``window_w / window_h == size[1] / size[0]``.

    Args:
        boxes (ndarray[K, 4]): xyxy plate boxes (x2 > x1, y2 > y1).
        size (tuple[int, int]): output (h, w).
        padding (float): >= 0.

    Returns:
        ndarray[K, 4]: float32 windows in image coordinates (may reach outside the image).
    """
    height, width = _check_size(size)
    boxes = _check_boxes(boxes)
    if not isinstance(padding, Real) or isinstance(padding, bool) or not 0 <= padding < np.inf:
        raise ValueError(f"padding must be a non-negative number, got {padding!r}")
    box_w = (boxes[:, 2] - boxes[:, 0]) * (1 + 2 * padding)
    box_h = (boxes[:, 3] - boxes[:, 1]) * (1 + 2 * padding)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    aspect = width / height
    window_w = np.maximum(box_w, box_h * aspect)
    window_h = window_w / aspect
    windows = np.stack([cx - window_w / 2, cy - window_h / 2,
                        cx + window_w / 2, cy + window_h / 2], axis=1)  # (K, 4)
    return windows.astype(np.float32)


def _sample_positions(windows, height, width):
    """Sample centres (K, h) rows and (K, w) columns of each window, in image pixels."""
    steps_y = (np.arange(height) + 0.5) / height  # (h,) fractions of the window
    steps_x = (np.arange(width) + 0.5) / width
    ys = windows[:, 1:2] + steps_y[None, :] * (windows[:, 3:4] - windows[:, 1:2])  # (K, h)
    xs = windows[:, 0:1] + steps_x[None, :] * (windows[:, 2:3] - windows[:, 0:1])  # (K, w)
    return ys, xs


def crop_plates(image, boxes, size=CROP_SIZE, padding=CROP_PADDING, class_mask=None):
    """Cut plates out of an image at a fixed size, with their class maps.

    Args:
        image (ndarray[H, W, 3]): uint8 RGB.
        boxes (ndarray[K, 4]): xyxy plate boxes, ground truth or predicted.
        size (tuple[int, int]): crop (h, w); ``(32, 96)`` by default.
        padding (float): relative margin around each box (``crop_windows``).
        class_mask (ndarray[H, W] | None): uint8 class ids to crop along (nearest).

    Returns:
        tuple:
        - crops (ndarray[K, h, w, 3]): uint8, bilinear.
        - masks (ndarray[K, h, w] | None): uint8 class ids, 255 outside the image.
        - windows (ndarray[K, 4]): float32 crop windows in image coordinates; map a
          crop point back with ``crop_to_image``.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError("image must be a non-empty uint8 ndarray of shape (H, W, 3), got "
                         + (f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray)
                            else type(image).__name__))
    image_h, image_w = image.shape[:2]
    if class_mask is not None and (not isinstance(class_mask, np.ndarray)
                                   or class_mask.dtype != np.uint8
                                   or class_mask.shape != (image_h, image_w)):
        raise ValueError(f"class_mask must be a uint8 ndarray of shape ({image_h}, {image_w}), "
                         f"got {getattr(class_mask, 'dtype', type(class_mask).__name__)} "
                         f"{getattr(class_mask, 'shape', '')}")
    height, width = _check_size(size)
    windows = crop_windows(boxes, size, padding)
    count = len(windows)
    ys, xs = _sample_positions(windows.astype(np.float64), height, width)

    # Bilinear: the four neighbours of each sample, pixel centres at integer + 0.5.
    fy, fx = ys - 0.5, xs - 0.5
    y0, x0 = np.floor(fy), np.floor(fx)
    wy, wx = (fy - y0)[:, :, None, None], (fx - x0)[:, None, :, None]  # (K,h,1,1), (K,1,w,1)
    # Clamping the neighbours replicates the border within half a pixel of the image.
    y0i = y0.clip(0, image_h - 1).astype(np.intp)
    y1i = (y0 + 1).clip(0, image_h - 1).astype(np.intp)
    x0i = x0.clip(0, image_w - 1).astype(np.intp)
    x1i = (x0 + 1).clip(0, image_w - 1).astype(np.intp)
    pixels = image.astype(np.float32)
    top = pixels[y0i[:, :, None], x0i[:, None, :]] * (1 - wx) \
        + pixels[y0i[:, :, None], x1i[:, None, :]] * wx  # (K, h, w, 3)
    bottom = pixels[y1i[:, :, None], x0i[:, None, :]] * (1 - wx) \
        + pixels[y1i[:, :, None], x1i[:, None, :]] * wx
    crops = top * (1 - wy) + bottom * wy
    inside_y = (ys >= 0) & (ys < image_h)  # (K, h): sample centre inside the image
    inside_x = (xs >= 0) & (xs < image_w)  # (K, w)
    inside = inside_y[:, :, None] & inside_x[:, None, :]  # (K, h, w)
    crops = np.where(inside[..., None], crops, 0)
    crops = np.rint(crops).clip(0, 255).astype(np.uint8).reshape(count, height, width, 3)

    masks = None
    if class_mask is not None:
        rows = np.floor(ys).clip(0, image_h - 1).astype(np.intp)  # nearest: the pixel under
        cols = np.floor(xs).clip(0, image_w - 1).astype(np.intp)  # the sample centre
        masks = class_mask[rows[:, :, None], cols[:, None, :]]  # (K, h, w)
        masks = np.where(inside, masks, IGNORE_INDEX).astype(np.uint8).reshape(count, height, width)
    return crops, masks, windows


def crop_to_image(points, window, size):
    """Map crop coordinates back to the image (for boxes found in a crop).

    Args:
        points (ndarray[..., 2k]): x, y, x, y, ... in crop pixels (xyxy boxes work).
        window (ndarray[4]): the crop's window from ``crop_plates``.
        size (tuple[int, int]): the crop's (h, w).

    Returns:
        ndarray[..., 2k]: float64 image coordinates ``X1 + x * (X2 - X1) / w``; an empty
        ``points`` (e.g. ``(0, 4)``) gives an empty array of its shape.
    """
    height, width = _check_size(size)
    points = np.asarray(points, dtype=np.float64)
    window = np.asarray(window, dtype=np.float64).reshape(4)
    if points.ndim == 0 or points.shape[-1] % 2:
        raise ValueError(f"points must end in an even axis (x, y pairs), got {points.shape}")
    scale = np.array([(window[2] - window[0]) / width, (window[3] - window[1]) / height])
    offset = window[:2]
    pairs = points.reshape(points.shape[:-1] + (points.shape[-1] // 2, 2))  # (..., k, 2)
    return (pairs * scale + offset).reshape(points.shape)


# --------------------------------------------------------------------------- dataset
# Plates are never tilted more than ~20 degrees: tan(20°) bounds the fitted row slope.
_MAX_ROW_SLOPE = 0.36
# A new row starts where deskewed character centres jump by this fraction of the plate
# box height. Square-ish plates (width < 2.5 heights: motorbikes, two-row formats) have
# rows only ~0.35 box heights apart; on wide one-row plates a dot or dash sits up to
# ~0.2 box heights off the digits' centre line. Measured on 738 generated plates:
# 0 misread rows with (0.18, 0.25); a single 0.25 misses 5 two-row plates.
_ROW_GAP_SQUARE, _ROW_GAP_WIDE, _SQUARE_ASPECT = 0.18, 0.25, 2.5


def reading_order(boxes, plate_box):
    """Order character boxes as a person reads a plate: rows top to bottom, left to right.

    Small rotations and perspective tilt a one-row plate, so sorting by the vertical
    centre alone would split it into "rows" (all the more as the boxes of small or
    partly hidden glyphs are short). We first remove the tilt: fit the line
    ``cy = a * cx + b`` through the character centres (least squares, ``|a|`` clipped
    to tan 20°, no fit below 3 characters) and sort the residuals ``cy - a * cx``; a
    gap of more than ``g * plate_height`` between consecutive residuals starts a new
    row, ``g = 0.18`` on square-ish plates (width < 2.5 heights) and ``0.25`` on wide
    ones. (``segmentation.instances.reading_order`` reads *predicted* characters with
    a gap relative to their median height.)

    Args:
        boxes (ndarray[C, 4]): xyxy character boxes of one plate.
        plate_box (ndarray[4]): xyxy box of the plate.

    Returns:
        tuple: ``order`` ndarray[C] int64 (indices in reading order) and ``rows``
        ndarray[C] int64 (row of each box in that order, 0 = top).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    x1, y1, x2, y2 = (float(v) for v in np.asarray(plate_box, dtype=np.float64).reshape(4))
    plate_height = max(y2 - y1, 1e-6)
    square = (x2 - x1) < _SQUARE_ASPECT * plate_height
    gap = (_ROW_GAP_SQUARE if square else _ROW_GAP_WIDE) * plate_height
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    slope = 0.0
    if len(boxes) >= 3 and np.ptp(cx) > 0:
        slope = float(np.clip(np.polyfit(cx, cy, 1)[0], -_MAX_ROW_SLOPE, _MAX_ROW_SLOPE))
    residual = cy - slope * cx  # vertical position with the tilt removed
    by_height = np.argsort(residual, kind="stable")
    new_row = np.diff(residual[by_height]) > gap
    row_of = np.empty(len(boxes), np.int64)
    row_of[by_height] = np.concatenate([[0], np.cumsum(new_row)])
    order = np.lexsort((cx, row_of))  # primary key: row, then x
    return order.astype(np.int64), row_of[order]


def _character_class_id(name):
    """Class id of a VOC character object name ('0'..'9' or 'char'), else -1."""
    if name == "char":
        return CHAR
    if len(name) == 1 and name.isdigit() and name.isascii():
        return DIGIT_IDS[int(name)]
    return -1


def plate_texts(objects, plate_name="plate", unknown="?"):
    """The text of every plate of one annotation, from its character objects.

    A character (an object named ``'0'..'9'`` or ``'char'``) belongs to the smallest
    plate box holding its centre; the characters of a plate are put in reading order
    (``reading_order``) and spelt by their ``text`` (the exact
    character the generator writes), else by their name for digits, else ``unknown``.
    Rows are joined by one space.

    Args:
        objects (list[dict]): ``read_voc_annotation(...)["objects"]``.

    Returns:
        list[tuple[int, str]]: ``(object index of the plate, text)`` in object order.
    """
    plates = [i for i, o in enumerate(objects) if o["name"] == plate_name]
    chars = [i for i, o in enumerate(objects) if _character_class_id(o["name"]) >= 0]
    if not plates:
        return []
    plate_boxes = np.asarray([objects[i]["bbox"] for i in plates], dtype=np.float64)  # (P, 4)
    char_boxes = np.asarray([objects[i]["bbox"] for i in chars], dtype=np.float64).reshape(-1, 4)
    cx = (char_boxes[:, 0] + char_boxes[:, 2]) / 2
    cy = (char_boxes[:, 1] + char_boxes[:, 3]) / 2
    inside = (cx[:, None] >= plate_boxes[None, :, 0]) & (cx[:, None] <= plate_boxes[None, :, 2]) \
        & (cy[:, None] >= plate_boxes[None, :, 1]) & (cy[:, None] <= plate_boxes[None, :, 3])
    area = (plate_boxes[:, 2] - plate_boxes[:, 0]) * (plate_boxes[:, 3] - plate_boxes[:, 1])
    owner = np.where(inside, area[None, :], np.inf).argmin(axis=1)  # (C,) smallest plate
    owned = inside.any(axis=1)
    texts = []
    for p, plate_index in enumerate(plates):
        members = np.flatnonzero(owned & (owner == p))
        order, rows = reading_order(char_boxes[members], plate_boxes[p])
        spelt = []
        for k in members[order]:
            obj = objects[chars[k]]
            spelt.append(obj.get("text") or (obj["name"] if obj["name"] != "char" else unknown))
        row_texts = ["".join(c for c, r in zip(spelt, rows) if r == row) for row in np.unique(rows)]
        texts.append((plate_index, " ".join(row_texts)))
    return texts


class PlateCropDataset(Dataset):
    """Plate crops of a VOC dataset with their character masks and texts (stage two).

    One item per plate object (difficult plates included unless ``keep_difficult`` is
    False): ``(crop (h, w, 3) uint8, mask (h, w) uint8, text str)``. With
    ``characters_only`` (default) the mask holds the segmenter's labels
    (``plates.classes.SEGMENTER_CLASSES``: 0 background, 1..10 digits, 11 other
    character, 255 ignore); without it, the scene's class ids (``PLATE_CLASSES``).

    Args:
        voc_root (str | os.PathLike): a VOC dataset with ``SegmentationClass`` masks.
        split (str): image set name.
        size (tuple[int, int]): crop (h, w).
        padding (float): relative margin around each plate box (``crop_windows``).
        characters_only (bool): see above.
        keep_difficult (bool): include plates marked difficult.
        transforms (callable | None): ``transforms(crop, mask, text) -> (crop, mask, text)``.
        class_names (sequence[str]): the id space of the masks (``PLATE_CLASSES``).
    """

    def __init__(self, voc_root, split="train", size=CROP_SIZE, padding=CROP_PADDING,
                 characters_only=True, keep_difficult=True, transforms=None,
                 class_names=PLATE_CLASSES):
        self.size = _check_size(size)
        crop_windows(np.zeros((0, 4)), self.size, padding)  # validates padding
        self.padding = float(padding)
        if transforms is not None and not callable(transforms):
            raise TypeError(f"transforms must be callable, got {type(transforms).__name__}")
        self.transforms = transforms
        self.characters_only = bool(characters_only)
        self.voc = VOCDataset(voc_root, split, class_names=class_names, return_masks=True)
        identity = np.arange(256, dtype=np.uint8)
        self._lookup = to_segmenter_labels(identity) if self.characters_only else identity
        # One entry per plate: (image index, plate box, text), built from the XML only.
        self.items = []
        for image_index in range(len(self.voc)):
            objects = self.voc.annotation(image_index)["objects"]
            for plate_index, text in plate_texts(objects):
                plate = objects[plate_index]
                if keep_difficult or not plate["difficult"]:
                    self.items.append((image_index, plate["bbox"], text))
        self._cache = (None, None)  # the last image read: plates of one image are adjacent

    def __len__(self):
        return len(self.items)

    def _image_and_mask(self, image_index):
        if self._cache[0] != image_index:
            record = self.voc._records[image_index]
            image = read_rgb(record["image_path"])
            mask = read_label_map(record["class_mask_path"])
            if mask.shape != image.shape[:2] or mask.dtype != np.uint8:
                raise ValueError(f"mask {record['class_mask_path']} does not match its image "
                                 f"{record['image_path']} (shapes {mask.shape}, {image.shape})")
            self._cache = (image_index, (image, mask))
        return self._cache[1]

    def __getitem__(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} plates")
        image_index, box, text = self.items[int(index)]
        image, mask = self._image_and_mask(image_index)
        crops, masks, _ = crop_plates(image, np.asarray([box]), self.size, self.padding,
                                      class_mask=mask)
        crop, crop_mask = crops[0], self._lookup[masks[0]]
        if self.transforms is not None:
            return self.transforms(crop, crop_mask, text)
        return crop, crop_mask, text

    def __repr__(self):
        return (f"PlateCropDataset({os.fspath(self.voc.root)!r}, split={self.voc.split!r}, "
                f"{len(self)} plates, size={self.size})")
