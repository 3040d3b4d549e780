"""Transforms on ``(image, target)`` that keep the image, boxes and masks consistent.

A detection or segmentation sample is an image and a target dict (``VOCDataset``'s
items): ``image`` (H, W, C) uint8 or float, ``target["boxes"]`` (G, 4) continuous xyxy,
per-object arrays (``labels``, ``difficult``, ``iscrowd``, ``area``, ``scores`` and the
(G, H, W) bool ``instance_masks``) and the (H, W) uint8 class map ``masks``. A geometric
transform moves all of them together; a transform that drops objects (``RandomCrop``)
drops the same rows from every per-object array. Other keys pass through untouched.

Resampling: images bilinear (Pillow, which low-pass filters when shrinking), masks
nearest (a mask value must stay a class id; an average of ids means nothing). Nearest
sampling reads source pixel ``floor((j + 0.5) * in / out)`` for output pixel ``j``
(pixel centres aligned, PyTorch's ``mode="nearest-exact"``), so the tight box of a
resized object mask stays within a pixel of the resized box. The box itself is the
geometric truth (``x * W'/W``): it is not re-derived from the mask.
``tests/detection/test_transforms.py`` checks this property (±1 px) for one resize
(plus crops, flips, colour) on any shape when enlarging, on blobs (rectangles,
ellipses of 8 px and more) for any aspect-keeping shrink, and on rectangles for any
resize. Two limits of nearest sampling, both tested: shrinking can skip the one-pixel
tip of a sharp corner (a triangle's apex), leaving the mask several pixels short of
the box; and chained resizes compound their half-pixel errors (resize once).

Randomness: each random transform takes ``generator``: a ``np.random.Generator``, an
int seed (a private generator is made once), or None (``nn``'s default generator at
call time, so ``nn.manual_seed`` makes a pipeline reproducible).

Text warning: ``RandomHorizontalFlip`` mirrors characters: a mirrored "2" or "7" is
not a digit, and reading order reverses. It is fine for cars and generic objects but
WRONG for license plates and their characters: the plate pipeline must not use it.
"""
from numbers import Integral, Real

import numpy as np
from PIL import Image

from nn.random import get_generator

__all__ = [
    "PER_OBJECT_KEYS", "Compose", "Resize", "RandomScale", "RandomCrop", "RandomHorizontalFlip",
    "ColorJitter", "Normalize", "ToFloat", "resize", "crop", "masks_to_boxes",
]

# Target keys whose first axis runs over the G objects (filtered together).
PER_OBJECT_KEYS = ("boxes", "labels", "difficult", "iscrowd", "area", "scores", "instance_masks")


