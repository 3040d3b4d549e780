"""10 — Faster R-CNN: shared features, RoI pooling, anchors, the RPN, NMS, detections.

The lecture's two-stage detectors, in the order they appeared:

- **Fast R-CNN** (Girshick, ICCV 2015): run the convolutional network *once* per image
  and cut every proposal's features out of the shared map with **RoI pooling**
  (a fixed 7x7 grid per box), then classify the box and refine it;
- **Faster R-CNN** (Ren, He, Girshick and Sun, NeurIPS 2015): the proposals come from
  a **Region Proposal Network** on the same map — per location and per anchor, an
  objectness score and four box offsets — and **NMS** reduces thousands of anchors to a
  few hundred proposals.

This tutorial follows one scene of the synthetic street data (classes car and plate)
through the model:

1. the shared feature map and RoI pooling (RoIPool against RoIAlign),
2. anchors: 3 scales x 3 aspect ratios at every location,
3. the RPN's training targets (IoU 0.7 / 0.3, 256 sampled anchors),
4. training (a short run; ``python -m detection.train_rcnn`` does the full one),
5. objectness and offsets of the trained RPN, NMS from thousands of anchors to
   hundreds of proposals,
6. detections and their COCO mAP.

Run it with ``python examples/10_faster_rcnn.py`` (``--quick`` for a seconds-long run;
``--out DIR`` chooses where the dataset and figures go, ``out/`` by default;
``--minutes`` the training budget of the full run).
"""
import os
import sys

import matplotlib

matplotlib.use("Agg")  # write files, never open a window
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nn  # noqa: E402
from detection.boxes import box_iou  # noqa: E402
from detection.datasets.transforms import Compose, Normalize  # noqa: E402
from detection.datasets.voc import VOCDataset  # noqa: E402
from detection.faster_rcnn import FasterRCNN  # noqa: E402
from detection.nms import nms  # noqa: E402
from detection.train_rcnn import (MEAN, STD, TrainConfig, evaluate, load_run,  # noqa: E402
                                  model_config, train_rcnn)
from detection.visualize import draw_anchors, draw_boxes, show_image  # noqa: E402
from tutorial import command_line, figure_writer, output_folder, plate_scenes  # noqa: E402

# %% Configuration
args = command_line(__doc__, "tiny data, model and run (seconds)", minutes=4.0)

SEED = 0
NUM_IMAGES = 24 if args.quick else 600
CLASSES = ("car", "plate")
OUT_DIR = output_folder(args, "10_faster_rcnn")
DATA_DIR = os.path.join(OUT_DIR, "plates")
nn.manual_seed(SEED)
NAMES = {1: "car", 2: "plate"}
save = figure_writer(OUT_DIR)


# %% Data
# The synthetic street scenes of tutorial 04, 256x256, kept to the classes car (1) and
# plate (2); label 0 is the background, which the second stage predicts as a class of
# its own. Images are normalized per channel; the model sees (N, H, W, 3).
plate_scenes(DATA_DIR, NUM_IMAGES, SEED)
val = VOCDataset(DATA_DIR, "val", classes=CLASSES, transforms=Compose([Normalize(MEAN, STD)]))
raw = VOCDataset(DATA_DIR, "val", classes=CLASSES)
counts = [len(raw.load_target(i)["boxes"]) for i in range(len(raw))]
example = int(np.argmax(counts))  # the scene with the most objects
image, target = raw[example]
print(f"example {target['image_id']}: {len(target['boxes'])} objects "
      f"{[NAMES[int(label)] for label in target['labels']]}")

# %% 1. Shared features and RoI pooling
# R-CNN ran a CNN on every one of ~2000 warped crops. Fast R-CNN runs it once: a
# ResNet and a top-down pathway give one map at stride 8 (32x32 cells for a 256-px
# image). Any box is then read from that map: RoIPool rounds the box to cells, splits
# it into 7x7 bins and takes each bin's maximum; RoIAlign keeps the box continuous
# and averages bilinear samples. Either way every box, big or small, becomes a
# 7x7xC feature: the input of the fully connected head.
config = model_config("faster_rcnn", len(CLASSES), quick=args.quick)
model = FasterRCNN(config)
features, objectness, box_deltas = model(val[example][0][None])
print(f"shared map {features.shape} (stride {model.stride}); RPN outputs: objectness "
      f"{objectness.shape} (N, H·W·A), box_deltas {box_deltas.shape}")
