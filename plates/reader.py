"""The two-stage plate reader: find the plates of a photo, segment their characters, read them.

Stage one, detection. The detector (``detection.retinanet``, trained by
``plates.train_detector``) was trained on scenes shrunk to a small square (256 px by
default): a photo of any size and aspect ratio is *letterboxed* to that scale, its
longer side resized to the detector's size (Pillow's bilinear filter, which
low-pass filters when shrinking, as the training copies were made) and the rest padded
with black at the bottom and right up to a multiple of the largest pyramid stride. The
detector's boxes are then scaled back to the photo's pixels::

    x_photo = x_small · W / w_small,   y_photo = y_small · H / h_small

Stage two, segmentation. Each plate found with a score of at least
``plate_threshold`` is cut from the **full-resolution** photo (``crop_plates``, with the
crop size and margin the segmenter was trained with): characters a few pixels wide in
the small copy are tens of pixels wide there. All crops of a photo go through the U-Net
in one batch (``plates.segmenter.predict``) and ``plates.reading.read_plate`` reads each
class map: characters, their classes, their order, rows.

Back to the photo. A character's box in the crop maps back through the crop window
(``crop_to_image``). Its mask does too: every photo pixel under the character takes the
class-map pixel whose footprint holds the photo pixel's centre,
``j = floor((x + 0.5 - X1) · w / (X2 - X1))`` (likewise ``i``), for a window
``(X1, Y1, X2, Y2)`` sampled by a ``(h, w)`` crop. A crop pixel belongs to the character
whose box holds its centre (the nearest box centre among several; none: a speck
``read_plate`` dropped). Masks are kept as a small window of the photo (``mask`` and
``mask_origin``); ``Character.full_mask`` pastes one into a frame.

``PlateReader.from_run(run_dir)`` loads a lab run (``python -m plates run``):
``detector/best.npz``, ``segmenter/best.npz`` and ``reader.json`` (the plate threshold
chosen on the validation scenes).
"""
import dataclasses
import json
import math
import os
from numbers import Real

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from nn._checks import check_pair
from detection import train_retinanet
from detection.nms import nms
from detection.train_retinanet import MEAN, STD
from plates.classes import SEGMENTER_CHARACTERS
from plates.crops import crop_plates, crop_to_image
from plates.reading import classes_to_text, read_plate
from plates.segmenter import class_colors, predict
from plates.train_segmenter import load_segmenter

__all__ = ["DETECTOR_DIR", "SEGMENTER_DIR", "READER_FILE", "CHECKPOINT", "DEFAULT_SETTINGS",
           "load_image", "resize_longer_side", "letterbox", "pixel_owners", "window_indices",
           "read_characters",
           "Character", "Plate", "Reading", "PlateReader", "annotate", "save_annotated"]

DETECTOR_DIR, SEGMENTER_DIR = "detector", "segmenter"  # the stages' run directories
READER_FILE = "reader.json"  # the reader's settings in a lab run
CHECKPOINT = "best.npz"  # which checkpoint of each stage is read
# plate_threshold: a detection is read as a plate from this score; plate_nms: of two
# plates overlapping more (IoU), the lower-scored one is dropped (the detector's NMS keeps
# boxes up to IoU 0.5 apart, and two plates never overlap that much: such a pair is one
# plate found twice); max_plates: at most that many plates per photo (the best scores);
# tta: the segmenter averages five one-pixel shifts of each crop
# (plates.segmenter.predict: five times the work).
DEFAULT_SETTINGS = {"plate_threshold": 0.5, "plate_nms": 0.3, "max_plates": 16, "tta": True}


