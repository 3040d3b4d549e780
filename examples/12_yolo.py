"""12 — YOLO (v1): the grid, the target tensor, the loss, training, where the grid loses.

"You Only Look Once" (Redmon, Divvala, Girshick and Farhadi, CVPR 2016) reads
detection as one regression: the image is cut into an S x S grid; each cell predicts
B boxes ``(x, y, w, h, confidence)`` and C class probabilities, one tensor
``S x S x (B·5 + C)`` for the whole image, no proposals and no anchors. The cell that
holds an object's centre is responsible for it.

This tutorial follows ``detection.yolo`` on the synthetic plate scenes (car, plate):

1. the grid and the responsible cells of one scene,
2. the target tensor of that scene,
3. the loss terms, on the untrained network: which predictor is responsible, what
   each of the five terms weighs,
4. a short training run (``python -m detection.train_yolo`` does the full one) and
   its detections,
5. where the coarse grid loses: two small adjacent plates in one cell.

Run it with ``python examples/12_yolo.py`` (``--quick`` for a seconds-long run;
``--out DIR`` chooses where the dataset and figures go, ``out/`` by default;
``--minutes`` the training budget of the full run).
"""
import os
import sys

import matplotlib

matplotlib.use("Agg")  # write files, never open a window
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nn  # noqa: E402
from detection.datasets.transforms import Compose, Normalize  # noqa: E402
from detection.datasets.voc import VOCDataset  # noqa: E402
from detection.train_retinanet import MEAN, STD, evaluate  # noqa: E402
from detection.train_yolo import LOSS_TERMS, TrainConfig, load_run, train_yolo  # noqa: E402
from detection.visualize import draw_boxes, show_image  # noqa: E402
from detection.yolo import (YOLO, YOLOConfig, assign_predictors, decode_output,  # noqa: E402
                            encode_targets, yolo_loss)
from tutorial import command_line, figure_writer, output_folder, plate_scenes  # noqa: E402

# %% Configuration
args = command_line(__doc__, "tiny data, model and run (seconds)", minutes=2.5)

SEED = 0
NUM_IMAGES = 24 if args.quick else 500
CLASSES = ("car", "plate")
NAMES = {1: "car", 2: "plate"}
OUT_DIR = output_folder(args, "12_yolo")
DATA_DIR = os.path.join(OUT_DIR, "plates")
nn.manual_seed(SEED)
save = figure_writer(OUT_DIR)


def draw_grid(ax, size, cells, color="white"):
    """Grid lines of ``cells`` x ``cells`` over a ``size``-px square image."""
    for k in range(1, cells):
        ax.axhline(k * size / cells, color=color, linewidth=0.5, alpha=0.6)
        ax.axvline(k * size / cells, color=color, linewidth=0.5, alpha=0.6)


def draw_responsible_cells(ax, boxes, labels, size, cells):
    """Fill the cell of every object's centre; cross the objects the cell drops."""
    encoded = encode_targets([{"boxes": boxes, "labels": labels}], (cells, cells),
                             (size, size), len(CLASSES))
    step = size / cells
    for row, col in zip(*np.nonzero(encoded.object_mask[0])):
        label = int(encoded.labels[0, row, col])
        ax.add_patch(Rectangle((col * step, row * step), step, step, alpha=0.45,
                               color="lime" if label == 2 else "deepskyblue"))
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    kept = np.zeros(len(boxes), bool)
    kept_boxes = encoded.boxes[0][encoded.object_mask[0]]  # (objects kept, 4)
    for j, box in enumerate(boxes):
        kept[j] = np.any(np.all(np.abs(kept_boxes - box) < 1e-6, axis=1))
    ax.plot(centres[kept, 0], centres[kept, 1], "o", color="yellow", markersize=3)
    ax.plot(centres[~kept, 0], centres[~kept, 1], "x", color="red", markersize=8, mew=2)
    return encoded


