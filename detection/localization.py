"""Localization as regression: one object per image -> K class scores and one box.

The lecture opens object detection with *localization*: an image holds a single
object, and a CNN predicts its class and its bounding box. The box is four numbers,
so localization is a regression problem, scored with the intersection over union of
the predicted and the true box (``paired_box_iou``). The network has one trunk and
two heads (Sermanet et al., "OverFeat", ICLR 2014; Simonyan and Zisserman's ImageNet
localization entry, 2014)::

    window (N, S, S, 3) -> conv trunk -> fc features (N, F) -> cls head -> cls_logits (N, 1, K)
                                                             -> box head -> box_codes  (N, 1, 4)

and is trained in one of three ways, the lecture's "Localization and Classification"
(``Localizer.set_regime``):

- ``"classify"``: trunk and class head trained with cross entropy, as an image
  classifier; the box head is not trained.
- ``"localize"``: the classifier frozen (no gradient, batch-norm statistics fixed);
  only the box head learns, by regression on the classifier's features.
- ``"finetune"``: everything trained end to end on the multi-task loss
  ``cross_entropy + box_weight · smooth_l1 + giou_weight · (1 - GIoU)``: the slide's
  regression of four numbers plus the GIoU loss of the decoded box (the metric as a
  loss; on the plate windows it reaches a given IoU in about half the steps).

Box encoding (``encode_boxes``): the box in window pixels, divided by the window
side, as ``(cx, cy, w, h)`` (centre and size, the default) or ``(x, y, w, h)`` (the
slide's top-left corner and size). Each number is then a fraction of the window in
[0, 1], whatever the window's pixel size. Centre and size keep the two errors apart:
with ``(x, y, w, h)`` a wrong width also moves the box's centre.

"Predict exactly N objects". With ``num_slots = N`` the heads give ``N × K`` class
scores and ``N × 4`` numbers: slot ``i`` is trained on object ``i`` of the window in a
fixed order (left to right by centre, ``sample_windows``). That works for windows
that hold exactly ``N`` objects and fails otherwise: with fewer objects a slot has
nothing to predict and no way to say so (there is no "no object" output), with more
an object is missed. ``evaluate_slots`` measures both: it is why detectors predict a
*variable* number of boxes, each with a score.

The data (``sample_windows``, ``crop_windows``, ``window_boxes``): square windows cut
from annotated images around one object (or a group of ``N``) at the object's scale,
jittered so the object can be anywhere in the window, resampled to ``S × S`` pixels
with RoIAlign. An object partly inside a window is not a target; a window where such
a cut object of comparable size shows more than ``max_cut`` of its area is rejected,
so that "the objects in the window" is never ambiguous.
"""
import numpy as np

import nn
from nn import Module
from nn._checks import (check_array, check_choice, check_in_range, check_int, check_ndim,
                        check_non_negative, check_pair, check_positive)
from nn.functional.roi import roi_align
from nn.random import get_generator
from detection.boxes import as_boxes, box_convert, generalized_box_iou_loss

__all__ = ["BOX_ENCODINGS", "REGIMES", "MEAN", "STD", "paired_box_iou", "encode_boxes",
           "decode_boxes", "sample_windows", "crop_windows", "window_boxes", "sort_by_position",
           "normalize_windows", "Localizer", "compute_features", "predict", "evaluate_localizer",
           "match_slots", "evaluate_slots"]

BOX_ENCODINGS = ("cxcywh", "xywh")
REGIMES = ("classify", "localize", "finetune")
MEAN, STD = 127.5, 64.0  # uint8 windows -> roughly zero mean, unit variance


# ================================================================================ metric
def paired_box_iou(boxes1, boxes2):
    """IoU of each box with the box at the same index (the diagonal of ``box_iou``).

    ``IoU = |A ∩ B| / (|A| + |B| - |A ∩ B|)``; an empty box (zero or negative width or
    height) has IoU 0 with anything.

    Args:
        boxes1 (ndarray[N, 4]): xyxy boxes, float.
        boxes2 (ndarray[N, 4]): xyxy boxes, float.
    Returns:
        ndarray[N]: IoU in [0, 1], dtype of the two inputs combined.
    Raises:
        ValueError: shapes not ``(N, 4)`` and equal, or a non-finite coordinate.
    """
    boxes1 = as_boxes(boxes1, "boxes1")
    boxes2 = as_boxes(boxes2, "boxes2")
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"boxes1 and boxes2 must hold as many boxes, got {boxes1.shape} and "
                         f"{boxes2.shape}")
    dtype = np.result_type(boxes1, boxes2)
    wh = np.maximum(np.minimum(boxes1[:, 2:], boxes2[:, 2:])
                    - np.maximum(boxes1[:, :2], boxes2[:, :2]), 0)       # (N, 2)
    inter = wh[:, 0] * wh[:, 1]
    area1 = np.prod(np.maximum(boxes1[:, 2:] - boxes1[:, :2], 0), axis=1)
    area2 = np.prod(np.maximum(boxes2[:, 2:] - boxes2[:, :2], 0), axis=1)
    union = area1 + area2 - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou.astype(dtype, copy=False)