# ============================================================================== images
def load_image(path):
    """An image file as RGB: ndarray[H, W, 3] uint8, upright.

    JPEG or PNG (anything Pillow reads) in any mode: greyscale is repeated over the three
    channels, 16-bit greyscale scaled to 8 bits, transparency (RGBA, LA, palette with a
    transparent color) composited over white, the EXIF orientation applied
    (``PIL.ImageOps.exif_transpose``: a phone's portrait photo comes out upright).

    Args:
        path (str | os.PathLike): the file.
    Raises:
        FileNotFoundError: no such file. ValueError: the file is no readable image
        (not an image, truncated, too large); both name the file.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            return _to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


def _to_rgb(image):
    """A loaded Pillow image as ndarray[H, W, 3] uint8."""
    if image.mode == "RGB":
        return np.asarray(image)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 255.0)
        grey = np.rint(np.clip(values, 0, top) * (255.0 / top)).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _check_image(image, name="image"):
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or 0 in image.shape:
        got = (f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray)
               else type(image).__name__)
        raise ValueError(f"{name} must be a non-empty uint8 ndarray of shape (H, W, 3), got {got}")
    return image


def resize_longer_side(image, size):
    """Resize so that the longer side is ``size`` pixels (aspect kept, bilinear).

    Pillow's bilinear filter widens with the shrink factor (it low-pass filters), so a
    1024-px scene shrunk to 256 px does not alias. The lab's detector is trained on
    copies made by this function and reads photos through it.

    Args:
        image (ndarray[H, W, 3]): uint8.
        size (int): the longer side after resizing.
    Returns:
        ndarray[h, w, 3] uint8 with ``max(h, w) == size``, ``h = max(1, round(H · size /
        max(H, W)))`` (likewise ``w``).
    """
    image = _check_image(image)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) == (height, width):
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))


def letterbox(image, size, multiple=1):
    """The detector's input: ``resize_longer_side``, then black padding at the bottom and
    right up to a multiple of ``multiple`` on each side.

    Args:
        image (ndarray[H, W, 3]): uint8.
        size (int): the longer side of the resized image.
        multiple (int): each side of the result is a multiple of it (the largest stride).
    Returns:
        tuple: ``padded`` ndarray[h', w', 3] uint8 and ``scale`` ndarray[4] float64, the
        factors ``(W / w, H / h, W / w, H / h)`` that map xyxy boxes of the resized image
        (``h, w`` before padding) back to the input's pixels.
    """
    if isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple < 1:
        raise ValueError(f"multiple must be a positive int, got {multiple!r}")
    resized = resize_longer_side(image, size)
    new_h, new_w = resized.shape[:2]
    padded_h, padded_w = -(-new_h // multiple) * multiple, -(-new_w // multiple) * multiple
    padded = np.zeros((padded_h, padded_w, 3), np.uint8)
    padded[:new_h, :new_w] = resized
    height, width = image.shape[:2]
    scale = np.array([width / new_w, height / new_h] * 2, np.float64)
    return padded, scale


# ==================================================================== masks to the photo
def pixel_owners(class_map, boxes):
    """Which character each pixel of a crop's class map belongs to.

    A character pixel (a class of ``SEGMENTER_CHARACTERS``) belongs to the character
    whose box holds its centre; among several boxes, the one whose centre is nearest.

    Args:
        class_map (ndarray[h, w] int): the segmenter's classes of one crop.
        boxes (ndarray[C, 4]): the characters' xyxy boxes in the crop (``read_plate``).
    Returns:
        ndarray[h, w] int64: the character index ``0..C-1``, or -1.
    """
    class_map = np.asarray(class_map)
    if class_map.ndim != 2 or not np.issubdtype(class_map.dtype, np.integer):
        raise ValueError(f"class_map must be a 2-D integer array, got {class_map.dtype} "
                         f"{class_map.shape}")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    height, width = class_map.shape
    is_char = np.zeros(max(int(class_map.max(initial=0)), max(SEGMENTER_CHARACTERS)) + 1, bool)
    is_char[list(SEGMENTER_CHARACTERS)] = True
    foreground = is_char[np.clip(class_map, 0, None)]  # (h, w)
    if len(boxes) == 0:
        return np.full((height, width), -1, np.int64)
    cy, cx = np.arange(height) + 0.5, np.arange(width) + 0.5  # pixel centres
    inside_y = (cy[None, :] >= boxes[:, 1:2]) & (cy[None, :] < boxes[:, 3:4])  # (C, h)
    inside_x = (cx[None, :] >= boxes[:, 0:1]) & (cx[None, :] < boxes[:, 2:3])  # (C, w)
    inside = inside_y[:, :, None] & inside_x[:, None, :]  # (C, h, w)
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    distance = (cy[None, :] - centre_y[:, None])[:, :, None] ** 2 \
        + (cx[None, :] - centre_x[:, None])[:, None, :] ** 2  # (C, h, w)
    nearest = np.where(inside, distance, np.inf).argmin(axis=0)  # (h, w)
    return np.where(foreground & inside.any(axis=0), nearest, -1).astype(np.int64)


def window_indices(window, crop_size, start, stop):
    """The crop pixel under each photo pixel of a range, along one axis.

    Photo pixel ``x`` (centre ``x + 0.5``) lies in crop pixel
    ``floor((x + 0.5 - X1) · n / (X2 - X1))`` of a window ``[X1, X2)`` sampled by ``n``
    crop pixels (``crop_plates``' geometry).

    Args:
        window (tuple[float, float]): ``(X1, X2)`` of the crop window on this axis.
        crop_size (int): ``n``.
        start, stop (int): the photo pixels ``start .. stop - 1``.
    Returns:
        ndarray[stop - start] int64: crop indices, -1 outside the window.
    """
    low, high = float(window[0]), float(window[1])
    centres = np.arange(start, stop, dtype=np.float64) + 0.5
    index = np.floor((centres - low) * (crop_size / (high - low))).astype(np.int64)
    return np.where((index >= 0) & (index < crop_size), index, -1)


# ================================================================================ results
@dataclasses.dataclass
class Character:
    """One character of a plate, in the photo's pixels.

    Attributes:
        box (ndarray[4]): float32 xyxy, continuous, inside the photo.
        label (str): ``"0"``..``"9"``, or ``"#"`` for another character.
        score (float): the fraction of its pixels voting for ``label``.
        row (int): its row on the plate (0 = top).
        mask (ndarray[h, w] bool): its pixels in the photo window starting at ``mask_origin``.
        mask_origin (tuple[int, int]): ``(x0, y0)``, the photo pixel of ``mask[0, 0]``.
    """

    box: np.ndarray
    label: str
    score: float
    row: int
    mask: np.ndarray
    mask_origin: tuple

    def full_mask(self, height, width):
        """The mask pasted into a ``(height, width)`` frame (the photo's size): ndarray bool."""
        frame = np.zeros((height, width), bool)
        x0, y0 = self.mask_origin
        h, w = self.mask.shape
        frame[y0:y0 + h, x0:x0 + w] = self.mask
        return frame


@dataclasses.dataclass
class Plate:
    """One plate read.

    Attributes:
        box (ndarray[4]): float32 xyxy in the photo's pixels (the detector's box).
        score (float): the detector's score.
        text (str): the characters in reading order, rows joined by one space.
        characters (list[Character]): in reading order.
        window (ndarray[4]): float32, the crop window in the photo's pixels.
        crop (ndarray[h, w, 3] uint8): what the segmenter saw.
        class_map (ndarray[h, w] uint8): the segmenter's classes of the crop.
    """

    box: np.ndarray
    score: float
    text: str
    characters: list
    window: np.ndarray
    crop: np.ndarray
    class_map: np.ndarray


@dataclasses.dataclass
class Reading:
    """What the reader found in one photo.

    Attributes:
        width, height (int): the photo's size.
        plates (list[Plate]): by decreasing score.
        detections (dict): every detection of the detector in the photo's pixels (all its
            classes, from its own score threshold): ``boxes`` ndarray[D, 4] float32,
            ``scores`` ndarray[D] float32, ``labels`` ndarray[D] int64 (for detection AP).
    """

    width: int
    height: int
    plates: list
    detections: dict

    def to_json(self, file):
        """The ``plates.json`` entry of this photo (DESIGN.md's schema); ``file`` as given."""
        return {
            "file": os.fspath(file), "width": int(self.width), "height": int(self.height),
            "plates": [{
                "box": _rounded(plate.box), "score": round(float(plate.score), 4),
                "text": plate.text,
                "characters": [{"box": _rounded(char.box), "label": char.label,
                                "score": round(float(char.score), 4)}
                               for char in plate.characters],
            } for plate in self.plates],
        }


def _rounded(box):
    """A box to two decimals, rounded outwards: a thin box stays non-empty and a box
    inside the photo (integer sides) stays inside."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [math.floor(x1 * 100) / 100, math.floor(y1 * 100) / 100,
            math.ceil(x2 * 100) / 100, math.ceil(y2 * 100) / 100]


def read_characters(class_map, window, crop_size, image_size, min_area=1):
    """The characters of one crop's class map, in the photo's pixels.

    ``plates.reading.read_plate`` reads the class map; each character's box is mapped
    through the crop window (``crop_to_image``) and clipped to the photo, its mask is the
    photo pixels under the crop pixels it owns (``pixel_owners``, ``window_indices``:
    one gather for all characters of the plate).

    Args:
        class_map (ndarray[h, w] int): the segmenter's classes of the crop.
        window (ndarray[4]): the crop's window in the photo (``crop_plates``).
        crop_size (tuple[int, int]): ``(h, w)``.
        image_size (tuple[int, int] | int): the photo's ``(H, W)`` (an int: a square).
        min_area (int): ``read_plate``'s smallest blob.
    Returns:
        tuple: ``text`` (str) and ``characters`` (list[Character], reading order).
        Characters whose box falls outside the photo (a crop's black border) are left
        out, of the text too.
    """
    height, width = check_pair(image_size, "image_size", 1)
    crop_h, crop_w = crop_size
    class_map = np.asarray(class_map)
    if class_map.shape != (crop_h, crop_w):
        raise ValueError(f"class_map must have the crop's shape {(crop_h, crop_w)}, got "
                         f"{class_map.shape}")
    window = np.asarray(window, np.float64).reshape(4)
    read = read_plate(class_map, min_area=min_area)
    boxes = crop_to_image(read["boxes"], window, crop_size)  # (C, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    owners = pixel_owners(class_map, read["boxes"])  # (h, w)
    # The photo pixels under all characters: one index table per axis, one gather.
    lows = np.floor(boxes[:, :2]).astype(np.int64)  # (C, 2) x0, y0
    highs = np.ceil(boxes[:, 2:]).astype(np.int64)  # (C, 2) x1, y1
    characters = []
    if inside.any():
        x0, y0 = lows[inside].min(axis=0)
        x1, y1 = highs[inside].max(axis=0)
        cols = window_indices(window[0::2], crop_w, x0, x1)  # (x1 - x0,)
        rows = window_indices(window[1::2], crop_h, y0, y1)  # (y1 - y0,)
        region = owners[rows.clip(0)[:, None], cols.clip(0)[None, :]]  # (y1-y0, x1-x0)
        region = np.where((rows >= 0)[:, None] & (cols >= 0)[None, :], region, -1)
        for k in np.flatnonzero(inside):
            (cx0, cy0), (cx1, cy1) = lows[k] - (x0, y0), highs[k] - (x0, y0)
            characters.append(Character(
                box=boxes[k].astype(np.float32), label=classes_to_text([read["labels"][k]]),
                score=float(read["scores"][k]), row=int(read["rows"][k]),
                mask=region[cy0:cy1, cx0:cx1] == k,
                mask_origin=(int(lows[k, 0]), int(lows[k, 1]))))
    text = classes_to_text(read["labels"][inside], read["rows"][inside])
    return text, characters


# ================================================================================ reader
def _check_settings(settings):
    threshold = settings["plate_threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 <= threshold <= 1:
        raise ValueError(f"plate_threshold must be a number in [0, 1], got {threshold!r}")
    overlap = settings["plate_nms"]
    if isinstance(overlap, bool) or not isinstance(overlap, Real) or not 0 <= overlap <= 1:
        raise ValueError(f"plate_nms must be an IoU in [0, 1], got {overlap!r}")
    count = settings["max_plates"]
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"max_plates must be a positive int, got {count!r}")
    if not isinstance(settings["tta"], (bool, np.bool_)):
        raise TypeError(f"tta must be True or False, got {settings['tta']!r}")


class PlateReader:
    """Detect the plates of a photo, segment their characters, read them.

    Args:
        detector (RetinaNet): the plate detector (classes include ``"plate"``).
        segmenter (UNet): the digit segmenter.
        detector_size (int): the longer side of the detector's input (its training size).
        detector_classes (tuple[str]): the detector's class names, label 1 first; one of
            them is ``"plate"``.
        crop_size (tuple[int, int]), crop_padding (float): the segmenter's crops.
        read_min_area (int): ``read_plate``'s smallest blob (the segmenter's training setting).
        plate_threshold (float), plate_nms (float), max_plates (int), tta (bool): see
            ``DEFAULT_SETTINGS``.
    """

    def __init__(self, detector, segmenter, detector_size, detector_classes, crop_size,
                 crop_padding, read_min_area=1,
                 plate_threshold=DEFAULT_SETTINGS["plate_threshold"],
                 plate_nms=DEFAULT_SETTINGS["plate_nms"],
                 max_plates=DEFAULT_SETTINGS["max_plates"], tta=DEFAULT_SETTINGS["tta"]):
        self.settings = {"plate_threshold": plate_threshold, "plate_nms": plate_nms,
                         "max_plates": max_plates, "tta": tta}
        _check_settings(self.settings)
        if isinstance(detector_size, bool) or not isinstance(detector_size, (int, np.integer)) \
                or detector_size < 1:
            raise ValueError(f"detector_size must be a positive int, got {detector_size!r}")
        self.detector, self.segmenter = detector, segmenter
        self.detector.eval()
        self.segmenter.eval()
        self.detector_classes = tuple(detector_classes)
        if "plate" not in self.detector_classes:
            raise ValueError(f"detector_classes must include 'plate', got {detector_classes!r}")
        self.detector_size = int(detector_size)
        self.plate_label = self.detector_classes.index("plate") + 1
        self.stride = int(max(detector.strides))
        self.crop_size = tuple(int(s) for s in crop_size)
        self.crop_padding, self.read_min_area = float(crop_padding), int(read_min_area)
        self._mean = np.asarray(MEAN, np.float32)
        self._std = np.asarray(STD, np.float32)

    @property
    def plate_threshold(self):
        return float(self.settings["plate_threshold"])

    @classmethod
    def from_run(cls, run_dir, **settings):
        """The reader of a lab run directory (``python -m plates run``).

        Args:
            run_dir (str): holds ``detector/best.npz``, ``segmenter/best.npz`` and
                optionally ``reader.json`` (settings; ``DEFAULT_SETTINGS`` otherwise).
            **settings: ``plate_threshold``, ``plate_nms``, ``max_plates``, ``tta`` overriding
                the run's
                (None keeps the run's).
        """
        run_dir = os.fspath(run_dir)
        unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
        if unknown:
            raise TypeError(f"unknown reader settings {unknown}; known: {sorted(DEFAULT_SETTINGS)}")
        paths = {stage: os.path.join(run_dir, stage, CHECKPOINT)
                 for stage in (DETECTOR_DIR, SEGMENTER_DIR)}
        for stage, path in paths.items():
            if not os.path.isfile(path):
                raise FileNotFoundError(f"run {run_dir!r} has no trained {stage}: {path} is "
                                        f"missing (train it with python -m plates run --out "
                                        f"{run_dir})")
        chosen = dict(DEFAULT_SETTINGS)
        reader_path = os.path.join(run_dir, READER_FILE)
        if os.path.isfile(reader_path):
            with open(reader_path, encoding="utf-8") as handle:
                saved = json.load(handle)
            chosen.update({k: saved[k] for k in DEFAULT_SETTINGS if k in saved})
        chosen.update({k: v for k, v in settings.items() if v is not None})
        detector, checkpoint = train_retinanet.load_run(paths[DETECTOR_DIR])
        config = checkpoint["config"]
        classes = tuple(config["classes"] or ())
        if "plate" not in classes:
            raise ValueError(f"{paths[DETECTOR_DIR]} detects {classes}, not 'plate'")
        segmenter, seg_config, _ = load_segmenter(paths[SEGMENTER_DIR])
        return cls(detector, segmenter, detector_size=int(config["image_size"]),
                   detector_classes=classes, crop_size=seg_config.crop_size,
                   crop_padding=seg_config.crop_padding, read_min_area=seg_config.read_min_area,
                   **chosen)

    # ------------------------------------------------------------------------ stage one
    def detect(self, image, score_threshold=None):
        """Every detection of the photo, in its pixels.

        Args:
            image (ndarray[H, W, 3]): uint8 RGB.
            score_threshold (float, optional): the detector's own threshold otherwise.
        Returns:
            dict: ``boxes`` ndarray[D, 4] float32 (clipped to the photo), ``scores``
            ndarray[D] float32 (decreasing), ``labels`` ndarray[D] int64.
        """
        image = _check_image(image)
        padded, scale = letterbox(image, self.detector_size, self.stride)
        inputs = (padded.astype(np.float32) / np.float32(255) - self._mean) / self._std
        found = self.detector.predict(inputs[None], score_threshold=score_threshold)[0]
        height, width = image.shape[:2]
        boxes = found["boxes"].astype(np.float64) * scale
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        return {"boxes": boxes.astype(np.float32), "scores": found["scores"],
                "labels": found["labels"]}

    def plate_boxes(self, detections, threshold=None):
        """The detections read as plates: label ``plate``, score >= ``threshold`` (the
        reader's ``plate_threshold`` by default), a pixel wide and high at least, not
        overlapping a better plate by more than ``plate_nms`` (IoU), at most ``max_plates``.

        Returns:
            ndarray[P] int64: their indices into ``detections``, by decreasing score.
        """
        threshold = self.plate_threshold if threshold is None else float(threshold)
        boxes = detections["boxes"]
        sizes_ok = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        keep = np.flatnonzero((detections["labels"] == self.plate_label)
                              & (detections["scores"] >= threshold) & sizes_ok)
        keep = keep[nms(boxes[keep], detections["scores"][keep], self.settings["plate_nms"])]
        return keep[:self.settings["max_plates"]].astype(np.int64)

    # ------------------------------------------------------------------------ stage two
    def segment(self, image, boxes):
        """Crops of plate boxes from the full photo and their class maps (one batch).

        Returns:
            tuple: ``crops`` ndarray[P, h, w, 3] uint8, ``class_maps`` ndarray[P, h, w]
            uint8, ``windows`` ndarray[P, 4] float32.
        """
        height, width = self.crop_size
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return (np.zeros((0, height, width, 3), np.uint8), np.zeros((0, height, width),
                                                                          np.uint8),
                    np.zeros((0, 4), np.float32))
        crops, _, windows = crop_plates(image, boxes, self.crop_size, self.crop_padding)
        class_maps = predict(self.segmenter, crops, batch_size=len(crops),
                             tta=bool(self.settings["tta"]))
        return crops, class_maps.astype(np.uint8), windows

    def read_class_map(self, class_map, window, image_size):
        """``read_characters`` with this reader's crop size and smallest blob."""
        return read_characters(class_map, window, self.crop_size, image_size,
                               self.read_min_area)

    def read(self, image):
        """Read the plates of one photo.

        Args:
            image (ndarray[H, W, 3] uint8 | str | os.PathLike): RGB pixels, or an image
                file (``load_image``).
        Returns:
            Reading
        """
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        image = _check_image(image)
        # Plates below the detector's own threshold are read too when asked for.
        threshold = min(self.plate_threshold, float(self.detector.config.score_threshold))
        detections = self.detect(image, score_threshold=threshold)
        keep = self.plate_boxes(detections)
        crops, class_maps, windows = self.segment(image, detections["boxes"][keep])
        plates = []
        for k, index in enumerate(keep):
            text, characters = self.read_class_map(class_maps[k], windows[k], image.shape[:2])
            plates.append(Plate(box=detections["boxes"][index],
                                score=float(detections["scores"][index]), text=text,
                                characters=characters, window=windows[k], crop=crops[k],
                                class_map=class_maps[k]))
        return Reading(width=image.shape[1], height=image.shape[0], plates=plates,
                       detections=detections)


# ============================================================================== drawing
def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def annotate(image, reading, alpha=0.55):
    """The photo with its plates drawn: character masks tinted by class, plate boxes,
    and each plate's text and score above its box.

    Args:
        image (ndarray[H, W, 3]): uint8, the photo that was read.
        reading (Reading): ``PlateReader.read(image)``.
        alpha (float): opacity of the mask colors.
    Returns:
        ndarray[H, W, 3] uint8.
    """
    image = _check_image(image)
    if (reading.height, reading.width) != image.shape[:2]:
        raise ValueError(f"reading is of a {reading.width}x{reading.height} photo, image is "
                         f"{image.shape[1]}x{image.shape[0]}")
    colors = (class_colors() * 255).astype(np.float32)  # (256, 3)
    label_class = {str(d): 1 + d for d in range(10)} | {"#": 11}
    out = image.astype(np.float32)
    for plate in reading.plates:
        for char in plate.characters:
            x0, y0 = char.mask_origin
            h, w = char.mask.shape
            patch = out[y0:y0 + h, x0:x0 + w]
            color = colors[label_class[char.label]]
            patch[char.mask] = (1 - alpha) * patch[char.mask] + alpha * color
    canvas = Image.fromarray(np.rint(out).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    line = max(1, round(max(reading.width, reading.height) / 400))
    font = _font(max(10, round(max(reading.width, reading.height) / 45)))
    for plate in reading.plates:
        x1, y1, x2, y2 = (float(v) for v in plate.box)
        draw.rectangle([x1, y1, x2, y2], outline=(0, 255, 0), width=line)
        label = f"{plate.text or '(no characters)'}  {plate.score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label, font=font)
        shift = max(bottom - top + 2 * line, 0)
        ty = y1 - shift if y1 - shift >= 0 else min(y2 + line, reading.height - shift)
        draw.rectangle([x1, ty, x1 + (right - left) + 2 * line, ty + shift], fill=(0, 0, 0))
        draw.text((x1 + line, ty + line - (top - y1)), label, fill=(255, 255, 0), font=font)
    return np.asarray(canvas)


def save_annotated(path, image, reading, quality=90):
    """Write ``annotate(image, reading)`` to ``path`` atomically (JPEG, or PNG by suffix)."""
    import io

    from nn.io import atomic_write_bytes

    buffer = io.BytesIO()
    picture = Image.fromarray(annotate(image, reading))
    if os.fspath(path).lower().endswith(".png"):
        picture.save(buffer, format="PNG")
    else:
        picture.save(buffer, format="JPEG", quality=quality)
    atomic_write_bytes(path, buffer.getvalue())
