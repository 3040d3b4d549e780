"""Feature Pyramid Network (Lin, Dollár, Girshick, He, Hariharan and Belongie, 2017).

A backbone's deep maps are semantically strong but coarse; its shallow maps are
fine but weak. The FPN gives every level both: a lateral 1x1 convolution brings each
``Ci`` to a common width, a top-down pathway upsamples the coarser result (nearest
neighbour, x2) and adds it, and a 3x3 convolution smooths the sum into ``Pi``::

    P5 = smooth(lat5(C5))
    P4 = smooth(lat4(C4) + up(lat5(C5) ...))       (the running top-down sum)
    P3 = smooth(lat3(C3) + up(...))

Optional extra levels beyond the backbone (RetinaNet's P6, P7) are 3x3 stride-2
convolutions. Small images need fine levels (P2, P3) more than COCO's P6, P7: which
backbone levels enter and how many extra levels follow is configurable.
"""
import nn
from nn import Module
from nn._checks import check_int

__all__ = ["FeaturePyramidNetwork"]


class FeaturePyramidNetwork(Module):
    """Top-down feature pyramid over a list of backbone maps.

    Args:
        in_channels_list (sequence of int): channels of the input maps, finest first.
        out_channels (int): channels of every output level.
        extra_levels (int): stride-2 levels added after the coarsest (P6 = conv(P5), P7 = conv(relu(P6))).

    Shapes:
        ``[(N, H_i, W_i, C_i)]`` finest first → ``[(N, H_i, W_i, out_channels)]`` followed by
        the extra levels, each half the size of the previous.
    """

    def __init__(self, in_channels_list, out_channels, extra_levels=0):
        super().__init__()
        if len(in_channels_list) < 1:
            raise ValueError("in_channels_list must name at least one level")
        extra_levels = check_int(extra_levels, "extra_levels", 0)
        self.lateral = nn.ModuleList([nn.Conv2d(c, out_channels, 1) for c in in_channels_list])
        self.smooth = nn.ModuleList(
            [nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels_list]
        )
        self.extra = nn.ModuleList(
            [nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(extra_levels)]
        )
        self.in_channels_list = tuple(in_channels_list)
        self.out_channels = out_channels

    def extra_repr(self):
        return f"in_channels_list={self.in_channels_list}, out_channels={self.out_channels}, extra_levels={len(self.extra)}"

    def forward(self, features):
        if len(features) != len(self.lateral):
            raise ValueError(f"expected {len(self.lateral)} feature maps, got {len(features)}")
        top = self.lateral[-1](features[-1])
        outputs = [self.smooth[-1](top)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            if lateral.shape[1:3] == (2 * top.shape[1], 2 * top.shape[2]):
                upsampled = nn.functional.interpolate(top, scale_factor=2, mode="nearest")
            else:  # odd sizes: upsample to the lateral's exact size
                upsampled = nn.functional.interpolate(top, size=lateral.shape[1:3], mode="nearest")
            top = lateral + upsampled
            outputs.insert(0, self.smooth[i](top))
        previous = outputs[-1]
        for j, conv in enumerate(self.extra):
            previous = conv(previous if j == 0 else nn.functional.relu(previous))
            outputs.append(previous)
        return outputs
