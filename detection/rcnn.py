"""R-CNN: regions with CNN features (Girshick, Donahue, Darrell and Malik, CVPR 2014).

The first CNN detector, in four steps per image:

1. **Proposals**: ~2000 class-agnostic boxes from selective search
   (``detection.selective_search``).
2. **Warping**: each box, dilated so that the warped crop has a margin of context
   (the paper: 16 pixels at 227x227, here ``16 / 227`` of the warp size), is resized to a
   fixed square, whatever its aspect ratio. ``warp_regions`` does this for all boxes at
   once (``warp_regions_batch`` for boxes of many images, a training minibatch): one
   bilinear sample at the centre of every output pixel, ``roi_align``'s sampling.
   Outside the image the crop shows the image mean (the paper's padding), as the image
   is centred before warping.
3. **Features**: a CNN run once *per region* (the cost Fast R-CNN removes: 2000 forward
   passes per image) gives a feature vector. Here a small CNN from scratch, 32x32
   input: the plates of a 256-px scene are 10-40 px wide, so 32 px keeps their detail,
   and 2000 crops of 32x32 cost what one 1400x1400 image would.
4. **Heads on the features**: per class, a linear SVM scores the region, and a linear
   (ridge) regression moves its box; per-class NMS keeps the best boxes. The paper
   compares this with the fine-tuned CNN's own softmax as the scorer (``detect(...,
   scoring="softmax")``): the SVMs were better by a few mAP points.

Labels, as in the paper:

- fine-tuning the CNN (K+1 softmax): a proposal with IoU >= 0.5 with some object takes
  that object's class, every other proposal is background (``label_proposals`` with
  ``fg_iou=0.5, bg_iou=0.5``);
- the SVMs: positives are the ground-truth boxes only, negatives the proposals with IoU
  < 0.3 with every object of the class, the rest is ignored; the paper found 0.5 here
  lost 5 mAP points. Negatives are mined: train on a sample, add the negatives that
  violate the margin, train again (hard-negative mining);
- box regression: proposals with IoU >= 0.6 with an object, targets
  ``(tx, ty, tw, th) = BoxCoder((1, 1, 1, 1)).encode(gt, proposal)`` (appendix C),
  ridge regression with ``lambda = 1000`` on the features.
"""
import time
from dataclasses import dataclass

import numpy as np

import nn
from nn import Module
from nn.random import get_generator
from detection.box_coder import BoxCoder
from detection.boxes import box_iou, clip_boxes_to_image
from detection.nms import batched_nms

__all__ = ["RCNNConfig", "RegionCNN", "RCNN", "label_proposals", "warp_regions",
           "warp_regions_batch", "image_means", "context_boxes", "train_svms",
           "fit_box_regressors", "sample_regions"]

BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


@dataclass
class RCNNConfig:
    """Hyperparameters of R-CNN.

    Attributes:
        num_classes (int): K object classes (labels 1..K; 0 is background).
        warp_size (int): side of the warped square crops.
        context (float): margin of context around a box, as a fraction of the warp size
            (the paper's 16 / 227).
        widths (tuple of 3 int): channels of the CNN's three conv stages.
        feature_dim (int): length of the feature vector (the CNN's last hidden layer).
        fg_iou (float): IoU from which a proposal takes an object's class when fine-tuning.
        svm_bg_iou (float): IoU below which a proposal is an SVM negative.
        regression_fg_iou (float): IoU from which a proposal trains the box regressor.
        svm_c (float): inverse regularisation of the SVMs (hinge loss weight).
        ridge_lambda (float): regularisation of the box regressors.
        nms_threshold (float): per-class NMS IoU threshold (the paper's 0.3).
        score_threshold (float): SVM score below which a detection is dropped.
        softmax_threshold (float): the same for the softmax's probabilities
            (``detect(scoring="softmax")``).
        detections_per_image (int): at most this many boxes per image.
        max_proposals (int): proposals used per image (the best-ranked ones).
        batch_size (int): regions per forward pass at inference.
    """
    num_classes: int = 2
    warp_size: int = 32
    context: float = 16.0 / 227.0
    widths: tuple = (16, 32, 64)
    feature_dim: int = 128
    fg_iou: float = 0.5
    svm_bg_iou: float = 0.3
    regression_fg_iou: float = 0.6
    svm_c: float = 1.0
    ridge_lambda: float = 1000.0
    nms_threshold: float = 0.3
    score_threshold: float = -1.0
    softmax_threshold: float = 0.01
    detections_per_image: int = 100
    max_proposals: int = 2000
    batch_size: int = 500


