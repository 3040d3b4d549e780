"""The Fast R-CNN head: classify each region of interest and refine its box.

Girshick, "Fast R-CNN", ICCV 2015 (the second stage of Faster R-CNN as well).

The image goes through the convolutional network once; each proposal (from
selective search or from an RPN) is cut out of the shared feature map by RoI
pooling (``nn.functional.roi_pool``: max over a 7x7 grid of bins) or RoIAlign
(``nn.functional.roi_align``, bilinear: Mask R-CNN's choice), flattened, and goes
through two fully connected layers. Two sibling outputs follow:

- ``cls_logits (R, K)``: a softmax over the ``K = num_classes`` classes, background
  (0) included;
- ``box_deltas (R, 4·K)``: one box regression per class (``detection.box_coder``
  with weights ``(10, 10, 5, 5)``, i.e. the targets divided by ``(0.1, 0.1, 0.2, 0.2)``,
  which brings them to roughly unit variance).

Training samples (section 2.3): the ground-truth boxes are added to the proposals;
each image contributes ``batch_size_per_image`` RoIs (64: the paper's 128 per
mini-batch of two images), at most 25% of them foreground:

- foreground: IoU >= 0.5 with a ground truth, labelled with its class;
- background: best IoU in ``[0.1, 0.5)`` (the paper's lower bound 0.1 keeps the
  background RoIs near objects, a heuristic hard-example mining). A proposal below
  0.1 is not sampled at all, so an image without objects contributes no RoI;
  ``bg_iou_low=0.0`` (torchvision's choice) makes every other proposal background.

Multi-task loss (equation 1): ``L = L_cls(p, u) + [u >= 1] L_loc(t^u, v)`` — cross
entropy over the sampled RoIs (their mean) plus smooth L1 between the deltas
predicted *for the true class u* and the encoded target, summed over foreground
RoIs and divided by the number of sampled RoIs (torchvision's normalisation).

Inference: softmax probabilities, each class's deltas decoded on the RoI, boxes
clipped to the image, background column dropped, a score threshold, NMS per class,
at most ``detections_per_image`` detections per image.
"""
import numpy as np

import nn
from nn import Module
from nn.functional.activation import softmax_forward
from detection.box_coder import BoxCoder
from detection.boxes import box_iou, clip_boxes_to_image
from detection.nms import batched_nms
from detection.rpn import check_box_list
from detection.sampler import BalancedPositiveNegativeSampler
from detection.targets import check_detection_targets

__all__ = ["TwoMLPHead", "FastRCNNPredictor", "RoIHeads", "check_targets"]


def check_targets(targets, num_images, num_classes):
    """Validated ground truth per image, or a ValueError/TypeError naming the entry.

    Args:
        targets (list of dict): ``boxes`` (M, 4) xyxy with positive width and height,
            ``labels`` (M,) ints in ``1..num_classes - 1``.
        num_images (int): N, the expected length.
        num_classes (int): K, background included.
    Returns:
        list of tuple: ``(boxes ndarray[M, 4] float32, labels ndarray[M] int64)``.
    """
    return check_detection_targets(
        targets, num_classes - 1, num_images, box_extent="positive",
        read_boxes=lambda boxes, name: check_box_list([boxes], 1, name)[0],
    )


class TwoMLPHead(Module):
    """Flatten the pooled features and apply two ReLU fully connected layers (fc6, fc7).

    Shapes:
        ``(R, oh, ow, C)`` → ``(R, representation_size)``.
    """

    def __init__(self, in_features, representation_size):
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x):
        x = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))   # (R, oh·ow·C)
        return nn.functional.relu(self.fc7(nn.functional.relu(self.fc6(x))))


class FastRCNNPredictor(Module):
    """Class logits ``(R, K)`` and per-class box deltas ``(R, 4·K)`` from RoI features."""

    def __init__(self, in_features, num_classes):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, 4 * num_classes)
        # Fast R-CNN's initialisation: N(0, 0.01²) for the classifier, N(0, 0.001²) for
        # the regressor, zero biases.
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x):
        return self.cls_score(x), self.bbox_pred(x)