# ============================================================================ box codes
def encode_boxes(boxes, window_size, encoding="cxcywh"):
    """Boxes in window pixels -> the four numbers a box head regresses.

    ``cxcywh``: ``(cx / S, cy / S, w / S, h / S)``; ``xywh``: ``(x1 / S, y1 / S, w / S,
    h / S)``, with ``S`` the window side (a box filling the window is ``(0.5, 0.5, 1, 1)``
    or ``(0, 0, 1, 1)``).

    Args:
        boxes (ndarray[..., 4]): xyxy boxes in window pixels, float.
        window_size (int or float): the window side ``S`` in pixels.
        encoding (str): ``"cxcywh"`` or ``"xywh"``.
    Returns:
        ndarray[..., 4]: float32 codes.
    """
    encoding = check_choice(encoding, "encoding", BOX_ENCODINGS)
    window_size = check_positive(window_size, "window_size")
    boxes = check_array(boxes, "boxes", "real", tensor=False)
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4), got {boxes.shape}")
    flat = as_boxes(boxes.reshape(-1, 4).astype(np.float32))
    codes = box_convert(flat, "xyxy", encoding) / np.float32(window_size)
    return codes.reshape(boxes.shape).astype(np.float32)


def decode_boxes(codes, window_size, encoding="cxcywh"):
    """The inverse of ``encode_boxes``: codes -> xyxy boxes in window pixels.

    Args:
        codes (ndarray or Tensor[..., 4]): float.
        window_size (int or float): the window side ``S`` in pixels.
        encoding (str): ``"cxcywh"`` or ``"xywh"``.
    Returns:
        ndarray[..., 4]: float32 xyxy boxes (a negative predicted size gives an empty box).
    """
    encoding = check_choice(encoding, "encoding", BOX_ENCODINGS)
    window_size = check_positive(window_size, "window_size")
    codes = check_array(codes, "codes", "real")
    if codes.ndim < 1 or codes.shape[-1] != 4:
        raise ValueError(f"codes must have shape (..., 4), got {codes.shape}")
    flat = as_boxes(codes.reshape(-1, 4).astype(np.float32), "codes") * np.float32(window_size)
    return box_convert(flat, encoding, "xyxy").reshape(codes.shape).astype(np.float32)


# ================================================================================ data
def _inside_fraction(boxes, windows):
    """Fraction of each box's area inside each window: ``(..., M)`` for windows ``(..., 4)``."""
    top_left = np.maximum(windows[..., None, :2], boxes[:, :2])     # (..., M, 2)
    bottom_right = np.minimum(windows[..., None, 2:], boxes[:, 2:])
    wh = np.maximum(bottom_right - top_left, 0)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)             # (M,)
    return wh[..., 0] * wh[..., 1] / np.maximum(area, 1e-12)


def sort_by_position(boxes):
    """The order of boxes from left to right (by centre x, then centre y): the fixed
    slot assignment of a model that predicts exactly N objects.

    Args:
        boxes (ndarray[..., M, 4]): xyxy boxes.
    Returns:
        ndarray[..., M] int64: indices along the ``M`` axis.
    """
    boxes = np.asarray(boxes)
    cx = boxes[..., 0] + boxes[..., 2]
    cy = boxes[..., 1] + boxes[..., 3]
    by_y = np.argsort(cy, axis=-1, kind="stable")
    by_x = np.argsort(np.take_along_axis(cx, by_y, -1), axis=-1, kind="stable")
    return np.take_along_axis(by_y, by_x, -1).astype(np.int64)


