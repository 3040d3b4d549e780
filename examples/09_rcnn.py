"""09 — R-CNN: graph segmentation, selective search, warped regions and their cost.

R-CNN (Girshick, Donahue, Darrell and Malik, CVPR 2014) was the first CNN detector.
It does not look at every window: it asks *selective search* (Uijlings et al., IJCV
2013) for ~2000 boxes that probably hold an object, warps each to a fixed square and
runs a CNN on every one. This tutorial follows one street scene through it:

1. graph-based segmentation (Felzenszwalb and Huttenlocher 2004) at several k,
2. the grouping hierarchy: neighbouring regions merged, most similar first,
3. proposals and their recall against the number kept,
4. warped regions with context, and the background class they are labelled with,
5. a small R-CNN trained on a few scenes (CNN fine-tuning, SVMs, box regression) and
   its mAP on held-out scenes, with the SVMs and with the CNN's softmax,
6. R-CNN's cost per image: 2000 forward passes.

Run it with ``python examples/09_rcnn.py`` (``--quick`` for a short run; ``--out DIR``
chooses where the figures go, ``out/`` by default).
"""
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")  # write files, never open a window
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nn  # noqa: E402
from detection.boxes import box_iou  # noqa: E402
from detection.rcnn import RCNN, RCNNConfig  # noqa: E402
from detection.selective_search import (convert_color, felzenszwalb,  # noqa: E402
                                        hierarchical_grouping, selective_search)
from detection.train_rcnn_svm import (RegionBatches, evaluate, fit_heads,  # noqa: E402
                                      training_regions)
from detection.visualize import draw_boxes, show_image  # noqa: E402
from plates.synthetic import render_scene  # noqa: E402
from tutorial import command_line, figure_writer, output_folder  # noqa: E402

# %% Configuration
args = command_line(__doc__, "few scenes, short training", out_help="directory for the figures")

SEED = 0
IMAGE_SIZE = 256
TRAIN_SCENES = 2 if args.quick else 12
RECALL_SCENES = 2 if args.quick else 10
FINE_TUNE_STEPS = 20 if args.quick else 400
OUT_DIR = output_folder(args, "09_rcnn")
nn.manual_seed(SEED)
NAMES = {1: "car", 2: "plate"}
save = figure_writer(OUT_DIR)


def scene(index):
    """A rendered street scene and its cars (1) and plates (2)."""
    image, objects, _, _ = render_scene(np.random.default_rng(index), IMAGE_SIZE)
    kept = [o for o in objects if o["name"] in ("car", "plate")]
    boxes = np.array([o["bbox"] for o in kept], np.float32).reshape(-1, 4)
    labels = np.array([1 if o["name"] == "car" else 2 for o in kept], np.int64)
    return image, {"boxes": boxes, "labels": labels}


def color_segments(labels, rng):
    """Each segment in a random color."""
    return rng.uniform(0.1, 1.0, (labels.max() + 1, 3))[labels]


# %% Data
# One scene to follow (scene 7: two cars, two plates).
image, target = scene(7)
print(f"scene: {len(target['boxes'])} objects {[NAMES[int(k)] for k in target['labels']]}")

# %% 1. Graph-based segmentation
# Pixels are nodes, 8-neighbours are joined by edges weighted by color distance.
# Kruskal-like, edges are visited from the lightest; an edge merges its two regions
# when it is lighter than both regions' internal difference plus k/|C|. Larger k
# means larger regions. Note how the plate survives as its own region at small k.
hsv = convert_color(image / 255.0, "hsv")
figure = Figure(figsize=(13, 3.6))
ax = figure.add_subplot(1, 4, 1)
show_image(ax, image)
ax.set_title("scene", fontsize=9)
for column, k in enumerate((50, 100, 300)):
    start = time.perf_counter()
    segments = felzenszwalb(hsv, scale=k, sigma=0.8, min_size=k)
    took = time.perf_counter() - start
    ax = figure.add_subplot(1, 4, column + 2)
    show_image(ax, color_segments(segments, np.random.default_rng(k)))
    ax.set_title(f"k={k}: {segments.max() + 1} regions ({took:.2f} s)", fontsize=9)
save(figure, "09_felzenszwalb.png")

