"""13 — Mask R-CNN: mask targets, the mask head, masks before and after pasting, the losses.

Mask R-CNN (He, Gkioxari, Dollár and Girshick, ICCV 2017) adds a third output to
Faster R-CNN (tutorial 10): for every RoI, a small mask per class. Two details make
masks pixel-accurate:

- **RoIAlign** instead of RoIPool: no rounding of the box to the feature grid, bilinear
  samples instead of maxima;
- **one mask per class**, each a per-pixel sigmoid: the loss (binary cross entropy) only
  looks at the mask of the RoI's ground-truth class, so classes never compete for a
  pixel (the box head decides the class).

This tutorial:

1. cuts the 28x28 mask targets of a few RoIs out of an object's mask,
2. trains a short run (``python -m detection.train_rcnn --model mask_rcnn`` does the
   full one) and plots its five loss terms,
3. shows the predicted 28x28 masks and the same masks pasted back into the image,
4. evaluates box and mask COCO mAP,
5. ends the detection part with the lecture's proposal comparison: how many boxes each
   detector of tutorials 07-13 scores per image, at our 256-px scenes.

Run it with ``python examples/13_mask_rcnn.py`` (``--quick`` for a seconds-long run;
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
from detection.datasets.transforms import Compose, Normalize  # noqa: E402
from detection.datasets.voc import VOCDataset  # noqa: E402
from detection.mask_rcnn import paste_masks_in_image, project_masks_on_boxes  # noqa: E402
from detection.retinanet import RetinaNet, RetinaNetConfig  # noqa: E402
from detection.selective_search import selective_search  # noqa: E402
from detection.train_rcnn import (MEAN, STD, LOSS_NAMES, MasksAsTargets,  # noqa: E402
                                  TrainConfig, evaluate, load_run, train_rcnn)
from detection.visualize import draw_boxes, draw_masks, show_image  # noqa: E402
from detection.yolo import YOLOConfig  # noqa: E402
from tutorial import command_line, figure_writer, output_folder, plate_scenes  # noqa: E402

# %% Configuration
args = command_line(__doc__, "tiny data, model and run (seconds)", minutes=4.0)

SEED = 0
NUM_IMAGES = 24 if args.quick else 600
CLASSES = ("car", "plate")
OUT_DIR = output_folder(args, "13_mask_rcnn")
DATA_DIR = os.path.join(OUT_DIR, "plates")
nn.manual_seed(SEED)
NAMES = {1: "car", 2: "plate"}
save = figure_writer(OUT_DIR)


# %% Data
# The street scenes of tutorial 04 carry an instance mask per object
# (``SegmentationObject``: pixel value i + 1 for the i-th object of the annotation).
# ``return_instance_masks=True`` gives them as (M, H, W) booleans, one per box.
plate_scenes(DATA_DIR, NUM_IMAGES, SEED)
raw = VOCDataset(DATA_DIR, "val", classes=CLASSES, return_instance_masks=True)
counts = [len(raw.load_target(i)["boxes"]) for i in range(len(raw))]
example = int(np.argmax(counts))  # the scene with the most objects
image, target = raw[example]
masks = target["instance_masks"]
print(f"example {target['image_id']}: {len(masks)} objects, masks {masks.shape} {masks.dtype}")

# %% 1. Mask targets
# A foreground RoI learns the mask of the object it matched, seen through the RoI:
# RoIAlign of the binary mask at the RoI's box to 28x28, thresholded at 0.5. The
# RoI need not be the object's box: a shifted RoI sees a shifted mask, and learns to
# predict exactly that (the box head corrects the box separately).
car = int(np.argmax(target["labels"] == 1)) if (target["labels"] == 1).any() else 0
box = target["boxes"][car]
width, height = box[2] - box[0], box[3] - box[1]
rois = np.array([box,                                                   # the object's box
                 box + [0.25 * width, 0, 0.25 * width, 0],              # shifted right
                 box + [-0.2 * width, -0.2 * height, 0.2 * width, 0.2 * height]],  # larger
                np.float32)
mask_targets = project_masks_on_boxes(masks, rois, np.full(len(rois), car), 28)
figure = Figure(figsize=(12, 3.4))
axes = figure.subplots(1, 4)
show_image(axes[0], image)
draw_masks(axes[0], masks[car:car + 1], target["labels"][car:car + 1])
draw_boxes(axes[0], rois, colors=["white", "yellow", "cyan"], linewidth=1.5)
axes[0].set_title("an object's mask and three RoIs", fontsize=9)
for ax, grid, name in zip(axes[1:], mask_targets, ("its box (white)", "shifted (yellow)",
                                                   "larger (cyan)")):
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"28x28 target, RoI {name}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
save(figure, "13_mask_targets.png")

# %% 2. Training and the loss terms
# Five losses are added: the RPN's objectness and offsets, the box head's
# classification and offsets, and the mask loss: the mean per-pixel binary cross
# entropy of the ground-truth class's 28x28 mask on the foreground RoIs.
run_dir = os.path.join(OUT_DIR, "run")
result = train_rcnn(TrainConfig(detector="mask_rcnn", data=DATA_DIR, out=run_dir,
                                classes=CLASSES, minutes=args.minutes, seed=SEED,
                                quick=args.quick, eval_at=(1.0,), progress=not args.quick))
print(f"trained {result['steps']} steps in {result['train_seconds']:.0f} s; val box mAP "
      f"{result['val']['map']:.3f}, mask mAP {result['val']['segm']['map']:.3f}")
trained, checkpoint = load_run(os.path.join(run_dir, "last.npz"))
history = checkpoint["history"]["losses"]
figure = Figure(figsize=(7, 4.2))
ax = figure.add_subplot()
for name in LOSS_NAMES:
    values = np.asarray(history[name], np.float64)
    window = max(1, min(25, values.size // 5))
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window, values.size + 1), smooth, label=name.replace("_", " "))
ax.set_xlabel("step")
ax.set_ylabel("loss (moving mean)")
ax.set_yscale("log")
ax.legend(fontsize=8)
ax.set_title("the five loss terms of Mask R-CNN")
save(figure, "13_loss_terms.png")

# %% 3. Masks before and after pasting
# At test time the box head's detections are the mask head's RoIs. Each gets a 28x28
# probability map (the sigmoid of its predicted class's logits). Pasting puts it back
# at its box: every image pixel inside the box reads the map bilinearly at its
# position; the pixels with probability >= 0.5 are the mask. Shown: the four
# best-scoring detections.
normalized = Normalize(MEAN, STD)(image, {})[0]
with nn.no_grad():
    detections = trained.predict(normalized[None])[0]
boxes, labels = detections["boxes"][:4], detections["labels"][:4]
scores = detections["scores"][:4]
if len(boxes):
    with nn.no_grad():
        features, _, _ = trained(normalized[None])
        logits = trained.mask_logits(features, [boxes]).data          # (D, 28, 28, K)
    small = 1 / (1 + np.exp(-logits[np.arange(len(boxes)), :, :, labels].astype(np.float64)))
    pasted = paste_masks_in_image(small, boxes, image.shape[:2])
    figure = Figure(figsize=(3 * (len(boxes) + 1), 6))
    axes = figure.subplots(2, len(boxes) + 1, squeeze=False)
    for column in range(len(boxes)):
        axes[0, column].imshow(small[column], cmap="magma", vmin=0, vmax=1)
        axes[0, column].set_title(f"{NAMES[int(labels[column])]} ({scores[column]:.2f}): "
                                  f"28x28 probabilities", fontsize=8)
        axes[1, column].imshow(pasted[column], cmap="magma", vmin=0, vmax=1)
        axes[1, column].set_title("pasted at its box", fontsize=8)
    show_image(axes[0, -1], image)
    draw_boxes(axes[0, -1], boxes, labels, scores, class_names=NAMES, linewidth=1.5, fontsize=7)
    axes[0, -1].set_title("the four best detections", fontsize=8)
    show_image(axes[1, -1], image)
    draw_masks(axes[1, -1], pasted >= 0.5, labels)
    axes[1, -1].set_title("masks: probability >= 0.5", fontsize=8)
    save(figure, "13_masks_pasted.png")
else:
    print("no detection on this image (train longer)")

# %% 4. Box and mask mAP
# COCO mAP compares boxes by box IoU, masks by mask IoU (``iou_type="segm"``).
val = VOCDataset(DATA_DIR, "val", classes=CLASSES, return_instance_masks=True,
                 transforms=Compose([Normalize(MEAN, STD)]))
with_masks = MasksAsTargets(nn.data.Subset(val, range(min(len(val), 8 if args.quick else 100))))
evaluation = evaluate(trained, with_masks)
figure = Figure(figsize=(12, 3.6))
shown = min(4, len(with_masks))
for column in range(shown):
    ax = figure.add_subplot(1, shown, column + 1)
    show_image(ax, raw[column][0])
    det = evaluation["predictions"][column]
    keep = det["scores"] >= 0.5
    if keep.any():
        draw_masks(ax, det["masks"][keep], det["labels"][keep])
    draw_boxes(ax, det["boxes"], det["labels"], det["scores"], class_names=NAMES,
               score_threshold=0.5, linewidth=1.2, fontsize=7)
    ax.set_title(f"{raw.ids[column]}: {int(keep.sum())} detections", fontsize=9)
save(figure, "13_detections.png")
metrics = evaluation["metrics"]
print(f"box mAP {metrics['map']:.3f}, mask mAP {metrics['segm']['map']:.3f} on "
      f"{len(with_masks)} val images")

# %% 5. The lecture's proposal comparison
# The slide "Proposal comparison" counts the boxes each detector scores per image:
# R-CNN ~2k (selective search), YOLOv1 98 (7 x 7 cells x 2 boxes), SSD ~8-26k,
# RetinaNet ~100k (anchors on five levels at 800 px). The same counts at our 256-px
# scenes, computed from the models themselves: selective search's proposals of this
# tutorial's example scene; the RPN's anchors and the proposals it keeps after NMS (the
# run's test setting); YOLO's S x S x B boxes (S = 256 / 16); RetinaNet's anchors.
# Accuracy and time of each, measured on the same test scenes, are in docs/results.md
# ("The detectors compared", ``benchmarks/compare_detectors.py``).
side = image.shape[0]
found = selective_search(np.asarray(image), mode="fast")
with nn.no_grad():
    _, objectness, _ = trained(normalized[None])
    retina_logits = RetinaNet(RetinaNetConfig(num_classes=2))(normalized[None])[0]
yolo = YOLOConfig(num_classes=2)
candidates = {
    "R-CNN / Fast R-CNN\n(selective search)": len(found),
    "Faster / Mask R-CNN\n(RPN anchors)": objectness.shape[1],
    "Faster / Mask R-CNN\n(proposals after NMS)": trained.rpn.post_nms_top_n[1],
    "YOLOv1\n(S x S x B)": (side // yolo.stride) ** 2 * yolo.boxes_per_cell,
    "RetinaNet\n(anchors)": retina_logits.shape[1],
}
lecture = {"R-CNN / Fast R-CNN\n(selective search)": 2000, "YOLOv1\n(S x S x B)": 98,
           "RetinaNet\n(anchors)": 100000}
for name, count in candidates.items():
    print(f"{name.replace(chr(10), ' '):45s} {count:7d} boxes per {side}-px image"
          + (f" (lecture, at its image sizes: ~{lecture[name]})" if name in lecture else ""))
figure = Figure(figsize=(9, 3.8))
ax = figure.add_subplot()
positions = np.arange(len(candidates))
ax.bar(positions - 0.2, list(candidates.values()), 0.4, label=f"detseg, {side}-px scenes",
       color="tab:blue")
ax.bar([positions[list(candidates).index(n)] + 0.2 for n in lecture], list(lecture.values()),
       0.4, label="the lecture's slide", color="tab:gray")
ax.set_xticks(positions)
ax.set_xticklabels(list(candidates), fontsize=7)
ax.set_yscale("log")
ax.set_ylabel("boxes scored per image")
ax.legend(fontsize=8)
ax.set_title("how many boxes each detector looks at", fontsize=10)
figure.tight_layout()
save(figure, "13_proposal_counts.png")