def sample_windows(boxes, image_size, generator=None, num_objects=1, scale_range=(1.1, 1.6),
                   min_size=10.0, size_ratio=0.5, max_cut=0.5, attempts=24):
    """Square windows that each hold exactly ``num_objects`` whole objects.

    A *group* is an object and its ``num_objects - 1`` nearest neighbours (centre
    distance) among the objects of comparable size (longer sides within a factor
    ``1 / size_ratio``). Only objects whose longer side is at least ``min_size`` pixels
    and that do not touch the image border (cut by the image) join a group. For each
    group, up to ``attempts`` windows are drawn, all at once:

    - side ``s = u · L``, ``L`` the longer side of the group's enclosing box and ``u``
      uniform in ``scale_range``;
    - position uniform among those that hold the group's box and stay inside the image;

    and the first *valid* one is kept: no other object of comparable size (longer side
    at least ``size_ratio`` times the group's smallest) has more than ``max_cut`` of its
    area inside. Smaller objects (a plate's characters in the window of its car) are
    part of the picture, not objects of the window. Everything is computed as arrays
    over groups × attempts × objects.

    Args:
        boxes (ndarray[M, 4]): the image's objects, xyxy, float.
        image_size (int or pair): ``(H, W)`` of the image.
        generator (np.random.Generator, int or None): randomness (None: nn's default).
        num_objects (int): objects per window, >= 1.
        scale_range (pair of float): window side over the group's longer side, >= 1.
        min_size (float): smallest longer side of an object in a group, in pixels.
        size_ratio (float): in (0, 1]; objects of comparable size (above).
        max_cut (float): in [0, 1); largest visible fraction of a cut comparable object.
        attempts (int): windows drawn per group.
    Returns:
        windows (ndarray[G, 4]): float32 xyxy windows (square), one per group that found one.
        members (ndarray[G, num_objects]): int64 indices into ``boxes`` of the window's
        objects, left to right (``sort_by_position``).
    """
    height, width = check_pair(image_size, "image_size", 1)
    num_objects = check_int(num_objects, "num_objects", 1)
    attempts = check_int(attempts, "attempts", 1)
    low, high = _check_scale_range(scale_range)
    min_size = check_non_negative(min_size, "min_size")
    size_ratio = check_in_range(size_ratio, "size_ratio", 0, 1)
    if size_ratio == 0:
        raise ValueError("size_ratio must be in (0, 1], got 0")
    max_cut = check_in_range(max_cut, "max_cut", 0, 1, high_open=True)
    rng = get_generator(generator)
    boxes = as_boxes(boxes).astype(np.float64)
    none = (np.zeros((0, 4), np.float32), np.zeros((0, num_objects), np.int64))
    if len(boxes) < num_objects:
        return none

    sizes = boxes[:, 2:] - boxes[:, :2]                               # (M, 2)
    longer = sizes.max(axis=1)                                        # (M,)
    cut = (boxes[:, 0] <= 0) | (boxes[:, 1] <= 0) | (boxes[:, 2] >= width) \
        | (boxes[:, 3] >= height)
    eligible = (longer >= max(min_size, 1e-6)) & (sizes.min(axis=1) > 0) & ~cut
    # Groups: each eligible object and its nearest comparable eligible neighbours.
    ratio = longer[:, None] / np.maximum(longer[None, :], 1e-12)      # (M, M)
    partner = (ratio >= size_ratio) & (ratio <= 1 / size_ratio) & eligible[None, :]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = np.linalg.norm(centres[:, None] - centres[None, :], axis=2)
    distance = np.where(partner, distance, np.inf)
    np.fill_diagonal(distance, -1.0)  # an object comes first in its own group
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :num_objects]   # (M, n)
    complete = np.isfinite(np.take_along_axis(distance, nearest, 1)).all(axis=1)
    groups = nearest[eligible & complete]
    if len(groups) == 0:
        return none
    groups = np.unique(np.sort(groups, axis=1), axis=0)               # (G, n), no repeats
    members_boxes = boxes[groups]                                     # (G, n, 4)
    union = np.concatenate([members_boxes[..., :2].min(axis=1),
                            members_boxes[..., 2:].max(axis=1)], axis=1)  # (G, 4)
    span = (union[:, 2:] - union[:, :2]).max(axis=1)                  # (G,)

    # Draw the windows: groups × attempts.
    count = len(groups)
    side = span[:, None] * rng.uniform(low, high, (count, attempts))  # (G, A)
    x_low = np.maximum(union[:, 2, None] - side, 0)
    x_high = np.minimum(union[:, 0, None], width - side)
    y_low = np.maximum(union[:, 3, None] - side, 0)
    y_high = np.minimum(union[:, 1, None], height - side)
    x0 = x_low + rng.random((count, attempts)) * (x_high - x_low)
    y0 = y_low + rng.random((count, attempts)) * (y_high - y_low)
    windows = np.stack([x0, y0, x0 + side, y0 + side], axis=-1)       # (G, A, 4)
    feasible = (x_low <= x_high) & (y_low <= y_high)

    # Valid: no comparable object outside the group shows more than max_cut.
    shown = _inside_fraction(boxes, windows)                          # (G, A, M)
    smallest = longer[groups].min(axis=1)                             # (G,)
    comparable = longer[None, :] >= size_ratio * smallest[:, None]    # (G, M)
    member = np.zeros((count, len(boxes)), bool)
    np.put_along_axis(member, groups, True, axis=1)
    intruder = (comparable & ~member)[:, None, :] & (shown > max_cut)  # (G, A, M)
    valid = feasible & ~intruder.any(axis=2)
    found = valid.any(axis=1)
    first = np.argmax(valid, axis=1)
    windows = windows[np.arange(count), first][found].astype(np.float32)
    groups = groups[found]
    order = sort_by_position(boxes[groups])
    return windows, np.take_along_axis(groups, order, axis=1).astype(np.int64)


