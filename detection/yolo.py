"""YOLO (v1): detection as one regression from the image to an S x S grid of boxes.

Redmon, Divvala, Girshick and Farhadi, "You Only Look Once: Unified, Real-Time Object
Detection", CVPR 2016.

The image is divided into an ``S x S`` grid. The cell that contains an object's
centre is responsible for that object. Every cell predicts ``B`` boxes, each with 5
numbers ``(x, y, w, h, confidence)``, and ``C`` conditional class probabilities
``Pr(class | object)`` shared by its boxes: the network's output is one tensor
``(N, S, S, B·5 + C)`` (channels-last). A box's ``(x, y)`` is its centre relative to
the bounds of its cell (0..1 inside the cell), ``(w, h)`` its size relative to the
whole image; the confidence should equal ``Pr(object) · IoU(pred, truth)``. At test
time the class-specific score of a box is ``confidence · Pr(class | object)``.

The loss is the paper's sum-squared error (eq. 3), summed over cells ``i`` and
predictors ``j`` and divided by the number of images::

      λcoord Σ 1obj_ij [(x_i - x̂_i)² + (y_i - ŷ_i)²]
    + λcoord Σ 1obj_ij [(√w_i - √ŵ_i)² + (√h_i - √ĥ_i)²]
    +        Σ 1obj_ij (C_ij - IoU_ij)²
    + λnoobj Σ 1noobj_ij C_ij²
    +        Σ_i 1obj_i Σ_c (p_i(c) - p̂_i(c))²

with λcoord = 5 and λnoobj = 0.5. ``1obj_ij`` marks the *responsible* predictor: of
the B boxes of the cell containing an object's centre, the one whose current
prediction has the highest IoU with that object (the lowest index on ties);
``1noobj_ij`` every other predictor of every cell. Following the paper the
confidence target of the responsible box is its IoU with the object, taken as a
constant (no gradient flows through it; darknet's ``rescore``); many later
implementations use 1 instead. The class term only counts in cells with an object.
Square roots of w and h make an error on a small box cost more than the same error on
a large one. As in darknet, the network outputs ``√w`` and ``√h`` directly (a box's
width is the square of its output), so no square root of a negative number arises.
All outputs are linear; at inference the confidence and class probabilities are
clipped to [0, 1] before their product.

One object per cell. A cell has one set of class probabilities, so it can stand for
one object only. When several object centres fall into the same cell, the cell takes
the object with the largest box (the first one in input order on ties): the one its
neighbours' boxes usually lie in (a plate on its car) and that costs the most pixels
when missed; the others are not learned (counted in ``YOLOTargets.dropped``). This is
the paper's stated limitation, "small objects that appear in groups".

The grid. The paper's 7 x 7 x 2 = 98 boxes on 448-px images put 64-px cells on its
objects. Here the backbone (``detection.backbones.resnet_small``, trained from
scratch) ends at stride 32, and a top-down merge (FPN-style: lateral 1x1 convolutions,
nearest upsampling, sum) brings it back to stride ``config.stride`` = 16: a 256-px
training image gets S = 16, 16 x 16 x 2 = 512 boxes and 16-px cells. Plates in the
rendered scenes at 256 px are 32-80 px wide and 7-45 px high, cars 85-256 px: of the
1098 cars and plates of 400 such scenes (rendered with seed 0), the number that
share their cell with a larger object (and are dropped) is 108 (9.8%) at S = 7, 93 at
S = 8, 22 (2.0%) at S = 16 and 7 at S = 32. What S = 16 still costs: of two plates
whose centres are closer than a cell (16 px, less than one plate width; two cars
parked side by side far away) one may be lost, and so is a plate whose centre falls
in its car's centre cell (the car is larger). Its other cost: 512 predictors of which
a handful hold an object, so the λnoobj term sums over ~500 boxes (98 in the paper).
The paper's two fully connected layers, which give every cell the whole image as
context, are replaced by convolutions (``stride`` 32 keeps the plain grid of the last
backbone stage): an FC layer from a 16 x 16 map would not fit a CPU training budget,
and the convolutional head accepts any image whose sides are multiples of the stride
(S_y x S_x cells for a non-square image).

Pieces, in the order data flows: ``YOLO.forward`` (raw output), :func:`encode_targets`
(the target tensor), :func:`assign_predictors` (responsible boxes, IoU targets),
:func:`yolo_loss` (the five terms), :func:`decode_output` (boxes, confidences, class
probabilities) and :func:`postprocess` (score threshold, per-class NMS).
"""
from dataclasses import dataclass

