"""03 — Boxes, IoU, anchors, non-maximum suppression and mAP.

The vocabulary every detector of the lecture shares, on one street scene:

1. **Boxes and IoU.** A box is ``(x1, y1, x2, y2)`` in pixels. Intersection over
   union measures how well a predicted box fits the ground truth:
   ``IoU = |A ∩ B| / |A ∪ B|``, in [0, 1]. Generalized IoU also ranks disjoint boxes.
2. **Anchors.** Faster R-CNN's RPN and RetinaNet place a few boxes of fixed sizes and
   aspect ratios at every cell of every pyramid level; training matches them to the
   objects by IoU and regresses deltas from anchor to object.
3. **Non-maximum suppression**, the lecture's algorithm: from 9000 scored candidate
   boxes, repeatedly keep the best one and remove everything overlapping it by
   IoU > 0.5, until 100 are kept.
4. **mAP.** How a detector is scored: match detections to objects at an IoU
   threshold, trace the precision-recall curve, average. And the "explain" view:
   for each false positive, why (duplicate, bad localization, wrong class, background).

The candidates of section 3 come from a *simulated* detector (jittered copies of
the true boxes with IoU-dependent scores): training a real one is the subject of
the later tutorials, and this one is about what happens after the network.

Run it with ``python examples/03_boxes_iou_nms.py`` (``--quick`` for a few-second
run; ``--out DIR`` chooses where the figures go, ``out/`` by default).
"""
import argparse
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")  # write files, never open a window
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from detection.anchors import AnchorGenerator  # noqa: E402
from detection.box_coder import BoxCoder  # noqa: E402
from detection.boxes import (  # noqa: E402
    box_convert, box_iou, clip_boxes_to_image, generalized_box_iou,
)
from plates.synthetic import render_scene  # noqa: E402
from detection.matcher import Matcher  # noqa: E402
from detection.metrics import (  # noqa: E402
    explain_detections, format_explanation, mean_average_precision, precision_recall_curve,
    voc_evaluate,
)
from detection.nms import batched_nms, nms, soft_nms  # noqa: E402
from detection.visualize import (  # noqa: E402
    draw_anchors, draw_boxes, label_color, plot_pr_curves, plot_precision_recall, save_figure,
    show_image,
)

# %% Configuration
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="smaller figures and fewer repeats")
parser.add_argument("--out", default="out", help="directory for the figures")
args = parser.parse_args()

SEED = 10                       # a scene with three cars and their plates
IMAGE_SIZE = 320
NUM_CANDIDATES = 9000           # the lecture's NMS input ...
NUM_PROPOSALS = 100             # ... and output
NMS_THRESHOLD = 0.5
CLASS_NAMES = {1: "car", 2: "plate"}
EVAL_IMAGES = 6 if args.quick else 30     # scenes of the mAP section
DPI = 70 if args.quick else 110
TIMING_REPEATS = 3 if args.quick else 20
os.makedirs(args.out, exist_ok=True)
rng = np.random.default_rng(SEED)
start_time = time.perf_counter()


def save(figure, name):
    path = os.path.join(args.out, name)
    save_figure(figure, path, dpi=DPI)
    print(f"saved {path}")


# %% 0. A scene with exact boxes
# The plate lab's renderer draws a street scene and knows the tight box of every
# object. The detector of the lab finds two classes: cars and plates. (The
# characters are 4-5 pixels wide at this size: the lab segments them in a plate
# crop instead of detecting them in the whole image.)
def scene(seed):
    """Image (H, W, 3) uint8, boxes (G, 4) float32 xyxy and labels (G,) of cars and plates."""
    image, objects, _, _ = render_scene(np.random.default_rng(seed), IMAGE_SIZE)
    objects = [o for o in objects if o["name"] in ("car", "plate")]
    boxes = np.array([o["bbox"] for o in objects], np.float32).reshape(-1, 4)
    labels = np.array([1 if o["name"] == "car" else 2 for o in objects], np.int64)
    return image, boxes, labels


image, gt_boxes, gt_labels = scene(SEED)
print(f"image {image.shape}; {len(gt_boxes)} objects: "
      + ", ".join(f"{np.sum(gt_labels == k)} {name}s" for k, name in CLASS_NAMES.items()))

# %% 1. Box formats and IoU
# Three ways to write the same box. COCO files store xywh, YOLO predicts cxcywh;
# everything in detseg computes in xyxy.
plate = gt_boxes[gt_labels == 2][1]
for fmt in ("xywh", "cxcywh"):
    converted = box_convert(plate[None], "xyxy", fmt)[0]
    print(f"plate box xyxy {plate.tolist()} -> {fmt} {converted.tolist()}")

