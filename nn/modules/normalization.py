"""Normalization layers: ``BatchNorm2d`` and ``GroupNorm``, PyTorch's arguments, channels last.

``BatchNorm2d`` keeps its running estimates in buffers (``running_mean``,
``running_var``, ``num_batches_tracked``) so they travel in ``state_dict``;
``model.train()`` / ``model.eval()`` switch between batch and running statistics.
"""
import numpy as np

from nn._checks import check_int
from nn.functional import normalization as F
from nn.modules.module import Module, Parameter
from nn.tensor import Tensor

__all__ = ["BatchNorm2d", "GroupNorm"]


def _channels_of(x, expected_ndim, name):
    array = x.data if isinstance(x, Tensor) else np.asarray(x)
    if expected_ndim is not None and array.ndim != expected_ndim:
        raise ValueError(f"{name} expects a 4-D (N, H, W, C) input, got shape {array.shape}")
    if array.ndim < 2:
        raise ValueError(f"{name} expects an (N, ..., C) input, got shape {array.shape}")
    return array.shape[-1]


class BatchNorm2d(Module):
    """Batch normalization of an ``(N, H, W, C)`` map (Ioffe & Szegedy, 2015).

    Args:
        num_features (int): ``C``.
        eps (float): added to the variance.
        momentum (float or None): weight of each batch in the running estimates;
            None averages all batches seen so far equally (cumulative mean).
        affine (bool): learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
        track_running_stats (bool): keep running estimates for evaluation; without
            them batch statistics are used in both modes.

    Attributes:
        weight, bias (Parameter[C] or None): the affine map, float32.
        running_mean, running_var (ndarray[C] or None): buffers, float32.
        num_batches_tracked (ndarray[] int64 or None): training steps seen.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        self.num_features = check_int(num_features, "num_features", 1)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(np.ones(self.num_features, dtype=np.float32))
            self.bias = Parameter(np.zeros(self.num_features, dtype=np.float32))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype=np.float32))
            self.register_buffer("running_var", np.ones(self.num_features, dtype=np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        """Forget the running estimates (mean 0, variance 1, no batches seen)."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        channels = _channels_of(x, 4, "BatchNorm2d")
        if channels != self.num_features:
            raise ValueError(
                f"BatchNorm2d({self.num_features}) got an input with {channels} channels "
                f"(last axis of shape {tuple(np.shape(x.data if isinstance(x, Tensor) else x))})"
            )
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        # Without running estimates, batch statistics are used in evaluation too.
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            training=use_batch_stats, momentum=factor, eps=self.eps,
        )

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class GroupNorm(Module):
    """Group normalization of an ``(N, ..., C)`` input (Wu & He, 2018).

    Args:
        num_groups (int): ``G``, dividing ``num_channels``.
        num_channels (int): ``C``.
        eps (float): added to the variance.
        affine (bool): learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        self.num_groups = check_int(num_groups, "num_groups", 1)
        self.num_channels = check_int(num_channels, "num_channels", 1)
        if self.num_channels % self.num_groups != 0:
            raise ValueError(
                f"num_groups={num_groups} must divide num_channels={num_channels}"
            )
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = Parameter(np.ones(self.num_channels, dtype=np.float32))
            self.bias = Parameter(np.zeros(self.num_channels, dtype=np.float32))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        channels = _channels_of(x, None, "GroupNorm")
        if channels != self.num_channels:
            raise ValueError(
                f"GroupNorm(num_channels={self.num_channels}) got an input with {channels} "
                f"channels on its last axis"
            )
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