# --------------------------------------------------------------------------- checks
def _check_sample(image, target, name):
    """Validate ``(image, target)`` before a transform touches them."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[0] == 0 \
            or image.shape[1] == 0:
        raise ValueError(f"{name}: image must be an ndarray of shape (H, W, C) with H, W > 0, got "
                         + (str(image.shape) if isinstance(image, np.ndarray)
                            else type(image).__name__))
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"{name}: image must be uint8 or float, got {image.dtype}")
    if not isinstance(target, dict):
        raise TypeError(f"{name}: target must be a dict, got {type(target).__name__}")
    height, width = image.shape[:2]
    boxes = target.get("boxes")
    if boxes is not None:
        boxes = np.asarray(boxes)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.issubdtype(boxes.dtype, np.number):
            raise ValueError(f"{name}: target['boxes'] must be a numeric (G, 4) array, "
                             f"got shape {boxes.shape}")
        if not np.isfinite(boxes).all():
            raise ValueError(f"{name}: target['boxes'] must be finite")
        count = boxes.shape[0]
        for key in PER_OBJECT_KEYS:
            if key in target and key != "boxes" and len(target[key]) != count:
                raise ValueError(f"{name}: target[{key!r}] has {len(target[key])} rows but "
                                 f"target['boxes'] has {count}")
    masks = target.get("masks")
    if masks is not None and (not isinstance(masks, np.ndarray)
                              or masks.shape != (height, width)):
        raise ValueError(f"{name}: target['masks'] must be an (H, W) = ({height}, {width}) "
                         f"array, got {getattr(masks, 'shape', type(masks).__name__)}")
    instance_masks = target.get("instance_masks")
    if instance_masks is not None and (not isinstance(instance_masks, np.ndarray)
                                       or instance_masks.ndim != 3
                                       or instance_masks.shape[1:] != (height, width)):
        raise ValueError(f"{name}: target['instance_masks'] must be a (G, H, W) = "
                         f"(G, {height}, {width}) array, got "
                         f"{getattr(instance_masks, 'shape', type(instance_masks).__name__)}")


def _generator(generator):
    """Resolve the ``generator`` argument once, at construction (module docstring)."""
    if generator is None or isinstance(generator, np.random.Generator):
        return generator
    return get_generator(generator)  # an int seed -> a private generator, made once


def _size_pair(size, name):
    if isinstance(size, Integral) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(
            isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"{name} must be a positive int or a pair (height, width) of positive "
                         f"ints, got {size!r}")
    return int(size[0]), int(size[1])


def _select_objects(target, keep):
    """A copy of ``target`` keeping the objects where ``keep`` (bool (G,)) is True."""
    out = dict(target)
    for key in PER_OBJECT_KEYS:
        if key in out:
            out[key] = np.asarray(out[key])[keep]
    return out


# --------------------------------------------------------------------------- geometry
def masks_to_boxes(masks):
    """Tight continuous xyxy boxes of binary masks (a pixel ``(y, x)`` spans ``[x, x+1)``).

    Args:
        masks (ndarray[G, H, W]): bool (or 0/1) masks.

    Returns:
        ndarray[G, 4]: float32 boxes; an empty mask gives ``(0, 0, 0, 0)``.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (G, H, W), got shape {masks.shape}")
    count, height, width = masks.shape
    columns = masks.any(axis=1)  # (G, W): does column x hold a pixel of object g
    rows = masks.any(axis=2)  # (G, H)
    nonempty = columns.any(axis=1)
    x1 = columns.argmax(axis=1)
    x2 = width - columns[:, ::-1].argmax(axis=1)
    y1 = rows.argmax(axis=1)
    y2 = height - rows[:, ::-1].argmax(axis=1)
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)  # (G, 4)
    boxes[~nonempty] = 0
    return boxes.reshape(count, 4)


def _nearest_indices(size_in, size_out):
    """Source index ``floor((j + 0.5) * in / out)`` of each output pixel ``j`` (centres aligned)."""
    index = np.floor((np.arange(size_out) + 0.5) * (size_in / size_out)).astype(np.int64)
    return np.minimum(index, size_in - 1)


def _resize_image(image, height, width):
    """Bilinear resize with Pillow; uint8 stays uint8, float stays its dtype."""
    if image.shape[:2] == (height, width):
        return image.copy()
    bilinear = Image.Resampling.BILINEAR
    if image.dtype == np.uint8 and image.shape[2] == 3:
        return np.asarray(Image.fromarray(image).resize((width, height), bilinear))
    # One channel at a time in mode "L" (uint8) or "F" (float32): any channel count.
    channels = []
    for c in range(image.shape[2]):
        plane = image[..., c] if image.dtype == np.uint8 else image[..., c].astype(np.float32)
        channels.append(np.asarray(Image.fromarray(plane).resize((width, height), bilinear)))
    return np.stack(channels, axis=-1).astype(image.dtype, copy=False)  # (H', W', C)


def _update_area(target):
    """Recompute ``area`` (if present) after a geometric change: mask pixels or box area."""
    if "area" not in target:
        return target
    if "instance_masks" in target:
        target["area"] = target["instance_masks"].sum(axis=(1, 2)).astype(np.float32)
    else:
        boxes = target["boxes"]
        target["area"] = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(
            np.float32)
    return target


def resize(image, target, size):
    """Resize a sample to ``size = (height, width)``: image bilinear, masks nearest.

    Boxes scale by ``(W'/W, H'/H)``: ``x' = x * W'/W``, ``y' = y * H'/H``.

    Args:
        image (ndarray[H, W, C]): uint8 or float.
        target (dict): see the module docstring.
        size (tuple[int, int]): output (height, width).

    Returns:
        tuple: ``(image (H', W', C), target)``, a new target dict.
    """
    _check_sample(image, target, "resize")
    new_height, new_width = _size_pair(size, "size")
    height, width = image.shape[:2]
    out = dict(target)
    out_image = _resize_image(image, new_height, new_width)
    if "boxes" in out:
        scale = np.array([new_width / width, new_height / height] * 2)
        boxes = np.asarray(out["boxes"])
        out["boxes"] = (boxes * scale).astype(boxes.dtype if boxes.dtype.kind == "f"
                                              else np.float32)
    rows, cols = _nearest_indices(height, new_height), _nearest_indices(width, new_width)
    if "masks" in out:
        out["masks"] = out["masks"][rows[:, None], cols[None, :]]  # (H', W')
    if "instance_masks" in out:
        out["instance_masks"] = out["instance_masks"][:, rows[:, None], cols[None, :]]
    return out_image, _update_area(out)


