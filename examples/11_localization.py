"""11 — Localization as regression: one object, K class scores and one box.

The lecture opens object detection with *localization*: an image holds a single
object; the network says what it is (K class scores) and where it is (one box, four
numbers: a regression), scored by the intersection over union (IoU) of the predicted
and the true box. Its slide "Localization and Classification" trains the two heads of
one network in three ways; its last slide predicts "exactly N objects" (N x 4
coordinates and N x K class scores) and so leads to detection proper.

This tutorial follows ``detection.localization`` on the synthetic plate scenes:

1. the data: windows of one whole object cut from the scenes,
2. the model: a conv trunk, a class head and a box head; the box as four numbers,
3. IoU, by hand,
4. the three regimes, side by side: (a) the classifier alone, (b) a box head trained
   on the frozen classifier's features, (c) both fine-tuned end to end,
5. "predict exactly N objects", and why it breaks when the count changes.

Run it with ``python examples/11_localization.py`` (``--quick`` for a seconds-long
run; ``--out DIR`` chooses where the dataset and figures go, ``out/`` by default;
``--minutes`` the training budget of the full run). The full run trains with
``detection.train_localization``; the same as a command:
``python -m detection.train_localization --data DIR --out RUN_DIR --classes plate 0 1 2
3 4 5 6 7 8 9 char --slot-classes 0 1 2 3 4 5 6 7 8 9 char``.
"""
import argparse
import json
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")  # write files, never open a window
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nn  # noqa: E402
from plates.synthetic import generate_plate_dataset  # noqa: E402
from detection.datasets.voc import VOCDataset  # noqa: E402
from detection.localization import (Localizer, encode_boxes, decode_boxes,  # noqa: E402
                                    evaluate_localizer, evaluate_slots, paired_box_iou)
from detection.train_localization import (TrainConfig, build_windows,  # noqa: E402
                                          load_stage, train_localization)
from detection.visualize import draw_boxes, save_figure, show_image  # noqa: E402

# %% Configuration
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="tiny data, model and run (seconds)")
parser.add_argument("--out", default="out", help="directory for the dataset and figures")
parser.add_argument("--minutes", type=float, default=3.0, help="training budget (full mode)")
args = parser.parse_args()

SEED = 0
NUM_IMAGES = 16 if args.quick else 700
# The objects: the plate, the ten digits and "char" (any other character). Cars are
# left out: in these 256-pixel scenes nearly every car fills the frame or is cut by
# its border (52 of 55 in 40 scenes), so whole-car windows are too rare for a class.
CLASSES = ("plate",) + tuple(str(d) for d in range(10)) + ("char",)
CHARACTERS = CLASSES[1:]  # the objects of the N-object windows of section 5
OUT_DIR = os.path.join(args.out, "11_localization")
DATA_DIR = os.path.join(OUT_DIR, "plates")
RUN_DIR = os.path.join(OUT_DIR, "run")
os.makedirs(OUT_DIR, exist_ok=True)
nn.manual_seed(SEED)
QUICK_NOTE = " (--quick: a few steps, an untrained model)" if args.quick else ""


def save(figure, name):
    path = os.path.join(OUT_DIR, name)
    figure.tight_layout()
    save_figure(figure, path)
    print(f"wrote {path}")


# %% 1. Data: windows of one whole object
# The street scenes of tutorial 04 (256 x 256), split by scene: train, val (chooses the
# best checkpoint) and test (the tables below), so no scene is seen in training and
# test both. From each scene, ``sample_windows`` cuts square windows around one object
# at 1.1-1.6x its longer side, placed at random so the object can be anywhere in the window,
# and RoIAlign resamples each to 48 x 48 pixels. An object cut by the window border is
# not an object of the window: a window where a second object of comparable size shows
# more than half of itself is drawn again. Smaller objects are part of the picture (a
# plate's characters in the plate's window).
if not os.path.isfile(os.path.join(DATA_DIR, "ImageSets", "Main", "train.txt")):
    start = time.perf_counter()
    generate_plate_dataset(DATA_DIR, NUM_IMAGES, seed=SEED, workers=os.cpu_count() or 1,
                           progress=False)
    print(f"rendered {NUM_IMAGES} scenes in {time.perf_counter() - start:.1f} s")