def _check_scale_range(scale_range):
    """``scale_range`` as ``(low, high)`` floats with ``1 <= low <= high``."""
    if isinstance(scale_range, (str, bytes)) or not isinstance(scale_range, (tuple, list)) \
            or len(scale_range) != 2:
        raise ValueError(f"scale_range must be a pair (low, high), got {scale_range!r}")
    low = check_positive(scale_range[0], "scale_range[0]")
    high = check_positive(scale_range[1], "scale_range[1]")
    if not 1 <= low <= high:
        raise ValueError(f"scale_range must be (low, high) with 1 <= low <= high, got "
                         f"{scale_range!r}")
    return low, high


def crop_windows(image, windows, size):
    """Cut square windows out of an image and resample each to ``size × size`` pixels.

    RoIAlign (``nn.functional.roi_align``, ``aligned=True``) with an adaptive sampling
    grid: each output pixel averages ``ceil(window side / size)²`` bilinear samples,
    so a large window is smoothed before it is shrunk, a small one interpolated.

    Args:
        image (ndarray[H, W, C]): uint8 or float.
        windows (ndarray[G, 4]): xyxy windows in image pixels.
        size (int): output side in pixels.
    Returns:
        ndarray[G, size, size, C]: the image's dtype (uint8 rounded).
    """
    image = check_array(image, "image", "real", tensor=False)
    check_ndim(image, "image", 3, "H, W, C")
    windows = as_boxes(windows, "windows")
    size = check_int(size, "size", 1)
    if len(windows) == 0:
        return np.zeros((0, size, size, image.shape[2]), image.dtype)
    data = image.astype(np.float32)[None]
    crops = roi_align(data, [windows.astype(np.float32)], size, sampling_ratio=-1,
                      aligned=True).data
    if image.dtype == np.uint8:
        return np.clip(np.rint(crops), 0, 255).astype(np.uint8)
    return crops.astype(image.dtype)


def window_boxes(boxes, windows, size):
    """Boxes in the pixels of their ``size × size`` window: ``(b - corner) · size / side``.

    Args:
        boxes (ndarray[G, n, 4]): xyxy boxes in image pixels (``n`` per window).
        windows (ndarray[G, 4]): the square xyxy windows.
        size (int): the window's side after resampling.
    Returns:
        ndarray[G, n, 4]: float32 xyxy boxes in window pixels.
    """
    boxes = check_array(boxes, "boxes", "real", tensor=False)
    windows = as_boxes(windows, "windows")
    size = check_int(size, "size", 1)
    if boxes.ndim != 3 or boxes.shape[2] != 4 or boxes.shape[0] != len(windows):
        raise ValueError(f"boxes must have shape ({len(windows)}, n, 4), got {boxes.shape}")
    corner = np.tile(windows[:, None, :2], 2)                          # (G, 1, 4)
    scale = size / (windows[:, 2] - windows[:, 0])                    # (G,)
    return ((boxes - corner) * scale[:, None, None]).astype(np.float32)


def normalize_windows(windows):
    """uint8 windows -> the model's float32 input ``(x - MEAN) / STD``."""
    return (np.asarray(windows, np.float32) - MEAN) / STD


# =============================================================================== model
def _corners(codes, encoding):
    """Box codes (Tensor[R, 4]) -> xyxy corners in window fractions, differentiable.

    A negative predicted width or height counts as 0 (an empty box), so that
    ``x1 <= x2`` and ``y1 <= y2`` always hold: the GIoU of an inverted box would have
    negative areas and a loss without bound below.
    """
    a, b = codes[:, 0:1], codes[:, 1:2]
    width = nn.functional.relu(codes[:, 2:3])
    height = nn.functional.relu(codes[:, 3:4])
    if encoding == "cxcywh":
        return nn.concat([a - width * 0.5, b - height * 0.5, a + width * 0.5, b + height * 0.5],
                         axis=1)
    return nn.concat([a, b, a + width, b + height], axis=1)


