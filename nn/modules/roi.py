"""RoIPool and RoIAlign as Modules: thin holders of hyperparameters (no weights).

The work is done by ``nn.functional.roi_pool`` / ``nn.functional.roi_align``;
these classes only remember ``output_size`` and friends, as torchvision's do.
"""
from nn.functional.roi import (
    _check_sampling_ratio, _check_spatial_scale, _pair_of_positive_ints, roi_align, roi_pool,
)
from nn.modules.module import Module

__all__ = ["RoIPool", "RoIAlign"]


class RoIPool(Module):
    """Max pooling of each box into ``output_size`` bins (Fast R-CNN).

    Args:
        output_size (int or tuple): ``(oh, ow)``.
        spatial_scale (float): feature cells per input pixel (1/stride).

    Shape:
        input ``(N, H, W, C)``, boxes ``(K, 5)`` or a list of ``(K_i, 4)``
        -> output ``(K, oh, ow, C)``.
    """

    def __init__(self, output_size, spatial_scale):
        super().__init__()
        self.output_size = _pair_of_positive_ints(output_size, "output_size")
        self.spatial_scale = _check_spatial_scale(spatial_scale)

    def forward(self, input, rois):
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self):
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


class RoIAlign(Module):
    """Bilinear, bin-averaged crop-and-resize of each box (Mask R-CNN).

    Args:
        output_size (int or tuple): ``(oh, ow)``.
        spatial_scale (float): feature cells per input pixel (1/stride).
        sampling_ratio (int): samples per bin and axis; <= 0 is adaptive.
        aligned (bool): use the half-pixel offset (Detectron2's correction).

    Shape:
        input ``(N, H, W, C)``, boxes ``(K, 5)`` or a list of ``(K_i, 4)``
        -> output ``(K, oh, ow, C)``.
    """

    def __init__(self, output_size, spatial_scale, sampling_ratio, aligned=False):
        super().__init__()
        self.output_size = _pair_of_positive_ints(output_size, "output_size")
        self.spatial_scale = _check_spatial_scale(spatial_scale)
        self.sampling_ratio = _check_sampling_ratio(sampling_ratio)
        if not isinstance(aligned, bool):
            raise TypeError(f"aligned must be a bool, got {aligned!r}")
        self.aligned = aligned

    def forward(self, input, rois):
        return roi_align(input, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self):
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")
