"""Region Proposal Network: the first stage of Faster R-CNN.

Ren, He, Girshick and Sun, "Faster R-CNN: Towards Real-Time Object Detection with
Region Proposal Networks", NeurIPS 2015, section 3.1.

A small network slides over the shared feature map: a 3x3 convolution, then two
sibling 1x1 convolutions that predict, for each of the ``A`` anchors of every
location, one *objectness* logit (object or not, whatever the class) and four box
deltas (``detection.box_coder``, weights ``(1, 1, 1, 1)``). Decoding the deltas of
the best-scoring anchors and removing duplicates with NMS turns thousands of
anchors into a few hundred class-agnostic *proposals* for the second stage.

Training targets (section 3.1.2), per image:

- an anchor whose IoU with some ground truth is ``>= 0.7`` is positive, and so is
  each ground truth's highest-IoU anchor (ties included), so every object gets one;
- an anchor whose best IoU is ``< 0.3`` is negative; the others are ignored;
- 256 anchors are sampled, at most half of them positive, the rest negative
  (``detection.sampler``).

Loss: binary cross entropy of the objectness over the sampled anchors (their mean)
plus smooth L1 on the deltas of the sampled positives, summed and divided by the
number of sampled anchors (torchvision's normalisation; the paper's ``λ = 10`` with
``N_reg ≈ 2400`` weighs the two terms about equally as well). Anchors crossing the
image border are kept (torchvision's choice; the paper ignores them in training).

Proposals (section 3.3): per image, the ``pre_nms_top_n`` anchors of highest
objectness are decoded, clipped to the image, boxes narrower than ``min_size``
dropped, NMS at IoU 0.7, and the best ``post_nms_top_n`` kept: 2000 in training and
300 at test time, as in the paper. Before NMS the paper keeps 12000 / 6000 of the
~20000 anchors of a 1000x600 image; here 2000 / 1000 (torchvision's numbers): a
256x256 image has 9216 anchors, background anchors rarely overlap each other above
0.7, so NMS keeps most of what it is given and its greedy loop, one step per kept
box, costs ~4x more from the top 12000 (measured: 44-59 ms against 260-290 ms per
batch of two images) for proposals the 64 sampled RoIs per image hardly need.
Proposals are plain arrays: no gradient flows from the second stage into the RPN's
boxes ("approximate joint training").

Anchor order (the contract with the head's outputs): row ``y``, column ``x``, anchor
``a`` — the ``(N, H, W, A)`` objectness map reshapes to ``(N, H·W·A)`` in exactly the
order of ``AnchorGenerator``.
"""
import numpy as np

import nn
from nn import Module
from nn.functional.activation import sigmoid_forward
from detection.anchors import AnchorGenerator
from detection.box_coder import BoxCoder
from detection.boxes import as_boxes, box_iou, clip_boxes_to_image
from detection.matcher import Matcher
from detection.nms import batched_nms
from detection.sampler import BalancedPositiveNegativeSampler

__all__ = ["RPNHead", "RegionProposalNetwork", "check_box_list"]


def check_box_list(boxes_list, num_images, name):
    """Per-image box arrays as float32 ``(M_i, 4)`` ndarrays, or a ValueError/TypeError.

    Args:
        boxes_list (list of array-like[M_i, 4]): one entry per image, xyxy.
        num_images (int): N, the expected length.
        name (str): argument name for the messages.
    Returns:
        list of ndarray[M_i, 4] float32.
    """
    if not isinstance(boxes_list, (list, tuple)):
        raise TypeError(f"{name} must be a list of (M, 4) arrays, one per image, "
                        f"got {type(boxes_list).__name__}")
    if len(boxes_list) != num_images:
        raise ValueError(f"{name} must have one entry per image ({num_images}), "
                         f"got {len(boxes_list)}")
    return [as_boxes(b, f"{name}[{i}]").astype(np.float32, copy=False)
            for i, b in enumerate(boxes_list)]


class RPNHead(Module):
    """3x3 convolution + ReLU, then 1x1 objectness and box-delta predictors.

    Args:
        in_channels (int): C of the feature map (the 3x3 convolution keeps it).
        num_anchors (int): A, anchors per location.

    Shapes:
        ``(N, H, W, C)`` → ``objectness (N, H·W·A)`` logits, ``box_deltas (N, H·W·A, 4)``.
    """

    def __init__(self, in_channels, num_anchors):
        super().__init__()
        self.num_anchors = num_anchors
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.box_deltas = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for module in (self.conv, self.objectness, self.box_deltas):  # the paper's N(0, 0.01²)
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)

    def forward(self, feature):
        n = feature.shape[0]
        hidden = nn.functional.relu(self.conv(feature))
        objectness = self.objectness(hidden).reshape(n, -1)      # (N, H·W·A)
        box_deltas = self.box_deltas(hidden).reshape(n, -1, 4)   # (N, H·W·A, 4)
        return objectness, box_deltas