class Localizer(Module):
    """A small CNN with a classification head and a box-regression head.

    Trunk: four blocks conv 3x3 - batch norm - ReLU, the first ``log2(stride)`` of them
    followed by a 2x2 max-pool; the ``S/stride × S/stride`` map is flattened (it keeps
    *where* things are: a global average would discard it) and one fully connected
    layer makes ``hidden`` features. Heads: ``cls_head`` a linear layer to
    ``num_slots · K`` logits, ``box_head`` two linear layers to ``num_slots · 4`` box codes.

    Args:
        num_classes (int): K.
        image_size (int): window side S, a multiple of ``stride``.
        num_slots (int): N objects predicted per window (1: localization).
        widths (sequence of 4 int): channels of the conv blocks.
        hidden (int): features F of the fully connected layer.
        stride (int): 4, 8 or 16, the downsampling of the flattened map.
        coordinates (bool): add the x and y of each pixel as two input channels
            (CoordConv: Liu et al., "An intriguing failing of convolutional neural
            networks and the CoordConv solution", NeurIPS 2018).
        encoding (str): the box codes, ``"cxcywh"`` or ``"xywh"`` (``encode_boxes``).
        box_weight (float): weight of the smooth-L1 box loss.
        beta (float): the smooth-L1 quadratic zone, in box-code units (fractions of the window).
        giou_weight (float): weight of the GIoU loss of the decoded boxes (0: none).

    Shapes:
        ``(N, S, S, 3)`` float (``normalize_windows``) -> ``cls_logits (N, num_slots, K)``,
        ``box_codes (N, num_slots, 4)``.
    """

    def __init__(self, num_classes, image_size=48, num_slots=1, widths=(16, 32, 64, 64),
                 hidden=128, stride=8, coordinates=True, encoding="cxcywh", box_weight=20.0,
                 beta=0.02, giou_weight=2.0):
        super().__init__()
        self.coordinates = bool(coordinates)
        self.encoding = check_choice(encoding, "encoding", BOX_ENCODINGS)
        self.giou_weight = check_non_negative(giou_weight, "giou_weight")
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.stride = check_choice(stride, "stride", (4, 8, 16))
        self.image_size = check_int(image_size, "image_size", stride)
        if self.image_size % stride:
            raise ValueError(f"image_size must be a multiple of the stride {stride}, got "
                             f"{image_size}")
        self.num_slots = check_int(num_slots, "num_slots", 1)
        widths = tuple(check_int(w, "widths", 1) for w in widths)
        if len(widths) != 4:
            raise ValueError(f"widths must have 4 entries, got {widths}")
        self.hidden = check_int(hidden, "hidden", 1)
        self.box_weight = check_non_negative(box_weight, "box_weight")
        self.beta = check_non_negative(beta, "beta")
        pooled = int(np.log2(stride))  # the first blocks end with a 2x2 max-pool
        layers, previous = [], 5 if self.coordinates else 3
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU()]
            layers += [nn.MaxPool2d(2)] if index < pooled else []
            previous = width
        self.trunk = nn.Sequential(*layers)
        cells = (self.image_size // stride) ** 2
        self.fc = nn.Sequential(nn.Linear(previous * cells, hidden), nn.ReLU())
        self.cls_head = nn.Linear(hidden, self.num_slots * self.num_classes)
        self.box_head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(),
                                      nn.Linear(hidden, self.num_slots * 4))
        self.regime = "finetune"

    def config(self):
        """The constructor's arguments (saved with a checkpoint)."""
        widths = tuple(m.out_channels for m in self.trunk if isinstance(m, nn.Conv2d))
        return {"num_classes": self.num_classes, "image_size": self.image_size,
                "num_slots": self.num_slots, "widths": widths, "hidden": self.hidden,
                "stride": self.stride, "coordinates": self.coordinates,
                "encoding": self.encoding, "giou_weight": self.giou_weight,
                "box_weight": self.box_weight, "beta": self.beta}

    # ------------------------------------------------------------------ regimes
    def _frozen_modules(self):
        return (self.trunk, self.fc, self.cls_head) if self.regime == "localize" else ()

    def set_regime(self, regime):
        """Choose what trains (module docstring): ``"classify"``, ``"localize"`` or
        ``"finetune"``. Frozen parameters get ``requires_grad = False`` and frozen
        batch norms stay in eval mode.

        Returns:
            list[Parameter]: the parameters to give the optimizer.
        """
        self.regime = check_choice(regime, "regime", REGIMES)
        for parameter in self.parameters():
            parameter.requires_grad = True
        for module in self._frozen_modules():
            for parameter in module.parameters():
                parameter.requires_grad = False
        if regime == "classify":
            for parameter in self.box_head.parameters():
                parameter.requires_grad = False
        self.train(self.training)
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode=True):
        """Training mode, except the frozen modules (their batch norms keep their statistics)."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    # ----------------------------------------------------------------- forward
    def features(self, images):
        """``(N, S, S, 3)`` -> the fc features ``(N, F)``."""
        check_ndim(images, "images", 4, "N, H, W, C")
        shape = tuple(images.shape[1:])
        if shape != (self.image_size, self.image_size, 3):
            raise ValueError(f"images must have shape (N, {self.image_size}, {self.image_size}, "
                             f"3), got {tuple(images.shape)}")
        if self.coordinates:
            images = nn.concat([images, nn.Tensor(self._coordinate_maps(images))], axis=3)
        x = self.trunk(images)                                  # (N, S/stride, S/stride, C)
        return self.fc(x.reshape(x.shape[0], -1))                     # (N, F)

    def _coordinate_maps(self, images):
        """x and y of every pixel in [-1, 1], ``(N, S, S, 2)`` (CoordConv's extra channels)."""
        size = self.image_size
        ramp = np.linspace(-1, 1, size, dtype=np.float32)
        maps = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None]), axis=-1)  # (S, S, 2)
        return np.broadcast_to(maps, (images.shape[0], size, size, 2)).astype(images.dtype)

    def forward(self, images):
        features = self.features(images)
        count = features.shape[0]
        cls_logits = self.cls_head(features).reshape(count, self.num_slots, self.num_classes)
        box_codes = self.box_head(features).reshape(count, self.num_slots, 4)
        return cls_logits, box_codes

    def loss(self, windows, labels, codes):
        """The loss of the current regime on a batch of windows (``head_loss``).

        Args:
            windows (ndarray[N, S, S, 3]): uint8 windows.
            labels (ndarray[N, num_slots] or ndarray[N] int64): classes in [0, K).
            codes (ndarray[N, num_slots, 4] or ndarray[N, 4]): box codes (``encode_boxes``).
        Returns:
            dict: ``"loss"`` (Tensor) and its terms ``"cls"``, ``"box"`` (floats).
        """
        return self.head_loss(self.features(nn.Tensor(normalize_windows(windows))), labels,
                              codes)

    def head_loss(self, features, labels, codes):
        """The loss of the current regime on the fc features of a batch.

        ``cls = cross_entropy(cls_logits, labels)`` over every slot,
        ``box = smooth_l1(box_codes, codes, beta)`` averaged over every number and
        ``giou = mean(1 - GIoU(decoded boxes, true boxes))`` (Rezatofighi et al., CVPR
        2019: the metric itself as a loss, with a gradient even for disjoint boxes).
        ``"classify"`` minimizes ``cls``, ``"localize"`` ``box_weight · box + giou_weight ·
        giou``, ``"finetune"`` the sum of the two. With the classifier frozen (``"localize"``) the
        features of a window never change, so they can be computed once
        (``features``, in eval mode) and the box head trained on them alone.

        Args:
            features (Tensor or ndarray[N, F]): ``features(windows)``.
            labels (ndarray[N, num_slots] or ndarray[N] int64): classes in [0, K).
            codes (ndarray[N, num_slots, 4] or ndarray[N, 4]): box codes (``encode_boxes``).
        Returns:
            dict: ``"loss"`` (Tensor) and its terms ``"cls"``, ``"box"``, ``"giou"`` (floats).
        """
        if not isinstance(features, nn.Tensor):
            features = nn.Tensor(check_array(features, "features", "float", tensor=False))
        count = features.shape[0]
        labels = np.asarray(labels).reshape(count, -1)
        codes = np.asarray(codes, np.float32).reshape(count, -1, 4)
        if labels.shape[1] != self.num_slots or codes.shape[1] != self.num_slots:
            raise ValueError(f"labels and codes must hold {self.num_slots} object(s) per window, "
                             f"got {labels.shape} and {codes.shape}")
        losses = {}
        if self.regime != "localize":
            cls_logits = self.cls_head(features).reshape(count, self.num_slots, self.num_classes)
            losses["cls"] = nn.functional.cross_entropy(cls_logits, labels.astype(np.int64))
        total = losses["cls"] if "cls" in losses else None
        if self.regime != "classify":
            box_codes = self.box_head(features).reshape(count * self.num_slots, 4)
            flat_codes = codes.reshape(-1, 4)
            losses["box"] = nn.functional.smooth_l1_loss(box_codes, flat_codes, beta=self.beta)
            box_total = losses["box"] * self.box_weight
            if self.giou_weight:
                losses["giou"] = generalized_box_iou_loss(
                    _corners(box_codes, self.encoding),
                    decode_boxes(flat_codes, 1, self.encoding), reduction="mean")
                box_total = box_total + losses["giou"] * self.giou_weight
            total = box_total if total is None else total + box_total
        return {"loss": total, **{k: float(v.data) for k, v in losses.items()}}


