"""RetinaNet: a one-stage detector with a feature pyramid and the focal loss.

Lin, Goyal, Girshick, He and Dollár, "Focal Loss for Dense Object Detection", ICCV 2017.

A one-stage detector classifies every anchor of every pyramid level at once: tens of
thousands of candidates per image, almost all of them background. With plain cross
entropy the easy negatives, each contributing a small loss, outweigh the few objects.
The focal loss scales each anchor's cross entropy by ``(1 - p_t)**gamma``, so anchors
already classified well (``p_t`` near 1) fade away::

    FL(p_t) = -alpha_t (1 - p_t)**gamma log(p_t)

Pieces, in the order data flows:

1. backbone (``detection.backbones``) → ``C3..C5``; FPN (``detection.fpn``) → ``P3..``;
2. two small subnets shared across levels: ``cls`` predicts ``A·K`` logits per
   location, ``box`` predicts ``A·4`` box deltas (``A`` anchors per location);
3. training: anchors are matched to ground truth (IoU >= 0.5 foreground, < 0.4
   background, between ignored, plus each object's best anchor), focal loss over
   all non-ignored anchors and a smooth-L1 (or GIoU) loss on foreground deltas,
   both divided by ``max(1, number of foreground anchors)``;
4. inference: sigmoid scores, a score threshold, top-k per level, decoding,
   class-aware NMS, at most ``detections_per_image`` boxes.

Output order of anchors (and of the flattened head outputs): level, then row ``y``,
column ``x``, then anchor ``a`` — a head's ``(N, H, W, A·K)`` map reshapes to
``(N, H·W·A, K)`` in exactly the order of ``AnchorGenerator``.
"""
import math
from dataclasses import dataclass

import numpy as np

import nn
from nn import Module
from nn._checks import (
    ArgumentTypeError, check_choice, check_finite, check_in_range, check_int, check_non_negative,
    check_positive, check_probability,
)
from detection.anchors import AnchorGenerator
from detection.backbones import resnet18, resnet_small
from detection.box_coder import BoxCoder
from detection.boxes import box_iou, clip_boxes_to_image, generalized_box_iou_loss
from detection.fpn import FeaturePyramidNetwork
from detection.matcher import Matcher
from detection.nms import batched_nms
from detection.targets import check_detection_targets

__all__ = ["RetinaNetConfig", "RetinaNet", "RetinaNetHead"]