import numpy as np

import nn
from nn import Module
from detection.backbones import resnet_small
from detection.boxes import clip_boxes_to_image
from detection.nms import batched_nms
from detection.targets import check_detection_targets

__all__ = [
    "YOLOConfig", "YOLO", "YOLOTargets", "encode_targets", "assign_predictors", "yolo_loss",
    "decode_output", "postprocess", "elementwise_iou",
]


@dataclass
class YOLOConfig:
    """Hyperparameters of a YOLO (defaults: the small CPU model, S = image size / 16).

    Attributes:
        num_classes (int): C, the object classes (labels 1..C; no background class).
        boxes_per_cell (int): B, boxes predicted per cell (the paper's 2).
        stride (int): 16 or 32, image pixels per grid cell; S = image side / stride.
        width_multiplier (float): scales the backbone's channels.
        head_channels (int): channels of the head's convolutions.
        lambda_coord (float): weight of the box terms (the paper's 5).
        lambda_noobj (float): weight of the confidence of predictors without object (0.5).
        score_threshold (float): minimum class-specific score kept at inference.
        nms_threshold (float): IoU of the per-class NMS.
        detections_per_image (int): at most this many detections per image.
    """

    num_classes: int = 2
    boxes_per_cell: int = 2
    stride: int = 16
    width_multiplier: float = 1.0
    head_channels: int = 64
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100

    def validate(self):
        for name in ("num_classes", "boxes_per_cell", "head_channels", "detections_per_image"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.stride not in (16, 32):
            raise ValueError(f"stride must be 16 or 32, got {self.stride!r}")
        if not self.width_multiplier > 0:
            raise ValueError(f"width_multiplier must be > 0, got {self.width_multiplier!r}")
        if not (self.lambda_coord >= 0 and self.lambda_noobj >= 0):
            raise ValueError("lambda_coord and lambda_noobj must be >= 0, got "
                             f"{self.lambda_coord!r} and {self.lambda_noobj!r}")
        for name in ("score_threshold", "nms_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        return self


# ------------------------------------------------------------------------- model
class YOLO(Module):
    """YOLOv1 on channels-last images.

    Args:
        config (YOLOConfig): hyperparameters.

    ``forward(images)`` returns the raw output ``(N, S_y, S_x, B·5 + C)``;
    ``loss(images, targets)`` the training loss terms; ``predict(images)`` detections.
    Per cell, the output holds ``B`` groups ``(x, y, √w, √h, confidence)`` followed by
    the ``C`` class probabilities.
    """

    def __init__(self, config=None):
        super().__init__()
        config = (config or YOLOConfig()).validate()
        self.config = config
        self.backbone = resnet_small(config.width_multiplier)
        c4, c5 = self.backbone.out_channels[2:]
        f = config.head_channels
        self.lateral5 = nn.Conv2d(c5, f, 1)
        self.lateral4 = nn.Conv2d(c4, f, 1) if config.stride == 16 else None
        self.conv1 = nn.Conv2d(f, f, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f)
        self.conv2 = nn.Conv2d(f, f, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f)
        b, c = config.boxes_per_cell, config.num_classes
        self.predictor = nn.Conv2d(f, b * 5 + c, 1)
        # Start from "centred boxes of B different sizes, no object, uniform classes":
        # small weights, biases at those values. Different sizes set the B predictors
        # apart from the first step (which one is responsible depends on the boxes).
        nn.init.normal_(self.predictor.weight, std=0.01)
        bias = np.zeros(b * 5 + c, np.float32)
        boxes = bias[:5 * b].reshape(b, 5)  # a view: (x, y, √w, √h, confidence) per predictor
        boxes[:, 0:2] = 0.5
        boxes[:, 2:4] = np.linspace(0.2, 0.5, b)[:, None]  # widths 4%..25% of the image
        bias[5 * b:] = 1.0 / c
        self.predictor.bias.data[...] = bias

    @property
    def output_channels(self):
        return 5 * self.config.boxes_per_cell + self.config.num_classes

    def forward(self, images):
        """Raw output.

        Args:
            images (Tensor or ndarray[N, H, W, 3]): normalized float32 images, H and W
                multiples of ``config.stride``.
        Returns:
            Tensor[N, H / stride, W / stride, B·5 + C]: linear outputs.
        """
        images = _as_images(images, self.config.stride)
        c4, c5 = self.backbone(images)[2:]
        top = self.lateral5(c5)  # (N, H/32, W/32, F)
        if self.lateral4 is not None:
            lateral = self.lateral4(c4)  # (N, H/16, W/16, F)
            top = lateral + nn.functional.interpolate(top, size=lateral.shape[1:3], mode="nearest")
        x = nn.functional.leaky_relu(self.bn1(self.conv1(top)), 0.1)
        x = nn.functional.leaky_relu(self.bn2(self.conv2(x)), 0.1)
        return self.predictor(x)

    def loss(self, images, targets):
        """The loss terms of a batch (see the module docstring).

        Args:
            images (Tensor or ndarray[N, H, W, 3]): normalized images.
            targets (list of N dicts): ``boxes`` (G, 4) xyxy pixels, ``labels`` (G,) in 1..C.
        Returns:
            dict: Tensors ``coord``, ``size``, ``object``, ``no_object``, ``class`` and
            their sum ``loss`` (each summed over cells, divided by N); ints
            ``num_objects`` (cells with an object) and ``dropped`` (objects sharing a
            cell with a larger one).
        """
        images = _as_images(images, self.config.stride)
        image_size = tuple(images.shape[1:3])
        grid = (image_size[0] // self.config.stride, image_size[1] // self.config.stride)
        encoded = encode_targets(targets, grid, image_size, self.config.num_classes,
                                 num_images=images.shape[0])
        output = self.forward(images)
        responsible, iou = assign_predictors(output.data, encoded, self.config.boxes_per_cell)
        losses = yolo_loss(output, encoded, responsible, iou, self.config.lambda_coord,
                           self.config.lambda_noobj)
        losses["num_objects"] = int(encoded.object_mask.sum())
        losses["dropped"] = int(encoded.dropped.sum())
        return losses

    def predict(self, images, score_threshold=None):
        """Detections per image.

        Args:
            images (ndarray or Tensor[N, H, W, 3]): normalized images.
            score_threshold (float, optional): overrides the config's.
        Returns:
            list of N dicts: ``boxes`` ndarray[D, 4] float32 xyxy (clipped to the
            image), ``scores`` ndarray[D] float32 (decreasing), ``labels`` ndarray[D]
            int64 in 1..C.
        """
        cfg = self.config
        threshold = cfg.score_threshold if score_threshold is None else float(score_threshold)
        was_training = self.training
        self.eval()
        try:
            with nn.no_grad():
                output = self.forward(images)
        finally:
            self.train(was_training)
        image_size = (output.shape[1] * cfg.stride, output.shape[2] * cfg.stride)
        return postprocess(output.data, image_size, cfg.boxes_per_cell, threshold,
                           cfg.nms_threshold, cfg.detections_per_image)


def _as_images(images, stride):
    if not isinstance(images, nn.Tensor):
        images = nn.Tensor(np.asarray(images, dtype=np.float32))
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (N, H, W, 3), got {tuple(images.shape)}")
    if images.shape[1] % stride or images.shape[2] % stride or images.shape[1] == 0 \
            or images.shape[2] == 0:
        raise ValueError(f"image height and width must be positive multiples of the stride "
                         f"{stride}, got {tuple(images.shape[1:3])}")
    return images


# ----------------------------------------------------------------------- targets
@dataclass
class YOLOTargets:
    """The target tensor of a batch, one entry per cell.

    Attributes:
        object_mask (ndarray[N, S_y, S_x]): bool, the cell holds an object's centre.
        coords (ndarray[N, S_y, S_x, 4]): float64 ``(x, y, √w, √h)`` of the cell's
            object: centre offsets inside the cell in [0, 1], square roots of the
            width and height relative to the image; 0 in empty cells.
        boxes (ndarray[N, S_y, S_x, 4]): float64 xyxy pixels of the cell's object.
        classes (ndarray[N, S_y, S_x, C]): float32 one-hot class of the cell's object.
        labels (ndarray[N, S_y, S_x]): int64 label 1..C of the cell's object, 0 if none.
        dropped (ndarray[N]): int64 objects per image not learned (their centre's
            cell holds a larger object).
        image_size (tuple): ``(H, W)``.
    """

    object_mask: np.ndarray
    coords: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    labels: np.ndarray
    dropped: np.ndarray
    image_size: tuple


def _check_targets(targets, num_classes, num_images):
    """Boxes (G, 4) float64 and labels (G,) int64 of every image, concatenated, with image ids."""
    checked = check_detection_targets(targets, num_classes, num_images, box_extent="ordered",
                                      dtype=np.float64)
    all_boxes = [boxes for boxes, _ in checked]
    all_labels = [labels for _, labels in checked]
    counts = np.array([len(b) for b in all_boxes], np.int64)
    boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4))
    labels = np.concatenate(all_labels) if all_labels else np.zeros(0, np.int64)
    return boxes, labels, np.repeat(np.arange(len(targets)), counts)


def encode_targets(targets, grid_size, image_size, num_classes, num_images=None):
    """The target tensor: each object in the cell containing its centre, one per cell.

    Boxes are clipped to the image first. The cell of a centre ``(cx, cy)`` is
    ``(floor(cy·S_y/H), floor(cx·S_x/W))`` (a centre on the last edge belongs to the last
    cell). When several centres share a cell, the object with the largest box area
    (the first in input order on ties) takes it.

    Args:
        targets (list of N dicts): ``boxes`` (G, 4) xyxy pixels, ``labels`` (G,) in 1..C.
        grid_size (tuple): ``(S_y, S_x)``.
        image_size (tuple): ``(H, W)`` pixels.
        num_classes (int): C.
        num_images (int, optional): N, checked against ``len(targets)``.
    Returns:
        YOLOTargets
    Raises:
        TypeError, ValueError: malformed targets, labels outside 1..C.
    """
    sy, sx = (int(v) for v in grid_size)
    height, width = (float(v) for v in image_size)
    boxes, labels, image_index = _check_targets(targets, num_classes, num_images)
    n = len(targets)
    boxes = np.stack([np.clip(boxes[:, 0], 0, width), np.clip(boxes[:, 1], 0, height),
                      np.clip(boxes[:, 2], 0, width), np.clip(boxes[:, 3], 0, height)], axis=1)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    col = np.minimum(np.floor(cx * sx / width), sx - 1).astype(np.int64)
    row = np.minimum(np.floor(cy * sy / height), sy - 1).astype(np.int64)
    cell = (image_index * sy + row) * sx + col  # flat (N·S_y·S_x) index

    # One object per cell: sort by (cell, -area, input order), keep each cell's first.
    order = np.lexsort((np.arange(len(cell)), -(w * h), cell))
    first = np.ones(len(order), bool)
    first[1:] = cell[order[1:]] != cell[order[:-1]]
    keep = order[first]

    object_mask = np.zeros(n * sy * sx, bool)
    coords = np.zeros((n * sy * sx, 4))
    cell_boxes = np.zeros((n * sy * sx, 4))
    classes = np.zeros((n * sy * sx, num_classes), np.float32)
    cell_labels = np.zeros(n * sy * sx, np.int64)
    k = cell[keep]
    object_mask[k] = True
    coords[k] = np.stack([cx[keep] * sx / width - col[keep], cy[keep] * sy / height - row[keep],
                          np.sqrt(w[keep] / width), np.sqrt(h[keep] / height)], axis=1)
    cell_boxes[k] = boxes[keep]
    classes[k, labels[keep] - 1] = 1.0
    cell_labels[k] = labels[keep]
    dropped = np.bincount(image_index, minlength=n) - np.bincount(image_index[keep], minlength=n)
    return YOLOTargets(
        object_mask=object_mask.reshape(n, sy, sx),
        coords=coords.reshape(n, sy, sx, 4),
        boxes=cell_boxes.reshape(n, sy, sx, 4),
        classes=classes.reshape(n, sy, sx, num_classes),
        labels=cell_labels.reshape(n, sy, sx),
        dropped=dropped.astype(np.int64),
        image_size=(int(height), int(width)),
    )


# ------------------------------------------------------------- decoding the output
def _split_output(output, boxes_per_cell):
    """``(N, S_y, S_x, B·5 + C)`` → boxes part ``(N, S_y, S_x, B, 5)``, classes ``(.., C)``."""
    if output.ndim != 4 or output.shape[-1] <= 5 * boxes_per_cell:
        raise ValueError(f"output must have shape (N, S_y, S_x, B·5 + C) with B = "
                         f"{boxes_per_cell} and C >= 1, got {tuple(output.shape)}")
    n, sy, sx, _ = output.shape
    return output[..., :5 * boxes_per_cell].reshape(n, sy, sx, boxes_per_cell, 5), \
        output[..., 5 * boxes_per_cell:]


def _boxes_from_coords(coords, image_size, per_box):
    """Cell coordinates ``(x, y, √w, √h)`` → xyxy pixels.

    ``cx = (col + x) · W / S_x``, ``cy = (row + y) · H / S_y``, ``w = (√w)² · W``,
    ``h = (√h)² · H``.

    Args:
        coords (ndarray[N, S_y, S_x, B, 4] if ``per_box`` else ndarray[N, S_y, S_x, 4]).
        image_size (tuple): ``(H, W)``.
        per_box (bool): whether ``coords`` has the B axis.
    Returns:
        ndarray: xyxy, the shape of ``coords``.
    """
    height, width = image_size
    sy, sx = coords.shape[1:3]
    tail = (1,) if per_box else ()
    rows = np.arange(sy, dtype=coords.dtype).reshape((sy, 1) + tail)  # broadcasts over N (, B)
    cols = np.arange(sx, dtype=coords.dtype).reshape((1, sx) + tail)
    cx = (cols + coords[..., 0]) * (width / sx)
    cy = (rows + coords[..., 1]) * (height / sy)
    w = coords[..., 2] ** 2 * width
    h = coords[..., 3] ** 2 * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def decode_output(output, image_size, boxes_per_cell):
    """The boxes, confidences and class probabilities of a raw output.

    Args:
        output (ndarray[N, S_y, S_x, B·5 + C]): raw network output.
        image_size (tuple): ``(H, W)`` pixels.
        boxes_per_cell (int): B.
    Returns:
        tuple: ``boxes`` ndarray[N, S_y, S_x, B, 4] xyxy pixels (not clipped),
        ``confidence`` ndarray[N, S_y, S_x, B] and ``class_probs``
        ndarray[N, S_y, S_x, C], both as output (linear, not clipped); dtype of ``output``.
    """
    output = np.asarray(output)
    box_part, class_probs = _split_output(output, boxes_per_cell)
    return _boxes_from_coords(box_part[..., :4], image_size, True), box_part[..., 4], class_probs


def elementwise_iou(boxes1, boxes2):
    """IoU of matching xyxy boxes (broadcast), 0 when the union is empty.

    Args:
        boxes1, boxes2 (ndarray[..., 4]): xyxy, broadcastable.
    Returns:
        ndarray[...]: IoU in [0, 1].
    """
    lo = np.maximum(boxes1[..., :2], boxes2[..., :2])
    hi = np.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = np.maximum(hi - lo, 0)
    inter = wh[..., 0] * wh[..., 1]
    size1 = np.maximum(boxes1[..., 2:] - boxes1[..., :2], 0)
    size2 = np.maximum(boxes2[..., 2:] - boxes2[..., :2], 0)
    union = size1[..., 0] * size1[..., 1] + size2[..., 0] * size2[..., 1] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def assign_predictors(output, targets, boxes_per_cell):
    """The responsible predictor of each object cell and every predictor's IoU target.

    Args:
        output (ndarray[N, S_y, S_x, B·5 + C]): raw output (the current predictions).
        targets (YOLOTargets): from :func:`encode_targets`.
        boxes_per_cell (int): B.
    Returns:
        tuple: ``responsible`` ndarray[N, S_y, S_x, B] bool (one True per object cell:
        the predictor of highest IoU with the object, lowest index on ties) and
        ``iou`` ndarray[N, S_y, S_x, B] of ``output``'s dtype, the IoU of each
        predicted box with the cell's object (0 in empty cells).
    """
    output = np.asarray(output)
    if output.shape[:3] != targets.object_mask.shape:
        raise ValueError(f"output grid {output.shape[:3]} does not match the targets' grid "
                         f"{targets.object_mask.shape}")
    boxes, _, _ = decode_output(output, targets.image_size, boxes_per_cell)  # (N, Sy, Sx, B, 4)
    iou = elementwise_iou(boxes, targets.boxes[..., None, :].astype(boxes.dtype))
    iou = np.where(targets.object_mask[..., None], iou, 0).astype(output.dtype)
    best = np.argmax(iou, axis=-1)  # (N, Sy, Sx), first maximum
    responsible = (np.arange(boxes_per_cell) == best[..., None]) & targets.object_mask[..., None]
    return responsible, iou


# -------------------------------------------------------------------------- loss
def yolo_loss(output, targets, responsible, iou, lambda_coord=5.0, lambda_noobj=0.5):
    """The paper's sum-squared loss, given the responsible predictors.

    Args:
        output (Tensor[N, S_y, S_x, B·5 + C]): raw output.
        targets (YOLOTargets): from :func:`encode_targets`.
        responsible (ndarray[N, S_y, S_x, B]): bool, from :func:`assign_predictors`.
        iou (ndarray[N, S_y, S_x, B]): confidence targets of the responsible boxes
            (constants).
        lambda_coord, lambda_noobj (float): the paper's 5 and 0.5.
    Returns:
        dict: Tensors (scalars) ``coord`` (x, y), ``size`` (√w, √h), ``object``
        (confidence of responsible boxes against their IoU), ``no_object`` (confidence
        of the others against 0), ``class`` and their sum ``loss``; each summed over
        the batch and divided by N.
    """
    if not isinstance(output, nn.Tensor):
        output = nn.Tensor(np.asarray(output))
    b = responsible.shape[-1]
    box_part, class_probs = _split_output(output, b)  # (N, Sy, Sx, B, 5), (N, Sy, Sx, C)
    dtype = output.dtype
    n = output.shape[0]
    resp = responsible.astype(dtype)[..., None]                 # (N, Sy, Sx, B, 1)
    target_coords = targets.coords.astype(dtype)[..., None, :]  # (N, Sy, Sx, 1, 4)
    err = (box_part[..., :4] - target_coords) ** 2              # (N, Sy, Sx, B, 4)
    coord = (err[..., 0:2] * resp).sum() * (lambda_coord / n)
    size = (err[..., 2:4] * resp).sum() * (lambda_coord / n)
    confidence = box_part[..., 4]                               # (N, Sy, Sx, B)
    conf_target = np.where(responsible, iou, 0).astype(dtype)
    obj = (((confidence - conf_target) ** 2) * responsible.astype(dtype)).sum() * (1.0 / n)
    noobj = ((confidence ** 2) * (~responsible).astype(dtype)).sum() * (lambda_noobj / n)
    in_object_cell = targets.object_mask.astype(dtype)[..., None]  # (N, Sy, Sx, 1)
    cls = (((class_probs - targets.classes.astype(dtype)) ** 2) * in_object_cell).sum() * (1.0 / n)
    return {"coord": coord, "size": size, "object": obj, "no_object": noobj, "class": cls,
            "loss": coord + size + obj + noobj + cls}


# --------------------------------------------------------------------- inference
def postprocess(output, image_size, boxes_per_cell, score_threshold=0.05, nms_threshold=0.5,
                detections_per_image=100):
    """Detections from a raw output: class-specific scores, threshold, per-class NMS.

    The score of box j of cell i for class c is ``clip(C_ij, 0, 1) · clip(p_i(c), 0, 1)``;
    every (box, class) with a score above ``score_threshold`` is a candidate; boxes are
    clipped to the image and ``batched_nms`` keeps the best per class.

    Args:
        output (ndarray[N, S_y, S_x, B·5 + C]): raw output.
        image_size (tuple): ``(H, W)``.
        boxes_per_cell (int): B.
        score_threshold (float): keep scores ``> score_threshold``.
        nms_threshold (float): IoU threshold of the NMS.
        detections_per_image (int): at most this many per image, best first.
    Returns:
        list of N dicts: ``boxes`` ndarray[D, 4] float32, ``scores`` ndarray[D] float32
        (decreasing), ``labels`` ndarray[D] int64 in 1..C.
    """
    boxes, confidence, class_probs = decode_output(output, image_size, boxes_per_cell)
    n = boxes.shape[0]
    if n == 0:
        return []
    num_classes = class_probs.shape[-1]
    scores = np.clip(confidence, 0, 1)[..., None] * np.clip(class_probs, 0, 1)[..., None, :]
    scores = scores.reshape(-1)  # (N·S_y·S_x·B·C,), order: image, cell, box, class
    candidates = np.flatnonzero(scores > score_threshold)
    box_index = candidates // num_classes  # into the (N·S_y·S_x·B) boxes
    per_image = boxes[0].size // 4  # S_y·S_x·B boxes per image
    image = box_index // per_image
    cand_boxes = clip_boxes_to_image(boxes.reshape(-1, 4)[box_index].astype(np.float32),
                                     image_size)
    cand_scores = scores[candidates].astype(np.float32)
    cand_labels = (candidates % num_classes + 1).astype(np.int64)
    # One NMS for the whole batch: a box suppresses only boxes of its image and class.
    keep = batched_nms(cand_boxes, cand_scores, image * num_classes + cand_labels - 1,
                       nms_threshold)  # by decreasing score
    keep = keep[np.argsort(image[keep], kind="stable")]  # by image, then score
    counts = np.bincount(image[keep], minlength=n)
    rank = np.arange(len(keep)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = keep[rank < detections_per_image]
    cuts = np.cumsum(np.minimum(counts, detections_per_image))[:-1]
    return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(
        np.split(cand_boxes[keep], cuts), np.split(cand_scores[keep], cuts),
        np.split(cand_labels[keep], cuts))]