# ========================================================================== evaluation
def compute_features(model, windows, batch_size=64):
    """The fc features of windows in eval mode, ``(N, F)`` float32 (no gradient).

    Args:
        model (Localizer): the model.
        windows (ndarray[N, S, S, 3]): uint8 windows.
        batch_size (int): windows per forward pass.
    """
    windows = check_array(windows, "windows", tensor=False)
    batch_size = check_int(batch_size, "batch_size", 1)
    was_training = model.training
    model.eval()
    features = [np.zeros((0, model.hidden), np.float32)]
    with nn.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = normalize_windows(windows[start:start + batch_size])
            features.append(model.features(nn.Tensor(batch)).data)
    model.train(was_training)
    return np.concatenate(features)


def predict(model, windows, batch_size=64):
    """Run a model on windows in eval mode.

    Args:
        model (Localizer): the model.
        windows (ndarray[N, S, S, 3]): uint8 windows.
        batch_size (int): windows per forward pass.
    Returns:
        dict: ``"labels"`` int64 (N, num_slots), ``"scores"`` float32 (N, num_slots)
        (softmax probability of the label), ``"probabilities"`` (N, num_slots, K),
        ``"boxes"`` float32 (N, num_slots, 4) xyxy in window pixels.
    """
    windows = check_array(windows, "windows", tensor=False)
    batch_size = check_int(batch_size, "batch_size", 1)
    was_training = model.training
    model.eval()
    probabilities, codes = [], []
    with nn.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = normalize_windows(windows[start:start + batch_size])
            cls_logits, box_codes = model(nn.Tensor(batch))
            probabilities.append(nn.functional.softmax(cls_logits, axis=-1).data)
            codes.append(box_codes.data)
    model.train(was_training)
    slots, classes = model.num_slots, model.num_classes
    probabilities = np.concatenate(probabilities) if probabilities \
        else np.zeros((0, slots, classes), np.float32)
    codes = np.concatenate(codes) if codes else np.zeros((0, slots, 4), np.float32)
    labels = probabilities.argmax(axis=-1)
    return {"labels": labels.astype(np.int64),
            "scores": np.take_along_axis(probabilities, labels[..., None], -1)[..., 0],
            "probabilities": probabilities,
            "boxes": decode_boxes(codes, model.image_size, model.encoding)}


