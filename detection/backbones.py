"""ResNet backbones built from basic blocks (He, Zhang, Ren and Sun, 2016).

A residual block learns a correction ``F(x)`` to its input rather than a whole new
map: ``y = relu(F(x) + shortcut(x))``. Gradients reach early layers through the
identity path undiminished, which is what lets deep networks train from scratch.

Two layouts:

- ``resnet18(width_multiplier=1.0)``: the paper's ResNet-18 (a 7x7/2 stem, a 3x3/2
  max-pool, four stages of two basic blocks with 64, 128, 256, 512 channels).
- ``resnet_small()``: the same four stages at strides 4, 8, 16, 32, with one block
  per stage, a 3x3 stem and 16..128 channels — about 40x fewer multiply-adds, for
  training from scratch on a laptop CPU.

``forward`` returns the outputs of the four stages, ``C2..C5`` (strides 4, 8, 16, 32),
the inputs of a feature pyramid network.
"""
import nn
from nn import Module
from nn._checks import check_choice, check_ndim

__all__ = ["BasicBlock", "ResNet", "resnet18", "resnet_small"]


class BasicBlock(Module):
    """Two 3x3 convolutions with batch norm and a shortcut (a 1x1 projection when the shape changes).

    Shapes:
        ``(N, H, W, Cin)`` → ``(N, H/stride, W/stride, Cout)``.
    """

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = nn.functional.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return nn.functional.relu(out + self.shortcut(x))


class ResNet(Module):
    """A ResNet of basic blocks returning its four stage outputs.

    Args:
        blocks (sequence of 4 int): basic blocks per stage.
        widths (sequence of 4 int): channels of each stage.
        stem (str): ``"7x7"`` (conv 7x7/2 + max-pool 3x3/2, the paper's) or ``"3x3"``
            (conv 3x3/2 + max-pool 2x2/2, cheaper); both reach stride 4.
        stem_channels (int): channels of the stem convolution.
        in_channels (int): Cin of the images.

    Attributes:
        out_channels (tuple of 4 int): channels of C2..C5.
        strides (tuple of 4 int): (4, 8, 16, 32).
    """

    def __init__(self, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem="7x7",
                 stem_channels=None, in_channels=3):
        super().__init__()
        if len(blocks) != 4 or len(widths) != 4:
            raise ValueError(f"blocks and widths must have 4 entries each, got {blocks} and {widths}")
        check_choice(stem, "stem", ("7x7", "3x3"))
        stem_channels = widths[0] if stem_channels is None else stem_channels
        if stem == "7x7":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(stem_channels), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_channels, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(stem_channels), nn.ReLU(), nn.MaxPool2d(2),
            )
        stages, previous = [], stem_channels
        for i, (count, width) in enumerate(zip(blocks, widths)):
            layers = [BasicBlock(previous, width, stride=1 if i == 0 else 2)]
            layers += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = tuple(widths)
        self.strides = (4, 8, 16, 32)

    def forward(self, x):
        """``(N, H, W, Cin)`` → list ``[C2, C3, C4, C5]``, ``Ci`` of shape ``(N, H/2**i, W/2**i, widths[i-2])``."""
        check_ndim(x, "ResNet's input x", 4, "N, H, W, C")
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


def resnet18(width_multiplier=1.0, in_channels=3):
    """The ResNet-18 layout (2 blocks per stage), widths 64..512 times ``width_multiplier``."""
    widths = tuple(max(8, int(round(w * width_multiplier))) for w in (64, 128, 256, 512))
    return ResNet((2, 2, 2, 2), widths, stem="7x7", in_channels=in_channels)


def resnet_small(width_multiplier=1.0, in_channels=3):
    """One block per stage, widths 16..128 times ``width_multiplier``, a 3x3 stem: fast on a CPU."""
    widths = tuple(max(8, int(round(w * width_multiplier))) for w in (16, 32, 64, 128))
    return ResNet((1, 1, 1, 1), widths, stem="3x3", in_channels=in_channels)
