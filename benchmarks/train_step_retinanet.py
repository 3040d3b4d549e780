"""One training step of the plate RetinaNet, ours and the same network in PyTorch.

Used by ``python benchmarks/bench_train_step.py --model retinanet``. The configuration
is the training default (``detection.train_retinanet``: ``TrainConfig`` and
``plate_detector_config``): batch size, 256x256 images, backbone, pyramid levels,
FPN width, head depth, anchors, focal loss + smooth-L1, AdamW with gradient clipping.

The batch is rendered once by the synthetic plate generator (seeded), so the targets
are real cars and plates. A step is: forward, anchor matching (IoU >= 0.5 foreground,
< 0.4 background, each object's best anchors kept), sigmoid focal loss over
non-ignored anchors and smooth-L1 on the foreground deltas, both divided by the
number of foreground anchors, backward, gradient-norm clipping and the AdamW update.
The torch network is written layer for layer like ours (ResNet basic blocks with
BatchNorm and 1x1 projection shortcuts, FPN with nearest top-down upsampling and a
stride-2 extra level, class/box subnets shared across levels with the prior bias);
the matching is written in torch; torch runs in NCHW, its fastest layout on CPU.
"""
import harness
from torch_blocks import box_iou, encode, torch_resnet

from detection.train_retinanet import TrainConfig
from plates.train_detector import DETECTOR_CLASSES as CLASSES
from plates.train_detector import plate_detector_config

CONFIG = TrainConfig()
MODEL = plate_detector_config(CONFIG.backbone)
DESCRIPTION = (
    f"RetinaNet backbone {MODEL.backbone} (width x{MODEL.width_multiplier:g}), levels "
    f"P{MODEL.levels[0]}-P{MODEL.levels[-1]}, FPN {MODEL.fpn_channels} ch, "
    f"{MODEL.head_convs} head convs, "
    f"{len(MODEL.anchor_scales) * len(MODEL.aspect_ratios)} anchors/location, "
    f"batch {CONFIG.batch_size} x {CONFIG.image_size}x{CONFIG.image_size}x3, "
    f"focal + smooth-L1, AdamW + grad clip: forward, matching, loss, backward, step"
)


def _batch(seed=0):
    """Rendered scenes (normalized images, targets with classes car=1, plate=2)."""
    from detection.train_retinanet import MEAN, STD

    return harness.scene_batch(CONFIG.batch_size, CONFIG.image_size, CLASSES, MEAN, STD, seed)


def make_ours():
    import nn
    from detection.retinanet import RetinaNet

    nn.manual_seed(0)
    model = RetinaNet(MODEL)
    model.train()
    optimizer = nn.optim.AdamW(model.parameters(), lr=CONFIG.lr, weight_decay=CONFIG.weight_decay)
    images, targets = _batch()
    return harness.training_step(
        lambda: model.loss(images, targets)["loss"], optimizer,
        lambda: nn.optim.clip_grad_norm_(model.parameters(), CONFIG.clip_grad))


