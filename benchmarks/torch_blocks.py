"""Pieces of detseg's detectors written in torch, shared by the benchmarks' torch twins.

``train_step_retinanet.py`` and ``train_step_faster_rcnn.py`` time our detectors against
the same networks written in torch (NCHW, torch's fastest layout on CPU). Both build
their backbone with ``torch_resnet`` and their box targets with ``box_iou`` and
``encode``. torch is imported inside the functions, so that a script can import this
module (and describe its configuration) without loading torch.
"""

__all__ = ["torch_resnet", "box_iou", "encode"]


def torch_resnet(backbone):
    """Our ResNet backbone (``detection.backbones``) written in torch, untrained.

    The same stem (7x7 stride 2 + 3x3 max pool, or 3x3 stride 2 + 2x2 max pool), stage
    depths and widths; basic blocks (two 3x3 conv + BatchNorm) with a 1x1 projection
    shortcut where the stride or width changes.

    Args:
        backbone: our backbone to copy (``stem``, ``layer1`` .. ``layer4``,
            ``out_channels``).
    Returns:
        torch.nn.Module: ``model(x)`` maps ``(N, 3, H, W)`` to the list of every stage's
        output, ``(N, C_i, H / s_i, W / s_i)``.
    """
    import torch.nn as tnn
    import torch.nn.functional as F

    class BasicBlock(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.shortcut = tnn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                               tnn.BatchNorm2d(cout))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class ResNet(tnn.Module):
        def __init__(self, blocks, widths, stem):
            super().__init__()
            if stem == "7x7":
                self.stem = tnn.Sequential(tnn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
                                           tnn.BatchNorm2d(widths[0]), tnn.ReLU(),
                                           tnn.MaxPool2d(3, 2, 1))
            else:
                self.stem = tnn.Sequential(tnn.Conv2d(3, widths[0], 3, 2, 1, bias=False),
                                           tnn.BatchNorm2d(widths[0]), tnn.ReLU(), tnn.MaxPool2d(2))
            stages, previous = [], widths[0]
            for i, (count, width) in enumerate(zip(blocks, widths)):
                layers = [BasicBlock(previous, width, 1 if i == 0 else 2)]
                layers += [BasicBlock(width, width, 1) for _ in range(count - 1)]
                stages.append(tnn.Sequential(*layers))
                previous = width
            self.stages = tnn.ModuleList(stages)

        def forward(self, x):
            x = self.stem(x)
            out = []
            for stage in self.stages:
                x = stage(x)
                out.append(x)
            return out

    blocks = [len(stage) for stage in (backbone.layer1, backbone.layer2, backbone.layer3,
                                       backbone.layer4)]
    stem = "7x7" if backbone.stem[0].weight.shape[0] == 7 else "3x3"
    return ResNet(blocks, backbone.out_channels, stem)


def box_iou(a, b):
    """Pairwise IoU of xyxy boxes (``detection.boxes.box_iou`` in torch).

    Args:
        a (Tensor[G, 4]), b (Tensor[R, 4]): xyxy.
    Returns:
        Tensor[G, R]: IoU, 0 where the union is empty.
    """
    import torch

    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def encode(gt, ref, weights=(1.0, 1.0, 1.0, 1.0)):
    """``BoxCoder(weights).encode`` in torch: the deltas that move ``ref`` onto ``gt``.

    ``(wx·(gx - rx)/rw, wy·(gy - ry)/rh, ww·log(gw/rw), wh·log(gh/rh))`` with centres
    ``(x, y)`` and sizes ``(w, h)`` of the xyxy boxes.

    Args:
        gt, ref (Tensor[R, 4]): xyxy, matched row by row.
        weights (tuple of 4 float): ``(wx, wy, ww, wh)``.
    Returns:
        Tensor[R, 4].
    """
    import torch

    wx, wy, ww, wh = weights
    rw, rh = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
    rx, ry = ref[:, 0] + 0.5 * rw, ref[:, 1] + 0.5 * rh
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
    return torch.stack([wx * (gx - rx) / rw, wy * (gy - ry) / rh, ww * torch.log(gw / rw),
                        wh * torch.log(gh / rh)], dim=1)
