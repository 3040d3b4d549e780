"""Mask R-CNN: Faster R-CNN with a third head that predicts an object mask per RoI.

He, Gkioxari, Dollár and Girshick, "Mask R-CNN", ICCV 2017.

Two changes to Faster R-CNN (``detection.faster_rcnn``):

1. **RoIAlign** replaces RoIPool (``nn.functional.roi_align``, half-pixel aligned):
   bilinear sampling without rounding keeps the pooled features where the box is,
   which a pixel-accurate mask needs.
2. **A mask head** in parallel with the box head: RoIAlign to 14x14, four 3x3
   convolutions with ReLU, a 2x2 stride-2 transposed convolution (to 28x28) with ReLU
   and a 1x1 convolution giving one 28x28 mask logit map *per class*,
   ``mask_logits (R, 28, 28, K)``. Masks and classes are decoupled: the map of the
   ground-truth class alone enters the loss (per-pixel sigmoid and binary cross
   entropy, averaged), so classes do not compete for a pixel.

Mask targets (section 3): on each foreground RoI the ground-truth mask of its matched
object is cut out and resized to 28x28 — RoIAlign on the binary mask (one channel,
scale 1), then thresholded at 0.5 (torchvision's ``project_masks_on_boxes``). Only
foreground RoIs train the mask head.

Inference: the box head's detections are the mask head's RoIs; the map of the
predicted class goes through a sigmoid, is pasted back into the image at its box by
bilinear interpolation (``paste_masks_in_image``) and thresholded at 0.5.

The loss is ``L = L_rpn + L_cls + L_box + L_mask``; training is joint and approximate
as in Faster R-CNN (the proposals are constants).
"""
from dataclasses import dataclass

import numpy as np

import nn
from nn import Module
from nn.functional.activation import sigmoid_forward
from detection.faster_rcnn import FasterRCNN, FasterRCNNConfig, _as_images, _predicting
from detection.roi_heads import check_targets

__all__ = ["MaskRCNNConfig", "MaskHead", "MaskRCNN", "project_masks_on_boxes",
           "paste_masks_in_image", "check_masks"]


@dataclass
class MaskRCNNConfig(FasterRCNNConfig):
    """Hyperparameters of Mask R-CNN: ``FasterRCNNConfig`` plus the mask head's.

    Attributes:
        pooler (str): ``"align"`` (the paper's RoIAlign) for the box head too.
        mask_pool_size (int): RoIAlign grid of the mask head (14).
        mask_channels (int): width of its convolutions (256 in the paper).
        mask_convs (int): its 3x3 convolutions (4).
        mask_threshold (float): probability from which a pasted pixel is in the mask.
    """

    pooler: str = "align"
    mask_pool_size: int = 14
    mask_channels: int = 64
    mask_convs: int = 4
    mask_threshold: float = 0.5

    def validate(self):
        super().validate()
        if not 0 < self.mask_threshold < 1:
            raise ValueError(f"mask_threshold must be in (0, 1), got {self.mask_threshold!r}")
        if self.mask_convs < 0 or self.mask_channels < 1 or self.mask_pool_size < 1:
            raise ValueError("mask_convs must be >= 0, mask_channels and mask_pool_size >= 1")
        return self

    @property
    def mask_resolution(self):
        """Side of the predicted masks: twice ``mask_pool_size`` (the transposed convolution)."""
        return 2 * self.mask_pool_size


class MaskHead(Module):
    """3x3 convolutions, a 2x transposed convolution and per-class 1x1 mask logits.

    Shapes:
        ``(R, s, s, C)`` → ``mask_logits (R, 2s, 2s, K)``.
    """

    def __init__(self, in_channels, num_classes, channels=256, num_convs=4):
        super().__init__()
        layers, previous = [], in_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(previous, channels, 3, padding=1), nn.ReLU()]
            previous = channels
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(previous, channels, 2, stride=2)
        self.mask_logits = nn.Conv2d(channels, num_classes, 1)
        for module in self.modules():  # He initialisation, zero biases (the paper's)
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x):
        x = nn.functional.relu(self.upsample(self.convs(x)))
        return self.mask_logits(x)