# %% Data
# The synthetic street scenes of tutorial 04 at 256 x 256, classes car (1) and plate (2).
plate_scenes(DATA_DIR, NUM_IMAGES, SEED)
val = VOCDataset(DATA_DIR, "val", classes=CLASSES, transforms=Compose([Normalize(MEAN, STD)]))
raw = VOCDataset(DATA_DIR, "val", classes=CLASSES)
counts = [len(raw.load_target(i)["boxes"]) for i in range(len(raw))]
example = int(np.argmax(counts))  # the scene with the most objects
image, target = raw[example]
SIZE = image.shape[0]
boxes, labels = target["boxes"].astype(np.float64), target["labels"]
print(f"example {target['image_id']}: {len(boxes)} objects "
      f"{[NAMES[int(v)] for v in labels]}")

# %% 1. The grid and its responsible cells
# The cell containing an object's centre is responsible for it: it alone learns that
# object's box and class. Here the network ends at stride 16, so a 256-px image has
# S = 16 cells per side (the paper: S = 7 on 448 px, 64-px cells). Blue cells hold a
# car's centre, green cells a plate's; a red cross marks an object whose cell already
# holds a larger one (one class per cell: it is not learned).
config = YOLOConfig(num_classes=len(CLASSES))
S = SIZE // config.stride
figure = Figure(figsize=(11, 5.6))
for ax, cells in zip(figure.subplots(1, 2), (SIZE // 32, S)):
    show_image(ax, image)
    draw_grid(ax, SIZE, cells)
    encoded = draw_responsible_cells(ax, boxes, labels, SIZE, cells)
    draw_boxes(ax, boxes, labels, class_names=NAMES, linewidth=1.2, fontsize=7)
    ax.set_title(f"S = {cells} ({SIZE // cells}-px cells): {int(encoded.object_mask.sum())} "
                 f"responsible cells, {int(encoded.dropped.sum())} object(s) dropped",
                 fontsize=9)
save(figure, "12_grid.png")

# %% 2. The target tensor
# ``encode_targets`` writes, for every cell, whether it holds an object and the
# object's (x, y, √w, √h): x, y the centre's offset inside the cell (0..1), √w, √h
# the square roots of the width and height relative to the whole image; and the class
# one-hot. All other cells are zeros. The network's output has the same grid with B
# boxes and C probabilities per cell: (N, S, S, B·5 + C).
encoded = encode_targets([target], (S, S), (SIZE, SIZE), len(CLASSES))
for row, col in zip(*np.nonzero(encoded.object_mask[0])):
    x, y, sw, sh = encoded.coords[0, row, col]
    print(f"cell ({row:2d}, {col:2d}) {NAMES[int(encoded.labels[0, row, col])]:5s}: "
          f"x {x:.2f}  y {y:.2f}  sqrt(w) {sw:.2f}  sqrt(h) {sh:.2f}  class one-hot "
          f"{encoded.classes[0, row, col].astype(int).tolist()}")
channels = [("object in cell", encoded.object_mask[0].astype(float))]
channels += [(name, encoded.coords[0, ..., k]) for k, name in enumerate(("x", "y", "√w", "√h"))]
channels += [("class: plate", encoded.classes[0, ..., 1])]
figure = Figure(figsize=(13, 2.8), layout="constrained")
for ax, (name, values) in zip(figure.subplots(1, len(channels)), channels):
    shown = ax.imshow(values, cmap="viridis", vmin=0, vmax=1)
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
figure.colorbar(shown, ax=figure.axes, shrink=0.8)
figure.suptitle(f"the target tensor of the example ({S} x {S} cells)", fontsize=10)
save(figure, "12_targets.png")

# %% 3. The loss terms (untrained network)
# Of the B boxes of a responsible cell, the one whose *current* prediction overlaps the
# object most is "responsible" (so the B predictors specialise in sizes and shapes);
# its confidence should become that IoU. The loss, summed over cells and divided by
# the number of images:
#   5 · [(x - x̂)² + (y - ŷ)²]  + 5 · [(√w - √ŵ)² + (√h - √ĥ)²]   responsible boxes
#   + (C - IoU)²                                                  responsible boxes
#   + 0.5 · C²                                                    every other box
#   + Σ_c (p(c) - p̂(c))²                                         cells with an object
# λcoord = 5 lifts the few box errors; λnoobj = 0.5 lowers the many empty boxes.
model = YOLO(YOLOConfig(num_classes=len(CLASSES), width_multiplier=0.5 if args.quick else 1.0))
with nn.no_grad():  # in training mode (batch statistics), as the loss sees it
    output = model(val[example][0][None]).data  # (1, S, S, B·5 + C)
responsible, iou = assign_predictors(output, encoded, config.boxes_per_cell)
terms = yolo_loss(nn.Tensor(output), encoded, responsible, iou)
print("untrained loss terms: " + ", ".join(f"{k} {terms[k].item():.3f}" for k in LOSS_TERMS))
predicted, _, _ = decode_output(output, (SIZE, SIZE), config.boxes_per_cell)
figure = Figure(figsize=(11, 5))
ax_boxes, ax_terms = figure.subplots(1, 2)
show_image(ax_boxes, image)
draw_grid(ax_boxes, SIZE, S)
cells = encoded.object_mask[0]
draw_boxes(ax_boxes, predicted[0][cells][~responsible[0][cells]], colors="orange", linewidth=0.8)
draw_boxes(ax_boxes, predicted[0][responsible[0]], colors="lime", linewidth=1.5)
draw_boxes(ax_boxes, boxes, colors="white", linewidth=1.5)
ax_boxes.set_title("UNTRAINED network: the B boxes of each object cell\n(green: responsible, "
                   "orange: the others; white: ground truth)", fontsize=9)
ax_terms.bar(LOSS_TERMS, [terms[k].item() for k in LOSS_TERMS], color="C0")
ax_terms.set_ylabel("loss per image")
ax_terms.set_title("the five terms at initialisation (UNTRAINED)", fontsize=9)
save(figure, "12_loss_terms.png")

# %% 4. A short training run and its detections
# ``train_yolo`` runs the engine of every detseg trainer: AdamW with warm-up and cosine
# decay fitted to the time budget, random rescaling/crop and colour jitter, val COCO
# mAP at the end, the best checkpoint kept. The full run:
# ``python -m detection.train_yolo --data DIR --out RUN_DIR --classes car plate``.
run_dir = os.path.join(OUT_DIR, "run")
result = train_yolo(TrainConfig(data=DATA_DIR, out=run_dir, classes=CLASSES,
                                minutes=args.minutes, seed=SEED, quick=args.quick,
                                eval_at=(1.0,), progress=not args.quick))
print(f"trained {result['steps']} steps in {result['train_seconds']:.0f} s; val COCO mAP "
      f"{result['val']['map']:.3f}, AP50 "
      + ", ".join(f"{k} {v:.3f}" for k, v in result["val"]["ap50_per_class"].items()))
trained, _ = load_run(os.path.join(run_dir, "best.npz"))
evaluation = evaluate(trained, val)
history = nn.load(os.path.join(run_dir, "last.npz"))["history"]["losses"]
figure = Figure(figsize=(14, 3.8))
axes = figure.subplots(1, 5)
for key in LOSS_TERMS:
    values = np.asarray(history[key], np.float64)
    window = max(1, min(25, values.size // 10))
    axes[0].plot(np.convolve(values, np.ones(window) / window, mode="valid"), label=key)
axes[0].set_yscale("log")
axes[0].set_xlabel("step")
axes[0].set_title("loss terms (moving mean)", fontsize=9)
axes[0].legend(fontsize=7)
for ax, i in zip(axes[1:], range(min(4, len(val)))):
    show_image(ax, raw[i][0])
    d = evaluation["predictions"][i]
    draw_boxes(ax, d["boxes"], d["labels"], d["scores"], class_names=NAMES, linewidth=1.2,
               fontsize=6, score_threshold=0.3)
    ax.set_title(f"after {result['steps']} steps"
                 f"{' (quick: barely trained)' if args.quick else ''}: score >= 0.3", fontsize=8)
save(figure, "12_training.png")

# %% 5. Where the coarse grid loses: small adjacent plates
# One cell, one object. Two plates whose centres fall in the same cell (two cars
# parked side by side far away) leave one of them unlearned and undetectable: the
# paper's "small objects that appear in groups". S = 16 separates plates whose centres
# are a cell (16 px) apart, not closer ones. Over the training set, the fraction of
# objects that share their cell with a larger one falls as the grid gets finer (the
# price: more cells, most of them empty).
train_raw = VOCDataset(DATA_DIR, "train", classes=CLASSES)
all_targets = [train_raw.load_target(i) for i in range(len(train_raw))]
grids = (4, 7, 8, 16, 32)
dropped = [encode_targets(all_targets, (s, s), (SIZE, SIZE), len(CLASSES)).dropped.sum()
           for s in grids]
total = sum(len(t["boxes"]) for t in all_targets)
for s, d in zip(grids, dropped):
    print(f"S = {s:2d}: {d} of {total} objects share their cell with a larger one")

# Two pairs of small plates pasted onto the example, shrunk copies of its largest
# plate: 14 px wide with centres 16 px apart, and 10 px wide with centres 12 px apart.
plates = np.flatnonzero(labels == 2)
if len(plates):
    x1, y1, x2, y2 = boxes[plates[np.argmax(boxes[plates, 2] - boxes[plates, 0])]].astype(int)
    crop = image[y1:y2, x1:x2]
else:  # a plain light plate with a dark border when the example has none
    crop = np.full((10, 30, 3), 230, np.uint8)
    crop[[0, -1]] = crop[:, [0, -1]] = 40
pair_image = image.copy()
pair_boxes = []
for plate_width, centres in ((14, (40, 56)), (10, (130, 142))):
    plate_height = max(4, round(plate_width * crop.shape[0] / crop.shape[1]))
    small = np.asarray(Image.fromarray(crop).resize((plate_width, plate_height), Image.BILINEAR))
    top = 200 - plate_height // 2
    for centre in centres:
        left = centre - plate_width // 2
        pair_image[top:top + plate_height, left:left + plate_width] = small
        pair_boxes.append([left, top, left + plate_width, top + plate_height])
pair = np.array(pair_boxes, np.float64)
normalized = (pair_image / np.float32(255) - np.asarray(MEAN, np.float32)) \
    / np.asarray(STD, np.float32)
[found] = trained.predict(normalized[None].astype(np.float32), score_threshold=0.1)
x_lo, x_hi, y_lo, y_hi = 16, 176, 168, 232  # the pasted region
figure = Figure(figsize=(15, 4.2))
axes = figure.subplots(1, 4)
axes[0].bar([str(s) for s in grids], 100 * np.asarray(dropped) / max(total, 1), color="C3")
axes[0].set_xlabel("S (cells per side)")
axes[0].set_ylabel("% of train objects dropped")
axes[0].set_title(f"one object per cell ({total} objects)", fontsize=9)
for ax, cells in zip(axes[1:3], (8, S)):
    show_image(ax, pair_image)
    draw_grid(ax, SIZE, cells)
    e = draw_responsible_cells(ax, pair, np.full(len(pair), 2), SIZE, cells)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_hi, y_lo)
    ax.set_title(f"S = {cells} ({SIZE // cells}-px cells): {int(e.dropped.sum())} of 4 "
                 f"plates dropped", fontsize=9)
show_image(axes[3], pair_image)
draw_boxes(axes[3], found["boxes"], found["labels"], found["scores"], class_names=NAMES,
           linewidth=1.2, fontsize=6)
axes[3].set_xlim(x_lo, x_hi)
axes[3].set_ylim(y_hi, y_lo)
axes[3].set_title(f"detections after the {result['steps']}-step run\n"
                  f"{'(quick: barely trained) ' if args.quick else ''}score >= 0.1: "
                  f"{len(found['boxes'])} boxes", fontsize=9)
save(figure, "12_adjacent_plates.png")
