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

import numpy as np

from nn._checks import check_float_dtype, check_int, check_pair
from nn.functional.conv import _padding_pairs, conv2d, conv_transpose2d
from nn.modules.module import Module, Parameter
from nn.random import get_generator

__all__ = ["Conv2d", "ConvTranspose2d"]


class _ConvNd(Module):
    """What ``Conv2d`` and ``ConvTranspose2d`` share (PyTorch's ``_ConvNd``).

    The argument checks, the ``weight`` and ``bias`` Parameters, their initialization
    ``U(±1/sqrt(fan_in))`` and ``extra_repr``. A subclass checks its own padding
    (``_check_padding``) and defines ``forward``.

    Attributes:
        transposed (bool): the weight is ``(kh, kw, C_in, C_out/groups)`` (transposed
            convolution) rather than ``(kh, kw, C_in/groups, C_out)``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 transposed, output_padding, groups, bias, dtype, generator):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", 1)
        self.out_channels = check_int(out_channels, "out_channels", 1)
        self.groups = check_int(groups, "groups", 1)
        for name, channels in (("in_channels", self.in_channels),
                               ("out_channels", self.out_channels)):
            if channels % self.groups:
                raise ValueError(f"{name} ({channels}) must be divisible by groups ({self.groups})")
        dtype = check_float_dtype(dtype)
        self.kernel_size = check_pair(kernel_size, "kernel_size", 1)
        self.stride = check_pair(stride, "stride", 1)
        self.dilation = check_pair(dilation, "dilation", 1)
        self.transposed = transposed
        self.padding, self.output_padding = self._check_padding(padding, output_padding)
        kh, kw = self.kernel_size
        if transposed:
            shape = (kh, kw, self.in_channels, self.out_channels // self.groups)
        else:
            shape = (kh, kw, self.in_channels // self.groups, self.out_channels)
        self.weight = Parameter(np.empty(shape, dtype=dtype))
        if bias:
            self.bias = Parameter(np.empty((self.out_channels,), dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)

    def _check_padding(self, padding, output_padding):
        """``(padding, output_padding)`` as stored, once checked."""
        raise NotImplementedError

    def reset_parameters(self, generator=None):
        """Re-draw weight, then bias, from ``U(±1/sqrt(fan_in))`` (PyTorch's bounds).

        ``fan_in`` is PyTorch's: ``C_in/groups · kh · kw`` for a convolution and
        ``C_out/groups · kh · kw`` for a transposed one.
        """
        rng = get_generator(generator)
        kh, kw = self.kernel_size
        channels = self.out_channels if self.transposed else self.in_channels
        fan_in = channels // self.groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        for param in (self.weight, self.bias):
            if param is not None:
                param.data = rng.uniform(-bound, bound, size=param.shape).astype(param.dtype)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding!r}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvNd):
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
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         False, 0, groups, bias, dtype, generator)

    def _check_padding(self, padding, output_padding):
        _padding_pairs(padding, self.kernel_size, self.stride, self.dilation)  # checks
        return (padding if isinstance(padding, str) else check_pair(padding, "padding", 0)), (0, 0)

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                      self.groups)


class ConvTranspose2d(_ConvNd):
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
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         True, output_padding, groups, bias, dtype, generator)

    def _check_padding(self, padding, output_padding):
        if isinstance(padding, str):
            raise ValueError(f"ConvTranspose2d: padding must be an int or a pair, got {padding!r}")
        padding = check_pair(padding, "padding", 0)
        output_padding = check_pair(output_padding, "output_padding", 0)
        for op, s, d in zip(output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise ValueError(
                    f"output_padding {output_padding} must be smaller than either stride "
                    f"{self.stride} or dilation {self.dilation}"
                )
        return padding, output_padding

    def forward(self, x, output_size=None):
        # As in PyTorch, an explicit output_size replaces the stored output_padding.
        output_padding = self.output_padding if output_size is None else 0
        return conv_transpose2d(
            x, self.weight, self.bias, self.stride, self.padding, output_padding,
            self.groups, self.dilation, output_size=output_size,
        )