def torch_retinanet():
    """The plate RetinaNet (``MODEL``) written in torch (NCHW): ``model(x)`` gives
    ``(cls_logits (N, R, K), box_deltas (N, R, 4))``; ``model.reference`` is ours with the
    same configuration (for its anchors)."""
    import math

    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    from detection.retinanet import RetinaNet

    cfg = MODEL

    class FPN(tnn.Module):
        def __init__(self, in_channels, channels, extra):
            super().__init__()
            self.lateral = tnn.ModuleList([tnn.Conv2d(c, channels, 1) for c in in_channels])
            self.smooth = tnn.ModuleList([tnn.Conv2d(channels, channels, 3, padding=1)
                                          for _ in in_channels])
            self.extra = tnn.ModuleList([tnn.Conv2d(channels, channels, 3, 2, 1)
                                         for _ in range(extra)])

        def forward(self, features):
            top = self.lateral[-1](features[-1])
            outputs = [self.smooth[-1](top)]
            for i in range(len(features) - 2, -1, -1):
                lateral = self.lateral[i](features[i])
                top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")
                outputs.insert(0, self.smooth[i](top))
            previous = outputs[-1]
            for j, conv in enumerate(self.extra):
                previous = conv(previous if j == 0 else F.relu(previous))
                outputs.append(previous)
            return outputs

    def subnet(channels, count, norm):
        layers = []
        for _ in range(count):
            layers.append(tnn.Conv2d(channels, channels, 3, padding=1))
            if norm == "group":
                layers.append(tnn.GroupNorm(min(32, channels // 2), channels))
            layers.append(tnn.ReLU())
        return tnn.Sequential(*layers)

    class RetinaNetTorch(tnn.Module):
        def __init__(self):
            super().__init__()
            reference = RetinaNet(cfg)  # the same widths, levels and anchors as ours
            self.backbone = torch_resnet(reference.backbone)
            self.slice = reference._backbone_slice
            in_channels = reference.backbone.out_channels[self.slice]
            self.fpn = FPN(in_channels, cfg.fpn_channels, len(reference.fpn.extra))
            a, k = reference.num_anchors, cfg.num_classes
            self.cls_subnet = subnet(cfg.fpn_channels, cfg.head_convs, cfg.head_norm)
            self.box_subnet = subnet(cfg.fpn_channels, cfg.head_convs, cfg.head_norm)
            self.cls_logits = tnn.Conv2d(cfg.fpn_channels, a * k, 3, padding=1)
            self.box_deltas = tnn.Conv2d(cfg.fpn_channels, a * 4, 3, padding=1)
            for head in (self.cls_subnet, self.box_subnet, self.cls_logits, self.box_deltas):
                for m in head.modules():
                    if isinstance(m, tnn.Conv2d):
                        tnn.init.normal_(m.weight, std=0.01)
                        tnn.init.zeros_(m.bias)
            prior = cfg.prior_probability
            tnn.init.constant_(self.cls_logits.bias, -math.log((1 - prior) / prior))
            self.k = k
            self.reference = reference

        def forward(self, x):
            features = self.backbone(x)[self.slice]
            cls_all, box_all = [], []
            for f in self.fpn(features):
                n = f.shape[0]
                cls = self.cls_logits(self.cls_subnet(f)).permute(0, 2, 3, 1)  # (N, H, W, A·K)
                box = self.box_deltas(self.box_subnet(f)).permute(0, 2, 3, 1)
                cls_all.append(cls.reshape(n, -1, self.k))
                box_all.append(box.reshape(n, -1, 4))
            return torch.cat(cls_all, 1), torch.cat(box_all, 1)

    return RetinaNetTorch()


def make_torch():
    import torch
    import torch.nn.functional as F

    cfg = MODEL

    def match(boxes, anchors):
        """Matched gt index per anchor, -1 background, -2 ignored (our Matcher's rule)."""
        if boxes.shape[0] == 0:
            return torch.full((anchors.shape[0],), -1, dtype=torch.int64)
        iou = box_iou(boxes, anchors)  # (G, R)
        best, index = iou.max(dim=0)
        matches = index.clone()
        matches[best < cfg.bg_iou] = -1
        matches[(best >= cfg.bg_iou) & (best < cfg.fg_iou)] = -2
        best_per_gt = iou.max(dim=1, keepdim=True).values
        claimed = ((iou == best_per_gt) & (best_per_gt > 0)).any(dim=0)
        matches[claimed] = index[claimed]
        return matches

    def sigmoid_focal_loss(logits, targets, alpha, gamma):
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * (1 - p_t) ** gamma
        return (alpha * targets + (1 - alpha) * (1 - targets)) * loss

    torch.manual_seed(0)
    model = torch_retinanet()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=CONFIG.lr,
                                  weight_decay=CONFIG.weight_decay)
    images, targets = _batch()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW
    with torch.no_grad():
        _, _, sizes = model.reference(images[:1])
    anchors = torch.from_numpy(model.reference.anchors(images.shape[1:3], sizes))
    gts = [(torch.from_numpy(t["boxes"]), torch.from_numpy(t["labels"])) for t in targets]

    def loss():
        cls_logits, box_deltas = model(x)
        cls_targets = torch.zeros_like(cls_logits)
        valid = torch.ones(cls_logits.shape[:2], dtype=torch.bool)
        fg_deltas, fg_targets = [], []
        num_fg = 0
        for i, (boxes, labels) in enumerate(gts):
            matches = match(boxes, anchors)
            fg = matches >= 0
            valid[i] = matches != -2
            fg_index = torch.nonzero(fg).squeeze(1)
            cls_targets[i, fg_index, labels[matches[fg_index]] - 1] = 1.0
            fg_deltas.append(box_deltas[i, fg_index])
            fg_targets.append(encode(boxes[matches[fg_index]], anchors[fg_index]))
            num_fg += int(fg_index.numel())
        normalizer = max(1.0, float(num_fg))
        focal = sigmoid_focal_loss(cls_logits, cls_targets, cfg.focal_alpha, cfg.focal_gamma)
        cls_loss = (focal * valid[:, :, None]).sum() / normalizer
        box_loss = F.smooth_l1_loss(torch.cat(fg_deltas), torch.cat(fg_targets),
                                    beta=cfg.smooth_l1_beta, reduction="sum") / normalizer
        return cls_loss + box_loss

    return harness.training_step(
        loss, optimizer,
        lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), CONFIG.clip_grad))
