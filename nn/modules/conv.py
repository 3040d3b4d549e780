"""``Conv2d`` and ``ConvTranspose2d``: thin holders of filters around ``nn.functional``.

Weights are channels-last: ``Conv2d.weight`` is ``(kh, kw, C_in // groups, C_out)``
(HWIO) and ``ConvTranspose2d.weight`` is ``(kh, kw, C_in, C_out // groups)``.
Default initialization reproduces PyTorch's bounds (``kaiming_uniform_(a=sqrt(5))``
= ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weight and bias), with ``fan_in`` as
PyTorch computes it from its own layout: ``C_in/groups · kh · kw`` for ``Conv2d`` and
``C_out/groups · kh · kw`` for ``ConvTranspose2d`` (PyTorch reads the second axis of
its ``(C_in, C_out/groups, kh, kw)`` transposed weight as the fan-in axis).
"""
import math
import numbers

import numpy as np

from nn.functional.conv import _padding_pairs, _pair, conv2d, conv_transpose2d
from nn.modules.module import Module, Parameter
from nn.random import get_generator

__all__ = ["Conv2d", "ConvTranspose2d"]


def _check_channels(in_channels, out_channels, groups):
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("groups", groups)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if in_channels % groups:
        raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
    if out_channels % groups:
        raise ValueError(f"out_channels ({out_channels}) must be divisible by groups ({groups})")


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    return dtype


def _uniform(shape, bound, dtype, rng):
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Conv2d(Module):
    """2-D convolution layer over channels-last input ``(N, H, W, C_in)``.

    Args:
        in_channels (int): ``C_in``.
        out_channels (int): ``C_out``.
        kernel_size (int or pair): ``(kh, kw)``.
        stride (int or pair): default 1.
        padding (int, pair, "same" or "valid"): default 0.
        dilation (int or pair): default 1.
        groups (int): channel groups; must divide both channel counts.
        bias (bool): learn an additive bias.
        dtype: parameter dtype (float32 by default).
        generator (np.random.Generator or int, optional): initialization randomness;
            defaults to the generator seeded by ``nn.manual_seed``.

    Attributes:
        weight (Parameter[kh, kw, C_in/groups, C_out]): HWIO filters.
        bias (Parameter[C_out] or None).

    Shape:
        input (N, H, W, C_in) -> output (N, Ho, Wo, C_out),
        ``Ho = floor((H + 2p - d·(kh - 1) - 1) / s) + 1``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, dtype=np.float32, generator=None):
        super().__init__()
        _check_channels(in_channels, out_channels, groups)
        dtype = _check_dtype(dtype)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.dilation = _pair(dilation, "dilation", 1)
        _padding_pairs(padding, self.kernel_size, self.stride, self.dilation)  # validates
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding", 0)
        self.groups = int(groups)
        kh, kw = self.kernel_size
        self.weight = Parameter(
            np.empty((kh, kw, self.in_channels // self.groups, self.out_channels), dtype=dtype)
        )
        if bias:
            self.bias = Parameter(np.empty((self.out_channels,), dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        """Re-draw weight, then bias, from ``U(±1/sqrt(C_in/groups · kh · kw))`` (PyTorch's)."""
        rng = get_generator(generator)
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        self.weight.data = _uniform(self.weight.shape, bound, self.weight.dtype, rng)
        if self.bias is not None:
            self.bias.data = _uniform(self.bias.shape, bound, self.bias.dtype, rng)

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                      self.groups)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class ConvTranspose2d(Module):
    """2-D transposed convolution layer ("learnable upsampling"), channels-last.

    Args:
        in_channels (int): ``C_in``.
        out_channels (int): ``C_out``.
        kernel_size (int or pair): ``(kh, kw)``.
        stride (int or pair): upsampling factor, default 1.
        padding (int or pair): rows/columns cropped from each side, default 0.
        output_padding (int or pair): extra rows/columns at the bottom/right,
            smaller than the stride or the dilation.
        groups (int): channel groups; must divide both channel counts.
        bias (bool): learn an additive bias.
        dilation (int or pair): spacing between kernel taps.
        dtype: parameter dtype (float32 by default).
        generator (np.random.Generator or int, optional): initialization randomness.

    Attributes:
        weight (Parameter[kh, kw, C_in, C_out/groups]).
        bias (Parameter[C_out] or None).

    Shape:
        input (N, H, W, C_in) -> output (N, H_out, W_out, C_out),
        ``H_out = (H - 1)·s - 2p + d·(kh - 1) + output_padding + 1``;
        ``forward(x, output_size=(H_out, W_out))`` picks ``output_padding`` itself.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, dtype=np.float32,
                 generator=None):
        super().__init__()
        _check_channels(in_channels, out_channels, groups)
        dtype = _check_dtype(dtype)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        if isinstance(padding, str):
            raise ValueError(f"ConvTranspose2d: padding must be an int or a pair, got {padding!r}")
        self.padding = _pair(padding, "padding", 0)
        self.output_padding = _pair(output_padding, "output_padding", 0)
        self.dilation = _pair(dilation, "dilation", 1)
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise ValueError(
                    f"output_padding {self.output_padding} must be smaller than either stride "
                    f"{self.stride} or dilation {self.dilation}"
                )
        self.groups = int(groups)
        kh, kw = self.kernel_size
        self.weight = Parameter(
            np.empty((kh, kw, self.in_channels, self.out_channels // self.groups), dtype=dtype)
        )
        if bias:
            self.bias = Parameter(np.empty((self.out_channels,), dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        """Re-draw weight, then bias, from ``U(±1/sqrt(C_out/groups · kh · kw))`` (PyTorch's)."""
        rng = get_generator(generator)
        kh, kw = self.kernel_size
        fan_in = self.out_channels // self.groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        self.weight.data = _uniform(self.weight.shape, bound, self.weight.dtype, rng)
        if self.bias is not None:
            self.bias.data = _uniform(self.bias.shape, bound, self.bias.dtype, rng)

    def forward(self, x, output_size=None):
        # As in PyTorch, an explicit output_size replaces the stored output_padding.
        output_padding = self.output_padding if output_size is None else 0
        return conv_transpose2d(
            x, self.weight, self.bias, self.stride, self.padding, output_padding,
            self.groups, self.dilation, output_size=output_size,
        )

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text