# %% 2. The grouping hierarchy
# Selective search starts from those regions and merges the two most similar
# neighbours, again and again: similarity = color + texture + size + fill. Small
# regions merge first (size), and regions that fill each other's box (fill). Every
# region ever formed gives a box.
segments = felzenszwalb(hsv, scale=100, sigma=0.8, min_size=100)
boxes, merges = hierarchical_grouping(hsv, segments, "CTSF")
count = segments.max() + 1
figure = Figure(figsize=(13, 3.6))
for column, fraction in enumerate((0.0, 0.5, 0.8, 0.95)):
    steps = int(fraction * len(merges))
    owner = np.arange(2 * count - 1)                 # the region each region belongs to
    for step, (i, j) in enumerate(merges[:steps]):
        owner[i] = owner[j] = count + step
    for _ in range(steps):                           # follow the chain to the top
        parent = owner[owner]
        if np.array_equal(parent, owner):
            break
        owner = parent
    ax = figure.add_subplot(1, 4, column + 1)
    show_image(ax, color_segments(owner[segments], np.random.default_rng(1)))
    ax.set_title(f"after {steps} of {len(merges)} merges: {count - steps} regions", fontsize=9)
save(figure, "09_hierarchy.png")

# %% 3. Proposals and recall
# The paper pools boxes from several strategies ("fast": HSV and Lab, k = 50 and 100,
# similarities CTSF and TSF) and ranks them (hierarchy level x random). Recall: the
# share of objects with some proposal at IoU >= t among the first N.
start = time.perf_counter()
proposals = selective_search(image, mode="fast")
print(f"selective search: {len(proposals)} proposals in {time.perf_counter() - start:.2f} s")
figure = Figure(figsize=(10, 5))
ax = figure.add_subplot(1, 2, 1)
show_image(ax, image)
draw_boxes(ax, proposals[:60], colors="yellow", linewidth=0.7)
ax.set_title("the first 60 proposals", fontsize=9)
counts = np.unique(np.geomspace(10, 2000, 16).astype(int))
best = {1: [], 2: []}
recall_scenes = []                                   # kept: held-out scenes for section 5
for index in range(100, 100 + RECALL_SCENES):
    other_image, other_target = scene(index)
    found = selective_search(other_image, mode="fast")
    recall_scenes.append((other_image, other_target, found))
    for box, label in zip(other_target["boxes"], other_target["labels"]):
        iou = box_iou(box[None], found)[0]
        best[int(label)].append([iou[:n].max() for n in counts])
ax = figure.add_subplot(1, 2, 2)
for label, style in ((1, "-"), (2, "--")):
    values = np.array(best[label]).reshape(-1, len(counts))
    for threshold, color in ((0.5, "C0"), (0.7, "C1")):
        recall = (values >= threshold).mean(axis=0) if len(values) else np.zeros(len(counts))
        ax.plot(counts, recall, style, color=color,
                label=f"{NAMES[label]}s ({len(values)}), IoU {threshold}")
ax.set_xscale("log")
ax.set_xlabel("proposals kept (N)")
ax.set_ylabel("recall")
ax.set_ylim(0, 1.02)
ax.legend(fontsize=8)
ax.set_title(f"recall over {RECALL_SCENES} scenes", fontsize=9)
save(figure, "09_proposals_recall.png")

# %% 4. Warped regions and the background class
# Each proposal is dilated (16 px of context at 227, here 16/227 of the warp size),
# then warped to 32x32 whatever its shape. Labels for fine-tuning: IoU >= 0.5 with an
# object takes its class, everything else is *background* — most proposals are.
model = RCNN(RCNNConfig(num_classes=2, warp_size=32))
prepared = model.prepare(image, target, proposals)
labels = prepared["labels"][:len(proposals)]
share = {name: int((labels == k).sum()) for k, name in ((0, "background"), (1, "car"),
                                                         (2, "plate"))}
print(f"proposal labels: {share}")
figure = Figure(figsize=(11, 4.2))
rng = np.random.default_rng(0)
rows = []
for k in (1, 2, 0):
    members = np.flatnonzero(labels == k)
    rows.append(rng.permutation(members)[:8])
for row, members in enumerate(rows):
    for column, index in enumerate(members):
        ax = figure.add_subplot(3, 9, row * 9 + column + 1)
        crop = prepared["crops"][index] + (image / 255.0).mean(axis=(0, 1))
        show_image(ax, np.clip(crop, 0, 1))
        ax.set_title({0: "background", 1: "car", 2: "plate"}[int(labels[index])], fontsize=7)
ax = figure.add_subplot(1, 9, 9)
ax.bar(range(3), list(share.values()), color=["0.6", "C0", "C1"])
ax.set_xticks(range(3), list(share.keys()), rotation=60, fontsize=7)
ax.set_title("labels", fontsize=8)
save(figure, "09_warped_regions.png")

