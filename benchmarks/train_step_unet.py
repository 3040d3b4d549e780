"""One training step of the digit segmenter's U-Net, ours and the same network in PyTorch.

Used by ``python benchmarks/bench_train_step.py --model unet``. The configuration is
the training default (``plates.train_segmenter.TrainConfig``): the same crop size, batch
size, widths and depth, BatchNorm, the loss ``CE + Dice`` with 255 ignored, the
characters' class weight and the per-pixel gap weights of the cross entropy
(``segmentation.weights.separation_weights``, computed with the batch, outside the
timed step, as in training), and Adam.
The torch network is written layer for layer like ``segmentation.unet.UNet`` (3x3
convolutions without bias before BatchNorm, 2x2 max pooling, 2x2 stride-2 transposed
convolutions, skip concatenation ``[skip, up]``, a 1x1 head); torch runs in its
default NCHW layout, its fastest on CPU for this network.
"""
import numpy as np

from plates.segmenter import CLASS_PRIOR, NUM_CLASSES, class_weights
from plates.train_segmenter import TrainConfig

CONFIG = TrainConfig()
DESCRIPTION = (
    f"U-Net base {CONFIG.base_channels}, depth {CONFIG.depth}, BatchNorm, "
    f"batch {CONFIG.batch_size} x {CONFIG.crop_size[0]}x{CONFIG.crop_size[1]}x3, {NUM_CLASSES} classes, "
    f"CE (characters weighted {CONFIG.char_weight:g}, gaps {CONFIG.gap_weight:g}) "
    f"+ {CONFIG.dice_weight:g}·Dice, Adam: "
    f"forward, loss, backward, step"
)


def _batch(seed=0):
    """Random images in [0, 1], class maps with some ignored pixels and their gap
    weights (fixed per seed)."""
    from segmentation.weights import separation_weights

    rng = np.random.default_rng(seed)
    h, w = CONFIG.crop_size
    images = rng.random((CONFIG.batch_size, h, w, 3), dtype=np.float32)
    targets = rng.integers(0, NUM_CLASSES, (CONFIG.batch_size, h, w))
    targets[:, :2] = 255
    return images, targets, separation_weights(targets, CONFIG.gap_weight)


def make_ours():
    import harness  # benchmarks/ is on sys.path when a benchmark runs this
    import nn
    from segmentation.losses import segmentation_loss
    from plates.segmenter import build_model

    model = build_model(CONFIG)
    model.train()
    weights = class_weights(CONFIG)
    optimizer = nn.optim.Adam(model.parameters(), lr=CONFIG.lr)
    images, targets, gaps = _batch()
    return harness.training_step(
        lambda: segmentation_loss(model(nn.Tensor(images)), targets, dice_weight=CONFIG.dice_weight,
                                  class_weights=weights, pixel_weights=gaps), optimizer)


def torch_unet(in_channels, num_classes, base_channels, depth):
    """``segmentation.unet.UNet`` (BatchNorm, same padding) written in torch, NCHW."""
    import torch
    import torch.nn as tnn

    class DoubleConv(tnn.Sequential):
        def __init__(self, cin, cout):
            super().__init__(
                tnn.Conv2d(cin, cout, 3, padding=1, bias=False), tnn.BatchNorm2d(cout), tnn.ReLU(),
                tnn.Conv2d(cout, cout, 3, padding=1, bias=False), tnn.BatchNorm2d(cout), tnn.ReLU(),
            )

    class UNet(tnn.Module):
        def __init__(self):
            super().__init__()
            widths = [base_channels * 2 ** i for i in range(depth)]
            self.encoder = tnn.ModuleList(
                [DoubleConv(in_channels if i == 0 else widths[i - 1], widths[i])
                 for i in range(depth)])
            self.pool = tnn.MaxPool2d(2)
            self.upsample = tnn.ModuleList(
                [tnn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2)
                 for i in range(depth - 1, 0, -1)])
            self.decoder = tnn.ModuleList(
                [DoubleConv(2 * widths[i - 1], widths[i - 1]) for i in range(depth - 1, 0, -1)])
            self.head = tnn.Conv2d(widths[0], num_classes, 1)

        def forward(self, x):
            skips = []
            for i, block in enumerate(self.encoder):
                x = block(x if i == 0 else self.pool(x))
                skips.append(x)
            x = skips.pop()
            for up, block in zip(self.upsample, self.decoder):
                x = block(torch.cat([skips.pop(), up(x)], dim=1))
            return self.head(x)

    return UNet()


def torch_dice_loss(logits, target, ignore_index=255, eps=1.0):
    """``nn.functional.dice_loss`` on NCHW logits: mean over images and classes."""
    import torch
    import torch.nn.functional as F

    valid = (target != ignore_index).unsqueeze(1).to(logits.dtype)  # (N, 1, H, W)
    one_hot = F.one_hot(torch.where(target == ignore_index, 0, target), logits.shape[1])
    one_hot = one_hot.permute(0, 3, 1, 2).to(logits.dtype) * valid  # (N, K, H, W)
    probs = logits.softmax(dim=1) * valid
    intersection = (probs * one_hot).sum(dim=(2, 3))
    cardinality = probs.sum(dim=(2, 3)) + one_hot.sum(dim=(2, 3))
    return (1 - (2 * intersection + eps) / (cardinality + eps)).mean()


def torch_segmentation_loss(logits, target, class_weights, pixel_weights, dice_weight,
                            ignore_index=255):
    """``segmentation.losses.segmentation_loss`` on NCHW logits: the cross entropy
    ``Σ v·w[t]·(-logp[t]) / Σ v·w[t]`` over non-ignored pixels, plus ``dice_weight`` Dice."""
    import torch
    import torch.nn.functional as F

    per_pixel = F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore_index,
                                reduction="none")  # (N, H, W), 0 where ignored
    valid = target != ignore_index
    w_t = class_weights[torch.where(valid, target, 0)] * valid
    ce = (per_pixel * pixel_weights).sum() / (pixel_weights * w_t).sum()
    return ce + dice_weight * torch_dice_loss(logits, target, ignore_index)


def make_torch():
    import harness
    import torch

    torch.manual_seed(0)
    model = torch_unet(3, NUM_CLASSES, CONFIG.base_channels, CONFIG.depth)
    if CONFIG.prior_init:
        with torch.no_grad():
            model.head.bias.copy_(torch.from_numpy(np.log(CLASS_PRIOR / CLASS_PRIOR.sum())))
    model.train()
    weights = torch.from_numpy(class_weights(CONFIG))
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG.lr)
    images, targets, gaps = _batch()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW
    t = torch.from_numpy(targets)
    v = torch.from_numpy(gaps)

    return harness.training_step(
        lambda: torch_segmentation_loss(model(x), t, weights, v, CONFIG.dice_weight), optimizer)