config = TrainConfig(data=DATA_DIR, out=RUN_DIR, classes=CLASSES, slot_classes=CHARACTERS,
                     minutes=args.minutes, seed=SEED, quick=args.quick, progress=not args.quick)
shown_config = TrainConfig(data=DATA_DIR, out=RUN_DIR, classes=CLASSES, seed=SEED,
                           window=48, draws=1)
val_scenes = VOCDataset(DATA_DIR, "val", classes=CLASSES)
examples = build_windows(val_scenes, shown_config, num_objects=1, stream=1, limit=12)
print(f"{len(examples['windows'])} windows from {min(12, len(val_scenes))} val scenes; "
      f"classes {np.bincount(examples['labels'][:, 0], minlength=len(CLASSES)).tolist()}")

def spread(count, wanted):
    """Up to ``wanted`` distinct indices spread evenly over ``range(count)``."""
    return np.unique(np.linspace(0, count - 1, min(count, wanted)).astype(int))


figure = Figure(figsize=(12, 4.2))
order = np.argsort(examples["labels"][:, 0], kind="stable")  # by class
for panel, index in enumerate(order[spread(len(order), 16)]):
    ax = figure.add_subplot(2, 8, panel + 1)
    show_image(ax, examples["windows"][index])
    draw_boxes(ax, examples["boxes"][index], colors="lime", linewidth=1.5)
    ax.set_title(CLASSES[examples["labels"][index, 0]], fontsize=9)
figure.suptitle("one whole object per 48 x 48 window: class and box (green)")
save(figure, "11_windows.png")

# %% 2. The model: one trunk, two heads
# Trunk: four conv 3x3 - batch norm - ReLU blocks, three of them max-pooled (48 -> 6),
# the 6 x 6 map flattened into a fully connected layer of 128 features. Flattening
# keeps *where* the features are; a global average would throw that away. The input
# gets two more channels, the x and y of each pixel (CoordConv, Liu et al. 2018), which
# makes "where" easy to read off. The class head maps the 128 features to K scores,
# the box head (two layers) to four numbers.
#
# The four numbers are the box as fractions of the window: (cx, cy, w, h), its centre
# and size (the slide writes (x, y, w, h), the top-left corner and size; both are
# ``encode_boxes`` encodings). A box filling the window is (0.5, 0.5, 1, 1) whatever
# the window's pixel size; centre and size keep the two kinds of error apart.
model = Localizer(len(CLASSES), image_size=48)
cls_logits, box_codes = model(nn.Tensor(np.zeros((2, 48, 48, 3), np.float32)))
print(f"model: {model.num_parameters()} parameters; cls_logits {cls_logits.shape}, "
      f"box_codes {box_codes.shape} (N, slots, 4)")
def spell(values, digits):
    return "(" + ", ".join(f"{v:.{digits}f}" for v in values) + ")"


box = examples["boxes"][0]
codes = encode_boxes(box, 48)
print(f"a box {spell(box[0], 1)} in a 48-px window -> (cx, cy, w, h) {spell(codes[0], 3)}, "
      f"(x, y, w, h) {spell(encode_boxes(box, 48, 'xywh')[0], 3)}; decoded back "
      f"{spell(decode_boxes(codes, 48)[0], 1)}")
# The losses: cross entropy on the class; on the box, the regression of the slide, a
# smooth L1 on the four numbers (L1 beyond 0.02 of the window, quadratic below),
# weighted by box_weight = 20 so that it counts as much as the class, plus 2 x the GIoU
# loss of the decoded box (1 - generalized IoU, Rezatofighi et al. 2019): the metric
# itself as a loss. Measured on these windows it reaches a given IoU in about half the
# steps of the smooth L1 alone (Localizer(giou_weight=0) is the slide's plain regression).

# %% 3. Intersection over union
# IoU = area of the intersection / area of the union. Two 20 x 20 boxes shifted by 10
# pixels in x and y overlap in 10 x 10 = 100 px; the union is 400 + 400 - 100 = 700:
# IoU = 1/7 = 0.143. A shift of a quarter of the side in x alone gives 300 / 500 = 0.6.
pairs_a = np.array([[0, 0, 20, 20], [0, 0, 20, 20]], np.float32)
pairs_b = np.array([[10, 10, 30, 30], [5, 0, 25, 20]], np.float32)
print(f"IoU by hand 1/7 = {1 / 7:.3f}, 3/5 = 0.600; paired_box_iou "
      f"{spell(paired_box_iou(pairs_a, pairs_b), 3)}")