# ------------------------------------------------------------ labels
def label_proposals(proposals, gt_boxes, gt_labels, fg_iou=0.5, bg_iou=0.5):
    """Class of each proposal from its best-overlapping ground truth.

    Args:
        proposals (ndarray[R, 4]): xyxy.
        gt_boxes (ndarray[G, 4]): xyxy.
        gt_labels (ndarray[G]): int classes 1..K.
        fg_iou (float): best IoU from which a proposal takes its object's class.
        bg_iou (float): best IoU below which it is background (0);
            ``bg_iou <= fg_iou``; in between it is ignored (-1).
    Returns:
        tuple: ``labels`` (ndarray[R] int64: class, 0 or -1), ``matched`` (ndarray[R]
        int64: index of the best ground truth, -1 without any), ``best_iou``
        (ndarray[R] float64).
    """
    proposals = np.asarray(proposals, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    if gt_labels.shape[0] != gt_boxes.shape[0]:
        raise ValueError(f"gt_labels has {gt_labels.shape[0]} entries for "
                         f"{gt_boxes.shape[0]} gt_boxes")
    if not 0.0 <= bg_iou <= fg_iou <= 1.0:
        raise ValueError(f"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={bg_iou} and "
                         f"fg_iou={fg_iou}")
    count = proposals.shape[0]
    if gt_boxes.shape[0] == 0:
        return (np.zeros(count, np.int64), np.full(count, -1, np.int64), np.zeros(count))
    iou = box_iou(proposals, gt_boxes)                                   # (R, G)
    matched = iou.argmax(axis=1)
    best = iou[np.arange(count), matched]
    labels = np.where(best >= fg_iou, gt_labels[matched].astype(np.int64), -1)
    labels[best < bg_iou] = 0
    matched = np.where(best > 0, matched, -1)
    return labels, matched.astype(np.int64), best


# ------------------------------------------------------------ warping
def context_boxes(boxes, warp_size, context):
    """Dilate boxes so that, warped to ``warp_size``, a margin ``context·warp_size`` is left.

    A box of width w fills ``warp_size - 2p`` warped pixels (p = context·warp_size), so
    each side grows by ``p · w / (warp_size - 2p)``.

    Args:
        boxes (ndarray[R, 4]): xyxy.
    Returns:
        ndarray[R, 4] float64.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    margin = context * warp_size
    inner = warp_size - 2 * margin
    if inner <= 0:
        raise ValueError(f"context {context} leaves no room for the box in a {warp_size}-px warp")
    grow = margin / inner
    dx = (boxes[:, 2] - boxes[:, 0]) * grow
    dy = (boxes[:, 3] - boxes[:, 1]) * grow
    return np.stack([boxes[:, 0] - dx, boxes[:, 1] - dy, boxes[:, 2] + dx, boxes[:, 3] + dy], 1)


def _sample_axis(start, stop, size, length):
    """Bilinear taps of ``size`` samples at bin centres along one axis of every box.

    Sample j of a box ``[start, stop)`` lies at ``start - 0.5 + (j + 0.5)·(stop - start)/size``
    in pixel-centre coordinates (``roi_align``'s ``aligned=True`` with one sample per bin).
    As in ``roi_align``: a sample more than one pixel off the image reads 0; one within a
    pixel of the border is clamped to it.

    Args:
        start, stop (ndarray[R] float64): box extent on this axis.
        size (int): samples per box.
        length (int): image extent on this axis.
    Returns:
        tuple: ``low``, ``high`` (ndarray[R, size] int64): the two pixels read; ``w_low``,
        ``w_high`` (ndarray[R, size] float32): their weights (0 for samples off the image).
    """
    centres = (np.arange(size) + 0.5) / size                             # (size,)
    coords = (start - 0.5)[:, None] + centres * (stop - start)[:, None]   # (R, size)
    inside = (coords >= -1.0) & (coords <= length)
    coords = np.maximum(coords, 0.0)
    low = np.minimum(coords.astype(np.int64), length - 1)                # floor: coords >= 0
    at_end = low >= length - 1
    high = np.where(at_end, low, low + 1)
    frac = np.where(at_end, 0.0, coords - low)
    return (low, high, ((1.0 - frac) * inside).astype(np.float32),
            (frac * inside).astype(np.float32))


def warp_regions(image, boxes, warp_size=32, context=16.0 / 227.0, mean=None):
    """Crop and anisotropically resize every box to ``warp_size x warp_size``.

    Output pixel (i, j) of box (x1, y1, x2, y2) (after dilation by ``context``) is the
    bilinear sample of the image at ``(x1 + (j + 0.5)·w/S - 0.5, y1 + (i + 0.5)·h/S - 0.5)``
    in pixel-centre coordinates: ``roi_align`` with one sample per bin and
    ``aligned=True``, computed as one gather per corner of the bilinear footprint
    (separable weights, ``_sample_axis``). The image mean is subtracted first, so samples
    off the image read as the mean.

    Args:
        image (ndarray[H, W, C]): float32 (or uint8, scaled to [0, 1]).
        boxes (ndarray[R, 4]): xyxy proposals.
        warp_size (int): S.
        context (float): margin as a fraction of S (0 for a tight warp).
        mean (ndarray[C] | None): the value subtracted; None is the image's mean.
    Returns:
        ndarray[R, S, S, C] float32: the centred crops (image minus mean).
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must have shape (H, W, C), got {image.shape}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    means = None if mean is None else np.asarray(mean, np.float32).reshape(1, -1)
    return warp_regions_batch(image[None], np.zeros(boxes.shape[0], np.int64), boxes,
                              warp_size, context, means)


def image_means(images):
    """Per-image channel means, in [0, 1] for uint8 images.

    Args:
        images (ndarray[N, H, W, C]): uint8 or float.
    Returns:
        ndarray[N, C] float32.
    """
    images = np.asarray(images)
    means = images.reshape(images.shape[0], -1, images.shape[-1]).mean(axis=1, dtype=np.float64)
    return (means / 255.0 if images.dtype == np.uint8 else means).astype(np.float32)


def warp_regions_batch(images, image_indices, boxes, warp_size=32, context=16.0 / 227.0,
                       means=None):
    """``warp_regions`` for boxes of several images at once (a training minibatch).

    Each image is centred by its own mean. By linearity the gather reads the raw pixels
    and subtracts ``mean · (sum of the sample's weights)`` afterwards: the weights sum
    to 1 on the image and to 0 off it, where the centred image reads 0.

    Args:
        images (ndarray[N, H, W, C]): uint8 (scaled to [0, 1]) or float.
        image_indices (ndarray[R] int): the image of each box.
        boxes (ndarray[R, 4]): xyxy.
        warp_size (int), context (float): as ``warp_regions``.
        means (ndarray[N, C] | None): subtracted per image; None: ``image_means(images)``.
    Returns:
        ndarray[R, S, S, C] float32.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}")
    count, height, width, channels = images.shape
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    image_indices = np.asarray(image_indices, dtype=np.int64).reshape(-1)
    if image_indices.shape[0] != boxes.shape[0]:
        raise ValueError(f"image_indices has {image_indices.shape[0]} entries for "
                         f"{boxes.shape[0]} boxes")
    if image_indices.size and (image_indices.min() < 0 or image_indices.max() >= count):
        raise ValueError(f"image_indices must lie in [0, {count}), got "
                         f"[{image_indices.min()}, {image_indices.max()}]")
    if boxes.shape[0] == 0:
        return np.zeros((0, warp_size, warp_size, channels), np.float32)
    means = image_means(images) if means is None else np.asarray(means, np.float32)
    scale = np.float32(1 / 255.0) if images.dtype == np.uint8 else np.float32(1.0)
    pixels = images.reshape(count * height * width, channels)            # (N·H·W, C)
    dilated = context_boxes(boxes, warp_size, context) if context > 0 else boxes
    rows = _sample_axis(dilated[:, 1], dilated[:, 3], warp_size, height)
    cols = _sample_axis(dilated[:, 0], dilated[:, 2], warp_size, width)
    first_pixel = (image_indices * (height * width))[:, None, None]       # (R, 1, 1)
    crops = None
    for y, wy in ((rows[0], rows[2]), (rows[1], rows[3])):
        for x, wx in ((cols[0], cols[2]), (cols[1], cols[3])):
            index = first_pixel + y[:, :, None] * width + x[:, None, :]  # (R, S, S)
            values = np.take(pixels, index, axis=0).astype(np.float32, copy=False)
            values *= (wy[:, :, None] * wx[:, None, :])[..., None]
            if crops is None:
                crops = values
            else:
                crops += values
    if scale != 1:
        crops *= scale
    weight = (rows[2] + rows[3])[:, :, None] * (cols[2] + cols[3])[:, None, :]   # (R, S, S)
    crops -= weight[..., None] * means[image_indices][:, None, None, :]
    return crops


# ------------------------------------------------------------ the CNN
class RegionCNN(Module):
    """A small CNN for warped regions: three conv-BN-ReLU-maxpool stages, two FC layers.

    Shapes:
        ``(R, S, S, 3)`` -> ``features`` ``(R, feature_dim)`` -> logits ``(R, K + 1)``.
    """

    def __init__(self, num_classes, warp_size=32, widths=(16, 32, 64), feature_dim=128):
        super().__init__()
        layers, previous = [], 3
        for width in widths:
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            previous = width
        self.body = nn.Sequential(*layers)
        side = warp_size // 2 ** len(widths)
        if side < 1:
            raise ValueError(f"warp_size {warp_size} is too small for {len(widths)} stages")
        self.flat = side * side * previous
        self.fc = nn.Linear(self.flat, feature_dim)
        self.cls = nn.Linear(feature_dim, num_classes + 1)

    def features(self, x):
        """The feature vector of each region (after the hidden FC layer and ReLU)."""
        body = self.body(x)
        return nn.functional.relu(self.fc(body.reshape(body.shape[0], self.flat)))

    def forward(self, x):
        return self.cls(self.features(x))


# ------------------------------------------------------------ SVMs and box regression
def _hinge_subgradient(x, y, weight, bias, lam, sample_weight):
    """Objective and subgradient of ``lam/2·|w|² + sum_i c_i max(0, 1 - y_i(x_i·w + b))``.

    Per class (one column of ``weight`` each).

    Args:
        x (ndarray[N, D]); y (ndarray[N, K]) in {-1, 0, +1} (0: not used for that class);
        weight (ndarray[D, K]); bias (ndarray[K]); sample_weight (ndarray[N, K]).
    """
    margin = y * (x @ weight + bias)                                    # (N, K)
    active = (margin < 1) & (y != 0)
    coef = np.where(active, -y * sample_weight, 0.0)                    # d loss / d score
    loss = lam / 2 * (weight ** 2).sum(0) + (sample_weight * np.maximum(0, 1 - margin)
                                              * (y != 0)).sum(0)
    return loss, lam * weight + x.T @ coef, coef.sum(0)


def train_svms(features, targets, c=1.0, epochs=200, hard_negative_rounds=2,
               initial_negatives=2000, generator=None):
    """One linear SVM per class (hinge loss), trained together, with hard-negative mining.

    Minimises, for each class k,
    ``1/2·|w_k|² + C · sum_i c_ik max(0, 1 - y_ik (x_i·w_k + b_k))``
    by full-batch subgradient descent with a decaying step (Pegasos-style) and iterate
    averaging, all classes at once (one matrix product per step). ``c_ik`` balances
    positives and negatives (each side weighs half). Mining: start from a random sample
    of at most ``initial_negatives`` negatives per class; after each round, add every
    negative that violates the margin (score > -1) and train again.

    Args:
        features (ndarray[N, D]): float.
        targets (ndarray[N, K]): +1 positive, -1 negative, 0 ignored, per class.
        c (float): weight of the hinge loss.
        epochs (int): subgradient steps per round.
        hard_negative_rounds (int): mining rounds after the first training.
        initial_negatives (int): negatives per class in the first round.
        generator (np.random.Generator | int | None): the first sample of negatives
            (None: the default generator of ``nn.manual_seed``).
    Returns:
        tuple: ``weight`` (ndarray[D, K] float64), ``bias`` (ndarray[K] float64).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features (N, D) and targets (N, K) must share N, got {x.shape} "
                         f"and {y.shape}")
    rng = get_generator(generator)
    n, dim = x.shape
    classes = y.shape[1]
    # Features on a common scale make one step size fit every class.
    scale = np.sqrt((x ** 2).sum(1).mean()) + 1e-12
    xs = x / scale
    active = y > 0
    for k in range(classes):
        negatives = np.flatnonzero(y[:, k] < 0)
        active[rng.permutation(negatives)[:initial_negatives], k] = True
    weight = np.zeros((dim, classes))
    bias = np.zeros(classes)
    lam = 1.0 / c
    for _ in range(hard_negative_rounds + 1):
        rows = np.flatnonzero(active.any(axis=1))       # rows outside every class add nothing
        used = np.where(active[rows], y[rows], 0.0)
        x_used = xs[rows]
        positives = np.maximum((used > 0).sum(0), 1)
        negatives = np.maximum((used < 0).sum(0), 1)
        sample_weight = np.where(used > 0, 0.5 / positives, 0.5 / negatives)
        average_w, average_b = np.zeros_like(weight), np.zeros_like(bias)
        for step in range(1, epochs + 1):
            _, grad_w, grad_b = _hinge_subgradient(x_used, used, weight, bias, lam,
                                                   sample_weight)
            rate = 1.0 / (lam * (step + 10))
            weight -= rate * grad_w
            bias -= rate * grad_b
            average_w += (weight - average_w) / step
            average_b += (bias - average_b) / step
        weight, bias = average_w, average_b
        scores = xs @ weight + bias
        hard = (y < 0) & (scores > -1) & ~active
        if not hard.any():
            break
        active |= hard
    return weight / scale, bias


def fit_box_regressors(features, proposals, gt_boxes, labels, num_classes, lam=1000.0):
    """Per-class ridge regression from features to ``(tx, ty, tw, th)`` (R-CNN appendix C).

    Args:
        features (ndarray[N, D]); proposals (ndarray[N, 4]) xyxy;
        gt_boxes (ndarray[N, 4]): the matched ground truth of each proposal;
        labels (ndarray[N]): class 1..K of the proposals used, 0 or -1 for the others.
        num_classes (int): K.
        lam (float): ridge penalty (the bias is not penalised).
    Returns:
        ndarray[K, D + 1, 4] float64: weights per class, the last row the bias.
    """
    x = np.asarray(features, dtype=np.float64)
    x1 = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)         # (N, D+1)
    penalty = lam * np.eye(x1.shape[1])
    penalty[-1, -1] = 0.0
    weights = np.zeros((num_classes, x1.shape[1], 4))
    for k in range(1, num_classes + 1):
        rows = np.flatnonzero(np.asarray(labels) == k)
        if rows.size == 0:
            continue
        targets = BOX_CODER.encode(np.asarray(gt_boxes, np.float64)[rows],
                                   np.asarray(proposals, np.float64)[rows])
        a = x1[rows]
        weights[k - 1] = np.linalg.solve(a.T @ a + penalty, a.T @ targets)
    return weights