class RoIHeads(Module):
    """Fast R-CNN head on one feature map: pooling, MLP, predictor, targets, loss, postprocess.

    Args:
        in_channels (int): C of the feature map.
        num_classes (int): K, background (label 0) included.
        spatial_scale (float): feature cells per image pixel (1 / stride).
        pooler (str): ``"pool"`` (RoIPool, Fast R-CNN) or ``"align"`` (RoIAlign).
        output_size (int): the pooled grid, ``output_size x output_size``.
        sampling_ratio (int): RoIAlign samples per bin and axis (<= 0 adaptive).
        representation_size (int): width of fc6 and fc7.
        fg_iou (float): a RoI is foreground from this IoU with a ground truth.
        bg_iou_low (float): background RoIs have a best IoU in ``[bg_iou_low, fg_iou)``.
        batch_size_per_image (int), positive_fraction (float): the RoI sample.
        box_weights (tuple of 4 float): BoxCoder weights of the regression targets.
        smooth_l1_beta (float): beta of the box loss.
        score_threshold (float): detections need a larger class probability.
        nms_threshold (float): per-class NMS IoU.
        detections_per_image (int): at most this many detections per image.
        min_size (float): detections with a side below it are dropped.
        generator (np.random.Generator, int or None): randomness of the RoI sampler.
    """

    def __init__(self, in_channels, num_classes, spatial_scale, pooler="pool", output_size=7,
                 sampling_ratio=2, representation_size=256, fg_iou=0.5, bg_iou_low=0.1,
                 batch_size_per_image=64, positive_fraction=0.25,
                 box_weights=(10.0, 10.0, 5.0, 5.0),
                 smooth_l1_beta=1.0 / 9, score_threshold=0.05, nms_threshold=0.5,
                 detections_per_image=100, min_size=1e-2, generator=None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
                or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (background included), "
                             f"got {num_classes!r}")
        if pooler not in ("pool", "align"):
            raise ValueError(f"pooler must be 'pool' or 'align', got {pooler!r}")
        if not 0 <= bg_iou_low <= fg_iou <= 1:
            raise ValueError(f"need 0 <= bg_iou_low <= fg_iou <= 1, got {bg_iou_low}, {fg_iou}")
        self.num_classes = int(num_classes)
        self.spatial_scale = float(spatial_scale)
        self.pooler = pooler
        self.output_size = int(output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.box_head = TwoMLPHead(in_channels * self.output_size ** 2, representation_size)
        self.box_predictor = FastRCNNPredictor(representation_size, self.num_classes)
        self.fg_iou = float(fg_iou)
        self.bg_iou_low = float(bg_iou_low)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction,
                                                       generator)
        self.box_coder = BoxCoder(weights=box_weights)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.detections_per_image = int(detections_per_image)
        self.min_size = float(min_size)

    def extra_repr(self):
        return (f"num_classes={self.num_classes}, pooler={self.pooler!r}, "
                f"output_size={self.output_size}, spatial_scale={self.spatial_scale}")

    # ----------------------------------------------------------------- forward
    def pool(self, features, rois):
        """Pooled features ``(R, s, s, C)`` of the RoIs (a list of ``(R_i, 4)``, one per image)."""
        if self.pooler == "pool":
            return nn.functional.roi_pool(features, rois, self.output_size, self.spatial_scale)
        return nn.functional.roi_align(features, rois, self.output_size, self.spatial_scale,
                                       self.sampling_ratio, aligned=True)

    def forward(self, features, rois):
        """``cls_logits`` Tensor ``(R, K)`` and ``box_deltas`` Tensor ``(R, 4·K)``.

        Args:
            features (Tensor[N, H, W, C]): the shared feature map.
            rois (list of ndarray[R_i, 4]): xyxy boxes in image pixels, one entry per image.
        """
        return self.box_predictor(self.box_head(self.pool(features, rois)))

    # ---------------------------------------------------------------- training
    def assign_targets(self, proposals, gt_boxes, gt_labels):
        """Class label and matched ground truth of each proposal of one image.

        Args:
            proposals (ndarray[P, 4]): xyxy.
            gt_boxes (ndarray[M, 4]), gt_labels (ndarray[M] int64): the image's objects.
        Returns:
            tuple: ``labels`` ndarray[P] int64 (the class for foreground, 0 background,
            -1 not sampled: best IoU below ``bg_iou_low``) and ``matched_idxs``
            ndarray[P] int64 (the matched ground truth of foreground proposals, -1 elsewhere).
        """
        num = proposals.shape[0]
        if gt_boxes.shape[0] == 0:
            best = np.zeros(num, np.float32)
            match = np.zeros(num, np.int64)
        else:
            iou = box_iou(gt_boxes, proposals)                 # (M, P)
            match = iou.argmax(axis=0)                         # (P,)
            best = iou[match, np.arange(num)]
        labels = np.where(best >= self.bg_iou_low, 0, -1).astype(np.int64)
        foreground = best >= self.fg_iou
        labels[foreground] = gt_labels[match[foreground]]
        matched_idxs = np.where(foreground, match, -1).astype(np.int64)
        return labels, matched_idxs

    def select_training_samples(self, proposals, targets):
        """Add the ground truth to the proposals, label them and sample the RoIs.

        Args:
            proposals (list of ndarray[P_i, 4]): per image.
            targets (list of tuple): ``(boxes, labels)`` per image (``check_targets``).
        Returns:
            tuple: ``rois`` (list of ndarray[S_i, 4] float32), and concatenated over the
            images: ``labels`` ndarray[S] int64, ``regression_targets`` ndarray[S, 4]
            float32 (encoded deltas of the foreground RoIs, zeros elsewhere) and
            ``matched_idxs`` ndarray[S] int64 (the matched object of each foreground RoI
            in its image's ground truth, -1 elsewhere).
        """
        candidates, labels, matched = [], [], []
        for boxes, (gt_boxes, gt_labels) in zip(proposals, targets):
            together = np.concatenate([boxes, gt_boxes]).astype(np.float32, copy=False)
            image_labels, image_matched = self.assign_targets(together, gt_boxes, gt_labels)
            candidates.append(together)
            labels.append(image_labels)
            matched.append(image_matched)
        positive, negative = self.sampler(labels)
        chosen = [np.flatnonzero(p | q) for p, q in zip(positive, negative)]
        rois = [c[i] for c, i in zip(candidates, chosen)]
        matched_boxes = np.concatenate(
            [gt[np.maximum(m[i], 0)] if len(gt) else np.zeros((len(i), 4), np.float32)
             for (gt, _), m, i in zip(targets, matched, chosen)]).reshape(-1, 4)
        labels = np.concatenate([lab[i] for lab, i in zip(labels, chosen)]).astype(np.int64)
        matched = np.concatenate([m[i] for m, i in zip(matched, chosen)]).astype(np.int64)
        all_rois = np.concatenate(rois).reshape(-1, 4)
        regression_targets = np.zeros((labels.size, 4), np.float32)
        fg = labels > 0
        if fg.any():
            regression_targets[fg] = self.box_coder.encode(matched_boxes[fg], all_rois[fg])
        return rois, labels, regression_targets, matched

    def compute_loss(self, cls_logits, box_deltas, labels, regression_targets):
        """Fast R-CNN's multi-task loss.

        Args:
            cls_logits (Tensor[S, K]), box_deltas (Tensor[S, 4·K]): head outputs on the
                sampled RoIs.
            labels (ndarray[S] int64): classes, 0 for background.
            regression_targets (ndarray[S, 4]): encoded targets (used where label > 0).
        Returns:
            dict: ``classification`` and ``box_regression`` scalar Tensors,
            ``num_foreground`` and ``num_rois`` (ints).
        """
        num_rois = labels.size
        classification = nn.functional.cross_entropy(cls_logits, labels, reduction="mean")
        fg = np.flatnonzero(labels > 0)
        if fg.size == 0:
            box_loss = (box_deltas * 0.0).sum()  # zero, still part of the graph
        else:
            per_class = box_deltas.reshape(num_rois, self.num_classes, 4)
            deltas = per_class[fg, labels[fg]]                     # (F, 4): the true class's
            box_loss = nn.functional.smooth_l1_loss(
                deltas, regression_targets[fg].astype(deltas.dtype), beta=self.smooth_l1_beta,
                reduction="sum") / num_rois
        return {"classification": classification, "box_regression": box_loss,
                "num_foreground": int(fg.size), "num_rois": int(num_rois)}

    def loss(self, features, proposals, targets):
        """Sample RoIs, run the head on them, and return ``compute_loss``'s dict.

        Args:
            features (Tensor[N, H, W, C]): the shared feature map.
            proposals (list of ndarray[P_i, 4]): per image, xyxy.
            targets (list of tuple): ``(boxes, labels)`` per image (``check_targets``).
        """
        rois, labels, regression_targets, _ = self.select_training_samples(proposals, targets)
        cls_logits, box_deltas = self.forward(features, rois)
        return self.compute_loss(cls_logits, box_deltas, labels, regression_targets)

    # --------------------------------------------------------------- inference
    def postprocess(self, cls_logits, box_deltas, rois, image_size):
        """Detections of every image from the head's outputs (all images at once).

        Args:
            cls_logits (ndarray[R, K]), box_deltas (ndarray[R, 4·K]): head outputs.
            rois (list of ndarray[R_i, 4]): the RoIs, one entry per image.
            image_size (tuple): ``(H, W)``.
        Returns:
            list of dicts (one per image): ``boxes`` ndarray[D, 4] float32 xyxy,
            ``scores`` ndarray[D] float32 (softmax probabilities, decreasing),
            ``labels`` ndarray[D] int64 in ``1..K-1``.
        """
        k = self.num_classes
        num_images = len(rois)
        counts = [r.shape[0] for r in rois]
        all_rois = np.concatenate(rois).reshape(-1, 4) if rois else np.zeros((0, 4), np.float32)
        cls_logits = np.asarray(cls_logits, np.float32).reshape(-1, k)
        box_deltas = np.asarray(box_deltas, np.float32).reshape(-1, 4 * k)
        probs = softmax_forward(cls_logits, axis=-1)                    # (R, K)
        boxes = self.box_coder.decode(box_deltas, all_rois).reshape(-1, 4)
        boxes = clip_boxes_to_image(boxes, image_size).reshape(-1, k, 4)[:, 1:]  # (R, K-1, 4)
        boxes = boxes.reshape(-1, 4).astype(np.float32, copy=False)
        scores = probs[:, 1:].reshape(-1)                               # (R·(K-1),)
        labels = np.tile(np.arange(1, k, dtype=np.int64), len(all_rois))
        image_index = np.repeat(np.repeat(np.arange(num_images), counts), k - 1)
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        candidates = np.flatnonzero((scores > self.score_threshold) & (sides >= self.min_size))
        kept = candidates[batched_nms(boxes[candidates], scores[candidates],
                                      image_index[candidates] * k + labels[candidates],
                                      self.nms_threshold)]          # by decreasing score
        kept = kept[np.argsort(image_index[kept], kind="stable")]   # by image, then score
        image_of_kept = image_index[kept]
        first = np.searchsorted(image_of_kept, image_of_kept, side="left")
        kept = kept[np.arange(kept.size) - first < self.detections_per_image]
        splits = np.cumsum(np.bincount(image_index[kept], minlength=num_images))[:-1]
        return [{"boxes": b, "scores": s.astype(np.float32, copy=False), "labels": lab}
                for b, s, lab in zip(np.split(boxes[kept], splits), np.split(scores[kept], splits),
                                     np.split(labels[kept], splits))]

    def predict(self, features, proposals, image_size):
        """Detections per image: ``forward`` on the proposals (no gradients), ``postprocess``."""
        with nn.no_grad():
            cls_logits, box_deltas = self.forward(features, proposals)
        return self.postprocess(cls_logits.data, box_deltas.data, proposals, image_size)
