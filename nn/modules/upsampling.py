"""Upsampling layer: a thin Module holder around ``nn.functional.interpolate``.

Shapes are channels-last: ``(N, H, W, C) -> (N, Ho, Wo, C)``.
"""
from nn._checks import check_choice
from nn.functional import upsampling as F
from nn.modules.module import Module

__all__ = ["Upsample"]


class Upsample(Module):
    """Resize by a ``size`` or a ``scale_factor`` (see ``nn.functional.interpolate``).

    Args:
        size (int or (int, int), optional): output ``(Ho, Wo)``.
        scale_factor (float or (float, float), optional): multiplier of ``(H, W)``.
        mode (str): "nearest", "nearest-exact" or "bilinear".
        align_corners (bool, optional): bilinear only.
        recompute_scale_factor (bool, optional): sample at ``in / out`` instead of
            ``1 / scale_factor``.
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample needs exactly one of size and scale_factor")
        check_choice(mode, "mode", F.MODES)
        self.size = size
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, x):
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                             self.recompute_scale_factor)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"
