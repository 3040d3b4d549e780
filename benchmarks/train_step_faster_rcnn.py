"""One joint training step of Faster R-CNN (RPN + Fast R-CNN head), ours and in PyTorch.

Used by ``python benchmarks/bench_train_step.py --model faster_rcnn``. The configuration
is the training default (``detection.train_rcnn``: ``TrainConfig`` and ``model_config``):
256x256 scenes, the batch size, the ``resnet_small`` backbone with the stride-8
top-down map, nine anchors per location, 256 RPN anchors and 64 RoIs sampled per
image, RoIPool 7x7, fc6/fc7 of width 256, AdamW with gradient clipping.

A step is: forward of the backbone, the map and the RPN head; RPN matching (IoU 0.7 /
0.3 plus each object's best anchors), sampling, BCE + smooth-L1; proposals (top-k,
decoding, clipping, NMS 0.7, top 2000); the ground truth added to the proposals,
matching (IoU >= 0.5 foreground, below it background) and sampling of the RoIs; RoI
pooling; the head and its cross-entropy + smooth-L1 on the true class's deltas;
backward, clipping and the AdamW update.

The torch side is written in torch throughout (NCHW, its fastest layout on CPU)
except two operators that torch lacks without torchvision, which both sides run with
detseg's kernels on the same arrays: NMS (``detection.nms.batched_nms``; a greedy NMS
in torch operations would be a Python loop over boxes) and RoI pooling
(``nn.functional.roi``'s forward and backward kernels wrapped in a
``torch.autograd.Function``). RoIAlign written with torch's ``grid_sample`` at the
bins' sample points plus a 2x2 average is exact but took 50 ms forward + backward
for the 128 RoIs of a batch of two against 7 ms for the kernel: it would make torch
look slow for a reason unrelated to the rest of the step.
"""
import numpy as np

import harness
from torch_blocks import box_iou, encode, torch_resnet

from detection.train_rcnn import MEAN, STD, TrainConfig, model_config

CLASSES = ("car", "plate")
CONFIG = TrainConfig()
BATCH_SIZE, IMAGE_SIZE = CONFIG.batch_size, CONFIG.image_size
LR, WEIGHT_DECAY, CLIP_GRAD = CONFIG.lr, CONFIG.weight_decay, CONFIG.clip_grad
MODEL = model_config("faster_rcnn", len(CLASSES), CONFIG.backbone)
DESCRIPTION = (
    f"Faster R-CNN backbone {MODEL.backbone} (width x{MODEL.width_multiplier:g}), stride-"
    f"{2 ** MODEL.feature_level} map of {MODEL.feature_channels} ch, "
    f"{len(MODEL.anchor_sizes) * len(MODEL.aspect_ratios)} anchors/location, "
    f"RPN {MODEL.rpn_batch_size_per_image} anchors and {MODEL.box_batch_size_per_image} RoIs "
    f"per image, Ro{'IPool' if MODEL.pooler == 'pool' else 'IAlign'} "
    f"{MODEL.pool_size}x{MODEL.pool_size}, fc {MODEL.representation_size}, "
    f"batch {BATCH_SIZE} x {IMAGE_SIZE}x{IMAGE_SIZE}x3, AdamW + grad clip: forward, targets, "
    f"proposals, losses, backward, step"
)


def _batch(seed=0):
    """Rendered scenes (normalized images, targets with classes car=1, plate=2)."""
    return harness.scene_batch(BATCH_SIZE, IMAGE_SIZE, CLASSES, MEAN, STD, seed)


def make_ours():
    import nn
    from detection.faster_rcnn import FasterRCNN

    nn.manual_seed(0)
    model = FasterRCNN(MODEL)
    model.train()
    optimizer = nn.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    images, targets = _batch()
    return harness.training_step(lambda: model.loss(images, targets)["loss"], optimizer,
                                 lambda: nn.optim.clip_grad_norm_(model.parameters(), CLIP_GRAD))


