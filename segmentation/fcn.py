"""Fully convolutional networks (Long, Shelhamer and Darrell, 2015).

Two ideas of the lecture live here.

1. **Convolutionize.** A classifier ends with dense layers over a flattened
   ``(h, w, C)`` feature map. A dense layer is a convolution whose kernel covers the
   whole map: the weight ``(h·w·C, F)`` reshaped to ``(h, w, C, F)`` (channels-last
   flattening order is exactly the HWIO kernel order) gives the same number on an
   ``h x w`` input, and *slides* on a bigger one — one class score per window, a
   coarse segmentation map, computed in one pass. Later dense layers become 1x1
   convolutions. ``convolutionize(classifier)`` does this to a ``SmallClassifier``.

2. **FCN-8s.** Coarse scores (stride 32) are upsampled by learnable transposed
   convolutions (initialised to bilinear interpolation) and summed with scores
   predicted from finer feature maps (strides 16 and 8) before the last 8x
   upsampling: "deep, coarse, semantic information and shallow, fine, appearance
   information" fused.
"""
import numpy as np

import nn
from nn import Module
from nn._checks import check_int

__all__ = ["SmallClassifier", "ConvolutionizedClassifier", "convolutionize", "bilinear_kernel", "FCN8s"]


def _conv_block(in_channels, out_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
    )


