"""Faster R-CNN and Fast R-CNN: two-stage detectors on one shared feature map.

- Fast R-CNN (Girshick, ICCV 2015): the image goes through the convolutional
  network once; externally computed proposals (selective search,
  ``detection.selective_search``) are RoI-pooled from the feature map and classified
  by the head of ``detection.roi_heads``.
- Faster R-CNN (Ren, He, Girshick and Sun, NeurIPS 2015): the proposals come from a
  Region Proposal Network (``detection.rpn``) on the same feature map, so the whole
  detector is one network. Trained jointly, "approximately": the losses of the RPN
  and of the head are added and back-propagated together, but the proposals are
  treated as constants (no gradient flows through their coordinates).

The shared feature map. The paper uses one map (VGG-16's conv5, stride 16). Small
objects (license plates: 10-60 px in 256-512 px street scenes) need a finer one, so
here the map has stride 8 and sees the whole backbone: a ResNet (``detection.backbones``) gives ``C3..C5`` and a
top-down pathway (FPN's lateral 1x1 convolutions and nearest-neighbour upsampling,
Lin et al. 2017) merges them into a single map at the level of ``feature_level``
(3: stride 8), smoothed by one 3x3 convolution. The RPN and the RoI pooling both
read that one map.

Anchors: 3 scales x 3 aspect ratios per location (the paper's nine). The defaults
suit small wide objects next to large ones; they were chosen on the synthetic street
scenes (``plates.synthetic``) at 256 px: plates have a square-root area of 15-52 px
(5th-95th percentile, median 24) and height/width 0.2-0.75, cars 85-220 px and
0.5-1.45. Scales 16, 32, 128 and ratios 0.25, 0.5, 1 give the median plate a best
anchor IoU of 0.58 and the median car 0.64 (three octave-spaced scales 16, 48, 144
gave 0.49 and 0.62). At stride 8 a 12-px-high plate rarely reaches IoU 0.7 with any
anchor: its best anchors are its positives (the matcher's low-quality matches).

``num_classes`` counts the background (torchvision's convention): 3 for car and
plate, labels 1..2.
"""
import contextlib
from dataclasses import dataclass

import numpy as np

import nn
from nn import Module
from detection.backbones import resnet18, resnet_small
from detection.roi_heads import RoIHeads, check_targets
from detection.rpn import RegionProposalNetwork, check_box_list

__all__ = ["FasterRCNNConfig", "TopDownFeature", "FasterRCNN", "FastRCNN"]