def crop(image, target, top, left, height, width, min_visible=0.0, fill=0, mask_fill=255):
    """Cut the window ``[top, top + height) x [left, left + width)`` out of a sample.

    The window may reach outside the image; outside pixels get ``fill`` (image),
    ``mask_fill`` (class map; 255 = ignore: no class is known there) and False
    (instance masks).

    Boxes move by ``(-left, -top)`` and are clipped to the window. An object cut by the
    window keeps only its visible part: with instance masks its box becomes the tight
    box of its visible pixels (clipping the box alone would leave, say, an empty corner
    of a diagonal object inside it), intersected with the clipped box. The visible
    fraction is visible / total mask pixels (box areas without instance masks); objects
    below ``min_visible``, with an empty clipped box or no visible pixel are dropped.

    Returns:
        tuple: ``(image (height, width, C), target)``.
    """
    _check_sample(image, target, "crop")
    for name, value in (("top", top), ("left", left), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"crop: {name} must be an int, got {value!r}")
    if height <= 0 or width <= 0:
        raise ValueError(f"crop: height and width must be positive, got {height}x{width}")
    if not isinstance(min_visible, Real) or not 0 <= min_visible <= 1:
        raise ValueError(f"crop: min_visible must be in [0, 1], got {min_visible!r}")
    image_height, image_width = image.shape[:2]
    # Overlap of the window with the image, in image and in window coordinates.
    y0, y1 = max(top, 0), min(top + height, image_height)
    x0, x1 = max(left, 0), min(left + width, image_width)
    inner = (slice(max(y0 - top, 0), max(y1 - top, 0)), slice(max(x0 - left, 0), max(x1 - left, 0)))
    source = (slice(y0, max(y1, y0)), slice(x0, max(x1, x0)))

    out_image = np.full((height, width, image.shape[2]), fill, dtype=image.dtype)
    out_image[inner] = image[source]
    out = dict(target)
    if "masks" in out:
        masks = np.full((height, width), mask_fill, dtype=out["masks"].dtype)
        masks[inner] = out["masks"][source]
        out["masks"] = masks
    if "boxes" not in out:
        if "instance_masks" in out:
            instance = np.zeros((len(out["instance_masks"]), height, width), dtype=bool)
            instance[(slice(None),) + inner] = out["instance_masks"][(slice(None),) + source]
            out["instance_masks"] = instance
        return out_image, out

    boxes = np.asarray(out["boxes"], dtype=np.float64)
    shifted = boxes - np.array([left, top, left, top], dtype=np.float64)
    clipped = shifted.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    clipped_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    if "instance_masks" in out:
        full = out["instance_masks"]
        instance = np.zeros((len(full), height, width), dtype=bool)
        instance[(slice(None),) + inner] = full[(slice(None),) + source]
        total = full.sum(axis=(1, 2))  # (G,) pixels of each object in the whole image
        visible = instance.sum(axis=(1, 2))  # (G,) pixels inside the window
        fraction = visible / np.maximum(total, 1)
        keep &= (visible > 0) & (fraction >= min_visible)
        # Objects the window cuts: shrink the box to the visible pixels.
        cut = np.any(shifted != clipped, axis=1) | (visible < total)
        tight = masks_to_boxes(instance).astype(np.float64)
        shrunk = np.concatenate([np.maximum(clipped[:, :2], tight[:, :2]),
                                 np.minimum(clipped[:, 2:], tight[:, 2:])], axis=1)  # (G, 4)
        clipped = np.where((cut & (visible > 0))[:, None], shrunk, clipped)
        out["instance_masks"] = instance
    else:
        full_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep &= clipped_area >= min_visible * full_area
    box_dtype = out["boxes"].dtype if np.asarray(out["boxes"]).dtype.kind == "f" else np.float32
    out["boxes"] = clipped.astype(box_dtype)
    return out_image, _update_area(_select_objects(out, keep))


