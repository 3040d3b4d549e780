"""The digit segmenter: a U-Net over the segmenter's classes, its inference and evaluation.

``build_model`` makes the U-Net (``segmentation.unet``, or with a ResNet-18 encoder,
``segmentation.resnet_unet``), ``predict`` labels plate crops
(optionally averaging test-time shifts), ``evaluate`` measures pixels (confusion
matrix over the character classes) and plates read exactly (``plates.reading``).
"""
import numpy as np

import nn
from nn.functional.activation import softmax_forward
from plates.classes import (IGNORE_INDEX, SEGMENTER_CHAR, SEGMENTER_CHARACTERS, SEGMENTER_CLASSES,
                            SEGMENTER_DIGITS)
from plates.reading import read_plate, text_to_class_text
from plates.segmenter_data import preprocess
from segmentation.metrics import ConfusionMatrix
from segmentation.resnet_unet import ResNetUNet
from segmentation.unet import UNet

__all__ = ["NUM_CLASSES", "CHARACTER_CLASSES", "CLASS_PRIOR", "build_model", "class_weights",
           "predict", "evaluate", "class_colors"]

NUM_CLASSES = len(SEGMENTER_CLASSES)  # background, ten digits, other character
CHARACTER_CLASSES = SEGMENTER_CHARACTERS  # ids 1..11: the classes the mean IoU is over

# ==================================================================================== model
# Pixel frequencies of the classes in plate crops (measured on the crops at 512 px with
# character-region labels: 89% background, 11% characters spread over 11 classes, the
# same at 32x96 and 48x144; car and plate never occur). With ``prior_init`` the head's
# bias starts at their logarithm, so the first predictions already have the right
# proportions: the network spends no steps learning
# "mostly background" (the prior initialization of Lin et al., 2017, "Focal Loss").
CLASS_PRIOR = np.array([0.89] + [0.11 / 11] * 11)


def build_model(config):
    """The U-Net of ``config`` (seeded by ``config.seed``): ``UNet`` for ``encoder="unet"``,
    ``ResNetUNet`` (a ResNet-18 encoder at ``encoder_width``) for ``encoder="resnet18"``."""
    nn.manual_seed(config.seed)
    if config.encoder == "resnet18":
        model = ResNetUNet(3, NUM_CLASSES, width_multiplier=config.encoder_width)
    else:
        model = UNet(3, NUM_CLASSES, base_channels=config.base_channels, depth=config.depth)
    if config.prior_init:
        model.head.bias.data[...] = np.log(CLASS_PRIOR / CLASS_PRIOR.sum())
    return model


def class_weights(config):
    """Cross-entropy weight per class: 1 for background, ``char_weight`` for characters."""
    weights = np.ones(NUM_CLASSES, np.float32)
    weights[list(CHARACTER_CLASSES)] = config.char_weight
    return weights


SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # test-time shifts (rows, columns)


def predict(model, crops, batch_size=64, tta=False):
    """Class maps of plate crops (evaluation mode, no gradient).

    Args:
        model (UNet): a trained segmenter.
        crops (ndarray[P, h, w, 3] uint8).
        batch_size (int): crops per forward pass.
        tta (bool): test-time augmentation: the class probabilities averaged over the
            crop and its four one-pixel shifts (up, down, left, right; the edge row or
            column repeated), each mapped back before averaging. Five forward passes;
            on the validation plates mean IoU 0.909 -> 0.913 and plates read 91.0% ->
            93.5% (the boundaries of a blob wobble less, fewer neighbours touch).
    Returns:
        ndarray[P, h, w] int64: argmax class per pixel.
    """
    if not isinstance(tta, (bool, np.bool_)):
        raise TypeError(f"tta must be True or False, got {tta!r}")
    was_training = model.training
    model.eval()
    out = np.zeros(crops.shape[:3], np.int64)
    height, width = crops.shape[1:3]
    with nn.no_grad():
        for start in range(0, len(crops), batch_size):
            batch = crops[start:start + batch_size]
            if not tta:
                out[start:start + batch_size] = model(nn.Tensor(preprocess(batch))).data.argmax(-1)
                continue
            padded = np.pad(batch, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
            total = 0.0
            for dy, dx in SHIFTS:
                # content moved by (dy, dx): shifted[y, x] = crop[y - dy, x - dx]
                moved = padded[:, 1 - dy:1 - dy + height, 1 - dx:1 - dx + width]
                logits = model(nn.Tensor(preprocess(np.ascontiguousarray(moved)))).data
                probs = softmax_forward(logits, axis=-1)
                # and back: aligned[y, x] = probs[y + dy, x + dx]
                probs = np.pad(probs, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
                total = total + probs[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
            out[start:start + batch_size] = total.argmax(axis=-1)
    model.train(was_training)
    return out


def evaluate(model, crops, masks, texts, batch_size=64, min_area=1, tta=False):
    """Pixel metrics and plate reading of a set of crops.

    Args:
        model (UNet): the segmenter.
        crops (ndarray[P, h, w, 3] uint8), masks (ndarray[P, h, w] uint8), texts (list[str]):
            the plates (``load_crops``).
        batch_size (int): crops per forward pass.
        min_area (int): ``read_plate``'s noise filter, smaller blobs are dropped (the
            trainer passes ``TrainConfig.read_min_area``).
        tta (bool): test-time shifts (``predict``).
    Returns:
        dict: ``mean_iou`` over the character classes 1..11, ``iou_per_class`` (list of
        12, NaN where absent), ``pixel_accuracy``, ``read_exact`` (fraction of plates whose
        ``read_plate(pred, min_area=min_area)["text"]`` equals ``text_to_class_text(text)``),
        ``plates``, and ``predictions`` ndarray[P, h, w] and ``reads`` list[str].
    """
    predictions = predict(model, crops, batch_size, tta=tta)
    matrix = ConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE_INDEX)
    matrix.update(predictions, masks)
    reads = [read_plate(p, min_area=min_area)["text"] for p in predictions]
    exact = [r == text_to_class_text(t) for r, t in zip(reads, texts)]
    return {
        "mean_iou": matrix.mean_iou(classes=CHARACTER_CLASSES),
        "iou_per_class": [float(v) for v in matrix.iou_per_class()],
        "pixel_accuracy": matrix.pixel_accuracy(),
        "read_exact": float(np.mean(exact)) if exact else float("nan"),
        "plates": len(texts),
        "predictions": predictions,
        "reads": reads,
    }


def class_colors():
    """(256, 3) float RGB for class ids: background black, digits a rainbow (0 red ... 9
    violet), other characters white, ignore dark grey."""
    from matplotlib import colormaps

    colors = np.zeros((256, 3))
    colors[list(SEGMENTER_DIGITS)] = colormaps["hsv"](np.linspace(0, 0.8, 10))[:, :3]
    colors[SEGMENTER_CHAR] = 1.0
    colors[IGNORE_INDEX] = 0.3
    return colors