# %% 4. Three ways to train the two heads
# ``train_localization`` runs them one after the other on the engine (each stage in
# RUN_DIR/<stage>, the best val checkpoint kept):
#   (a) classify: trunk and class head trained on cross entropy; the box head is not.
#   (b) localize: the classifier frozen (no gradient, batch-norm statistics fixed),
#       only the box head trained, by regression on the classifier's features.
#   (c) finetune: from (b), everything trained on the multi-task loss.
# and a fourth stage for section 5. A "prior" row predicts the mean training box and
# the most frequent class for every window: the score of knowing nothing of the image.
if os.path.isfile(os.path.join(RUN_DIR, "metrics.json")):
    with open(os.path.join(RUN_DIR, "metrics.json")) as handle:
        metrics = json.load(handle)
    print(f"reusing the finished run in {RUN_DIR}")
else:
    metrics = train_localization(config, resume=os.path.isfile(os.path.join(RUN_DIR,
                                                                            "run.json")))
print(f"held-out {metrics['eval_split']} windows: {metrics['windows']['eval']}")
print(f"{'':10s} {'accuracy':>9s} {'mean IoU':>9s} {'IoU>=0.5':>9s} {'both':>6s} {'steps':>6s}")
for name, row in metrics["table"].items():
    steps = metrics["stages"].get(name, {}).get("steps", "")
    print(f"{name:10s} {row['accuracy']:9.3f} {row['mean_iou']:9.3f} {row['iou_50']:9.3f} "
          f"{row['both']:6.3f} {steps:>6}")
# (a) classifies but cannot localize: its box head was never trained (IoU 0; the prior
# row is the IoU of a box placed without looking). (b) gets boxes from features
# learned for "which class", which say only roughly where the object is. (c) lets the
# trunk learn position too. In the 3-minute run on 700 scenes (load ~6 on 2 cores):
# prior IoU 0.38; (a) accuracy 0.73; (b) IoU 0.55, 66% of boxes at IoU >= 0.5; (c) IoU
# 0.71, 91% at IoU >= 0.5, accuracy 0.79 (fine-tuning the trunk for boxes helped the
# classes too). Longer runs keep improving: the IoU was still rising when it stopped.

saved = metrics["config"]
run_config = TrainConfig(**{**saved, "classes": tuple(saved["classes"]),
                            "slot_classes": tuple(saved["slot_classes"]),
                            "scale_range": tuple(saved["scale_range"]),
                            "eval_at": tuple(saved["eval_at"])})
held_out = VOCDataset(DATA_DIR, metrics["eval_split"], classes=CLASSES)
test_windows = build_windows(held_out, run_config, num_objects=1, stream=2,
                             limit=run_config.max_val_images)
regimes = ("classify", "localize", "finetune")
results = {}
for name in regimes:
    trained, _ = load_stage(os.path.join(RUN_DIR, name, "best.npz"))
    results[name] = evaluate_localizer(trained, test_windows["windows"],
                                       test_windows["labels"][:, 0], test_windows["boxes"][:, 0])
size = run_config.window
shown = spread(len(test_windows["windows"]), 6)
figure = Figure(figsize=(10, 5.5))
for row, name in enumerate(regimes):
    prediction = results[name]["prediction"]
    for column, index in enumerate(shown):
        ax = figure.add_subplot(3, 6, row * 6 + column + 1)
        show_image(ax, test_windows["windows"][index])
        draw_boxes(ax, test_windows["boxes"][index], colors="white", linewidth=1.5)
        draw_boxes(ax, prediction["boxes"][index], colors="red", linewidth=1.5)
        label = prediction["labels"][index, 0]
        ax.set_title(f"{CLASSES[label]} IoU {results[name]['ious'][index]:.2f}", fontsize=8,
                     color="black" if label == test_windows["labels"][index, 0] else "red")
        if column == 0:
            ax.text(-0.1, 0.5, name, transform=ax.transAxes, rotation=90, va="center",
                    ha="right", fontsize=10)
figure.suptitle("predicted (red) vs true (white) boxes on held-out windows; a red title "
                "is a wrong class" + QUICK_NOTE, fontsize=10)