@dataclass
class FasterRCNNConfig:
    """Hyperparameters of Faster R-CNN / Fast R-CNN (defaults: the small CPU model).

    Attributes:
        num_classes (int): K, background included (labels 1..K-1).
        backbone (str): ``"small"`` (``resnet_small``) or ``"resnet18"``.
        width_multiplier (float): scales the backbone's channels.
        feature_level (int): level of the shared map (2..5, stride ``2**level``).
        feature_channels (int): C of the shared map.
        anchor_sizes (tuple of float): anchor scales (square-root areas) in pixels.
        aspect_ratios (tuple of float): anchor height / width ratios.
        rpn_fg_iou, rpn_bg_iou (float): RPN matching thresholds (0.7, 0.3).
        rpn_batch_size_per_image (int), rpn_positive_fraction (float): RPN sample.
        rpn_pre_nms_top_n, rpn_post_nms_top_n (tuple of int): ``(training, testing)``.
        rpn_nms_threshold (float): NMS IoU of the proposals.
        pooler (str): ``"pool"`` (RoIPool) or ``"align"`` (RoIAlign).
        pool_size (int): pooled grid size (7).
        sampling_ratio (int): RoIAlign samples per bin and axis.
        representation_size (int): width of the head's two fully connected layers.
        box_fg_iou, box_bg_iou_low (float): head foreground from ``box_fg_iou``,
            background in ``[box_bg_iou_low, box_fg_iou)``.
        box_batch_size_per_image (int), box_positive_fraction (float): head sample.
        smooth_l1_beta (float): beta of both box losses.
        score_threshold (float), nms_threshold (float), detections_per_image (int):
            inference.
    """

    num_classes: int = 3
    backbone: str = "small"
    width_multiplier: float = 1.0
    feature_level: int = 3
    feature_channels: int = 64
    anchor_sizes: tuple = (16, 32, 128)
    aspect_ratios: tuple = (0.25, 0.5, 1.0)
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_top_n: tuple = (2000, 1000)
    rpn_post_nms_top_n: tuple = (2000, 300)
    rpn_nms_threshold: float = 0.7
    pooler: str = "pool"
    pool_size: int = 7
    sampling_ratio: int = 2
    representation_size: int = 256
    box_fg_iou: float = 0.5
    box_bg_iou_low: float = 0.1
    box_batch_size_per_image: int = 64
    box_positive_fraction: float = 0.25
    smooth_l1_beta: float = 1.0 / 9
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100

    def validate(self):
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (background included), "
                             f"got {self.num_classes!r}")
        if self.backbone not in ("small", "resnet18"):
            raise ValueError(f"backbone must be 'small' or 'resnet18', got {self.backbone!r}")
        if self.feature_level not in (2, 3, 4, 5):
            raise ValueError(f"feature_level must be 2, 3, 4 or 5, got {self.feature_level!r}")
        if self.pooler not in ("pool", "align"):
            raise ValueError(f"pooler must be 'pool' or 'align', got {self.pooler!r}")
        if not 0 <= self.rpn_bg_iou <= self.rpn_fg_iou <= 1:
            raise ValueError(f"need 0 <= rpn_bg_iou <= rpn_fg_iou <= 1, got "
                             f"{self.rpn_bg_iou}, {self.rpn_fg_iou}")
        if not 0 <= self.box_bg_iou_low <= self.box_fg_iou <= 1:
            raise ValueError(f"need 0 <= box_bg_iou_low <= box_fg_iou <= 1, got "
                             f"{self.box_bg_iou_low}, {self.box_fg_iou}")
        return self


class TopDownFeature(Module):
    """One feature map at ``C_level``'s stride that has seen ``C_level..C5``.

    FPN's top-down pathway (lateral 1x1 convolutions, nearest upsampling x2, sums)
    followed by one 3x3 smoothing convolution, keeping only the finest output::

        T5 = lat5(C5),  T_l = lat_l(C_l) + up(T_{l+1}),  out = smooth(T_level)

    Shapes:
        ``[C_level, ..., C5]`` → ``(N, H_level, W_level, out_channels)``.
    """

    def __init__(self, in_channels_list, out_channels):
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, out_channels, 1) for c in in_channels_list])
        self.smooth = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, features):
        if len(features) != len(self.lateral):
            raise ValueError(f"expected {len(self.lateral)} feature maps, got {len(features)}")
        top = self.lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            top = lateral + nn.functional.interpolate(top, size=lateral.shape[1:3], mode="nearest")
        return self.smooth(top)


def _as_images(images):
    if not isinstance(images, nn.Tensor):
        images = nn.Tensor(np.asarray(images, dtype=np.float32))
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (N, H, W, 3), got {tuple(images.shape)}")
    return images


@contextlib.contextmanager
def _predicting(model, score_threshold=None):
    """Eval mode, no gradients and (if given) another score threshold of the RoI head
    inside the block; the model's mode and threshold are restored after it."""
    was_training = model.training
    model.eval()
    saved = model.roi_heads.score_threshold
    if score_threshold is not None:
        model.roi_heads.score_threshold = float(score_threshold)
    try:
        with nn.no_grad():
            yield
    finally:
        model.roi_heads.score_threshold = saved
        model.train(was_training)


class _SharedFeatures(Module):
    """Backbone + ``TopDownFeature``: the image's one feature map."""

    def __init__(self, config):
        super().__init__()
        make = resnet_small if config.backbone == "small" else resnet18
        self.backbone = make(config.width_multiplier)
        self._first = config.feature_level - 2
        self.neck = TopDownFeature(self.backbone.out_channels[self._first:],
                                   config.feature_channels)
        self.stride = 2 ** config.feature_level

    def forward(self, images):
        return self.neck(self.backbone(images)[self._first:])


