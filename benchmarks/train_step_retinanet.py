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
import numpy as np

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
    from plates.synthetic import render_scene
    from detection.train_retinanet import MEAN, STD

    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(CONFIG.batch_size):
        image, objects, _, _ = render_scene(rng, CONFIG.image_size)
        kept = [o for o in objects if o["name"] in CLASSES]
        boxes = np.array([o["bbox"] for o in kept], np.float32).reshape(-1, 4)
        labels = np.array([CLASSES.index(o["name"]) + 1 for o in kept], np.int64)
        images.append((image / np.float32(255) - np.float32(MEAN)) / np.float32(STD))
        targets.append({"boxes": boxes, "labels": labels})
    return np.stack(images).astype(np.float32), targets


def make_ours():
    import nn
    from detection.retinanet import RetinaNet

    nn.manual_seed(0)
    model = RetinaNet(MODEL)
    model.train()
    optimizer = nn.optim.AdamW(model.parameters(), lr=CONFIG.lr, weight_decay=CONFIG.weight_decay)
    images, targets = _batch()

    def step():
        losses = model.loss(images, targets)
        optimizer.zero_grad()
        losses["loss"].backward()
        nn.optim.clip_grad_norm_(model.parameters(), CONFIG.clip_grad)
        optimizer.step()
        return losses["loss"].item()

    return step


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
            backbone = reference.backbone
            blocks = [len(stage) for stage in (backbone.layer1, backbone.layer2,
                                               backbone.layer3, backbone.layer4)]
            stem = "7x7" if backbone.stem[0].weight.shape[0] == 7 else "3x3"
            self.backbone = ResNet(blocks, backbone.out_channels, stem)
            self.slice = reference._backbone_slice
            in_channels = backbone.out_channels[self.slice]
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

    def box_iou(a, b):
        area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
        area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        lt = torch.maximum(a[:, None, :2], b[None, :, :2])
        rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=2)
        return inter / (area_a[:, None] + area_b[None, :] - inter)

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

    def encode(gt, anchors):
        aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
        ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
        gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
        gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
        return torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw),
                            torch.log(gh / ah)], dim=1)

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

    def step():
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
        loss = cls_loss + box_loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CONFIG.clip_grad)
        optimizer.step()
        return loss.item()

    return step
