"""RoIPool and RoIAlign as Modules: thin holders of hyperparameters (no weights).

The work is done by ``nn.functional.roi_pool`` / ``nn.functional.roi_align``;
these classes only remember ``output_size`` and friends, as torchvision's do.
"""
from nn._checks import check_bool, check_int, check_pair, check_positive
from nn.functional.roi import roi_align, roi_pool
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
        self.output_size = check_pair(output_size, "output_size", 1)
        self.spatial_scale = check_positive(spatial_scale, "spatial_scale")

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
        self.output_size = check_pair(output_size, "output_size", 1)
        self.spatial_scale = check_positive(spatial_scale, "spatial_scale")
        self.sampling_ratio = check_int(sampling_ratio, "sampling_ratio")
        self.aligned = check_bool(aligned, "aligned")

    def forward(self, input, rois):
        return roi_align(input, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self):
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")