# --------------------------------------------------------------------------- transforms
class Compose:
    """Apply transforms in order: ``Compose([RandomScale(0.8, 1.2), RandomCrop(256)])``."""

    def __init__(self, transforms):
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"transforms[{i}] must be callable, got {type(t).__name__}")
        self.transforms = transforms

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class Resize:
    """Resize to a fixed size.

    Args:
        size (int | tuple[int, int]): ``(height, width)``; an int sets the *shorter*
            side to ``size`` and keeps the aspect ratio (torchvision's convention).
    """

    def __init__(self, size):
        if isinstance(size, Integral) and not isinstance(size, bool):
            if size <= 0:
                raise ValueError(f"size must be positive, got {size}")
            self.size = int(size)
        else:
            self.size = _size_pair(size, "size")

    def output_size(self, height, width):
        if isinstance(self.size, tuple):
            return self.size
        scale = self.size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def __call__(self, image, target):
        _check_sample(image, target, "Resize")
        return resize(image, target, self.output_size(*image.shape[:2]))

    def __repr__(self):
        return f"Resize(size={self.size})"


class RandomScale:
    """Resize by a factor drawn uniformly from ``[min_scale, max_scale]`` (both axes).

    Args:
        min_scale (float): > 0.
        max_scale (float): >= min_scale.
        generator: see the module docstring.
    """

    def __init__(self, min_scale, max_scale, generator=None):
        if not (isinstance(min_scale, Real) and isinstance(max_scale, Real)
                and 0 < min_scale <= max_scale and np.isfinite(max_scale)):
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale!r}, {max_scale!r}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.generator = _generator(generator)

    def __call__(self, image, target):
        _check_sample(image, target, "RandomScale")
        scale = get_generator(self.generator).uniform(self.min_scale, self.max_scale)
        height, width = image.shape[:2]
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        return resize(image, target, size)

    def __repr__(self):
        return f"RandomScale({self.min_scale}, {self.max_scale})"


