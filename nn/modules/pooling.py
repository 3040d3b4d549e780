"""Pooling layers: thin Module holders around ``nn.functional.pooling``.

Shapes are channels-last: ``(N, H, W, C) -> (N, Ho, Wo, C)``.
"""
from nn.functional import pooling as F
from nn.modules.module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]


class MaxPool2d(Module):
    """2-D max pooling (see ``nn.functional.max_pool2d``), PyTorch's arguments.

    Args:
        kernel_size (int or (int, int)): window size.
        stride (int or (int, int), optional): step; defaults to ``kernel_size``.
        padding (int or (int, int)): ``-inf`` border, at most ``kernel_size // 2``.
        dilation (int or (int, int)): spacing between window elements.
        ceil_mode (bool): round the output size up.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                            self.dilation, self.ceil_mode)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling (see ``nn.functional.avg_pool2d``), PyTorch's arguments.

    Args:
        kernel_size (int or (int, int)): window size.
        stride (int or (int, int), optional): step; defaults to ``kernel_size``.
        padding (int or (int, int)): zero border, at most ``kernel_size // 2``.
        ceil_mode (bool): round the output size up.
        count_include_pad (bool): count the zero padding in the divisor.
        divisor_override (int, optional): a fixed divisor.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` (see ``nn.functional.adaptive_avg_pool2d``).

    Args:
        output_size (int or (int or None, int or None)): ``(Ho, Wo)``; None keeps
            that input size. ``AdaptiveAvgPool2d(1)`` is global average pooling.
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