def check_masks(targets, image_size):
    """Per-image ``(M, H, W)`` bool instance masks of ``targets`` (one per box), or a ValueError."""
    masks = []
    for i, target in enumerate(targets):
        if "masks" not in target:
            raise ValueError(f"targets[{i}] needs 'masks' (M, H, W) for Mask R-CNN")
        mask = np.asarray(target["masks"])
        count = np.asarray(target["boxes"]).reshape(-1, 4).shape[0]
        if mask.shape != (count, *image_size):
            raise ValueError(f"targets[{i}]['masks'] must have shape ({count}, {image_size[0]}, "
                             f"{image_size[1]}) (one mask per box, the image's size), "
                             f"got {mask.shape}")
        masks.append(mask.astype(bool, copy=False))
    return masks


def project_masks_on_boxes(gt_masks, boxes, matched_idxs, resolution):
    """Mask targets: each box's matched object mask cut out and resized to ``resolution``.

    RoIAlign of the binary mask (scale 1, half-pixel aligned, adaptive sampling) at the
    box, thresholded at 0.5: a target pixel is 1 when most of its cell is covered.

    Args:
        gt_masks (ndarray[M, H, W]): bool object masks of one image (or of all images).
        boxes (ndarray[F, 4]): xyxy RoIs in image pixels.
        matched_idxs (ndarray[F] int): the object of each RoI, an index into ``gt_masks``.
        resolution (int): side of the targets.
    Returns:
        ndarray[F, resolution, resolution]: float32 0/1.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    matched_idxs = np.asarray(matched_idxs)
    gt_masks = np.asarray(gt_masks)
    if matched_idxs.shape != (boxes.shape[0],):
        raise ValueError(f"matched_idxs must have shape ({boxes.shape[0]},) (one per box), "
                         f"got {matched_idxs.shape}")
    if gt_masks.ndim != 3:
        raise ValueError(f"gt_masks must have shape (M, H, W), got {gt_masks.shape}")
    if boxes.shape[0] == 0:
        return np.zeros((0, resolution, resolution), np.float32)
    if matched_idxs.min() < 0 or matched_idxs.max() >= gt_masks.shape[0]:
        raise ValueError(f"matched_idxs must index the {gt_masks.shape[0]} masks, got "
                         f"{matched_idxs.min()}..{matched_idxs.max()}")
    planes = np.asarray(gt_masks, np.float32)[..., None]                 # (M, H, W, 1)
    rois = np.concatenate([np.asarray(matched_idxs, np.float32)[:, None], boxes], axis=1)
    crops = nn.functional.roi_align(planes, rois, resolution, 1.0, sampling_ratio=-1,
                                    aligned=True).data[..., 0]            # (F, r, r)
    return (crops >= 0.5).astype(np.float32)


def _paste_weights(lo, hi, size, resolution):
    """Bilinear weights ``(D, size, resolution)`` reading a mask row for each image row.

    The image pixel ``p`` (centre ``p + 0.5``) inside ``[lo, hi)`` reads the mask at
    ``u = (p + 0.5 - lo) / (hi - lo) · resolution - 0.5`` (mask cell centres at
    ``j + 0.5``), clamped to ``[0, resolution - 1]``; outside the box the weights are 0.
    """
    centres = np.arange(size, dtype=np.float64) + 0.5                          # (size,)
    length = np.maximum(hi - lo, 1e-6)[:, None]                                # (D, 1)
    u = (centres[None, :] - lo[:, None]) / length * resolution - 0.5            # (D, size)
    inside = (centres[None, :] >= lo[:, None]) & (centres[None, :] < hi[:, None])
    u = np.clip(u, 0, resolution - 1)
    left = np.minimum(np.floor(u).astype(np.int64), resolution - 2) if resolution > 1 \
        else np.zeros(u.shape, np.int64)
    frac = u - left
    weights = np.zeros((lo.shape[0], size, resolution), np.float64)
    d, p = np.nonzero(inside)
    weights[d, p, left[d, p]] = 1 - frac[d, p]
    if resolution > 1:
        weights[d, p, left[d, p] + 1] += frac[d, p]
    return weights


def paste_masks_in_image(masks, boxes, image_size):
    """Paste per-box mask probabilities into full-image maps (bilinear, separable).

    Bilinear interpolation is separable: with ``Wy[d] (H, r)`` and ``Wx[d] (W, r)`` the
    per-axis weights of ``_paste_weights``, the pasted map is ``Wy[d] @ m[d] @ Wx[d]ᵀ``,
    one batched matrix product for all boxes; pixels outside the box get 0.

    Args:
        masks (ndarray[D, r, r]): probabilities (or any values) on each box's grid.
        boxes (ndarray[D, 4]): xyxy boxes in image pixels.
        image_size (tuple): ``(H, W)``.
    Returns:
        ndarray[D, H, W]: float32 maps.
    """
    masks = np.asarray(masks, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    height, width = int(image_size[0]), int(image_size[1])
    if masks.ndim != 3 or masks.shape[0] != boxes.shape[0] or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks must have shape (D, r, r) with D = {boxes.shape[0]} boxes, "
                         f"got {masks.shape}")
    resolution = masks.shape[1]
    rows = _paste_weights(boxes[:, 1], boxes[:, 3], height, resolution)   # (D, H, r)
    cols = _paste_weights(boxes[:, 0], boxes[:, 2], width, resolution)    # (D, W, r)
    rows, cols = rows.astype(np.float32), cols.astype(np.float32)         # float32 GEMMs
    pasted = np.matmul(np.matmul(rows, masks.astype(np.float32)), cols.transpose(0, 2, 1))
    return pasted                                                          # (D, H, W)


class MaskRCNN(FasterRCNN):
    """Mask R-CNN on channels-last images (``FasterRCNN`` plus the mask branch).

    Args:
        config (MaskRCNNConfig): hyperparameters.

    ``loss(images, targets)`` needs ``targets[i]["masks"]`` (M, H, W) bool, one mask per
    box; ``predict(images)`` adds ``masks`` (D, H, W) bool to each image's detections.
    """

    def __init__(self, config=None):
        config = (config or MaskRCNNConfig()).validate()
        super().__init__(config)
        self.mask_head = MaskHead(config.feature_channels, config.num_classes,
                                  config.mask_channels, config.mask_convs)

    def mask_logits(self, features, rois):
        """``mask_logits`` Tensor ``(R, 2s, 2s, K)`` of RoIs (a list of ``(R_i, 4)`` per image)."""
        pooled = nn.functional.roi_align(features, rois, self.config.mask_pool_size,
                                         1.0 / self.stride, self.config.sampling_ratio,
                                         aligned=True)
        return self.mask_head(pooled)

    def mask_loss(self, mask_logits, labels, mask_targets):
        """Per-pixel BCE of the ground-truth class's mask logits.

        Args:
            mask_logits (Tensor[F, r, r, K]): on the foreground RoIs.
            labels (ndarray[F] int64): their classes (>= 1).
            mask_targets (ndarray[F, r, r]): 0/1 targets.
        Returns:
            Tensor: scalar, the mean over the ``F·r·r`` pixels.
        """
        one_hot = np.eye(self.config.num_classes, dtype=mask_logits.dtype)[labels]  # (F, K)
        chosen = (mask_logits * one_hot[:, None, None, :]).sum(axis=-1)            # (F, r, r)
        return nn.functional.binary_cross_entropy_with_logits(
            chosen, mask_targets.astype(mask_logits.dtype), reduction="mean")

    def mask_targets(self, gt_masks, rois, labels, matched_idxs):
        """The foreground RoIs of each image, their classes and their mask targets.

        Args:
            gt_masks (list of ndarray[M_i, H, W] bool): the objects of each image.
            rois (list of ndarray[S_i, 4]): the sampled RoIs of each image.
            labels (ndarray[S] int64), matched_idxs (ndarray[S] int64): from
                ``RoIHeads.select_training_samples`` (concatenated over the images).
        Returns:
            tuple: ``fg_rois`` (list of ndarray[F_i, 4]), ``labels`` ndarray[F] and
            ``targets`` ndarray[F, r, r] float32 (``project_masks_on_boxes``), in image order.
        """
        counts = [len(r) for r in rois]
        image_of = np.repeat(np.arange(len(rois)), counts)                 # (S,)
        fg = np.flatnonzero(labels > 0)                                     # image-ordered
        all_rois = np.concatenate(rois).reshape(-1, 4)
        fg_rois = [all_rois[fg][image_of[fg] == i] for i in range(len(rois))]
        # the objects of all images stacked: an index shifts by the earlier images' counts
        offsets = np.concatenate([[0], np.cumsum([len(m) for m in gt_masks])])[:-1]
        stacked = np.concatenate(gt_masks) if gt_masks else np.zeros((0, 1, 1), bool)
        targets = project_masks_on_boxes(stacked, all_rois[fg],
                                         matched_idxs[fg] + offsets[image_of[fg]],
                                         self.config.mask_resolution)
        return fg_rois, labels[fg], targets

    def loss(self, images, targets):
        """Joint training losses: Faster R-CNN's four plus ``mask``.

        Args:
            images (ndarray or Tensor[N, H, W, 3]): normalized images.
            targets (list of N dicts): ``boxes`` (M, 4), ``labels`` (M,) in 1..K-1,
                ``masks`` (M, H, W) bool.
        Returns:
            dict: ``rpn_objectness``, ``rpn_box_regression``, ``classification``,
            ``box_regression``, ``mask`` scalar Tensors, their sum ``loss``, and the
            counts ``rpn_num_positive``, ``num_foreground``, ``num_rois``.
        """
        images = _as_images(images)
        image_size = images.shape[1:3]
        checked = check_targets(targets, images.shape[0], self.config.num_classes)
        gt_masks = check_masks(targets, image_size)
        features, objectness, box_deltas = self.forward(images)
        anchors = self.rpn.anchors(image_size, features.shape[1:3])
        rpn = self.rpn.compute_loss(objectness, box_deltas, anchors, [b for b, _ in checked])
        proposals, _ = self.rpn.propose(objectness.data, box_deltas.data, anchors, image_size)
        heads = self.roi_heads
        rois, labels, regression_targets, matched = heads.select_training_samples(proposals,
                                                                                  checked)
        cls_logits, head_deltas = heads(features, rois)
        head = heads.compute_loss(cls_logits, head_deltas, labels, regression_targets)

        # The mask branch sees the foreground RoIs only.
        fg_rois, fg_labels, mask_targets = self.mask_targets(gt_masks, rois, labels, matched)
        if fg_labels.size == 0:
            mask_loss = features.sum() * 0.0  # zero, still part of the graph
        else:
            mask_loss = self.mask_loss(self.mask_logits(features, fg_rois), fg_labels,
                                       mask_targets)
        total = rpn["objectness"] + rpn["box_regression"] + head["classification"] \
            + head["box_regression"] + mask_loss
        return {"rpn_objectness": rpn["objectness"], "rpn_box_regression": rpn["box_regression"],
                "classification": head["classification"], "box_regression": head["box_regression"],
                "mask": mask_loss, "loss": total, "rpn_num_positive": rpn["num_positive"],
                "num_foreground": head["num_foreground"], "num_rois": head["num_rois"]}

    def predict(self, images, score_threshold=None):
        """Detections with masks.

        Returns:
            list of N dicts: ``FasterRCNN.predict``'s ``boxes``, ``scores``, ``labels``
            and ``masks`` ndarray[D, H, W] bool.
        """
        images = _as_images(images)
        image_size = images.shape[1:3]
        with _predicting(self, score_threshold):
            features, proposals, _ = self.proposals(images)
            detections = self.roi_heads.predict(features, proposals, image_size)
            boxes = [d["boxes"] for d in detections]
            total = sum(len(b) for b in boxes)
            if total:
                logits = self.mask_logits(features, boxes).data          # (D, r, r, K)
                labels = np.concatenate([d["labels"] for d in detections])
                probs = sigmoid_forward(logits[np.arange(total), :, :, labels])
                pasted = paste_masks_in_image(probs, np.concatenate(boxes), image_size)
                splits = np.cumsum([len(b) for b in boxes])[:-1]
                for d, m in zip(detections, np.split(pasted, splits)):
                    d["masks"] = m >= self.config.mask_threshold
            else:
                for d in detections:
                    d["masks"] = np.zeros((0, *image_size), bool)
            return detections