def make_torch():
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    from detection.faster_rcnn import FasterRCNN
    from detection.nms import batched_nms
    from nn.functional.roi import (roi_align_backward, roi_align_forward, roi_pool_backward,
                                   roi_pool_forward)

    cfg = MODEL

    class FasterRCNNTorch(tnn.Module):
        def __init__(self):
            super().__init__()
            reference = FasterRCNN(cfg)  # the same widths, anchors and sizes as ours
            backbone = reference.features.backbone
            self.backbone = torch_resnet(backbone)
            self.first = cfg.feature_level - 2
            c = cfg.feature_channels
            self.lateral = tnn.ModuleList([tnn.Conv2d(w, c, 1)
                                           for w in backbone.out_channels[self.first:]])
            self.smooth = tnn.Conv2d(c, c, 3, padding=1)
            a = reference.rpn.num_anchors
            self.rpn_conv = tnn.Conv2d(c, c, 3, padding=1)
            self.rpn_objectness = tnn.Conv2d(c, a, 1)
            self.rpn_deltas = tnn.Conv2d(c, 4 * a, 1)
            for m in (self.rpn_conv, self.rpn_objectness, self.rpn_deltas):
                tnn.init.normal_(m.weight, std=0.01)
                tnn.init.zeros_(m.bias)
            k = cfg.num_classes
            self.fc6 = tnn.Linear(c * cfg.pool_size ** 2, cfg.representation_size)
            self.fc7 = tnn.Linear(cfg.representation_size, cfg.representation_size)
            self.cls_score = tnn.Linear(cfg.representation_size, k)
            self.bbox_pred = tnn.Linear(cfg.representation_size, 4 * k)
            tnn.init.normal_(self.cls_score.weight, std=0.01)
            tnn.init.normal_(self.bbox_pred.weight, std=0.001)
            tnn.init.zeros_(self.cls_score.bias)
            tnn.init.zeros_(self.bbox_pred.bias)
            self.reference = reference

        def features(self, x):
            maps = self.backbone(x)[self.first:]
            top = self.lateral[-1](maps[-1])
            for i in range(len(maps) - 2, -1, -1):
                lateral = self.lateral[i](maps[i])
                top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")
            return self.smooth(top)

        def rpn(self, features):
            n = features.shape[0]
            hidden = F.relu(self.rpn_conv(features))
            objectness = self.rpn_objectness(hidden).permute(0, 2, 3, 1).reshape(n, -1)
            deltas = self.rpn_deltas(hidden).permute(0, 2, 3, 1).reshape(n, -1, 4)
            return objectness, deltas

        def head(self, pooled):
            x = F.relu(self.fc7(F.relu(self.fc6(pooled.flatten(1)))))
            return self.cls_score(x), self.bbox_pred(x)

    def decode(deltas, ref):
        rw, rh = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
        rx, ry = ref[:, 0] + 0.5 * rw, ref[:, 1] + 0.5 * rh
        clip = float(np.log(1000.0 / 16))
        x = deltas[:, 0] * rw + rx
        y = deltas[:, 1] * rh + ry
        half_w = 0.5 * torch.exp(deltas[:, 2].clamp(max=clip)) * rw
        half_h = 0.5 * torch.exp(deltas[:, 3].clamp(max=clip)) * rh
        return torch.stack([x - half_w, y - half_h, x + half_w, y + half_h], dim=1)

    def sample(labels, batch_size, fraction):
        """Indices of sampled positives (labels >= 1) and negatives (labels == 0)."""
        positive = torch.nonzero(labels >= 1).squeeze(1)
        negative = torch.nonzero(labels == 0).squeeze(1)
        num_pos = min(positive.numel(), int(batch_size * fraction))
        num_neg = min(negative.numel(), batch_size - num_pos)
        positive = positive[torch.randperm(positive.numel())[:num_pos]]
        negative = negative[torch.randperm(negative.numel())[:num_neg]]
        return positive, negative

    def rpn_labels(boxes, anchors):
        """1 / 0 / -1 and the matched gt index per anchor (our Matcher's rule)."""
        labels = torch.zeros(anchors.shape[0], dtype=torch.int64)
        if boxes.shape[0] == 0:
            return labels, labels
        iou = box_iou(boxes, anchors)
        best, index = iou.max(dim=0)
        labels[(best >= cfg.rpn_bg_iou) & (best < cfg.rpn_fg_iou)] = -1
        labels[best >= cfg.rpn_fg_iou] = 1
        best_per_gt = iou.max(dim=1, keepdim=True).values
        labels[((iou == best_per_gt) & (best_per_gt > 0)).any(dim=0)] = 1
        return labels, index

    def proposals(objectness, deltas, anchors):
        n, r = objectness.shape
        k = min(cfg.rpn_pre_nms_top_n[0], r)
        logits, top = objectness.topk(k, dim=1)                          # (N, k)
        boxes = decode(torch.gather(deltas, 1, top[:, :, None].expand(n, k, 4)).reshape(-1, 4),
                       anchors[top.reshape(-1)])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, IMAGE_SIZE)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, IMAGE_SIZE)
        image_index = torch.arange(n).repeat_interleave(k)
        logits = logits.reshape(-1)
        side = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        valid = torch.nonzero(side >= 1e-3).squeeze(1)
        kept = valid[torch.from_numpy(batched_nms(boxes[valid].numpy(), logits[valid].numpy(),
                                                  image_index[valid].numpy(),
                                                  cfg.rpn_nms_threshold))]
        return [boxes[kept[image_index[kept] == i][:cfg.rpn_post_nms_top_n[0]]] for i in range(n)]

    def roi_targets(rois, boxes, labels):
        if boxes.shape[0] == 0:
            best = torch.zeros(rois.shape[0])
            index = torch.zeros(rois.shape[0], dtype=torch.int64)
        else:
            best, index = box_iou(boxes, rois).max(dim=0)
        out = torch.where(best >= cfg.box_bg_iou_low, 0, -1)  # bg_iou_low 0: all background
        fg = best >= cfg.box_fg_iou
        if boxes.shape[0]:
            out[fg] = labels[index[fg]]
        return out, index

    class RoIPooling(torch.autograd.Function):
        """detseg's RoIPool / RoIAlign kernels on torch tensors (NCHW in and out)."""

        @staticmethod
        def forward(ctx, features, boxes, batch_index):
            x = features.detach().permute(0, 2, 3, 1).contiguous().numpy()   # NHWC
            size = (cfg.pool_size, cfg.pool_size)
            boxes, batch_index = boxes.numpy(), batch_index.numpy()
            if cfg.pooler == "pool":
                out, argmax = roi_pool_forward(x, boxes, batch_index, size, scale)
                ctx.saved = (argmax, batch_index, x.shape)
            else:
                out, ctx.saved = roi_align_forward(x, boxes, batch_index, size, scale,
                                                   cfg.sampling_ratio, aligned=True)
            return torch.from_numpy(out).permute(0, 3, 1, 2)

        @staticmethod
        def backward(ctx, grad):
            grad = grad.permute(0, 2, 3, 1).contiguous().numpy()
            if cfg.pooler == "pool":
                grad_x = roi_pool_backward(grad, *ctx.saved).astype(np.float32)
            else:
                grad_x, _ = roi_align_backward(grad, ctx.saved, need_x=True, need_boxes=False)
            return torch.from_numpy(grad_x).permute(0, 3, 1, 2), None, None

    torch.manual_seed(0)
    model = FasterRCNNTorch()
    scale = 1.0 / model.reference.stride
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    images, targets = _batch()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW
    with torch.no_grad():
        size = tuple(model.features(x[:1]).shape[-2:])
    anchors = torch.from_numpy(model.reference.rpn.anchors(images.shape[1:3], size))
    gts = [(torch.from_numpy(t["boxes"]), torch.from_numpy(t["labels"])) for t in targets]

    def loss():
        features = model.features(x)
        objectness, deltas = model.rpn(features)
        # RPN loss
        sampled_logits, sampled_labels, pos_deltas, pos_targets = [], [], [], []
        for i, (boxes, _) in enumerate(gts):
            labels, index = rpn_labels(boxes, anchors)
            pos, neg = sample(labels, cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction)
            chosen = torch.cat([pos, neg])
            sampled_logits.append(objectness[i, chosen])
            sampled_labels.append((labels[chosen] == 1).float())
            pos_deltas.append(deltas[i, pos])
            pos_targets.append(encode(boxes[index[pos]], anchors[pos], (1, 1, 1, 1))
                               if boxes.shape[0] else deltas.new_zeros((0, 4)))
        num_sampled = sum(t.numel() for t in sampled_labels)
        rpn_cls = F.binary_cross_entropy_with_logits(torch.cat(sampled_logits),
                                                     torch.cat(sampled_labels))
        rpn_box = F.smooth_l1_loss(torch.cat(pos_deltas), torch.cat(pos_targets),
                                   beta=cfg.smooth_l1_beta, reduction="sum") / num_sampled
        # proposals (constants) and the head's samples
        with torch.no_grad():
            props = proposals(objectness.detach(), deltas.detach(), anchors)
        rois, roi_labels, roi_targets_all = [], [], []
        for (boxes, labels), p in zip(gts, props):
            candidates = torch.cat([p, boxes])
            assigned, index = roi_targets(candidates, boxes, labels)
            pos, neg = sample(assigned, cfg.box_batch_size_per_image, cfg.box_positive_fraction)
            chosen = torch.cat([pos, neg])
            rois.append(candidates[chosen])
            roi_labels.append(assigned[chosen])
            target = torch.zeros((chosen.numel(), 4))
            if pos.numel():
                target[:pos.numel()] = encode(boxes[index[pos]], candidates[pos], (10, 10, 5, 5))
            roi_targets_all.append(target)
        pooled = RoIPooling.apply(features, torch.cat(rois), torch.cat(
            [torch.full((len(r),), i) for i, r in enumerate(rois)]))
        cls_logits, box_deltas = model.head(pooled)
        labels = torch.cat(roi_labels)
        regression = torch.cat(roi_targets_all)
        cls_loss = F.cross_entropy(cls_logits, labels)
        fg = torch.nonzero(labels > 0).squeeze(1)
        per_class = box_deltas.reshape(labels.numel(), cfg.num_classes, 4)
        box_loss = F.smooth_l1_loss(per_class[fg, labels[fg]], regression[fg],
                                    beta=cfg.smooth_l1_beta, reduction="sum") / labels.numel()
        return rpn_cls + rpn_box + cls_loss + box_loss

    return harness.training_step(
        loss, optimizer, lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_GRAD))