def evaluate_localizer(model, windows, labels, boxes, batch_size=64, iou_threshold=0.5):
    """Accuracy and IoU of a one-slot model on windows of one object.

    Args:
        model (Localizer): ``num_slots = 1``.
        windows (ndarray[N, S, S, 3]): uint8.
        labels (ndarray[N] int64): true classes.
        boxes (ndarray[N, 4]): true xyxy boxes in window pixels.
        batch_size (int): as ``predict``.
        iou_threshold (float): a box is "found" at IoU >= this.
    Returns:
        dict: ``accuracy``, ``mean_iou``, ``iou_50`` (fraction of IoU >= ``iou_threshold``),
        ``both`` (right class and IoU >= threshold), ``count`` (floats and int), and
        ``ious`` (ndarray[N]) and ``prediction`` (``predict``'s dict).
    """
    labels = np.asarray(labels).reshape(-1)
    boxes = as_boxes(np.asarray(boxes).reshape(-1, 4))
    if len(labels) != len(windows) or len(boxes) != len(windows):
        raise ValueError(f"labels and boxes must have one entry per window ({len(windows)}), "
                         f"got {len(labels)} and {len(boxes)}")
    if model.num_slots != 1:
        raise ValueError(f"evaluate_localizer needs a one-slot model, got num_slots "
                         f"{model.num_slots}; use evaluate_slots")
    prediction = predict(model, windows, batch_size)
    ious = paired_box_iou(prediction["boxes"][:, 0], boxes) if len(boxes) \
        else np.zeros(0, np.float32)
    right = prediction["labels"][:, 0] == labels
    hit = ious >= iou_threshold
    mean = (lambda v: float(np.mean(v)) if len(v) else float("nan"))
    return {"accuracy": mean(right), "mean_iou": mean(ious), "iou_50": mean(hit),
            "both": mean(right & hit), "count": int(len(labels)), "ious": ious,
            "prediction": prediction}