save(figure, "11_regimes.png")

figure = Figure(figsize=(6, 4))
ax = figure.add_subplot()
bins = np.linspace(0, 1, 21)
for name in regimes:
    ax.hist(results[name]["ious"], bins=bins, histtype="step", linewidth=2,
            label=f"{name}: mean {results[name]['mean_iou']:.2f}")
ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
ax.set_xlabel("IoU of predicted and true box")
ax.set_ylabel("held-out windows")
ax.set_title("IoU per regime" + QUICK_NOTE, fontsize=10)
ax.legend()
save(figure, "11_iou_histogram.png")

# %% 5. Predict exactly N objects
# The last slide: for N objects predict N x 4 numbers and N x K scores. The model of
# the fourth stage has N = 2 slots; trained on windows of exactly two whole characters
# (neighbours on a plate), slot 1 learns the left one and slot 2 the right one (a fixed
# assignment: sorted by centre x). Its trunk starts from the fine-tuned model's.
#
# Give it windows of one or three objects. It still outputs two boxes and two
# classes, because it has no way to say "nothing here": with one object it draws two
# half-width boxes side by side, as it learned, and mostly misses the one object
# (in the 3-minute run: recall 0.44 against 0.92 on two objects, 78% of the slots on
# nothing); with three, one object is always missed, and the boxes, sized for two
# objects in a window, fit none of the three (recall 0.11). The class scores of the
# empty slots are as high as those of the others: nothing in the output says a slot
# is empty. A detector must predict a
# *variable* number of boxes, each with a score that can say "no object": the
# sliding windows, proposals and anchors of the tutorials that follow.
slots_model, _ = load_stage(os.path.join(RUN_DIR, "slots", "best.npz"))
slots = slots_model.num_slots
by_count = {}
for count in (slots - 1, slots, slots + 1):
    data = build_windows(held_out, run_config, num_objects=count, stream=2,
                         limit=run_config.max_val_images, classes=run_config.slot_classes)
    if len(data["windows"]):
        by_count[count] = (data, evaluate_slots(slots_model, data["windows"], data["labels"],
                                                data["boxes"]))
print(f"{slots}-slot model; objects  windows  recall  precision  empty  duplicate  "
      f"class score: empty slots, slots on an object")
for count, (data, result) in by_count.items():
    print(f"{'':16s}{count:>3d} {result['windows']:8d} {result['recall']:7.3f} "
          f"{result['precision']:10.3f} {result['empty_slots']:6.3f} "
          f"{result['duplicate_slots']:10.3f} {result['empty_slot_score']:8.3f} "
          f"{result['object_slot_score']:8.3f}")
if slots in by_count:
    exact = by_count[slots][1]
    print(f"on windows of exactly {slots}: mean IoU of slot i with object i "
          f"{exact['mean_iou']:.3f}, class accuracy {exact['accuracy']:.3f}")

figure = Figure(figsize=(10, 2.2 * len(by_count) + 0.6))
slot_colors = ["red", "deepskyblue", "orange"]
for row, (count, (data, result)) in enumerate(by_count.items()):
    prediction = result["prediction"]
    picks = spread(len(data["windows"]), 5)
    for column, index in enumerate(picks):
        ax = figure.add_subplot(len(by_count), 5, row * 5 + column + 1)
        show_image(ax, data["windows"][index])
        draw_boxes(ax, data["boxes"][index], colors="white", linewidth=1.5)
        for slot in range(slots):
            draw_boxes(ax, prediction["boxes"][index, slot:slot + 1],
                       colors=slot_colors[slot % 3], linewidth=1.5)
        ax.set_title(" | ".join(f"{CLASSES[prediction['labels'][index, s]]} "
                                f"{prediction['scores'][index, s]:.2f}" for s in range(slots)),
                     fontsize=8)
        if column == 0:
            ax.text(-0.1, 0.5, f"{count} object{'s' if count > 1 else ''}",
                    transform=ax.transAxes, rotation=90, va="center", ha="right")
figure.suptitle(f"{slots} slots (slot 1 red, slot 2 blue; true boxes white) on windows of "
                f"{', '.join(str(c) for c in by_count)} objects" + QUICK_NOTE, fontsize=10)
save(figure, "11_n_objects.png")