class RegionProposalNetwork(Module):
    """RPN on one feature map: head, anchors, training targets and loss, proposals.

    Args:
        in_channels (int): C of the feature map.
        stride (int): feature-map stride in image pixels.
        anchor_sizes (tuple of float): anchor square-root areas in pixels (the scales).
        aspect_ratios (tuple of float): anchor height / width ratios.
        fg_iou, bg_iou (float): positive from ``fg_iou``, negative below ``bg_iou``.
        batch_size_per_image (int): anchors sampled per image for the loss.
        positive_fraction (float): largest share of positives in that sample.
        pre_nms_top_n (tuple of int): ``(training, testing)`` anchors decoded per image.
        post_nms_top_n (tuple of int): ``(training, testing)`` proposals kept per image.
        nms_threshold (float): IoU above which NMS removes a proposal.
        min_size (float): proposals with a side below it are dropped.
        smooth_l1_beta (float): beta of the box loss.
        generator (np.random.Generator, int or None): randomness of the sampler
            (None: ``nn``'s default generator, seeded by ``nn.manual_seed``).
    """

    def __init__(self, in_channels, stride, anchor_sizes=(16, 32, 128),
                 aspect_ratios=(0.25, 0.5, 1.0), fg_iou=0.7, bg_iou=0.3,
                 batch_size_per_image=256, positive_fraction=0.5, pre_nms_top_n=(2000, 1000),
                 post_nms_top_n=(2000, 300), nms_threshold=0.7, min_size=1e-3,
                 smooth_l1_beta=1.0 / 9, generator=None):
        super().__init__()
        for name, pair in (("pre_nms_top_n", pre_nms_top_n), ("post_nms_top_n", post_nms_top_n)):
            if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                     or v < 1 for v in pair):
                raise ValueError(f"{name} must be a pair (training, testing) of positive ints, "
                                 f"got {pair!r}")
        if not 0 <= nms_threshold <= 1:
            raise ValueError(f"nms_threshold must be in [0, 1], got {nms_threshold!r}")
        if not min_size >= 0:
            raise ValueError(f"min_size must be >= 0, got {min_size!r}")
        self.stride = int(stride)
        self.anchor_generator = AnchorGenerator(
            sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(aspect_ratios),),
            strides=(self.stride,), offset=0.5,  # centred on the cell
        )
        self.num_anchors = self.anchor_generator.num_anchors_per_location()[0]
        self.head = RPNHead(in_channels, self.num_anchors)
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction,
                                                       generator)
        self.pre_nms_top_n = tuple(int(v) for v in pre_nms_top_n)
        self.post_nms_top_n = tuple(int(v) for v in post_nms_top_n)
        self.nms_threshold = float(nms_threshold)
        self.min_size = float(min_size)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self._anchor_cache = {}

    def extra_repr(self):
        return (f"stride={self.stride}, sizes={self.anchor_generator.sizes[0]}, "
                f"aspect_ratios={self.anchor_generator.aspect_ratios[0]}")

    def forward(self, feature):
        """``objectness`` Tensor ``(N, H·W·A)`` (logits), ``box_deltas`` Tensor ``(N, H·W·A, 4)``."""
        return self.head(feature)

    def anchors(self, image_size, feature_size):
        """Anchors ``(H·W·A, 4)`` float32 of a feature map of ``feature_size`` (cached)."""
        key = (tuple(int(v) for v in image_size), tuple(int(v) for v in feature_size))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = self.anchor_generator(key[0], [key[1]]).astype(np.float32)
        return self._anchor_cache[key]

    # ---------------------------------------------------------------- training
    def assign_targets(self, anchors, gt_boxes):
        """Label every anchor of every image (section 3.1.2).

        Args:
            anchors (ndarray[R, 4]): xyxy.
            gt_boxes (list of ndarray[M_i, 4]): ground-truth boxes of each image.
        Returns:
            tuple: ``labels`` ndarray[N, R] int64 (1 positive, 0 negative, -1 ignored)
            and ``matched_boxes`` ndarray[N, R, 4] float32 (the matched ground truth of
            positives, zeros elsewhere).
        """
        num_anchors = anchors.shape[0]
        labels = np.zeros((len(gt_boxes), num_anchors), np.int64)
        matched_boxes = np.zeros((len(gt_boxes), num_anchors, 4), np.float32)
        for i, boxes in enumerate(gt_boxes):  # per image: a handful of objects, all anchors at once
            if boxes.shape[0] == 0:
                continue  # every anchor is negative
            matches = self.matcher(box_iou(boxes, anchors))
            positive = matches >= 0
            labels[i, positive] = 1
            labels[i, matches == Matcher.BETWEEN_THRESHOLDS] = -1
            matched_boxes[i, positive] = boxes[matches[positive]]
        return labels, matched_boxes

    def compute_loss(self, objectness, box_deltas, anchors, gt_boxes):
        """Objectness and box losses of one batch.

        Args:
            objectness (Tensor[N, R]): logits from ``forward``.
            box_deltas (Tensor[N, R, 4]): deltas from ``forward``.
            anchors (ndarray[R, 4]): the anchors of the feature map.
            gt_boxes (list of ndarray[M_i, 4]): ground-truth boxes per image.
        Returns:
            dict: ``objectness`` and ``box_regression`` scalar Tensors, and the counts
            ``num_positive`` and ``num_sampled`` (ints).
        """
        labels, matched_boxes = self.assign_targets(anchors, gt_boxes)
        positive, negative = self.sampler(list(labels))
        positive, negative = np.stack(positive), np.stack(negative)  # (N, R) bool each
        sampled = np.flatnonzero((positive | negative).reshape(-1))  # (S,) into N·R
        objectness_loss = nn.functional.binary_cross_entropy_with_logits(
            objectness.reshape(-1)[sampled], positive.reshape(-1)[sampled].astype(np.float32),
            reduction="mean")
        pos = np.flatnonzero(positive.reshape(-1))                     # (P,)
        if pos.size == 0:
            box_loss = (box_deltas * 0.0).sum()  # zero, still part of the graph
        else:
            pos_anchors = anchors[pos % anchors.shape[0]]
            targets = self.box_coder.encode(matched_boxes.reshape(-1, 4)[pos], pos_anchors)
            box_loss = nn.functional.smooth_l1_loss(
                box_deltas.reshape(-1, 4)[pos], targets.astype(box_deltas.dtype),
                beta=self.smooth_l1_beta, reduction="sum") / max(1, sampled.size)
        return {"objectness": objectness_loss, "box_regression": box_loss,
                "num_positive": int(pos.size), "num_sampled": int(sampled.size)}

    # --------------------------------------------------------------- proposals
    def propose(self, objectness, box_deltas, anchors, image_size):
        """Proposals of every image: top-k, decode, clip, small boxes out, NMS, top-n.

        All images at once: the NMS is class-aware with the image as the class, so
        boxes of different images never suppress each other. The training or testing
        ``pre_nms_top_n`` / ``post_nms_top_n`` follow ``self.training``.

        Args:
            objectness (ndarray[N, R]): logits.
            box_deltas (ndarray[N, R, 4]): deltas.
            anchors (ndarray[R, 4]): xyxy.
            image_size (tuple): ``(H, W)`` of the input images.
        Returns:
            tuple of lists (one entry per image): ``boxes`` ndarray[P_i, 4] float32 xyxy
            and ``scores`` ndarray[P_i] float32 objectness probabilities, by decreasing
            score.
        """
        objectness = np.asarray(objectness, np.float32)
        box_deltas = np.asarray(box_deltas, np.float32)
        n, r = objectness.shape
        phase = 0 if self.training else 1
        k = min(self.pre_nms_top_n[phase], r)
        if k < r:
            top = np.argpartition(-objectness, k - 1, axis=1)[:, :k]    # (N, k)
        else:
            top = np.broadcast_to(np.arange(r), (n, r))
        logits = np.take_along_axis(objectness, top, axis=1).reshape(-1)  # (N·k,)
        deltas = np.take_along_axis(box_deltas, top[:, :, None], axis=1).reshape(-1, 4)
        boxes = self.box_coder.decode(deltas, anchors[top.reshape(-1)])
        boxes = clip_boxes_to_image(boxes, image_size).astype(np.float32, copy=False)
        image_index = np.repeat(np.arange(n), k)                         # (N·k,)
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        valid = np.flatnonzero(sides >= self.min_size)
        kept = valid[batched_nms(boxes[valid], logits[valid], image_index[valid],
                                 self.nms_threshold)]                   # by decreasing logit
        kept = kept[np.argsort(image_index[kept], kind="stable")]        # by image, then score
        image_of_kept = image_index[kept]
        first = np.searchsorted(image_of_kept, image_of_kept, side="left")
        kept = kept[np.arange(kept.size) - first < self.post_nms_top_n[phase]]
        counts = np.bincount(image_index[kept], minlength=n)
        scores = sigmoid_forward(logits[kept]).astype(np.float32, copy=False)
        splits = np.cumsum(counts)[:-1]
        return np.split(boxes[kept], splits), np.split(scores, splits)
