"""Anchor boxes: the fixed reference boxes that RPN and RetinaNet heads refine.

At every cell of a feature map a detector places A boxes of a few sizes and aspect
ratios (Ren et al., "Faster R-CNN", NeurIPS 2015, section 3.1.1), centered on the
cell; the head predicts, per anchor, an objectness / class score and deltas
(``detection.box_coder``). With a feature pyramid (Lin et al., "Feature Pyramid
Networks", CVPR 2017) each level gets its own sizes: small anchors on the fine
levels, large ones on the coarse levels.

Base anchors (torchvision's ``AnchorGenerator``): for size s and aspect ratio
r = height / width,

    h = s · sqrt(r),   w = s / sqrt(r)    (so w · h = s² and h / w = r)
    base = round([-w/2, -h/2, w/2, h/2])   (float32, round half to even)

and the anchor of cell (y, x) on a level of stride (sy, sx) is that base shifted by
``(x · sx, y · sy)`` — the top-left corner of the cell in image pixels, as
torchvision does (``offset=0.5`` moves it to the cell's center).

Order of the anchors (the contract with the heads): level, then row y, then
column x, then the A anchors of the location, ratio-major
(``a = ratio_index · len(sizes) + size_index``, torchvision's order). It is the order
in which a head's ``(N, H, W, A·K)`` output reshapes to ``(N, H·W·A, K)``, level after
level concatenated.
"""
import numpy as np

from nn._checks import check_in_range, check_pair, check_positive

__all__ = ["AnchorGenerator", "generate_base_anchors"]


def generate_base_anchors(sizes, aspect_ratios, dtype=np.float32):
    """The A zero-centered anchors of one pyramid level.

    Args:
        sizes (sequence of float): square-root areas ``s`` in pixels, positive.
        aspect_ratios (sequence of float): ``height / width`` ratios, positive.
        dtype: float dtype of the result (torchvision computes in float32).
    Returns:
        ndarray[A, 4]: xyxy boxes around (0, 0), ratio-major
        (``A = len(aspect_ratios) · len(sizes)``), rounded to integers.
    """
    scales = np.asarray(sizes, dtype=dtype)
    ratios = np.asarray(aspect_ratios, dtype=dtype)
    h_ratios = np.sqrt(ratios)
    w_ratios = 1 / h_ratios
    widths = (w_ratios[:, None] * scales[None, :]).reshape(-1)     # (R·S,)
    heights = (h_ratios[:, None] * scales[None, :]).reshape(-1)    # (R·S,)
    base = np.stack([-widths, -heights, widths, heights], axis=1) / 2
    return np.round(base).astype(dtype, copy=False)


def _check_positive_sequence(values, name):
    if not isinstance(values, (tuple, list)) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty tuple of numbers, got {values!r}")
    return tuple(check_positive(value, f"{name}[{i}]") for i, value in enumerate(values))


def _check_pair(value, name):
    """``value`` (an int, a pair, or a feature map ``(N, H, W, C)``) as an ``(H, W)`` pair
    of positive ints."""
    if hasattr(value, "shape") and len(value.shape) == 4:
        value = value.shape[1:3]          # a (N, H, W, C) feature map
    elif isinstance(value, np.ndarray) and value.shape == (2,):
        value = tuple(value.tolist())
    return check_pair(value, name, 1)