# ------------------------------------------------------------ training samples
def sample_regions(labels, batch_size=128, positive_fraction=0.25, generator=None):
    """A fine-tuning minibatch: 25% foreground (the paper's 32 of 128), the rest background.

    Args:
        labels (ndarray[R]): class, 0 background, -1 ignored.
        batch_size (int): B, at most.
        positive_fraction (float): the foreground share of the batch.
        generator (np.random.Generator | int | None): the draws (None: the default
            generator of ``nn.manual_seed``).
    Returns:
        ndarray[B] int64: indices, positives first, at most ``batch_size``.
    """
    rng = get_generator(generator)
    labels = np.asarray(labels)
    positives = rng.permutation(np.flatnonzero(labels > 0))
    negatives = rng.permutation(np.flatnonzero(labels == 0))
    take = min(positives.size, int(round(batch_size * positive_fraction)))
    rest = min(negatives.size, batch_size - take)
    return np.concatenate([positives[:take], negatives[:rest]]).astype(np.int64)


# ------------------------------------------------------------ the detector
class RCNN:
    """The R-CNN detector: a ``RegionCNN``, per-class SVMs and box regressors.

    Args:
        config (RCNNConfig): hyperparameters.

    Attributes:
        net (RegionCNN): the CNN (fine-tuned with ``net(crops)`` and cross entropy).
        svm_weight (ndarray[D, K]), svm_bias (ndarray[K]): the SVMs (``fit_heads``).
        regressors (ndarray[K, D + 1, 4]): the box regressors (``fit_heads``).
        timings (dict): seconds of the last ``predict`` per stage (proposals, warp,
            features, heads).
    """

    def __init__(self, config=None):
        self.config = config or RCNNConfig()
        c = self.config
        self.net = RegionCNN(c.num_classes, c.warp_size, c.widths, c.feature_dim)
        self.svm_weight = np.zeros((c.feature_dim, c.num_classes))
        self.svm_bias = np.zeros(c.num_classes)
        self.regressors = np.zeros((c.num_classes, c.feature_dim + 1, 4))
        self.timings = {}

    def warp(self, image, boxes):
        c = self.config
        return warp_regions(image, boxes, c.warp_size, c.context)

    def extract_features(self, crops):
        """CNN features of warped crops, in batches of ``config.batch_size`` (no gradient)."""
        self.net.eval()
        out = []
        with nn.no_grad():
            for start in range(0, crops.shape[0], self.config.batch_size):
                out.append(self.net.features(crops[start:start + self.config.batch_size]).data)
        if not out:
            return np.zeros((0, self.config.feature_dim), np.float32)
        return np.concatenate(out)

    def fit_heads(self, features, boxes, class_iou, matched_boxes, matched_labels, best_iou,
                  gt_features, gt_labels, generator=None):
        """Train the SVMs and box regressors on extracted features.

        Args:
            features (ndarray[N, D]): features of proposals (all training images).
            boxes (ndarray[N, 4]): the proposals.
            class_iou (ndarray[N, K]): each proposal's best IoU with an object of each
                class (an SVM negative for class k below ``svm_bg_iou``).
            matched_boxes (ndarray[N, 4]), matched_labels (ndarray[N]), best_iou
                (ndarray[N]): the best-overlapping object's box and class, and that IoU
                (box regression from ``regression_fg_iou``).
            gt_features (ndarray[G, D]); gt_labels (ndarray[G]): the ground-truth boxes'
                own features and classes (the SVM positives).
            generator (np.random.Generator | int | None): the SVMs' first sample of
                negatives (``train_svms``).
        """
        c = self.config
        x = np.concatenate([gt_features, features])
        gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
        targets = np.zeros((x.shape[0], c.num_classes))
        targets[np.arange(gt_labels.size), gt_labels - 1] = 1.0
        targets[gt_labels.size:] = np.where(np.asarray(class_iou) < c.svm_bg_iou, -1.0, 0.0)
        self.svm_weight, self.svm_bias = train_svms(x, targets, c=c.svm_c, generator=generator)
        regress = np.where(np.asarray(best_iou) >= c.regression_fg_iou, matched_labels, 0)
        self.regressors = fit_box_regressors(features, boxes, matched_boxes, regress,
                                             c.num_classes, c.ridge_lambda)

    def detect(self, image, proposals, scoring="svm"):
        """Detections on given proposals: warp, features, scores, box regression, NMS.

        Args:
            image (ndarray[H, W, 3]): uint8 or float in [0, 1].
            proposals (ndarray[R, 4]): xyxy, best first (the first ``max_proposals`` are used).
            scoring (str): ``"svm"`` (the SVM scores, R-CNN's detector) or ``"softmax"``
                (the fine-tuned CNN's class probabilities, the paper's comparison).
        Returns:
            dict: ``boxes`` (ndarray[D, 4] float32), ``scores`` (ndarray[D] float32),
            ``labels`` (ndarray[D] int64 in 1..K).
        """
        if scoring not in ("svm", "softmax"):
            raise ValueError(f"scoring must be 'svm' or 'softmax', got {scoring!r}")
        c = self.config
        height, width = np.asarray(image).shape[:2]
        proposals = np.asarray(proposals, np.float32).reshape(-1, 4)[:c.max_proposals]
        start = time.perf_counter()
        crops = self.warp(image, proposals)
        self.timings["warp"] = time.perf_counter() - start
        start = time.perf_counter()
        features = self.extract_features(crops)
        self.timings["features"] = time.perf_counter() - start
        start = time.perf_counter()
        if scoring == "svm":
            scores = features @ self.svm_weight + self.svm_bias             # (R, K)
            threshold = c.score_threshold
        else:
            with nn.no_grad():
                logits = self.net.cls(features).data.astype(np.float64)     # (R, K + 1)
            probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores = (probabilities / probabilities.sum(axis=1, keepdims=True))[:, 1:]
            threshold = c.softmax_threshold
        x1 = np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)
        deltas = np.einsum("rd,kdt->rkt", x1, self.regressors)              # (R, K, 4)
        count = proposals.shape[0]
        boxes = BOX_CODER.decode(deltas.reshape(count, -1), proposals.astype(np.float64)) \
            if count else np.zeros((0, 4 * c.num_classes))
        boxes = clip_boxes_to_image(boxes.reshape(-1, 4), (height, width)).reshape(
            count, c.num_classes, 4)
        labels = np.broadcast_to(np.arange(1, c.num_classes + 1), scores.shape)
        keep = scores.ravel() > threshold
        flat_boxes = boxes.reshape(-1, 4)[keep].astype(np.float32)
        flat_scores = scores.ravel()[keep].astype(np.float32)
        flat_labels = labels.ravel()[keep].astype(np.int64)
        kept = batched_nms(flat_boxes, flat_scores, flat_labels,
                           c.nms_threshold)[:c.detections_per_image]
        self.timings["heads"] = time.perf_counter() - start
        return {"boxes": flat_boxes[kept], "scores": flat_scores[kept],
                "labels": flat_labels[kept]}

    def predict(self, image, mode="fast", scoring="svm"):
        """Selective search, then ``detect``; ``timings`` gets the proposals' time too."""
        from detection.selective_search import selective_search
        start = time.perf_counter()
        proposals = selective_search(image, mode=mode)
        proposal_time = time.perf_counter() - start
        out = self.detect(image, proposals, scoring)
        self.timings["proposals"] = proposal_time
        return out

    def label_regions(self, target, proposals):
        """The regions of one training image and their labels: proposals, then the objects.

        Args:
            target (dict): ``boxes`` (ndarray[G, 4]) and ``labels`` (ndarray[G] in 1..K).
            proposals (ndarray[P, 4]): the first ``max_proposals`` are used.
        Returns:
            dict: ``boxes`` (ndarray[R, 4], R = P + G, the objects last), ``labels``
            (fine-tuning labels: class if IoU >= ``fg_iou``, else 0), ``matched_boxes``,
            ``matched_labels`` and ``best_iou`` (the best-overlapping object), ``class_iou``
            (ndarray[R, K]: the best IoU with an object of each class), ``num_gt``.
        """
        c = self.config
        gt_boxes = np.asarray(target["boxes"], np.float64).reshape(-1, 4)
        gt_labels = np.asarray(target["labels"], np.int64).reshape(-1)
        proposals = np.asarray(proposals, np.float64).reshape(-1, 4)[:c.max_proposals]
        boxes = np.concatenate([proposals, gt_boxes])
        labels, matched, best = label_proposals(boxes, gt_boxes, gt_labels, c.fg_iou, c.fg_iou)
        has_match = matched >= 0
        matched_boxes = np.where(has_match[:, None], gt_boxes[np.maximum(matched, 0)]
                                 if gt_boxes.shape[0] else 0.0, boxes)
        matched_labels = np.where(has_match, gt_labels[np.maximum(matched, 0)]
                                  if gt_labels.size else 0, 0)
        iou = box_iou(boxes, gt_boxes) if gt_boxes.shape[0] else np.zeros((boxes.shape[0], 0))
        of_class = gt_labels[None, :] == np.arange(1, c.num_classes + 1)[:, None]    # (K, G)
        class_iou = np.where(of_class[None], iou[:, None, :], 0.0).max(axis=2, initial=0.0)
        return {"boxes": boxes, "labels": labels, "matched_boxes": matched_boxes,
                "matched_labels": matched_labels, "best_iou": best, "class_iou": class_iou,
                "num_gt": gt_boxes.shape[0]}

    def prepare(self, image, target, proposals):
        """``label_regions`` plus ``crops`` (ndarray[R, S, S, 3]): every region warped."""
        regions = self.label_regions(target, proposals)
        regions["crops"] = self.warp(image, regions["boxes"])
        return regions

    def prepare_features(self, image, target, proposals):
        """``label_regions`` plus ``features`` (ndarray[R, D] float32) of every region."""
        regions = self.prepare(image, target, proposals)
        regions["features"] = self.extract_features(regions.pop("crops"))
        return regions

    def fine_tune_step(self, crops, labels, optimizer):
        """One SGD step of the CNN's K+1-way classifier on a minibatch; returns the loss."""
        self.net.train()
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(self.net(crops), labels)
        loss.backward()
        optimizer.step()
        return float(loss.item())

    def fit_heads_from(self, prepared, generator=None):
        """``fit_heads`` on ``prepare`` (or ``prepare_features``) of every training image."""
        parts = {key: [] for key in ("features", "boxes", "class_iou", "matched_boxes",
                                     "matched_labels", "best_iou", "gt_features", "gt_labels")}
        for item in prepared:
            feats = item["features"] if "features" in item else \
                self.extract_features(item["crops"])
            split = feats.shape[0] - item["num_gt"]
            parts["features"].append(feats[:split])
            parts["gt_features"].append(feats[split:])
            parts["gt_labels"].append(item["matched_labels"][split:])
            for key in ("boxes", "class_iou", "matched_boxes", "matched_labels", "best_iou"):
                parts[key].append(item[key][:split])
        joined = {key: np.concatenate(value) for key, value in parts.items()}
        self.fit_heads(joined["features"], joined["boxes"], joined["class_iou"],
                       joined["matched_boxes"], joined["matched_labels"], joined["best_iou"],
                       joined["gt_features"], joined["gt_labels"], generator=generator)

    def state_dict(self):
        state = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        state.update({"svm_weight": self.svm_weight, "svm_bias": self.svm_bias,
                      "regressors": self.regressors})
        return state

    def load_state_dict(self, state):
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        for key in ("svm_weight", "svm_bias", "regressors"):
            if key not in state:
                raise KeyError(f"state has no {key!r}")
            expected = getattr(self, key).shape
            value = np.asarray(state[key], dtype=np.float64)
            if value.shape != expected:
                raise ValueError(f"{key} has shape {value.shape}, expected {expected}")
            setattr(self, key, value)