# Slide a copy of the plate box sideways by a fraction f of its width: the overlap
# is (1 - f) of a box and the union (1 + f) boxes, so IoU = (1 - f) / (1 + f), and
# f = (1 - IoU) / (1 + IoU) gives the shift of a wanted IoU. Then two disjoint
# copies: touching (f = 1) and half a width apart (f = 1.5).
fractions = [(1 - iou) / (1 + iou) for iou in (0.9, 0.7, 0.5, 0.3)] + [1.0, 1.5]
width = plate[2] - plate[0]
shifted = np.stack([plate + np.array([f * width, 0, f * width, 0], np.float32) for f in fractions])
ious = box_iou(plate[None], shifted)[0]
gious = generalized_box_iou(plate[None], shifted)[0]
for iou, giou in zip(ious, gious):
    print(f"  IoU {iou:.3f}   GIoU {giou:+.3f}")
print("IoU is 0 for every disjoint pair, however far; GIoU keeps decreasing, which gives a")
print("box-regression loss (1 - GIoU) a gradient even before the boxes overlap.")
print(f"IoU does not change when both boxes are scaled: "
      f"{box_iou(plate[None] * 3, shifted[:1] * 3)[0, 0]:.6f} vs {ious[0]:.6f}")

figure = Figure(figsize=(12, 5))
for ax, box, iou, giou in zip(figure.subplots(2, 3).ravel(), shifted, ious, gious):
    show_image(ax, image)
    ax.set_xlim(plate[0] - 10, shifted[-1, 2] + 10)                  # zoom on the plate
    ax.set_ylim(plate[3] + 12, plate[1] - 12)
    inter = [max(plate[0], box[0]), plate[1], min(plate[2], box[2]), plate[3]]
    if inter[2] > inter[0]:
        ax.add_patch(Rectangle(inter[:2], inter[2] - inter[0], inter[3] - inter[1],
                               facecolor="yellow", alpha=0.45, edgecolor="none"))
    draw_boxes(ax, np.stack([plate, box]), colors=["lime", "orangered"], linewidth=2)
    ax.set_title(f"IoU {iou:.2f}   GIoU {giou:+.2f}")
figure.suptitle("Ground truth (green) and a prediction (red); the intersection is yellow")
save(figure, "03_iou.png")