def _shared_features(config):
    """The validated configuration (``FasterRCNNConfig()`` when None) and the shared
    feature extractor it describes."""
    config = (config or FasterRCNNConfig()).validate()
    return config, _SharedFeatures(config)


def _rpn(config, stride):
    return RegionProposalNetwork(
        config.feature_channels, stride, anchor_sizes=config.anchor_sizes,
        aspect_ratios=config.aspect_ratios, fg_iou=config.rpn_fg_iou,
        bg_iou=config.rpn_bg_iou, batch_size_per_image=config.rpn_batch_size_per_image,
        positive_fraction=config.rpn_positive_fraction,
        pre_nms_top_n=config.rpn_pre_nms_top_n, post_nms_top_n=config.rpn_post_nms_top_n,
        nms_threshold=config.rpn_nms_threshold, smooth_l1_beta=config.smooth_l1_beta,
    )


def _roi_heads(config, channels, stride):
    return RoIHeads(
        channels, config.num_classes, 1.0 / stride, pooler=config.pooler,
        output_size=config.pool_size, sampling_ratio=config.sampling_ratio,
        representation_size=config.representation_size, fg_iou=config.box_fg_iou,
        bg_iou_low=config.box_bg_iou_low, batch_size_per_image=config.box_batch_size_per_image,
        positive_fraction=config.box_positive_fraction, smooth_l1_beta=config.smooth_l1_beta,
        score_threshold=config.score_threshold, nms_threshold=config.nms_threshold,
        detections_per_image=config.detections_per_image,
    )


class FasterRCNN(Module):
    """Faster R-CNN on channels-last images: shared features, RPN, Fast R-CNN head.

    Args:
        config (FasterRCNNConfig): hyperparameters; defaults give the small CPU model.

    ``forward(images)`` returns the shared feature map and the RPN's raw outputs;
    ``loss(images, targets)`` the four training losses; ``predict(images)`` boxes,
    scores and labels per image.
    """

    def __init__(self, config=None):
        super().__init__()
        self.config, self.features = _shared_features(config)
        self.stride = self.features.stride
        self.rpn = _rpn(self.config, self.stride)
        self.roi_heads = _roi_heads(self.config, self.config.feature_channels, self.stride)

    def forward(self, images):
        """Shared features and RPN outputs.

        Args:
            images (Tensor or ndarray[N, H, W, 3] float32): normalized images.
        Returns:
            tuple: ``features`` Tensor ``(N, H/s, W/s, C)``, ``objectness`` Tensor
            ``(N, R)`` logits and ``box_deltas`` Tensor ``(N, R, 4)`` (R anchors).
        """
        images = _as_images(images)
        features = self.features(images)
        objectness, box_deltas = self.rpn(features)
        return features, objectness, box_deltas

    def proposals(self, images):
        """RPN proposals per image (``RegionProposalNetwork.propose``), without gradients.

        Returns:
            tuple: ``features`` Tensor, list of ``boxes`` ndarray[P_i, 4] and list of
            ``scores`` ndarray[P_i].
        """
        features, objectness, box_deltas = self.forward(images)
        anchors = self.rpn.anchors(images.shape[1:3], features.shape[1:3])
        boxes, scores = self.rpn.propose(objectness.data, box_deltas.data, anchors,
                                         images.shape[1:3])
        return features, boxes, scores

    def loss(self, images, targets):
        """Joint training losses of a batch.

        Args:
            images (ndarray or Tensor[N, H, W, 3]): normalized images.
            targets (list of N dicts): ``boxes`` (M, 4) xyxy pixels, ``labels`` (M,) in 1..K-1.
        Returns:
            dict: ``rpn_objectness``, ``rpn_box_regression``, ``classification``,
            ``box_regression`` scalar Tensors, their sum ``loss``, and the counts
            ``rpn_num_positive``, ``num_foreground``, ``num_rois``.
        """
        images = _as_images(images)
        checked = check_targets(targets, images.shape[0], self.config.num_classes)
        features, objectness, box_deltas = self.forward(images)
        image_size = images.shape[1:3]
        anchors = self.rpn.anchors(image_size, features.shape[1:3])
        rpn = self.rpn.compute_loss(objectness, box_deltas, anchors, [b for b, _ in checked])
        # Approximate joint training: the proposals are constants for the head.
        proposals, _ = self.rpn.propose(objectness.data, box_deltas.data, anchors, image_size)
        head = self.roi_heads.loss(features, proposals, checked)
        total = rpn["objectness"] + rpn["box_regression"] + head["classification"] \
            + head["box_regression"]
        return {"rpn_objectness": rpn["objectness"], "rpn_box_regression": rpn["box_regression"],
                "classification": head["classification"], "box_regression": head["box_regression"],
                "loss": total, "rpn_num_positive": rpn["num_positive"],
                "num_foreground": head["num_foreground"], "num_rois": head["num_rois"]}

    def predict(self, images, score_threshold=None):
        """Detections per image.

        Args:
            images (ndarray or Tensor[N, H, W, 3]): normalized images.
            score_threshold (float, optional): overrides the config's.
        Returns:
            list of N dicts: ``boxes`` ndarray[D, 4] float32 xyxy (clipped to the image),
            ``scores`` ndarray[D] float32 (decreasing), ``labels`` ndarray[D] int64 in 1..K-1.
        """
        images = _as_images(images)
        with _predicting(self, score_threshold):
            features, proposals, _ = self.proposals(images)
            return self.roi_heads.predict(features, proposals, images.shape[1:3])


