"""U-Net: an encoder-decoder with skip connections (Ronneberger, Fischer and Brox, 2015).

    input (N, H, W, Cin)
      │ DoubleConv(c)      ─────────────── skip 0 ───────────────┐
      │ MaxPool 2 → DoubleConv(2c) ───── skip 1 ─────────┐       │
      │ MaxPool 2 → DoubleConv(4c)  ... (depth levels)   │       │
      │                                                  │       │
      │ up: ConvTranspose 2x2/2 (halves channels) ─ concat(skip) → DoubleConv
      │ 1x1 conv → logits (N, H, W, num_classes)

The encoder sees ever coarser context; the decoder brings the resolution back, and
each skip connection hands it the fine detail of the same scale, which an upsampled
coarse map has lost. That is what lets a U-Net draw sharp masks around small things
such as the strokes of a digit.

``padding="same"`` (the default) keeps every map the size of its input, so the output
is ``(N, H, W, K)`` for ``H`` and ``W`` divisible by ``2**(depth-1)``. ``padding="valid"``
is the paper's version: unpadded 3x3 convolutions shrink each map by 2 pixels per
convolution, and each skip is centre-cropped ("copy and crop") to the decoder's size;
the output is then smaller than the input (see ``UNet.output_size``).
"""
import nn
from nn import Module
from nn._checks import check_choice, check_int

__all__ = ["DoubleConv", "UNet"]


def _norm(kind, channels):
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class DoubleConv(Module):
    """Two 3x3 convolutions, each followed by a normalization and a ReLU.

    Args:
        in_channels (int), out_channels (int).
        padding (str): ``"same"`` (pad 1) or ``"valid"`` (no padding, -2 px per conv).
        norm (str or None): ``"batch"``, ``"group"`` or None.
    """

    def __init__(self, in_channels, out_channels, padding="same", norm="batch"):
        super().__init__()
        pad = 1 if padding == "same" else 0
        bias = norm is None  # a bias before a normalization is cancelled by its mean
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=pad, bias=bias)
        self.norm1 = _norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=pad, bias=bias)
        self.norm2 = _norm(norm, out_channels)

    def forward(self, x):
        x = nn.functional.relu(self.norm1(self.conv1(x)))
        return nn.functional.relu(self.norm2(self.conv2(x)))


def _center_crop(x, height, width):
    """Crop an (N, H, W, C) map to its central (height, width) window ("copy and crop")."""
    top = (x.shape[1] - height) // 2
    left = (x.shape[2] - width) // 2
    return x[:, top:top + height, left:left + width, :]


class UNet(Module):
    """U-Net for per-pixel classification, channels-last.

    Args:
        in_channels (int): Cin of the input image (3 for RGB).
        num_classes (int): K, channels of the output logits.
        base_channels (int): channels of the first level; level ``i`` has ``base · 2**i``.
        depth (int): number of resolution levels (``depth - 1`` poolings), at least 2.
        padding (str): ``"same"`` (default) or ``"valid"`` (the paper's copy-and-crop).
        norm (str or None): ``"batch"`` (default), ``"group"`` or None.

    Shapes:
        input ``(N, H, W, Cin)`` float → logits ``(N, H', W', K)`` with ``H' = H`` for
        "same" padding (``H`` divisible by ``2**(depth-1)``).
    """

    def __init__(self, in_channels, num_classes, base_channels=16, depth=4, padding="same", norm="batch"):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("base_channels", base_channels)):
            check_int(value, name, 1)
        check_int(depth, "depth", 2)
        check_choice(padding, "padding", ("same", "valid"))
        check_choice(norm, "norm", ("batch", "group", None))
        self.in_channels, self.num_classes = in_channels, num_classes
        self.base_channels, self.depth, self.padding, self.norm = base_channels, depth, padding, norm

        widths = [base_channels * 2 ** i for i in range(depth)]
        self.encoder = nn.ModuleList(
            [DoubleConv(in_channels if i == 0 else widths[i - 1], widths[i], padding, norm)
             for i in range(depth)]
        )
        self.pool = nn.MaxPool2d(2)
        # Level i (from the bottom) upsamples widths[i] → widths[i-1] channels, then
        # concatenates the skip (widths[i-1]) and fuses 2·widths[i-1] → widths[i-1].
        self.upsample = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2) for i in range(depth - 1, 0, -1)]
        )
        self.decoder = nn.ModuleList(
            [DoubleConv(2 * widths[i - 1], widths[i - 1], padding, norm) for i in range(depth - 1, 0, -1)]
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, num_classes={self.num_classes}, "
                f"base_channels={self.base_channels}, depth={self.depth}, padding={self.padding!r}, "
                f"norm={self.norm!r}")

    def output_size(self, height, width):
        """Spatial size of the logits for an input of ``(height, width)``."""
        if self.padding == "same":
            return height, width
        h, w = height, width
        for _ in range(self.depth - 1):
            h, w = (h - 4) // 2, (w - 4) // 2
        h, w = h - 4, w - 4
        for _ in range(self.depth - 1):
            h, w = 2 * h - 4, 2 * w - 4
        return h, w

    def forward(self, x):
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"UNet expects input (N, H, W, {self.in_channels}), got shape {tuple(x.shape)}"
            )
        if self.padding == "same":
            multiple = 2 ** (self.depth - 1)
            if x.shape[1] % multiple or x.shape[2] % multiple:
                raise ValueError(
                    f"with padding='same' and depth={self.depth}, H and W must be divisible by "
                    f"{multiple}; got {x.shape[1]}x{x.shape[2]}"
                )
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.upsample, self.decoder):
            x = up(x)
            skip = skips.pop()
            if skip.shape[1:3] != x.shape[1:3]:
                skip = _center_crop(skip, x.shape[1], x.shape[2])
            x = block(nn.concat([skip, x], axis=-1))
        return self.head(x)
