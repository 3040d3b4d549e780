"""``Linear`` (a fully connected layer) and ``Identity``."""
import math

import numpy as np

from nn import init
from nn._checks import check_float_dtype, check_int
from nn.functional.dense import linear
from nn.modules.module import Module, Parameter

__all__ = ["Linear", "Identity"]


class Linear(Module):
    """``y = x W + b`` over the last axis of ``x``.

    The weight is stored ``(in_features, out_features)`` (channels-last, see
    ``nn.functional.linear``). Default initialization reproduces PyTorch's bounds:
    ``kaiming_uniform_(W, a=sqrt(5))`` is ``U(-1/sqrt(in), 1/sqrt(in))`` and the
    bias is ``U(-1/sqrt(in), 1/sqrt(in))``.

    Args:
        in_features (int): size of the input's last axis.
        out_features (int): size of the output's last axis.
        bias (bool): learn an additive bias.
        dtype: parameter dtype (float32 by default).
        generator (np.random.Generator or int, optional): initialization randomness;
            defaults to the generator seeded by ``nn.manual_seed``.

    Shape:
        input (..., in_features) -> output (..., out_features)
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, generator=None):
        super().__init__()
        self.in_features = check_int(in_features, "in_features", 0)
        self.out_features = check_int(out_features, "out_features", 0)
        dtype = check_float_dtype(dtype)
        self.weight = Parameter(np.empty((self.in_features, self.out_features), dtype=dtype))
        if bias:
            self.bias = Parameter(np.empty((self.out_features,), dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        """Re-draw the weight and bias with PyTorch's default bounds."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound, generator=generator)

    def forward(self, x):
        return linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Identity(Module):
    """Returns its input unchanged (a placeholder where a layer is optional)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x