@dataclass
class RetinaNetConfig:
    """Hyperparameters of a RetinaNet (defaults: the small CPU configuration).

    Attributes:
        num_classes (int): K foreground classes (labels 1..K; 0 is never predicted).
        backbone (str): ``"small"`` (``resnet_small``) or ``"resnet18"``.
        width_multiplier (float): scales the backbone's channels.
        levels (tuple of int): pyramid levels used, e.g. ``(3, 4, 5)`` for strides 8, 16, 32.
            Levels 2..5 come from the backbone; levels above 5 are extra stride-2 convolutions.
        fpn_channels (int): channels of every pyramid level and of the subnets.
        head_convs (int): 3x3 convolutions in each subnet before its predictor (4 in the paper).
        head_norm (str or None): ``"group"`` puts GroupNorm in the subnets.
        anchor_sizes (tuple of float): base anchor size of each level, same length as ``levels``.
        anchor_scales (tuple of float): multipliers of the base size (the paper's 2**0, 2**(1/3), 2**(2/3)).
        aspect_ratios (tuple of float): anchor height / width ratios.
        fg_iou, bg_iou (float): matching thresholds.
        focal_alpha, focal_gamma (float): focal loss parameters.
        box_loss (str): ``"smooth_l1"`` or ``"giou"``.
        smooth_l1_beta (float): beta of the smooth-L1 loss.
        prior_probability (float): pi of the classification bias initialisation.
        score_threshold (float), topk_per_level (int), nms_threshold (float),
        detections_per_image (int): inference.
    """

    num_classes: int = 2
    backbone: str = "small"
    width_multiplier: float = 1.0
    levels: tuple = (3, 4, 5)
    fpn_channels: int = 64
    head_convs: int = 2
    head_norm: str = None
    anchor_sizes: tuple = (16, 32, 64)
    anchor_scales: tuple = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    aspect_ratios: tuple = (0.25, 0.5, 1.0)
    fg_iou: float = 0.5
    bg_iou: float = 0.4
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss: str = "smooth_l1"
    smooth_l1_beta: float = 1.0 / 9
    prior_probability: float = 0.01
    score_threshold: float = 0.05
    topk_per_level: int = 1000
    nms_threshold: float = 0.5
    detections_per_image: int = 100

    def validate(self):
        """Check every field; return ``self``.

        Raises:
            TypeError: a field of the wrong type (a float where an int is needed, a str
                where a number is needed; bools are not numbers here). It is
                ``nn._checks.ArgumentTypeError``, a ValueError as well.
            ValueError: a value out of range, naming the field: counts below their
                minimum, a non-finite or non-positive ``width_multiplier``, anchor size,
                scale or ratio, thresholds outside [0, 1], inconsistent levels.
        """
        check_int(self.num_classes, "num_classes", 1)
        check_choice(self.backbone, "backbone", ("small", "resnet18"))
        check_positive(self.width_multiplier, "width_multiplier")
        levels = _sequence(self.levels, "levels")
        for level in levels:
            check_int(level, "levels", 2)
        if not levels or sorted(levels) != list(levels):
            raise ValueError(f"levels must be increasing integers >= 2, got {self.levels}")
        if any(b - a != 1 for a, b in zip(levels, levels[1:])):
            raise ValueError(f"levels must be consecutive, got {self.levels}")
        if levels[0] > 5:
            raise ValueError(f"levels must include at least one backbone level (2..5), "
                             f"got {self.levels}")
        check_int(self.fpn_channels, "fpn_channels", 1)
        check_int(self.head_convs, "head_convs", 0)
        check_choice(self.head_norm, "head_norm", (None, "group"))
        if self.head_norm == "group":
            groups = min(32, self.fpn_channels // 2)
            if groups < 1 or self.fpn_channels % groups:
                raise ValueError(f"fpn_channels={self.fpn_channels} cannot be split into "
                                 f"min(32, fpn_channels // 2) = {groups} GroupNorm groups")
        for name in ("anchor_sizes", "anchor_scales", "aspect_ratios"):
            values = _sequence(getattr(self, name), name)
            if not values:
                raise ValueError(f"{name} must not be empty")
            for value in values:
                check_positive(value, name)
        if len(self.anchor_sizes) != len(levels):
            raise ValueError(
                f"anchor_sizes needs one size per level: {len(levels)} levels, "
                f"{len(self.anchor_sizes)} sizes"
            )
        for name in ("fg_iou", "bg_iou", "score_threshold", "nms_threshold"):
            check_probability(getattr(self, name), name)
        if not self.bg_iou <= self.fg_iou:
            raise ValueError(f"need 0 <= bg_iou <= fg_iou <= 1, got {self.bg_iou}, {self.fg_iou}")
        check_in_range(self.focal_alpha, "focal_alpha", high=1)  # negative: no alpha weighting
        check_non_negative(self.focal_gamma, "focal_gamma")
        check_choice(self.box_loss, "box_loss", ("smooth_l1", "giou"))
        check_non_negative(self.smooth_l1_beta, "smooth_l1_beta")
        check_finite(self.prior_probability, "prior_probability")
        if not 0 < self.prior_probability < 1:
            raise ValueError(f"prior_probability must be in (0, 1), got {self.prior_probability}")
        check_int(self.topk_per_level, "topk_per_level", 1)
        check_int(self.detections_per_image, "detections_per_image", 1)
        return self


def _sequence(value, name):
    if not isinstance(value, (tuple, list)):
        raise ArgumentTypeError(f"{name} must be a tuple or list, got {type(value).__name__}")
    return tuple(value)


def _subnet(channels, num_convs, norm):
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(channels, channels, 3, padding=1))
        if norm == "group":
            layers.append(nn.GroupNorm(min(32, channels // 2), channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RetinaNetHead(Module):
    """Classification and box subnets, shared by all pyramid levels.

    Shapes:
        list of ``(N, H_l, W_l, C)`` → ``cls_logits (N, R, K)``, ``box_deltas (N, R, 4)``
        with ``R = sum_l H_l·W_l·A``.
    """

    def __init__(self, channels, num_anchors, num_classes, num_convs=4, norm=None, prior_probability=0.01):
        super().__init__()
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.cls_subnet = _subnet(channels, num_convs, norm)
        self.box_subnet = _subnet(channels, num_convs, norm)
        self.cls_logits = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        self.box_deltas = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        # The paper's initialisation: small weights, and a classification bias such that
        # every anchor starts with foreground probability pi. Without it the ~10^4
        # background anchors produce a huge loss in the first iterations.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))

    def forward(self, features):
        cls_all, box_all = [], []
        for f in features:
            n = f.shape[0]
            cls = self.cls_logits(self.cls_subnet(f))  # (N, H, W, A·K)
            box = self.box_deltas(self.box_subnet(f))  # (N, H, W, A·4)
            cls_all.append(cls.reshape(n, -1, self.num_classes))  # (N, H·W·A, K)
            box_all.append(box.reshape(n, -1, 4))                 # (N, H·W·A, 4)
        return nn.concat(cls_all, axis=1), nn.concat(box_all, axis=1)


class RetinaNet(Module):
    """RetinaNet on channels-last images.

    Args:
        config (RetinaNetConfig): hyperparameters; defaults give the small CPU model.

    ``forward(images)`` returns raw outputs; ``loss(images, targets)`` the training
    losses; ``predict(images)`` boxes, scores and labels per image.
    """

    def __init__(self, config=None):
        super().__init__()
        config = (config or RetinaNetConfig()).validate()
        self.config = config
        make = resnet_small if config.backbone == "small" else resnet18
        self.backbone = make(config.width_multiplier)
        backbone_levels = [lvl for lvl in config.levels if lvl <= 5]
        extra = len(config.levels) - len(backbone_levels)  # validate(): at least one backbone level
        self._backbone_slice = slice(backbone_levels[0] - 2, backbone_levels[-1] - 1)
        in_channels = self.backbone.out_channels[self._backbone_slice]
        self.fpn = FeaturePyramidNetwork(in_channels, config.fpn_channels, extra_levels=extra)
        self.strides = tuple(2 ** lvl for lvl in config.levels)
        self.anchor_generator = AnchorGenerator(
            sizes=tuple(tuple(s * m for m in config.anchor_scales) for s in config.anchor_sizes),
            aspect_ratios=(tuple(config.aspect_ratios),) * len(config.levels),
            strides=self.strides,
            offset=0.5,  # anchors centred on their cell, where the cell's receptive field is
        )
        self.num_anchors = len(config.anchor_scales) * len(config.aspect_ratios)
        self.head = RetinaNetHead(
            config.fpn_channels, self.num_anchors, config.num_classes, config.head_convs,
            config.head_norm, config.prior_probability,
        )
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(config.fg_iou, config.bg_iou, allow_low_quality_matches=True)
        self._anchor_cache = {}

    # ------------------------------------------------------------------ forward
    def forward(self, images):
        """Raw outputs.

        Args:
            images (Tensor or ndarray[N, H, W, 3] float32): normalized images.
        Returns:
            tuple: ``cls_logits`` Tensor ``(N, R, K)``, ``box_deltas`` Tensor ``(N, R, 4)``,
            and the list of pyramid feature sizes ``[(H_l, W_l)]``.
        """
        if not isinstance(images, nn.Tensor):
            images = nn.Tensor(np.asarray(images, dtype=np.float32))
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must have shape (N, H, W, 3), got {tuple(images.shape)}")
        features = self.backbone(images)[self._backbone_slice]
        pyramid = self.fpn(features)
        cls_logits, box_deltas = self.head(pyramid)
        return cls_logits, box_deltas, [tuple(p.shape[1:3]) for p in pyramid]

    def anchors(self, image_size, feature_sizes):
        """Anchors ``(R, 4)`` float32 for an image size and the pyramid's feature sizes (cached)."""
        key = (tuple(image_size), tuple(feature_sizes))
        if key not in self._anchor_cache:
            per_level = self.anchor_generator.grid_anchors(tuple(image_size), list(feature_sizes))
            self._anchor_cache[key] = np.concatenate(per_level, axis=0).astype(np.float32)
        return self._anchor_cache[key]

    # --------------------------------------------------------------- training
    def _check_targets(self, targets):
        """``[(boxes (G, 4) float32, labels (G,) int64)]`` of valid targets, or a ValueError."""
        return check_detection_targets(targets, self.config.num_classes)

    def assign_targets(self, anchors, targets):
        """Match anchors to ground truth, image by image.

        Args:
            anchors (ndarray[R, 4]): xyxy.
            targets (list of dict): per image ``boxes`` (G, 4) xyxy and ``labels`` (G,) in 1..K.
        Returns:
            tuple of ndarrays: ``cls_targets (N, R, K)`` float32 one-hot (all zeros for
            background), ``valid (N, R)`` bool (False where ignored), ``matched_boxes (N, R, 4)``
            float32 (the matched ground truth, zeros where not foreground), ``foreground (N, R)`` bool.
        """
        k = self.config.num_classes
        n, r = len(targets), anchors.shape[0]
        cls_targets = np.zeros((n, r, k), np.float32)
        valid = np.ones((n, r), bool)
        matched_boxes = np.zeros((n, r, 4), np.float32)
        foreground = np.zeros((n, r), bool)
        for i, (boxes, labels) in enumerate(self._check_targets(targets)):
            # per image: a handful of objects, vectorized over anchors
            if boxes.shape[0] == 0:
                continue  # every anchor is background
            matches = self.matcher(box_iou(boxes, anchors))
            fg = matches >= 0
            foreground[i] = fg
            valid[i] = matches != Matcher.BETWEEN_THRESHOLDS
            cls_targets[i, np.flatnonzero(fg), labels[matches[fg]] - 1] = 1.0
            matched_boxes[i, fg] = boxes[matches[fg]]
        return cls_targets, valid, matched_boxes, foreground

    def loss(self, images, targets):
        """Focal loss and box loss of a batch.

        Args:
            images (ndarray or Tensor[N, H, W, 3]): normalized images.
            targets (list of N dicts): ``boxes`` (G, 4) xyxy pixels, ``labels`` (G,) in 1..K.
        Returns:
            dict: ``classification`` and ``box_regression`` Tensors (scalars), their sum
            ``loss``, and ``num_foreground`` (int).
        """
        if len(targets) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(targets)} targets")
        self._check_targets(targets)  # before any work
        cls_logits, box_deltas, feature_sizes = self.forward(images)
        anchors = self.anchors(images.shape[1:3], feature_sizes)
        cls_targets, valid, matched_boxes, foreground = self.assign_targets(anchors, targets)
        num_fg = int(foreground.sum())
        normalizer = max(1.0, float(num_fg))

        focal = nn.functional.sigmoid_focal_loss(
            cls_logits, cls_targets, alpha=self.config.focal_alpha, gamma=self.config.focal_gamma,
            reduction="none",
        )  # (N, R, K)
        cls_loss = (focal * valid[:, :, None].astype(np.float32)).sum() / normalizer

        if num_fg == 0:
            box_loss = (box_deltas * 0.0).sum()  # zero, but still part of the graph
        else:
            fg_index = np.flatnonzero(foreground.reshape(-1))
            deltas = box_deltas.reshape(-1, 4)[fg_index]  # (F, 4)
            fg_anchors = np.broadcast_to(anchors, foreground.shape + (4,)).reshape(-1, 4)[fg_index]
            fg_boxes = matched_boxes.reshape(-1, 4)[fg_index]
            if self.config.box_loss == "smooth_l1":
                target_deltas = self.box_coder.encode(fg_boxes, fg_anchors).astype(np.float32)
                box_loss = nn.functional.smooth_l1_loss(
                    deltas, target_deltas, beta=self.config.smooth_l1_beta, reduction="sum"
                ) / normalizer
            else:
                predicted = self.box_coder.decode_tensor(deltas, fg_anchors)
                box_loss = generalized_box_iou_loss(predicted, fg_boxes, reduction="sum") / normalizer
        return {
            "classification": cls_loss,
            "box_regression": box_loss,
            "loss": cls_loss + box_loss,
            "num_foreground": num_fg,
        }

    # --------------------------------------------------------------- inference
    def predict(self, images, score_threshold=None):
        """Detections per image.

        Args:
            images (ndarray or Tensor[N, H, W, 3]): normalized images.
            score_threshold (float, optional): overrides the config's.
        Returns:
            list of N dicts: ``boxes`` ndarray[D, 4] float32 xyxy (clipped to the image),
            ``scores`` ndarray[D] float32 (sigmoid probabilities, decreasing),
            ``labels`` ndarray[D] int64 in 1..K.
        """
        cfg = self.config
        threshold = cfg.score_threshold if score_threshold is None else float(score_threshold)
        was_training = self.training
        self.eval()
        try:
            with nn.no_grad():
                cls_logits, box_deltas, feature_sizes = self.forward(images)
        finally:
            self.train(was_training)
        height, width = images.shape[1:3]
        anchors = self.anchors((height, width), feature_sizes)
        level_sizes = [h * w * self.num_anchors for h, w in feature_sizes]
        level_starts = np.concatenate([[0], np.cumsum(level_sizes)])
        logits = cls_logits.data
        deltas = box_deltas.data
        k = cfg.num_classes
        results = []
        for i in range(logits.shape[0]):
            boxes_all, scores_all, labels_all = [], [], []
            for start, stop in zip(level_starts[:-1], level_starts[1:]):
                level_logits = logits[i, start:stop].reshape(-1)  # (R_l·K,)
                # Threshold on logits: sigmoid is monotone, so no sigmoid over every anchor.
                logit_threshold = math.log(threshold / (1 - threshold)) if 0 < threshold < 1 else -np.inf
                candidates = np.flatnonzero(level_logits > logit_threshold)
                if candidates.size > cfg.topk_per_level:
                    top = np.argpartition(-level_logits[candidates], cfg.topk_per_level - 1)[: cfg.topk_per_level]
                    candidates = candidates[top]
                anchor_index = start + candidates // k
                scores = 1.0 / (1.0 + np.exp(-level_logits[candidates].astype(np.float64)))
                boxes = self.box_coder.decode(deltas[i, anchor_index], anchors[anchor_index])
                boxes_all.append(boxes)
                scores_all.append(scores)
                labels_all.append(candidates % k + 1)
            boxes = clip_boxes_to_image(np.concatenate(boxes_all).astype(np.float32), (height, width))
            scores = np.concatenate(scores_all).astype(np.float32)
            labels = np.concatenate(labels_all).astype(np.int64)
            keep = batched_nms(boxes, scores, labels, cfg.nms_threshold)[: cfg.detections_per_image]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results
