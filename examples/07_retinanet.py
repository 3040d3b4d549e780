"""07 — RetinaNet: anchors on a feature pyramid, matching, the focal loss, training from scratch.

The lecture ends its detection part with RetinaNet (Lin, Goyal, Girshick, He and
Dollár, "Focal Loss for Dense Object Detection", ICCV 2017): a *single-stage*
detector with

- a ResNet backbone and a Feature Pyramid Network (multiple scales),
- a class subnet and a box subnet shared by every pyramid level, predicting for
  each of A anchors per location K class scores and 4 box deltas,
- the *focal loss*, which handles the imbalance between the ~10^4-10^5 background
  anchors and the handful of objects of an image.

This tutorial follows the data through it on the synthetic plate scenes (classes
car and plate):

1. anchors per pyramid level (drawn),
2. matching: which anchors of one image are foreground, ignored or background,
3. focal loss against cross entropy (the paper's Figure 1),
4. training (a short run; ``python -m plates.train_detector`` does the full one),
5. detections drawn and evaluated with COCO mAP.

A full run's detections and losses (1458 steps, val mAP 0.708, plate AP50 0.993):
``docs/figures/07_detections.png`` and ``docs/figures/07_loss_curves.png``.

Run it with ``python examples/07_retinanet.py`` (``--quick`` for a seconds-long run;
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
from plates.train_detector import DETECTOR_CLASSES as CLASSES  # noqa: E402
from plates.train_detector import detector_train_config, plate_detector_config  # noqa: E402
from detection.train_retinanet import (MEAN, STD,  # noqa: E402
                                       evaluate, load_run,
                                       train_retinanet)
from detection.retinanet import RetinaNet  # noqa: E402
from detection.visualize import draw_anchors, draw_boxes, show_image  # noqa: E402
from tutorial import command_line, figure_writer, output_folder, plate_scenes  # noqa: E402

# %% Configuration
args = command_line(__doc__, "tiny data, model and run (seconds)", minutes=4.0)

SEED = 0
NUM_IMAGES = 24 if args.quick else 600
OUT_DIR = output_folder(args, "07_retinanet")
DATA_DIR = os.path.join(OUT_DIR, "plates")
nn.manual_seed(SEED)
NAMES = {1: "car", 2: "plate"}
save = figure_writer(OUT_DIR)


# %% Data
# The synthetic street scenes of tutorial 04, 256x256, kept to the classes car (1)
# and plate (2). Images are normalized per channel; the model sees (N, H, W, 3).
plate_scenes(DATA_DIR, NUM_IMAGES, SEED)
val = VOCDataset(DATA_DIR, "val", classes=CLASSES, transforms=Compose([Normalize(MEAN, STD)]))
raw = VOCDataset(DATA_DIR, "val", classes=CLASSES)
# The scene with the most objects makes the clearest pictures.
counts = [len(raw.load_target(i)["boxes"]) for i in range(len(raw))]
example = int(np.argmax(counts))
image, target = raw[example]
print(f"example {target['image_id']}: {len(target['boxes'])} objects "
      f"{[NAMES[int(label)] for label in target['labels']]}")

# %% 1. Anchors per pyramid level
# The model configuration used for the plate scenes: levels P3..P6 (strides 8..64).
# Measured on the generated boxes, plates are small and wide (square-root area 15-80
# px, height/width 0.2-0.8) and cars large (64-256 px), so each level l gets a base
# size 16·2^(l-3), three scales per octave (x1, x2^(1/3), x2^(2/3)) and three aspect
# ratios (h/w = 0.25, 0.5, 1): A = 9 anchors at every location of every level.
config = plate_detector_config("small", quick=args.quick)
model = RetinaNet(config)
cls_logits, box_deltas, feature_sizes = model(val[example][0][None])
anchors = model.anchors(image.shape[:2], feature_sizes)
A = model.num_anchors
per_level = [h * w * A for h, w in feature_sizes]
print(f"feature maps {feature_sizes}; anchors per level {per_level}, {len(anchors)} in all")
print(f"head outputs: cls_logits {cls_logits.shape} (N, R, K), box_deltas {box_deltas.shape}")

figure = Figure(figsize=(3.2 * len(config.levels), 3.6))
starts = np.concatenate([[0], np.cumsum(per_level)])
for column, (level, (h, w)) in enumerate(zip(config.levels, feature_sizes)):
    ax = figure.add_subplot(1, len(config.levels), column + 1)
    show_image(ax, image)
    # The A anchors of the location nearest the image centre: row-major (y, x, a) order.
    location = (h // 2) * w + w // 2
    first = starts[column] + location * A
    draw_anchors(ax, anchors[first:first + A], color="yellow", linewidth=1.0)
    stride = model.strides[column]
    ax.set_title(f"P{level}: stride {stride}, {h}x{w}x{A} anchors", fontsize=9)
save(figure, "07_anchors_per_level.png")

# %% 2. Matching: foreground, ignored, background
# Each anchor takes the object it overlaps most. IoU >= 0.5: foreground (it learns
# that object's class and box); IoU < 0.4: background (all K targets 0); in between:
# ignored by the classification loss (neither clearly object nor background). Each
# object also keeps its best anchor(s) even below 0.5 ("low-quality matches"), so
# even a tiny plate gets a positive.
cls_targets, valid, matched, foreground = model.assign_targets(anchors, [target])
ignored = ~valid[0]
print(f"matching: {int(foreground.sum())} foreground, {int(ignored.sum())} ignored, "
      f"{int((valid[0] & ~foreground[0]).sum())} background anchors of {len(anchors)}")
# Colours: the ground-truth boxes white (captioned), foreground anchors green,
# ignored anchors orange: one colour per meaning.
figure = Figure(figsize=(10, 5.6))
ax_fg, ax_ig = figure.subplots(1, 2)
show_image(ax_fg, image)
draw_anchors(ax_fg, anchors[foreground[0]], color="lime", linewidth=0.8, show_centers=True)
draw_boxes(ax_fg, target["boxes"], target["labels"], class_names=NAMES, colors="white",
           linewidth=2)
ax_fg.set_title(f"foreground anchors (green; IoU >= 0.5 or the object's best):\n"
                f"{int(foreground.sum())}; ground truth in white", fontsize=9)
show_image(ax_ig, image)
draw_anchors(ax_ig, anchors[ignored], color="orange", linewidth=0.6, show_centers=False)
draw_boxes(ax_ig, target["boxes"], target["labels"], class_names=NAMES, colors="white",
           linewidth=2)
ax_ig.set_title(f"ignored anchors (orange; 0.4 <= IoU < 0.5):\n{int(ignored.sum())}; "
                f"ground truth in white", fontsize=9)
save(figure, "07_matching.png")

# %% 3. Focal loss against cross entropy
# With p the predicted probability of the true class (p_t), cross entropy is
# CE(p_t) = -log(p_t). Even a well-classified background anchor (p_t = 0.95) pays
# -log(0.95) = 0.05, and ten thousand of them outweigh a few hard objects. The focal
# loss scales CE by (1 - p_t)^gamma: FL(p_t) = -(1 - p_t)^gamma log(p_t) (the paper
# also weighs classes with alpha_t; 0.25 for the foreground, with gamma = 2).
p_t = np.linspace(0.001, 1.0, 500)
figure = Figure(figsize=(6, 4.5))
ax = figure.add_subplot()
for gamma in (0, 0.5, 1, 2, 5):
    ax.plot(p_t, -(1 - p_t) ** gamma * np.log(p_t), label=rf"$\gamma$ = {gamma}" +
            (" (cross entropy)" if gamma == 0 else ""))
ax.axvspan(0.6, 1.0, color="grey", alpha=0.15)
ax.text(0.62, 3.5, "well-classified\nexamples", fontsize=9)
ax.set_xlabel(r"probability of the ground-truth class $p_t$")
ax.set_ylabel("loss")
ax.set_ylim(0, 5)
ax.legend()
ax.set_title(r"focal loss $FL(p_t) = -(1 - p_t)^\gamma \log(p_t)$")
save(figure, "07_focal_loss.png")

# The same on this image's anchors at initialisation: every anchor starts at
# p = 0.01 (the prior-probability bias), so the background anchors are "easy"
# (p_t = 0.99) and the few foreground anchors hard (p_t = 0.01).
logits = nn.Tensor(np.full(cls_targets.shape, np.log(0.01 / 0.99), np.float32))
for gamma in (0.0, 2.0):
    loss = nn.functional.sigmoid_focal_loss(logits, cls_targets, alpha=0.25, gamma=gamma).data
    loss = loss * valid[..., None]
    background_share = loss[~foreground].sum() / loss.sum()
    print(f"gamma {gamma}: background anchors carry {100 * background_share:.3g}% of the "
          f"classification loss")

# %% 4. Training
# Forward, matching, focal loss + smooth-L1 on the foreground box deltas (both divided
# by the number of foreground anchors), backward, AdamW with warm-up and cosine decay.
# ``train_retinanet`` does all of it with a progress bar, seeded, keeping the best
# checkpoint by val mAP. Here a short run; the full one (15 minutes) is
# ``python -m plates.train_detector --data DIR --out RUN_DIR``. (On a machine busy
# with other jobs, ``OPENBLAS_NUM_THREADS=1 python examples/07_retinanet.py`` trains
# several times faster than two BLAS threads that keep waiting for each other.)
run_dir = os.path.join(OUT_DIR, "run")
train_config = detector_train_config(DATA_DIR, run_dir, minutes=args.minutes, seed=SEED,
                                     quick=args.quick, eval_at=(1.0,), progress=not args.quick)
result = train_retinanet(train_config)
print(f"trained {result['steps']} steps in {result['train_seconds']:.0f} s; "
      f"val COCO mAP {result['val']['map']:.3f}, AP50 "
      + ", ".join(f"{k} {v:.3f}" for k, v in result["val"]["ap50_per_class"].items()))
print(f"loss curves: {os.path.join(run_dir, 'loss_curves.png')}")

# %% 5. Detections
# ``predict`` turns the head outputs into boxes: sigmoid scores above 0.05, the top
# 1000 per level, decoded from the anchors, class-aware NMS at IoU 0.5, at most 100
# per image. Drawn: the detections scoring at least 0.4.
trained, _ = load_run(os.path.join(run_dir, "best.npz"))
evaluation = evaluate(trained, val)
figure = Figure(figsize=(12, 3.6))
shown = min(4, len(val))
for column in range(shown):
    ax = figure.add_subplot(1, shown, column + 1)
    show_image(ax, raw[column][0])
    det = evaluation["predictions"][column]
    draw_boxes(ax, det["boxes"], det["labels"], det["scores"], class_names=NAMES,
               score_threshold=0.4, linewidth=1.5, fontsize=7)
    ax.set_title(f"{raw.ids[column]}: {int((det['scores'] >= 0.4).sum())} detections", fontsize=9)
if args.quick:
    figure.suptitle("--quick: a tiny network trained for seconds, not a trained detector "
                    "(docs/figures/07_detections.png: the 15-minute run)", color="red")
save(figure, "07_detections.png")
print(f"COCO mAP {evaluation['metrics']['map']:.3f} on {len(val)} val images")