# %% 5. Training a small R-CNN
# (a) fine-tune the CNN as a 3-way classifier on minibatches of 128 warped regions,
# a quarter of them objects, drawn from all training scenes at once (``RegionBatches``
# of the trainer: every region of every scene is labelled once, each batch is warped on
# the fly); (b) per-class linear SVMs on its features (positives: the ground-truth
# boxes; negatives: IoU < 0.3 with every object of the class; hard negatives mined);
# (c) ridge regression of (tx, ty, tw, th) from features of proposals with IoU >= 0.6.
# ``python -m detection.train_rcnn_svm`` runs the same stages on a dataset, with a time
# budget, checkpoints and an evaluation.
train = [scene(index) for index in range(200, 200 + TRAIN_SCENES)]
train_images = np.stack([im for im, _ in train])
train_targets = [tg for _, tg in train]
start = time.perf_counter()
train_proposals = [selective_search(im) for im in train_images]
print(f"proposals of {TRAIN_SCENES} scenes: {time.perf_counter() - start:.1f} s")
regions = training_regions(model, train_targets, train_proposals)
print(f"{regions['labels'].size} training regions, {(regions['labels'] > 0).sum()} of objects")
batches = RegionBatches(train_images, regions, 128, 0.25, model.config.warp_size,
                        model.config.context, rng)
optimizer = nn.optim.Adam(model.net.parameters(), lr=2e-3)
losses = []
start = time.perf_counter()
for step in range(FINE_TUNE_STEPS):
    crops, region_labels = next(batches)            # (128, 32, 32, 3), 32 objects first
    losses.append(model.fine_tune_step(crops, region_labels, optimizer))
print(f"fine-tuning: {FINE_TUNE_STEPS} steps in {time.perf_counter() - start:.1f} s, "
      f"loss {np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.3f}")
heads = fit_heads(model, train_images, train_targets, train_proposals, rng, progress=False)
print(f"SVMs and box regressors on {heads['regions']} regions in {heads['seconds']:.1f} s")

# The scenes of section 3 were not trained on: COCO mAP there with the SVMs (R-CNN) and
# with the CNN's own softmax (the paper's comparison). A few scenes and a few hundred
# steps give a rough figure; the trainer's runs give the real ones.
held_images, held_targets, held_proposals = zip(*recall_scenes)
for scoring in ("svm", "softmax"):
    metrics = evaluate(model, held_images, held_targets, held_proposals, ("car", "plate"),
                       scoring)["metrics"]
    print(f"{scoring:7s} scoring on {RECALL_SCENES} held-out scenes: COCO mAP "
          f"{metrics['map']:.3f}, AP50 "
          + ", ".join(f"{k} {v:.2f}" for k, v in metrics["ap50_per_class"].items()))
detections = model.detect(image, proposals)
figure = Figure(figsize=(10, 5))
ax = figure.add_subplot(1, 2, 1)
ax.plot(losses)
ax.set_xlabel("step")
ax.set_ylabel("cross entropy")
ax.set_title("fine-tuning the CNN", fontsize=9)
ax = figure.add_subplot(1, 2, 2)
show_image(ax, image)
top = detections["scores"] > 0
draw_boxes(ax, detections["boxes"][top][:10], detections["labels"][top][:10],
           detections["scores"][top][:10], class_names=NAMES)
ax.set_title("detections (SVM score > 0) on the scene", fontsize=9)
save(figure, "09_detections.png")

# %% 6. The cost of R-CNN
# Every proposal goes through the CNN on its own: 2000 forward passes per image. The
# proposals themselves take seconds too. Fast R-CNN runs the CNN once per image and
# pools each region from the shared feature map instead.
model.predict(image)                              # selective search, timed
proposal_seconds = model.timings["proposals"]
many = np.tile(proposals, (int(np.ceil(2000 / len(proposals))), 1))[:2000]
model.detect(image, many)                         # 2000 regions: warp, CNN, heads
model.timings["proposals"] = proposal_seconds
stages = ["proposals", "warp", "features", "heads"]
seconds = [model.timings[stage] for stage in stages]
print("R-CNN per image (2000 regions): " + ", ".join(f"{s} {t:.2f} s" for s, t in
                                                      zip(stages, seconds)))
figure = Figure(figsize=(6, 3.5))
ax = figure.add_subplot(1, 1, 1)
ax.barh(stages[::-1], seconds[::-1], color=["C3", "C2", "C1", "C0"])
ax.set_xlabel("seconds per 256-px image")
ax.set_title("R-CNN: where one image's time goes", fontsize=9)
save(figure, "09_cost.png")