# %% 2. Anchors of a feature pyramid
# A backbone with strides 8, 16, 32 turns the 320x320 image into 40x40, 20x20 and
# 10x10 feature maps. Every cell of each level carries A anchors (sizes x aspect
# ratios, ratio = height / width); small anchors on the fine level, large on the coarse.
SIZES = ((16, 32), (48, 96), (128, 256))
feature_sizes = [(IMAGE_SIZE // s, IMAGE_SIZE // s) for s in (8, 16, 32)]


def make_anchors(ratios):
    generator = AnchorGenerator(SIZES, (ratios,) * 3, offset=0.5)     # centered in the cells
    return generator, generator.grid_anchors((IMAGE_SIZE, IMAGE_SIZE), feature_sizes)


generator, levels = make_anchors((0.5, 1.0, 2.0))
anchors = np.concatenate(levels)
per_location = generator.num_anchors_per_location()
print(f"\nanchors per location {per_location}; per level "
      f"{[len(level) for level in levels]}; {len(anchors)} in all")
print("order: level, then row y, column x, then the A anchors of the cell — exactly how a")
print("head's (N, H, W, A*K) output reshapes to (N, H*W*A, K).")

# Matching: an anchor is a positive for the object it overlaps by IoU >= 0.5, background
# below 0.4, ignored in between. An object whose best anchor stays below 0.5 (a small
# plate between the anchor sizes) would get no positive at all: Faster R-CNN's
# "low-quality matches" also give each object its best anchor(s).
quality = box_iou(gt_boxes, anchors)                          # (G, num_anchors)
best = quality.max(axis=1)
print("best anchor IoU per object: "
      + ", ".join(f"{CLASS_NAMES[k]} {v:.2f}" for k, v in zip(gt_labels.tolist(), best)))
strict = Matcher(0.5, 0.4)(quality)
rescued = Matcher(0.5, 0.4, allow_low_quality_matches=True)(quality)
for name, matches in (("IoU >= 0.5 only", strict), ("with low-quality matches", rescued)):
    per_object = np.bincount(matches[matches >= 0], minlength=len(gt_boxes))
    print(f"{name:26s}: positives per object {per_object.tolist()}, "
          f"ignored {np.sum(matches == -2)}, background {np.sum(matches == -1)}")
print("(low-quality matches give every object at least its best anchor, even below 0.5)")

# The regression target of a positive anchor: deltas (dx, dy, dw, dh) that turn the
# anchor into its object; decoding them gives the object back.
coder = BoxCoder()
positive = np.flatnonzero(rescued >= 0)
deltas = coder.encode(gt_boxes[rescued[positive]], anchors[positive])
decoded = coder.decode(deltas, anchors[positive])
print(f"deltas of the first positives:\n{np.round(deltas[:3], 3)}")
print(f"max |decode(encode(gt)) - gt| = "
      f"{np.abs(decoded - gt_boxes[rescued[positive]]).max():.2e} px")

figure = Figure(figsize=(13, 4.8))
car = gt_boxes[gt_labels == 1][1]
car_center = (car[:2] + car[2:]) / 2
offset = 0
for ax, level, (height, width), a, stride in zip(figure.subplots(1, 3), levels, feature_sizes,
                                                 per_location, (8, 16, 32)):
    show_image(ax, image)
    centers = (level[::a, :2] + level[::a, 2:]) / 2                   # one per cell
    ax.plot(centers[:, 0], centers[:, 1], ".", color="white", markersize=1.5, alpha=0.6)
    # the A anchors of the cell under the car's center
    cell = int(car_center[1] // stride) * width + int(car_center[0] // stride)
    draw_anchors(ax, level[cell * a:(cell + 1) * a], color="yellow", linewidth=1.2)
    matched = rescued[offset:offset + len(level)] >= 0
    draw_boxes(ax, level[matched], colors="lime", linewidth=0.8)
    offset += len(level)
    ax.set_title(f"stride {stride}: {height}x{width} cells x {a} anchors\n"
                 f"{matched.sum()} positives (green)")
figure.suptitle("Anchors of a 3-level pyramid: cell centers (dots), the anchors of one cell "
                "(yellow), anchors matched to an object (green)")
save(figure, "03_anchors.png")


# %% 3. A detector's raw output: 9000 candidates
def simulate_detector(rng, boxes, labels, count):
    """Jittered copies of the true boxes, scored by how well they fit, plus clutter.

    A trained detector fires many times around each object: boxes a little off in
    position and size, with scores that are higher the better the box (but noisy),
    some with the wrong class, and some on empty background.
    """
    num_near = int(0.9 * count) if len(boxes) else 0
    owner = rng.integers(0, max(len(boxes), 1), num_near)
    sides = (boxes[owner, 2:] - boxes[owner, :2])[:, [0, 1, 0, 1]]         # (n, 4): w, h, w, h
    spread = rng.choice([0.05, 0.15, 0.35], p=[0.5, 0.35, 0.15], size=(num_near, 1))
    near = boxes[owner] + rng.normal(0, 1, (num_near, 4)) * spread * sides
    near = np.concatenate([np.minimum(near[:, :2], near[:, 2:]),
                           np.maximum(near[:, :2], near[:, 2:])], axis=1)
    fit = box_iou(near, boxes)[np.arange(num_near), owner]
    visibility = rng.uniform(0.3, 1.0, len(boxes))            # some objects are hard to see
    near_scores = (fit ** 2 * visibility[owner] * rng.uniform(0.7, 1.0, num_near)
                   + rng.normal(0, 0.1, num_near))
    near_labels = labels[owner].copy()
    # 5% carry the wrong class, with a lower score: class-aware NMS cannot remove them
    # (nothing of their class overlaps them), they become "confusion" false positives.
    confused = rng.random(num_near) < 0.05
    near_labels[confused] = 3 - near_labels[confused]             # car <-> plate
    near_scores[confused] *= 0.5
    num_far = count - num_near
    corner = rng.uniform(0, IMAGE_SIZE, (num_far, 2))
    far = np.concatenate([corner, corner + rng.uniform(8, 80, (num_far, 2))], axis=1)
    far_scores = rng.beta(1, 5, num_far) * 0.9
    all_boxes = clip_boxes_to_image(np.concatenate([near, far]), (IMAGE_SIZE, IMAGE_SIZE))
    all_scores = np.clip(np.concatenate([near_scores, far_scores]), 0.001, 0.999)
    all_labels = np.concatenate([near_labels, rng.integers(1, 3, num_far)])
    return all_boxes.astype(np.float32), all_scores.astype(np.float32), all_labels


boxes, scores, labels = simulate_detector(rng, gt_boxes, gt_labels, NUM_CANDIDATES)
print(f"\n{len(boxes)} candidates, scores in [{scores.min():.2f}, {scores.max():.2f}]")

# %% 4. NMS step by step (the lecture's algorithm)
# (1) choose the remaining box A with the highest score; (2) add A to the output;
# (3) remove A and the remaining boxes with IoU(A, .) > 0.5; (4) stop when nothing
# remains or 100 boxes are kept. Like an RPN, this first pass ignores the classes.
remaining = np.argsort(-scores, kind="stable")               # sorted once, best first
output, steps = [], []
while remaining.size and len(output) < NUM_PROPOSALS:
    best = remaining[0]                                       # (1)
    output.append(best)                                       # (2)
    overlaps = box_iou(boxes[best][None], boxes[remaining[1:]])[0]
    removed = remaining[1:][overlaps > NMS_THRESHOLD]          # (3)
    if len(steps) < 5:
        steps.append((best, removed, remaining.size))
    remaining = remaining[1:][overlaps <= NMS_THRESHOLD]
output = np.array(output)
library = nms(boxes, scores, NMS_THRESHOLD, max_output=NUM_PROPOSALS)
assert np.array_equal(output, library), "the step-by-step loop and detection.nms disagree"
print(f"kept {len(output)} of {len(boxes)}; detection.nms returns the same indices")


def best_time(fn):
    times = []
    for _ in range(TIMING_REPEATS):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return 1e3 * min(times)


survivors = nms(boxes, scores, NMS_THRESHOLD)
print(f"without the limit of {NUM_PROPOSALS}, {len(survivors)} boxes survive; detection.nms "
      f"finds them in {best_time(lambda: nms(boxes, scores, NMS_THRESHOLD)):.1f} ms")
print("(it sorts once, then each kept box examines only the candidates whose centers are")
print("close enough in x to reach IoU > 0.5, one binary search away)")

figure = Figure(figsize=(13, 8.5))
panels = figure.subplots(2, 3).ravel()
for k, (ax, (best, removed, alive)) in enumerate(zip(panels, steps)):
    show_image(ax, image)
    draw_boxes(ax, boxes[removed], colors=(1.0, 0.0, 0.0, 0.08), linewidth=0.5)
    draw_boxes(ax, boxes[best][None], colors="lime", linewidth=2)
    ax.set_title(f"step {k + 1}: the best box (score {scores[best]:.2f}) removes\n"
                 f"{len(removed)} of the {alive - 1} other candidates (red)", fontsize=9)
show_image(panels[-1], image)
draw_boxes(panels[-1], boxes[output], colors=[label_color(v) for v in labels[output]],
           linewidth=1)
panels[-1].set_title(f"output: the top {len(output)} boxes", fontsize=9)
save(figure, "03_nms_steps.png")

# %% 5. Class-aware NMS for the final detections
# A detector's last step suppresses per class: a plate lies inside its car, and a
# car box must not remove it. batched_nms does all classes in one pass.
keep = batched_nms(boxes, scores, labels, NMS_THRESHOLD)[:NUM_PROPOSALS]
agnostic = set(nms(boxes, scores, NMS_THRESHOLD).tolist())
print(f"\nclass-aware NMS keeps {len(keep)} detections; "
      f"{len(set(keep.tolist()) - agnostic)} of them a class-agnostic pass would have removed")
soft_keep, soft_scores = soft_nms(boxes, scores, sigma=0.5, score_threshold=0.05)
print(f"Soft-NMS (Gaussian) keeps {len(soft_keep)} boxes with decayed scores >= 0.05 "
      f"instead of deleting the overlapping ones")

figure = Figure(figsize=(12, 6))
left, right = figure.subplots(1, 2)
show_image(left, image)
draw_boxes(left, boxes, colors=(1.0, 1.0, 0.0, 0.03), linewidth=0.5)
left.set_title(f"{len(boxes)} candidates")
show_image(right, image)
draw_boxes(right, boxes[keep], labels[keep], scores[keep], class_names=CLASS_NAMES,
           score_threshold=0.5, linewidth=1.2, fontsize=7)
right.set_title("after class-aware NMS (score >= 0.5 shown)")
save(figure, "03_detections.png")

# %% 6. mAP: how good are these detections?
# For each class, the detections of all images are taken by decreasing score; each is
# a true positive if it overlaps a not-yet-matched object of its class by IoU >= t,
# else a false positive. Precision and recall after each detection trace a curve; AP
# is the area under it (COCO reads precision at 101 recall points and averages); mAP
# averages over classes, and COCO's "map" also over t = 0.50, 0.55, ..., 0.95.
# We run the simulated detector and NMS on a few more scenes.
EVAL_SEEDS = range(100, 100 + EVAL_IMAGES)
targets = []
for seed in EVAL_SEEDS:
    _, scene_boxes, scene_labels = scene(seed)
    targets.append({"boxes": scene_boxes, "labels": scene_labels})


def detect_all(nms_threshold):
    """Simulated candidates of each evaluation scene, class-aware NMS, the top 100."""
    detections = []
    for seed, target in zip(EVAL_SEEDS, targets):
        candidates = simulate_detector(np.random.default_rng(seed), target["boxes"],
                                       target["labels"], 3000)
        kept = batched_nms(*candidates, nms_threshold)[:NUM_PROPOSALS]
        detections.append({key: array[kept] for key, array in
                           zip(("boxes", "scores", "labels"), candidates)})
    return detections


predictions = detect_all(NMS_THRESHOLD)
result = mean_average_precision(predictions, targets)
print(f"\n{EVAL_IMAGES} images, {sum(len(t['boxes']) for t in targets)} objects, "
      f"{sum(len(p['boxes']) for p in predictions)} detections")
print(f"COCO mAP (averaged over IoU 0.50:0.95) {result['map']:.3f}, mAP@0.5 "
      f"{result['map_50']:.3f}, mAP@0.75 {result['map_75']:.3f}, mAR@100 {result['mar_100']:.3f}")
print("COCO AP per class (over IoU 0.50:0.95): "
      + ", ".join(f"{CLASS_NAMES[k]} {v:.3f}" for k, v in result["map_per_class"].items()))
print("The PR figure plots IoU 0.5 only: its per-class AP is AP50, not the COCO AP above.")
voc = voc_evaluate(predictions, targets, iou_threshold=0.5)
print(f"Pascal VOC mAP@0.5 (all-point) {voc['map']:.3f}")

# Explain mode: why is it not 1? Every false positive gets a reason.
explanation = explain_detections(predictions, targets, iou_thresholds=[0.5, 0.75])
print("\n" + format_explanation(explanation))
print("duplicate: a second box on an already-found object; localization: right class but")
print("IoU below t; confusion: overlaps an object of another class; background: nothing.")
status = np.concatenate([image_result["status"][0] for image_result in explanation["images"]])
all_scores = np.concatenate([p["scores"] for p in predictions])
print(f"median score of the true positives {np.median(all_scores[status == 'tp']):.2f}, "
      f"of the false positives {np.median(all_scores[status == 'fp']):.2f}: most false")
print("positives rank below the true ones, where they cost little precision.")

# The NMS threshold trades duplicates against missed neighbours: too high and
# duplicates pass as false positives; too low and overlapping objects of one class
# suppress each other.
print("\nNMS threshold -> mAP@0.5, mAP, duplicates at IoU 0.5")
for threshold in (0.3, 0.5, 0.7, 0.9):
    detections = detect_all(threshold)
    summary = mean_average_precision(detections, targets)
    duplicates = explain_detections(detections, targets)["summary"]["duplicate"][0]
    print(f"  {threshold:.1f} -> {summary['map_50']:.3f}, {summary['map']:.3f}, "
          f"{duplicates} duplicates")

figure = Figure(figsize=(12, 4.8))
left, right = figure.subplots(1, 2)
plot_precision_recall(precision_recall_curve(predictions, targets, iou_threshold=0.5),
                      class_names=CLASS_NAMES, ax=left)
left.set_title("COCO: interpolated precision, IoU 0.5\n(legend: AP50 per class)", fontsize=10)
with_gt = [k for k, ap in voc["ap_per_class"].items() if ap >= 0]
plot_pr_curves([voc["recall"][k] for k in with_gt], [voc["precision"][k] for k in with_gt],
               names=[f"{CLASS_NAMES[k]} (AP {voc['ap_per_class'][k]:.3f})" for k in with_gt],
               ax=right, title="")
right.set_title("VOC: raw precision-recall, IoU 0.5\n(detection by detection; legend: VOC AP50)",
                fontsize=10)
save(figure, "03_pr_curve.png")
print(f"done in {time.perf_counter() - start_time:.1f} s")
