"""A U-Net whose encoder is ResNet-18 (He, Zhang, Ren and Sun, 2016; Ronneberger et al., 2015).

The encoder is ResNet-18's body, four stages of two basic blocks (``[2, 2, 2, 2]``,
64, 128, 256, 512 channels times ``width_multiplier``); the decoder is the U-Net's:
at each level a 2x2/2 transposed convolution, the encoder's map of that scale
concatenated (the skip), two 3x3 convolutions; a 1x1 convolution gives the logits::

    input (N, H, W, Cin)
      │ stem: conv 3x3/1, BN, ReLU            (stride 1, w0 channels)
      │ stage 1: 2 basic blocks               (stride 1, w0) ──── skip 0 ─────────┐
      │ stage 2: 2 basic blocks, first /2     (stride 2, w1) ── skip 1 ───────┐   │
      │ stage 3: 2 basic blocks, first /2     (stride 4, w2) ─ skip 2 ──┐     │   │
      │ stage 4: 2 basic blocks, first /2     (stride 8, w3)            │     │   │
      │ up: ConvTranspose 2x2/2 (w3 → w2) ─ concat(skip 2) → DoubleConv(2·w2 → w2)
      │ up: ConvTranspose 2x2/2 (w2 → w1) ─ concat(skip 1) → DoubleConv(2·w1 → w1)
      │ up: ConvTranspose 2x2/2 (w1 → w0) ─ concat(skip 0) → DoubleConv(2·w0 → w0)
      │ 1x1 conv → logits (N, H, W, num_classes)

**The stem, adapted to small inputs.** ImageNet's ResNet-18 starts with a 7x7/2
convolution and a 3x3/2 max-pool: its first block sees the image at stride 4 and its
last at stride 32. A plate crop is 40 x 120 pixels whose characters are separated by
gaps of a pixel or two; at stride 4 such a gap is gone before the first residual
block, and at stride 32 the crop would be 1.25 pixels high.
So the stem here is one 3x3 convolution at stride 1 and there is no max-pool (the
CIFAR-10 ResNets of the same paper, Sec. 4.2, start the same way on 32 x 32 images):
the four stages work at strides 1, 2, 4 and 8, the four resolution levels of a
depth-4 U-Net, and ``H`` and ``W`` must be divisible by 8 (40 x 120 gives a 5 x 15
bottom map). The rest is ResNet-18 unchanged: the first block of stages 2-4 halves
the resolution with a stride-2 3x3 convolution and a 1x1/2 projection shortcut.

The width rule is ``detection.backbones.resnet18``'s: ``max(8, round(c · width_multiplier))``
for ``c`` in 64, 128, 256, 512.
"""
import nn
from detection.backbones import BasicBlock
from nn import Module
from nn._checks import check_int, check_positive
from segmentation.unet import DoubleConv

__all__ = ["RESNET18_WIDTHS", "resnet18_widths", "ResNetUNet"]

RESNET18_WIDTHS = (64, 128, 256, 512)
STAGE_BLOCKS = (2, 2, 2, 2)
STAGE_STRIDES = (1, 2, 2, 2)  # stages at strides 1, 2, 4, 8 of the input


def resnet18_widths(width_multiplier=1.0):
    """Channels of the four stages: ``max(8, round(c · width_multiplier))``, c = 64..512."""
    check_positive(width_multiplier, "width_multiplier")
    return tuple(max(8, int(round(c * width_multiplier))) for c in RESNET18_WIDTHS)


class ResNetUNet(Module):
    """U-Net with a ResNet-18 encoder (module docstring), channels-last.

    Args:
        in_channels (int): Cin of the input image (3 for RGB).
        num_classes (int): K, channels of the output logits.
        width_multiplier (float): scales ResNet-18's 64, 128, 256, 512 channels.

    Attributes:
        widths (tuple of 4 int): channels of the stages (and of the decoder levels).
        multiple (int): 8; input heights and widths must be divisible by it.

    Shapes:
        input ``(N, H, W, Cin)`` float, ``H`` and ``W`` divisible by 8 → logits
        ``(N, H, W, K)``.
    """

    multiple = 2 ** (len(STAGE_BLOCKS) - 1)

    def __init__(self, in_channels, num_classes, width_multiplier=1.0):
        super().__init__()
        check_int(in_channels, "in_channels", 1)
        check_int(num_classes, "num_classes", 1)
        self.widths = resnet18_widths(width_multiplier)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.width_multiplier = width_multiplier
        w0 = self.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(w0), nn.ReLU())
        stages, previous = [], w0
        for count, width, stride in zip(STAGE_BLOCKS, self.widths, STAGE_STRIDES):
            blocks = [BasicBlock(previous, width, stride=stride)]
            blocks += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            previous = width
        self.encoder = nn.ModuleList(stages)
        # From the bottom: level i upsamples widths[i] → widths[i-1], concatenates the
        # skip of stage i-1 (widths[i-1]) and fuses 2·widths[i-1] → widths[i-1].
        levels = range(len(self.widths) - 1, 0, -1)
        self.upsample = nn.ModuleList(
            [nn.ConvTranspose2d(self.widths[i], self.widths[i - 1], 2, stride=2) for i in levels])
        self.decoder = nn.ModuleList(
            [DoubleConv(2 * self.widths[i - 1], self.widths[i - 1]) for i in levels])
        self.head = nn.Conv2d(w0, num_classes, 1)

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, num_classes={self.num_classes}, "
                f"width_multiplier={self.width_multiplier}, widths={self.widths}")

    def forward(self, x):
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"ResNetUNet expects input (N, H, W, {self.in_channels}), got "
                             f"shape {tuple(x.shape)}")
        if x.shape[1] % self.multiple or x.shape[2] % self.multiple:
            raise ValueError(f"ResNetUNet needs H and W divisible by {self.multiple} (stages "
                             f"at strides 1, 2, 4, 8); got {x.shape[1]}x{x.shape[2]}")
        x = self.stem(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)  # strides 1, 2, 4, 8
        x = skips.pop()  # the bottom: (N, H/8, W/8, widths[3])
        for up, block in zip(self.upsample, self.decoder):
            x = block(nn.concat([skips.pop(), up(x)], axis=-1))
        return self.head(x)