class FastRCNN(Module):
    """Fast R-CNN: shared features and the RoI head on external proposals.

    Args:
        config (FasterRCNNConfig): the same hyperparameters as Faster R-CNN (the
            ``rpn_*`` and anchor fields are unused).

    ``loss(images, proposals, targets)`` and ``predict(images, proposals)`` take the
    proposals as a list of ``(P_i, 4)`` xyxy arrays, one per image (e.g. from
    ``detection.selective_search.selective_search``).
    """

    def __init__(self, config=None):
        super().__init__()
        self.config, self.features = _shared_features(config)
        self.stride = self.features.stride
        self.roi_heads = _roi_heads(self.config, self.config.feature_channels, self.stride)

    def forward(self, images, proposals):
        """Head outputs on the proposals.

        Args:
            images (ndarray or Tensor[N, H, W, 3]): normalized images.
            proposals (list of ndarray[P_i, 4]): xyxy in image pixels.
        Returns:
            tuple: ``cls_logits`` Tensor ``(R, K)`` and ``box_deltas`` Tensor ``(R, 4·K)``,
            ``R = sum_i P_i``.
        """
        images = _as_images(images)
        proposals = check_box_list(proposals, images.shape[0], "proposals")
        return self.roi_heads(self.features(images), proposals)

    def loss(self, images, proposals, targets):
        """Training losses of a batch.

        Args:
            images (ndarray or Tensor[N, H, W, 3]): normalized images.
            proposals (list of ndarray[P_i, 4]): xyxy in image pixels.
            targets (list of N dicts): ``boxes`` (M, 4) and ``labels`` (M,) in 1..K-1.
        Returns:
            dict: ``classification`` and ``box_regression`` scalar Tensors, their sum
            ``loss``, ``num_foreground`` and ``num_rois``.
        """
        images = _as_images(images)
        proposals = check_box_list(proposals, images.shape[0], "proposals")
        checked = check_targets(targets, images.shape[0], self.config.num_classes)
        head = self.roi_heads.loss(self.features(images), proposals, checked)
        head["loss"] = head["classification"] + head["box_regression"]
        return head

    def predict(self, images, proposals, score_threshold=None):
        """Detections per image (see ``FasterRCNN.predict``) from the given proposals."""
        images = _as_images(images)
        proposals = check_box_list(proposals, images.shape[0], "proposals")
        with _predicting(self, score_threshold):
            features = self.features(images)
            return self.roi_heads.predict(features, proposals, images.shape[1:3])