class SmallClassifier(Module):
    """A VGG-like classifier of ``(N, S, S, Cin)`` images: convolutions, then dense layers.

    Args:
        in_channels (int): Cin.
        num_classes (int): K.
        input_size (int): S, side of the training images (divisible by 8).
        width (int): channels of the first block (doubled by each of 3 blocks).
        hidden (int): units of the hidden dense layer.

    Shapes:
        ``(N, S, S, Cin)`` → logits ``(N, K)``.
    """

    def __init__(self, in_channels, num_classes, input_size=32, width=16, hidden=64):
        super().__init__()
        check_int(input_size, "input_size", 8)
        if input_size % 8:
            raise ValueError(f"input_size must be divisible by 8, got {input_size}")
        self.features = nn.Sequential(
            _conv_block(in_channels, width), _conv_block(width, 2 * width), _conv_block(2 * width, 4 * width)
        )
        self.feature_size = input_size // 8
        self.feature_channels = 4 * width
        self.fc1 = nn.Linear(self.feature_size ** 2 * self.feature_channels, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        f = self.features(x)  # (N, S/8, S/8, 4·width)
        if f.shape[1:3] != (self.feature_size, self.feature_size):
            raise ValueError(
                f"SmallClassifier was built for {8 * self.feature_size}x{8 * self.feature_size} inputs, "
                f"got {x.shape[1]}x{x.shape[2]}; convolutionize it to run on other sizes"
            )
        f = f.reshape(f.shape[0], -1)  # (N, h·w·C) in channels-last order
        return self.fc2(nn.functional.relu(self.fc1(f)))


class ConvolutionizedClassifier(Module):
    """The same weights as a ``SmallClassifier``, with its dense layers as convolutions.

    Shapes:
        ``(N, H, W, Cin)`` with ``H, W >= S`` → score map ``(N, H/8 - h + 1, W/8 - w + 1, K)``
        where ``h = w = S/8``: one score vector per ``S x S`` window, stride 8.
    """

    def __init__(self, features, fc1_conv, fc2_conv):
        super().__init__()
        self.features = features
        self.fc1 = fc1_conv
        self.fc2 = fc2_conv

    def forward(self, x):
        return self.fc2(nn.functional.relu(self.fc1(self.features(x))))


def convolutionize(classifier):
    """Turn a ``SmallClassifier``'s dense layers into convolutions (weights shared, not copied).

    ``fc1``'s weight ``(h·w·C, F)`` becomes an ``h x w`` kernel ``(h, w, C, F)``; ``fc2``'s
    ``(F, K)`` becomes a 1x1 kernel ``(1, 1, F, K)``. On an ``S x S`` image the result
    equals the classifier's logits; on a larger image it is a map of them.

    Args:
        classifier (SmallClassifier): a (trained) classifier.
    Returns:
        ConvolutionizedClassifier.
    """
    if not isinstance(classifier, SmallClassifier):
        raise TypeError(f"classifier must be a SmallClassifier, got {type(classifier).__name__}")
    h = w = classifier.feature_size
    c = classifier.feature_channels
    hidden = classifier.fc1.weight.shape[1]
    classes = classifier.fc2.weight.shape[1]
    fc1 = nn.Conv2d(c, hidden, (h, w))
    fc1.weight = nn.Parameter(classifier.fc1.weight.data.reshape(h, w, c, hidden).copy())
    fc1.bias = nn.Parameter(classifier.fc1.bias.data.copy())
    fc2 = nn.Conv2d(hidden, classes, 1)
    fc2.weight = nn.Parameter(classifier.fc2.weight.data.reshape(1, 1, hidden, classes).copy())
    fc2.bias = nn.Parameter(classifier.fc2.bias.data.copy())
    return ConvolutionizedClassifier(classifier.features, fc1, fc2)


def bilinear_kernel(kernel_size, in_channels, out_channels=None, dtype=np.float32):
    """A transposed-convolution weight that performs bilinear upsampling per channel.

    Args:
        kernel_size (int): k (use ``2·factor`` for an upsampling by ``factor``, stride ``factor``,
            padding ``factor // 2``).
        in_channels (int): C; channel i maps to channel i only.
    Returns:
        ndarray[k, k, C, C]: the ``(kh, kw, Cin, Cout)`` weight of ``ConvTranspose2d``.
    """
    out_channels = in_channels if out_channels is None else out_channels
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    grid = np.arange(kernel_size)
    filt = 1 - np.abs(grid - center) / factor
    kernel2d = np.outer(filt, filt)
    weight = np.zeros((kernel_size, kernel_size, in_channels, out_channels), dtype=dtype)
    channels = np.arange(min(in_channels, out_channels))
    weight[:, :, channels, channels] = kernel2d[:, :, None]
    return weight


class FCN8s(Module):
    """A small FCN-8s: a 5-block encoder, scores at strides 8, 16, 32 fused by upsampling.

    Args:
        in_channels (int): Cin.
        num_classes (int): K.
        width (int): channels of the first block (doubled per block, capped at 8·width).

    Shapes:
        ``(N, H, W, Cin)`` with H, W divisible by 32 → logits ``(N, H, W, K)``.
    """

    def __init__(self, in_channels, num_classes, width=16):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        blocks, previous = [], in_channels
        for w in widths:
            blocks.append(_conv_block(previous, w))
            previous = w
        self.block1, self.block2, self.block3, self.block4, self.block5 = blocks
        self.score32 = nn.Conv2d(widths[4], num_classes, 1)
        self.score16 = nn.Conv2d(widths[3], num_classes, 1)
        self.score8 = nn.Conv2d(widths[2], num_classes, 1)
        self.up32 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
        self.up16 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
        self.up8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, padding=4, bias=False)
        for up in (self.up32, self.up16, self.up8):
            k = up.weight.shape[0]
            up.weight.data[...] = bilinear_kernel(k, num_classes, dtype=up.weight.dtype)
        self.num_classes = num_classes

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] % 32 or x.shape[2] % 32:
            raise ValueError(f"FCN8s expects (N, H, W, C) with H and W divisible by 32, got {tuple(x.shape)}")
        f8 = self.block3(self.block2(self.block1(x)))  # stride 8
        f16 = self.block4(f8)                          # stride 16
        f32 = self.block5(f16)                         # stride 32
        s = self.up32(self.score32(f32)) + self.score16(f16)  # coarse scores refined at stride 16
        s = self.up16(s) + self.score8(f8)                     # and at stride 8
        return self.up8(s)                                     # back to the input's resolution