class RandomCrop:
    """Cut a random ``size`` window; objects mostly cut away are dropped (see ``crop``).

    An image smaller than the window is padded at the bottom and right (image ``fill``,
    class map 255 = ignore) so every window is fully defined.

    Args:
        size (int | tuple[int, int]): window ``(height, width)``.
        min_visible (float): keep an object when at least this fraction of it stays.
        fill (int | float): image value of padded pixels.
        generator: see the module docstring.
    """

    def __init__(self, size, min_visible=0.5, fill=0, generator=None):
        self.size = _size_pair(size, "size")
        if not isinstance(min_visible, Real) or not 0 <= min_visible <= 1:
            raise ValueError(f"min_visible must be in [0, 1], got {min_visible!r}")
        self.min_visible = float(min_visible)
        self.fill = fill
        self.generator = _generator(generator)

    def __call__(self, image, target):
        _check_sample(image, target, "RandomCrop")
        rng = get_generator(self.generator)
        height, width = self.size
        top = int(rng.integers(0, max(image.shape[0] - height, 0) + 1))
        left = int(rng.integers(0, max(image.shape[1] - width, 0) + 1))
        return crop(image, target, top, left, height, width, self.min_visible, self.fill)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, min_visible={self.min_visible})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``: ``x1' = W - x2``, ``x2' = W - x1``.

    WRONG FOR TEXT: a mirrored character is not a character (a mirrored "7" is no
    digit) and the reading order reverses. Use it for cars, never in the plate or
    digit pipeline.

    Args:
        p (float): flip probability in [0, 1].
        generator: see the module docstring.
    """

    def __init__(self, p=0.5, generator=None):
        if not isinstance(p, Real) or not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.generator = _generator(generator)

    def __call__(self, image, target):
        _check_sample(image, target, "RandomHorizontalFlip")
        if get_generator(self.generator).random() >= self.p:
            return image, target
        width = image.shape[1]
        out = dict(target)
        if "boxes" in out:
            boxes = np.asarray(out["boxes"])
            out["boxes"] = np.stack([width - boxes[:, 2], boxes[:, 1],
                                     width - boxes[:, 0], boxes[:, 3]], axis=1).astype(boxes.dtype)
        if "masks" in out:
            out["masks"] = out["masks"][:, ::-1].copy()
        if "instance_masks" in out:
            out["instance_masks"] = out["instance_masks"][:, :, ::-1].copy()
        return image[:, ::-1].copy(), out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Random brightness, contrast, saturation and hue; the target is unchanged.

    Factors are drawn from ``[max(0, 1 - b), 1 + b]`` (brightness ``b``, likewise
    contrast and saturation) and applied in this fixed order (torchvision shuffles it):

        brightness:  x <- f * x
        contrast:    x <- f * x + (1 - f) * mean(gray(x))
        saturation:  x <- f * x + (1 - f) * gray(x),   gray = 0.299 R + 0.587 G + 0.114 B
        hue:         rotate the (I, Q) chroma plane of YIQ by 2*pi*h, h in [-hue, hue]

    The YIQ rotation is a linear stand-in for an HSV hue shift: one 3x3 matrix per
    image instead of a per-pixel HSV round trip.

    Args:
        brightness, contrast, saturation (float): >= 0.
        hue (float): in [0, 0.5].
        generator: see the module docstring.

    Image uint8 stays uint8 (rounded, clipped to 0..255); float images are taken in
    [0, 1] and clipped there.
    """

    _RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                            [0.596, -0.274, -0.322],
                            [0.211, -0.523, 0.312]])

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, generator=None):
        for name, value in (("brightness", brightness), ("contrast", contrast),
                            ("saturation", saturation)):
            if not isinstance(value, Real) or not 0 <= value < np.inf:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if not isinstance(hue, Real) or not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue!r}")
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)
        self.generator = _generator(generator)

    def __call__(self, image, target):
        _check_sample(image, target, "ColorJitter")
        if image.shape[2] != 3:
            raise ValueError(f"ColorJitter: image must have 3 channels, got {image.shape[2]}")
        rng = get_generator(self.generator)
        # Draw all four factors every call so the random stream does not depend on values.
        factors = [rng.uniform(max(0.0, 1 - v), 1 + v) for v in
                   (self.brightness, self.contrast, self.saturation)]
        angle = 2 * np.pi * rng.uniform(-self.hue, self.hue)
        peak = 255.0 if image.dtype == np.uint8 else 1.0
        x = image.astype(np.float32)
        gray_weights = self._RGB_TO_YIQ[0].astype(np.float32)
        x = x * factors[0]
        x = factors[1] * x + (1 - factors[1]) * float((x @ gray_weights).mean())
        x = factors[2] * x + (1 - factors[2]) * (x @ gray_weights)[..., None]
        if angle != 0.0:
            cos, sin = np.cos(angle), np.sin(angle)
            rotation = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
            matrix = np.linalg.inv(self._RGB_TO_YIQ) @ rotation @ self._RGB_TO_YIQ  # RGB -> RGB
            x = x @ matrix.T.astype(np.float32)
        x = np.clip(x, 0, peak)
        if image.dtype == np.uint8:
            return np.rint(x).astype(np.uint8), target
        return x.astype(image.dtype), target

    def __repr__(self):
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue})")


class ToFloat:
    """uint8 image -> float32 in [0, 1] (``x / 255``); a float image passes unchanged."""

    def __call__(self, image, target):
        _check_sample(image, target, "ToFloat")
        if image.dtype == np.uint8:
            return image.astype(np.float32) / np.float32(255), target
        return image, target

    def __repr__(self):
        return "ToFloat()"


class Normalize:
    """``(x - mean) / std`` per channel, as float32; a uint8 image is first scaled to [0, 1].

    Args:
        mean (float | sequence[float]): per-channel mean, in [0, 1] units.
        std (float | sequence[float]): per-channel standard deviation, > 0.
    """

    def __init__(self, mean, std):
        mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if mean.ndim != 1 or std.ndim != 1 or not np.isfinite(mean).all() \
                or not np.isfinite(std).all():
            raise ValueError(f"mean and std must be finite numbers or 1-D sequences, "
                             f"got {mean!r}, {std!r}")
        if (std <= 0).any():
            raise ValueError(f"std must be > 0, got {std.tolist()}")
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)

    def __call__(self, image, target):
        _check_sample(image, target, "Normalize")
        channels = image.shape[2]
        for name, value in (("mean", self.mean), ("std", self.std)):
            if len(value) not in (1, channels):
                raise ValueError(f"Normalize: {name} has {len(value)} values for an image "
                                 f"with {channels} channels")
        x = image.astype(np.float32)
        if image.dtype == np.uint8:
            x /= np.float32(255)
        return (x - self.mean) / self.std, target

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"