def match_slots(predicted, boxes, iou_threshold=0.5):
    """Compare the N boxes of an N-slot prediction with the M true boxes of each window.

    An object is *found* when some slot overlaps it with IoU >= ``iou_threshold``; a
    slot is *on an object* when it overlaps one, a *duplicate* when the object it
    overlaps most is also the best match of an earlier slot that is on an object, and
    *empty* when it overlaps none.

    Args:
        predicted (ndarray[W, N, 4]): the slots' xyxy boxes.
        boxes (ndarray[W, M, 4]): the true xyxy boxes.
        iou_threshold (float): the overlap that counts.
    Returns:
        dict: ``"ious"`` (W, N, M) float32, ``"found"`` (W, M) bool, ``"on_object"``,
        ``"duplicate"``, ``"empty"`` (W, N) bool.
    """
    predicted = np.asarray(predicted, np.float32)
    boxes = np.asarray(boxes, np.float32)
    if predicted.ndim != 3 or predicted.shape[2] != 4 or boxes.ndim != 3 \
            or boxes.shape[2] != 4 or len(boxes) != len(predicted):
        raise ValueError(f"predicted must have shape (W, N, 4) and boxes (W, M, 4) with the "
                         f"same W, got {predicted.shape} and {boxes.shape}")
    iou_threshold = check_in_range(iou_threshold, "iou_threshold", 0, 1)
    count, slots, objects = len(boxes), predicted.shape[1], boxes.shape[1]
    # Every (slot, object) pair of a window, by broadcasting: (W, N, M).
    pairs_predicted = np.broadcast_to(predicted[:, :, None], (count, slots, objects, 4))
    pairs_true = np.broadcast_to(boxes[:, None], (count, slots, objects, 4))
    ious = paired_box_iou(pairs_predicted.reshape(-1, 4), pairs_true.reshape(-1, 4)) \
        .reshape(count, slots, objects)
    overlaps = ious >= iou_threshold
    on_object = overlaps.any(axis=2)                                  # (W, N)
    best = np.argmax(ious, axis=2) if objects else np.zeros((count, slots), np.int64)
    same = best[:, :, None] == best[:, None, :]                       # (W, N, N'): N' earlier?
    earlier = np.tri(slots, k=-1, dtype=bool)[None]                   # slot j < slot i
    duplicate = on_object & (same & earlier & on_object[:, None, :]).any(axis=2)
    return {"ious": ious, "found": overlaps.any(axis=1), "on_object": on_object,
            "duplicate": duplicate, "empty": ~on_object}


def evaluate_slots(model, windows, labels, boxes, batch_size=64, iou_threshold=0.5):
    """How an N-slot model does on windows of M objects (M = N, or not): ``match_slots``.

    Args:
        model (Localizer): ``num_slots = N``.
        windows (ndarray[W, S, S, 3]): uint8 windows, each with M objects.
        labels (ndarray[W, M] int64): true classes, left to right.
        boxes (ndarray[W, M, 4]): true xyxy boxes in window pixels, left to right.
        batch_size (int): as ``predict``.
        iou_threshold (float): the overlap that counts.
    Returns:
        dict: ``objects`` M, ``slots`` N, ``windows`` W;
        ``recall`` (objects found / M), ``precision`` (distinct objects found / N),
        ``all_found`` (fraction of windows with every object found), ``empty_slots`` and
        ``duplicate_slots`` (fractions of slots), ``empty_slot_score`` and
        ``object_slot_score`` (mean class probability of the empty slots and of the slots
        on an object: whether the scores tell them apart);
        when M = N also ``mean_iou``, ``iou_50`` and ``accuracy`` of the fixed
        assignment (slot i against object i); ``prediction`` and ``ious`` (W, N, M).
    """
    labels = np.asarray(labels)
    boxes = np.asarray(boxes, np.float32)
    count = len(windows)
    if labels.ndim != 2 or labels.shape[0] != count or boxes.shape != labels.shape + (4,):
        raise ValueError(f"labels must have shape ({count}, M) and boxes ({count}, M, 4), got "
                         f"{labels.shape} and {boxes.shape}")
    prediction = predict(model, windows, batch_size)
    matches = match_slots(prediction["boxes"], boxes, iou_threshold)
    slots, objects = model.num_slots, labels.shape[1]
    found = matches["found"]
    mean = (lambda v: float(np.mean(v)) if np.size(v) else float("nan"))
    result = {"objects": objects, "slots": slots, "windows": count,
              "recall": mean(found), "precision": mean(found.sum(axis=1) / slots),
              "all_found": mean(found.all(axis=1)), "empty_slots": mean(matches["empty"]),
              "duplicate_slots": mean(matches["duplicate"]),
              "empty_slot_score": mean(prediction["scores"][matches["empty"]]),
              "object_slot_score": mean(prediction["scores"][matches["on_object"]]),
              "prediction": prediction, "ious": matches["ious"]}
    if objects == slots:
        assigned = np.diagonal(matches["ious"], axis1=1, axis2=2)     # (W, N): slot i, object i
        result["mean_iou"] = mean(assigned)
        result["iou_50"] = mean(assigned >= iou_threshold)
        result["accuracy"] = mean(prediction["labels"] == labels)
    return result