box = target["boxes"][int(np.argmax(target["labels"] == 1)) if (target["labels"] == 1).any()
                      else 0]
pooled = {name: fn(features, [box[None]], 7, 1 / model.stride).data[0]
          for name, fn in (("RoIPool", nn.functional.roi_pool),
                           ("RoIAlign", nn.functional.roi_align))}
figure = Figure(figsize=(13, 3.4))
axes = figure.subplots(1, 4)
show_image(axes[0], image)
draw_boxes(axes[0], box[None], colors="yellow", linewidth=2)
axes[0].set_title("the image and one box", fontsize=9)
energy = np.linalg.norm(features.data[0], axis=-1)  # (H/8, W/8): feature magnitude per cell
axes[1].imshow(energy, cmap="viridis", extent=(0, image.shape[1], image.shape[0], 0))
draw_boxes(axes[1], box[None], colors="yellow", linewidth=2)
axes[1].set_title(f"shared map {features.shape[1]}x{features.shape[2]}x{features.shape[3]} "
                  f"(norm per cell)", fontsize=9)
for ax, (name, grid) in zip(axes[2:], pooled.items()):
    ax.imshow(np.linalg.norm(grid, axis=-1), cmap="viridis")
    ax.set_title(f"{name}: 7x7x{grid.shape[-1]} (norm per bin)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
save(figure, "10_roi_pooling.png")
# The trained runs pool with RoIAlign: a plate covers one or two cells of this map, and
# rounding its box to whole cells loses most of where it is. Measured on the plate
# scenes, 15 minutes each on one core: plate AP50 1.000 with RoIAlign, 0.936 with
# RoIPool (docs/results.md).

# %% 2. Anchors: 3 scales x 3 aspect ratios at every location
# The RPN's reference boxes: at each of the 32x32 cells, A = 9 anchors of square-root
# areas 16, 32 and 128 px and height/width 0.25, 0.5 and 1 (plates are small and wide,
# cars large). The head predicts for each anchor one objectness logit and four
# offsets (dx, dy, dw, dh) that move and rescale it.
anchors = model.rpn.anchors(image.shape[:2], features.shape[1:3])
A = model.rpn.num_anchors
h, w = features.shape[1:3]
print(f"{h}x{w} locations x {A} anchors = {len(anchors)} anchors")
figure = Figure(figsize=(5, 5))
ax = figure.add_subplot()
show_image(ax, image)
location = (h // 2) * w + w // 2  # the location nearest the centre: (y, x, anchor) order
draw_anchors(ax, anchors[location * A:(location + 1) * A], color="yellow", linewidth=1.0)
ax.set_title(f"the {A} anchors of one location (stride {model.stride})", fontsize=9)
save(figure, "10_anchors.png")

# %% 3. The RPN's targets
# An anchor is positive when its IoU with an object is >= 0.7, or when it is the
# object's best anchor (so a small plate gets one too); negative below 0.3; ignored
# in between. Each image contributes 256 anchors to the loss, at most half positive:
# binary cross entropy on their objectness, smooth L1 on the positives' offsets.
labels, matched = model.rpn.assign_targets(anchors, [target["boxes"]])
positive, negative = model.rpn.sampler(list(labels))
print(f"RPN targets: {int((labels == 1).sum())} positive, {int((labels == 0).sum())} negative, "
      f"{int((labels == -1).sum())} ignored; sampled {int(positive[0].sum())} positive + "
      f"{int(negative[0].sum())} negative")
figure = Figure(figsize=(10, 5.4))
ax_pos, ax_neg = figure.subplots(1, 2)
show_image(ax_pos, image)
draw_anchors(ax_pos, anchors[labels[0] == 1], color="lime", linewidth=0.8)
draw_boxes(ax_pos, target["boxes"], target["labels"], class_names=NAMES, colors="white",
           linewidth=2)
ax_pos.set_title(f"positive anchors (green): {int((labels == 1).sum())}", fontsize=9)
show_image(ax_neg, image)
draw_anchors(ax_neg, anchors[negative[0]], color="red", linewidth=0.4, show_centers=False)
ax_neg.set_title(f"sampled negative anchors (red): {int(negative[0].sum())}", fontsize=9)
save(figure, "10_rpn_targets.png")

# %% 4. Training
# One step: the shared map, the RPN loss, proposals (constants for the second
# stage: "approximate joint training"), 64 RoIs per image sampled from the proposals
# plus the ground truth (25% foreground at IoU >= 0.5, background in [0.1, 0.5)),
# RoI pooling, the head's cross entropy over K+1 classes and smooth L1 on the true
# class's box offsets; the four losses are added. ``train_rcnn`` runs it on the
# engine (AdamW, warm-up, cosine decay, best checkpoint by val mAP). The full run:
# ``python -m detection.train_rcnn --model faster_rcnn --data DIR --out RUN_DIR
# --classes car plate``.
run_dir = os.path.join(OUT_DIR, "run")
result = train_rcnn(TrainConfig(detector="faster_rcnn", data=DATA_DIR, out=run_dir,
                                classes=CLASSES, minutes=args.minutes, seed=SEED,
                                quick=args.quick, eval_at=(1.0,), progress=not args.quick))
print(f"trained {result['steps']} steps in {result['train_seconds']:.0f} s; val COCO mAP "
      f"{result['val']['map']:.3f}; loss curves in {os.path.join(run_dir, 'loss_curves.png')}")
trained, _ = load_run(os.path.join(run_dir, "best.npz"))

# %% 5. Objectness, offsets and NMS: thousands of anchors to hundreds of proposals
# The trained RPN scores every anchor. Its best anchors, moved by their offsets, pile
# up on the objects: many boxes per object. NMS keeps the best box and removes every
# box overlapping it by IoU > 0.7, then repeats; the 300 best survivors are the
# proposals at test time.
with nn.no_grad():
    features, objectness, box_deltas = trained(val[example][0][None])
logits = objectness.data[0]
probability = 1 / (1 + np.exp(-logits.astype(np.float64)))
top = np.argsort(-logits, kind="stable")[:trained.rpn.pre_nms_top_n[1]]
decoded = trained.rpn.box_coder.decode(box_deltas.data[0][top], anchors[top])
kept = nms(decoded, logits[top], trained.rpn.nms_threshold)[:trained.rpn.post_nms_top_n[1]]
print(f"{len(anchors)} anchors -> top {len(top)} by objectness -> {len(kept)} after NMS at "
      f"{trained.rpn.nms_threshold} (at most {trained.rpn.post_nms_top_n[1]})")
figure = Figure(figsize=(15, 5))
ax_map, ax_before, ax_after = figure.subplots(1, 3)
ax_map.imshow(probability.reshape(h, w, A).max(axis=-1), cmap="magma", vmin=0, vmax=1,
              extent=(0, image.shape[1], image.shape[0], 0))
ax_map.set_title("objectness (best anchor per location)", fontsize=9)
show_image(ax_before, image)
draw_boxes(ax_before, decoded[:50], colors="cyan", linewidth=0.6)
ax_before.set_title("the 50 best anchors after their offsets, before NMS", fontsize=9)
show_image(ax_after, image)
draw_boxes(ax_after, decoded[kept[:20]], colors="cyan", linewidth=0.8)
ax_after.set_title(f"the 20 best of {len(kept)} proposals after NMS", fontsize=9)
save(figure, "10_objectness_nms.png")
recall = box_iou(target["boxes"], decoded[kept]).max(axis=1) if len(kept) else np.zeros(0)
print("best proposal IoU per object: " + ", ".join(f"{v:.2f}" for v in recall))

# %% 6. Detections
# The second stage classifies the 300 proposals (softmax over background, car,
# plate), moves each by its class's offsets, and keeps per class the boxes scoring
# above 0.05 after NMS at 0.5. Drawn: the detections scoring at least 0.5.
evaluation = evaluate(trained, val)
figure = Figure(figsize=(12, 3.6))
shown = min(4, len(val))
for column in range(shown):
    ax = figure.add_subplot(1, shown, column + 1)
    show_image(ax, raw[column][0])
    det = evaluation["predictions"][column]
    draw_boxes(ax, det["boxes"], det["labels"], det["scores"], class_names=NAMES,
               score_threshold=0.5, linewidth=1.5, fontsize=7)
    ax.set_title(f"{raw.ids[column]}: {int((det['scores'] >= 0.5).sum())} detections", fontsize=9)
save(figure, "10_detections.png")
metrics = evaluation["metrics"]
print(f"COCO mAP {metrics['map']:.3f}, AP50 " + ", ".join(
    f"{k} {v:.3f}" for k, v in metrics["ap50_per_class"].items()) + f" on {len(val)} val images")