class AnchorGenerator:
    """Anchors of a feature pyramid for a given image size.

    Args:
        sizes (tuple of tuples): per level, the anchor sizes (square-root areas) in
            pixels, e.g. ``((32,), (64,), (128,), (256,), (512,))`` for P2-P6.
        aspect_ratios (tuple of tuples): per level, the ``height / width`` ratios,
            e.g. ``((0.5, 1.0, 2.0),) * 5``. A single tuple of tuples of length 1 is
            repeated for every level.
        strides (tuple, optional): per level, the stride ``s`` or ``(sy, sx)`` in
            pixels. By default computed per call as ``image_size // feature_size``
            (integer division, as torchvision).
        offset (float): anchor centers at ``(x + offset) · stride``; 0.0 is torchvision's
            choice (top-left corner of the cell), 0.5 the cell center.
        dtype: float dtype of the anchors.

    Example::

        generator = AnchorGenerator(sizes=((32,), (64,)), aspect_ratios=((0.5, 1.0, 2.0),) * 2)
        anchors = generator((256, 256), [(32, 32), (16, 16)])  # (32·32·3 + 16·16·3, 4)
    """

    def __init__(self, sizes=((32,), (64,), (128,), (256,), (512,)),
                 aspect_ratios=((0.5, 1.0, 2.0),), strides=None, offset=0.0, dtype=np.float32):
        if not isinstance(sizes, (tuple, list)) or len(sizes) == 0:
            raise ValueError(f"sizes must be a non-empty tuple of per-level tuples, got {sizes!r}")
        sizes = tuple(
            _check_positive_sequence(s if isinstance(s, (tuple, list)) else (s,), f"sizes[{i}]")
            for i, s in enumerate(sizes)
        )
        if not isinstance(aspect_ratios, (tuple, list)) or len(aspect_ratios) == 0:
            raise ValueError(
                f"aspect_ratios must be a tuple of per-level tuples, got {aspect_ratios!r}"
            )
        if not isinstance(aspect_ratios[0], (tuple, list)):
            raise ValueError(
                f"aspect_ratios must be a tuple of per-level tuples such as ((0.5, 1.0, 2.0),), "
                f"got {aspect_ratios!r}"
            )
        if len(aspect_ratios) == 1:
            aspect_ratios = tuple(aspect_ratios) * len(sizes)
        if len(aspect_ratios) != len(sizes):
            raise ValueError(
                f"aspect_ratios has {len(aspect_ratios)} levels but sizes has {len(sizes)}"
            )
        aspect_ratios = tuple(
            _check_positive_sequence(r, f"aspect_ratios[{i}]") for i, r in enumerate(aspect_ratios)
        )
        if strides is not None:
            if not isinstance(strides, (tuple, list)) or len(strides) != len(sizes):
                raise ValueError(
                    f"strides must give one stride per level ({len(sizes)}), got {strides!r}"
                )
            strides = tuple(_check_pair(s, f"strides[{i}]") for i, s in enumerate(strides))
        offset = check_in_range(offset, "offset", 0, 1, high_open=True)
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios
        self.strides = strides
        self.offset = float(offset)
        self.dtype = np.dtype(dtype)
        self.base_anchors = [
            generate_base_anchors(s, r, self.dtype) for s, r in zip(sizes, aspect_ratios)
        ]

    def __repr__(self):
        return (f"AnchorGenerator(sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, "
                f"strides={self.strides}, offset={self.offset})")

    @property
    def num_levels(self):
        return len(self.sizes)

    def num_anchors_per_location(self):
        """A of each level: ``len(sizes[l]) · len(aspect_ratios[l])``."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def level_strides(self, image_size, feature_sizes):
        """The ``(sy, sx)`` stride of each level, given or ``image_size // feature_size``."""
        image_size = _check_pair(image_size, "image_size")
        feature_sizes = self._check_feature_sizes(feature_sizes)
        if self.strides is not None:
            return list(self.strides)
        strides = [(image_size[0] // h, image_size[1] // w) for h, w in feature_sizes]
        for level, (sy, sx) in enumerate(strides):
            if sy == 0 or sx == 0:
                raise ValueError(
                    f"feature_sizes[{level}]={feature_sizes[level]} is larger than image_size="
                    f"{image_size}: the stride would be 0"
                )
        return strides

    def _check_feature_sizes(self, feature_sizes):
        if not isinstance(feature_sizes, (tuple, list)) or len(feature_sizes) != self.num_levels:
            got = len(feature_sizes) if isinstance(feature_sizes, (tuple, list)) else feature_sizes
            raise ValueError(
                f"feature_sizes must give one (H, W) per level ({self.num_levels}), got {got!r}"
            )
        return [_check_pair(f, f"feature_sizes[{i}]") for i, f in enumerate(feature_sizes)]

    def grid_anchors(self, image_size, feature_sizes):
        """Anchors of each level separately.

        Args:
            image_size (tuple): ``(H, W)`` of the (padded) input image.
            feature_sizes (list): per level, ``(H_l, W_l)`` or the ``(N, H_l, W_l, C)``
                feature map itself.
        Returns:
            list of ndarray[H_l·W_l·A_l, 4]: xyxy anchors in image pixels, in
            (y, x, anchor) order.
        """
        feature_sizes = self._check_feature_sizes(feature_sizes)
        strides = self.level_strides(image_size, feature_sizes)
        anchors = []
        for (height, width), (stride_y, stride_x), base in zip(feature_sizes, strides,
                                                               self.base_anchors):
            shifts_x = (np.arange(width, dtype=self.dtype) + self.offset) * stride_x   # (W_l,)
            shifts_y = (np.arange(height, dtype=self.dtype) + self.offset) * stride_y  # (H_l,)
            shift_y, shift_x = np.meshgrid(shifts_y, shifts_x, indexing="ij")   # (H_l, W_l)
            shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=-1)    # (H_l, W_l, 4)
            level = shifts[:, :, None, :] + base[None, None, :, :]              # (H_l, W_l, A, 4)
            anchors.append(level.reshape(-1, 4))                                # (H_l·W_l·A, 4)
        return anchors

    def __call__(self, image_size, feature_sizes):
        """All anchors of the pyramid, levels concatenated.

        Args:
            image_size (tuple): ``(H, W)`` of the (padded) input image.
            feature_sizes (list): per level, ``(H_l, W_l)`` or the feature map.
        Returns:
            ndarray[sum_l H_l·W_l·A_l, 4]: xyxy anchors (level, y, x, anchor order).
        """
        return np.concatenate(self.grid_anchors(image_size, feature_sizes), axis=0)
