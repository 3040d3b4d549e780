"""06 — U-Net: segment the characters of a plate, then read it.

Stage two of the license-plate lab. The detector of stage one hands us plate boxes;
each plate is cut out at 40x120 pixels, and a U-Net (Ronneberger, Fischer and Brox,
2015) labels every pixel: background, one of the ten digits, or "another character".
Connected blobs of character pixels are the characters; sorted in reading order,
their classes spell the plate. This tutorial follows the lecture's slides on the
encoder-decoder:

1. the data: plate crops and their class maps, and what a character's label should
   cover (its ink, or its region: the U-Net paper's trick for touching objects),
2. the network: an encoder that pools, a decoder that upsamples with transposed
   convolutions, skip connections between them (the paper's "copy and crop": its
   unpadded convolutions shrink every map, so the skip is cropped; ours pad "same" and
   concatenate the skip whole, ``UNet(padding="valid")`` is the paper's variant),
3. the loss: per-pixel cross entropy plus Dice,
4. training from scratch (``plates.train_segmenter``, no pretrained weights),
5. the result: masks, metrics, and plates read as text.

A full run's masks and reads: ``docs/figures/06_masks_and_reads.png`` (test plates of
the 1024-px scenes, mean IoU 0.886, 88.2% read; ``docs/results.md``).

Run it with ``python examples/06_unet.py`` (about five minutes of training;
``--quick`` trains a tiny network for seconds, to check the machinery; ``--out DIR``
chooses where data, checkpoints and figures go, ``out/`` by default).
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
import nn  # noqa: E402
from detection.visualize import save_figure  # noqa: E402
from plates.reading import read_plate, text_to_class_text  # noqa: E402
from plates.segmenter import (  # noqa: E402
    CHARACTER_CLASSES, NUM_CLASSES, build_model, class_colors, predict,
)
from plates.segmenter_data import TrainPatches, load_crops, prepare_data, preprocess  # noqa: E402
from plates.train_segmenter import (  # noqa: E402
    TrainConfig, load_segmenter, quick_config, train_digit_segmenter,
)
from segmentation.losses import pixel_cross_entropy, segmentation_loss, soft_dice_loss  # noqa: E402
from segmentation.metrics import confusion_matrix  # noqa: E402
from segmentation.weights import separation_weights  # noqa: E402

# %% Configuration
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="tiny data and network (seconds)")
parser.add_argument("--out", default="out", help="directory for data, checkpoints and figures")
parser.add_argument("--data", default=None, help="plate dataset (rendered if missing)")
args = parser.parse_args()

OUT_DIR = os.path.join(args.out, "06_unet")
os.makedirs(OUT_DIR, exist_ok=True)
if args.quick:
    config = quick_config(data=args.data or os.path.join(OUT_DIR, "plates_quick"),
                          out=os.path.join(OUT_DIR, "run_quick"), progress=False)
else:
    config = TrainConfig(data=args.data or os.path.join(args.out, "plates1024"),
                         out=os.path.join(OUT_DIR, "run"))
COLORS = class_colors()  # class id -> RGB: digits a rainbow, other characters white
NAMES = ["bg"] + [str(d) for d in range(10)] + ["#"]  # the segmenter's labels 0..11

# %% 1. Data: plate crops and class maps
# The synthetic street scenes (tutorial 04) are rendered once into config.data, at
# 1024 px: the plate reader reads from the full-resolution frame (at 512 px most plates
# are under 90 px wide and their blurred glyphs run together). Every
# plate becomes a 40x120 crop (32x96 with --quick); its label map is in the segmenter's
# own classes (plates.classes.SEGMENTER_CLASSES): 0 background (the plate and the car
# included), 1 + d for digit d, 11 for any other character (letters, dashes, dots), 255
# for crop pixels outside the image (ignored by the loss and the metrics). A plate's
# text is compared as the segmenter can spell it: digits kept, every other character
# written "#" ("29A-123.45" -> "29##123#45": the network only knows "another character").
start = time.perf_counter()
info = prepare_data(config)
print(f"data in {config.data}: {'rendered' if info['generated'] else 'reused'} "
      f"({info['seconds']:.1f} s)")
# Reading the images runs in config.data_workers processes (a progress bar per split).
val = load_crops(config.data, "val", config.crop_size, config.crop_padding, config.targets,
                 workers=config.data_workers, progress=config.progress)
print(f"validation: {len(val['texts'])} plates, crops {val['crops'].shape} {val['crops'].dtype}, "
      f"masks {val['masks'].shape}; e.g. {val['texts'][:3]}")

# Training crops come from randomly moved windows (the detector's boxes are never
# exact), with color jitter and noise. Never a horizontal flip: a mirrored "2" is
# not a digit, and the reading order would be reversed.
train_patches = TrainPatches(config.data, "train", config.crop_size, config.crop_padding,
                             targets=config.targets, workers=config.data_workers,
                             progress=config.progress)
rng = np.random.default_rng(0)
show = np.arange(min(4, len(train_patches)))
figure = Figure(figsize=(10, 1.3 * len(show)))
axes = figure.subplots(len(show), 3, squeeze=False)
for row, index in enumerate(show):
    still, _ = train_patches.sample([index], rng, shift=0, scale=0)
    moved, moved_mask = train_patches.sample([index], rng, config.shift, config.scale)
    for ax, image, title in zip(axes[row], (still[0], moved[0], COLORS[moved_mask[0]]),
                                ("test-time crop", "moved window", "its class map")):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
figure.tight_layout()
save_figure(figure, os.path.join(OUT_DIR, "06_data.png"))
print(f"{len(train_patches)} training plates; wrote {OUT_DIR}/06_data.png")

# %% 1b. What should a character's label cover?
# The obvious label is the character's ink. At 40x120 a character is ~7 px wide, its
# strokes 1-3 px and its neighbours 1-2 px away: when the plate is shrunk, thin strokes
# vanish (an "M" falls apart) and neighbours touch (two digits become one blob). Even
# the *ground truth* then reads badly: we read the validation labels themselves with
# the same post-processing as the predictions. So we label each character's *region*
# (plates.targets): the filled convex hull of its ink, resampled by area vote,
# and a one-pixel background gap wherever two characters would touch: the U-Net
# paper's "separation background labels between touching cells". Those gaps are few
# pixels, so the loss weighs them more (the paper's weight map), as the third column
# shows.
ink = load_crops(config.data, "val", config.crop_size, config.crop_padding, targets="ink",
                 workers=config.data_workers)
for name, labels in (("ink", ink["masks"]), ("regions", val["masks"])):
    reads = [read_plate(np.where(m == 255, 0, m).astype(np.int64), min_area=1)["text"]
             == text_to_class_text(t) for m, t in zip(labels, val["texts"])]
    print(f"ground-truth {name} labels read exactly: {np.mean(reads):.1%} of the plates")
rows = min(4, len(val["texts"]))
figure = Figure(figsize=(10, 1.3 * rows))
axes = figure.subplots(rows, 4, squeeze=False)
gaps = separation_weights(val["masks"][:rows], config.gap_weight)
for row in range(rows):
    panels = (val["crops"][row], COLORS[ink["masks"][row]], COLORS[val["masks"][row]], gaps[row])
    for ax, image, title in zip(axes[row], panels, ("crop", "ink labels", "region labels",
                                                    f"loss weight (gaps x{config.gap_weight:g})")):
        ax.imshow(image, interpolation="nearest", cmap="magma", vmin=0,
                  vmax=max(config.gap_weight, 1))  # (color maps apply to the weights only)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
figure.tight_layout()
save_figure(figure, os.path.join(OUT_DIR, "06_labels.png"))
print(f"wrote {OUT_DIR}/06_labels.png")

# %% 1c. Marks that are not characters
# A plate carries marks that are not characters: the separator dots of "AB·1234·CD",
# screws, stickers, the national strip with its country code, a dealer's text on the
# frame. At 40x120 a separator dot is a blob of 2 pixels, a full stop one of 3: the same
# kind of mark, and a full stop or a hyphen is on most plates, a dot on about 3% of
# them. A network that learns "a small blob in a gap is a character" is right most of
# the time and reads "AB·1234·CD" as "AB#1234#CD". The generator records where it drew
# each decoration (SegmentationDecoration/<id>.png), and the loss weighs the background
# under the marks up to 1 + decoration_weight, by the share of the pixel they cover
# (here on top of the gap weights).
marked = [i for i, marks in enumerate(train_patches.patch_marks)
          if marks is not None and marks.any()]
marked = sorted(marked, key=lambda i: -train_patches.patch_marks[i].sum())[:4]
if marked and config.decoration_weight:
    crops, masks, marks = train_patches.sample(marked, rng, shift=0, scale=0, return_marks=True)
    weights = separation_weights(masks, config.gap_weight) * (
        1 + config.decoration_weight * marks * (masks == 0))
    figure = Figure(figsize=(10, 1.3 * len(marked)))
    axes = figure.subplots(len(marked), 3, squeeze=False)
    for row in range(len(marked)):
        for ax, image, title in zip(axes[row], (crops[row], COLORS[masks[row]], weights[row]),
                                    ("crop", "its class map", "loss weight (gaps, marks)")):
            ax.imshow(image, interpolation="nearest", cmap="magma", vmin=0,
                      vmax=float(weights.max()))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    figure.tight_layout()
    save_figure(figure, os.path.join(OUT_DIR, "06_marks.png"))
    print(f"{len(marked)} plates with marks, background under them weighted up to "
          f"{1 + config.decoration_weight:g}; wrote {OUT_DIR}/06_marks.png")
else:
    print("no training plate with marks here (or decoration_weight 0): nothing to show")

# %% 2. The network: encoder, decoder, skip connections
# Each encoder level is two 3x3 convolutions (BatchNorm, ReLU); a 2x2 max pooling halves
# the resolution and the next level doubles the channels. The decoder goes back up with
# 2x2 stride-2 transposed convolutions ("up-conv 2x2" on the slide) and concatenates the
# encoder map of the same scale: coarse maps know *which* digit, the skip brings back
# *where* its edges are. A 1x1 convolution gives 12 class scores per pixel. With
# padding "same" every 3x3 convolution keeps the map's size, so the skip is
# concatenated as it is; the paper's unpadded ("valid") convolutions lose 2 px each and
# must crop the skip to fit ("copy and crop" on the slide).
model = build_model(config)
x = nn.Tensor(preprocess(val["crops"][:2]))
print(model)
with nn.no_grad():
    skips, h = [], x
    for level, block in enumerate(model.encoder):
        h = block(h if level == 0 else model.pool(h))
        skips.append(h)
        print(f"encoder level {level}: {h.shape}")
    h = skips.pop()
    for up, block in zip(model.upsample, model.decoder):
        h = up(h)
        skip = skips.pop()
        h = block(nn.concat([skip, h], axis=-1))
        print(f"decoder: up-conv to {h.shape[1:3]}, concat skip {skip.shape[-1]} + "
              f"{up.weight.shape[-1]} channels -> {h.shape}")
    logits = model.head(h)
print(f"logits {logits.shape}: one score per class and pixel; "
      f"{model.num_parameters():,} parameters")

# %% 3. The loss: cross entropy + Dice
# About 89% of a crop is background. Cross entropy averages over pixels, so a narrow
# "1" weighs little; Dice scores each class as a whole (2|P∩Y| / (|P|+|Y|)), so a small
# class counts as much as the background. We train on their sum, with the cross entropy
# of the gap pixels weighted (section 1b). The untrained cross entropy is well below
# log K (a uniform guess over K classes): the head's bias starts at the log class
# frequencies (``prior_init``, as RetinaNet's prior), so the network first predicts
# "89% background", whose cross entropy is the entropy of the labels, not log K.
target = val["masks"][:2].astype(np.int64)
logits = model(x)
weighted = segmentation_loss(logits, target,
                             pixel_weights=separation_weights(target, config.gap_weight))
print(f"untrained: CE {pixel_cross_entropy(logits, target).item():.3f} "
      f"(log K = log {NUM_CLASSES} = {np.log(NUM_CLASSES):.3f}), Dice loss {soft_dice_loss(logits, target).item():.3f}, "
      f"sum {segmentation_loss(logits, target).item():.3f}, with gap weights {weighted.item():.3f}")

# %% 4. Train from scratch
# plates.train_segmenter does the loop: seeded batches from moved windows, Adam with warm-up
# and cosine decay, validation mean IoU every few steps, the best checkpoint kept, and
# everything needed to resume after an interruption. The same run from the command
# line: python -m plates.train_segmenter --data DIR --out RUN_DIR
print(f"training: {config.steps or 'as many'} steps of {config.batch_size} crops "
      f"(time limit: {config.minutes} min)")
result = train_digit_segmenter(config)
print(f"trained {result['steps']} steps in {result['train_seconds']:.0f} s "
      f"(stopped by {result['stopped_by']}); best validation step {result['best_step']}")
print(f"test: mean IoU over characters {result['test']['mean_iou']:.3f}, plates read exactly "
      f"{result['test']['read_exact']:.1%} of {result['test']['plates']}")
print(f"loss curve and predictions in {config.out}")

# %% 5. Look at the result: masks and plates read as text
# The best checkpoint segments the test crops; read_plate splits the class map into
# 8-connected blobs (one per character: the gaps keep neighbours apart), votes each
# blob's class and sorts the blobs in reading order (rows top to bottom, left to
# right), which spells the plate. A plate is read exactly when every character is its
# own blob with the right class. A plate's dot is one or two pixels at this size, so
# the trainer keeps blobs down to config.read_min_area pixels (1) as characters; a
# blob that small far from every character is a speck of noise and dropped. Where the
# network missed a gap, two neighbours form one blob about twice as wide as a
# character: read_plate cuts it at its thinnest column (instance post-processing; the
# end of this section counts what the two rules change).
model, _, _ = load_segmenter(os.path.join(config.out, "best.npz"))
test = load_crops(config.data, "test", config.crop_size, config.crop_padding, config.targets,
                  workers=config.data_workers)
pred = predict(model, test["crops"], tta=config.tta)  # five one-pixel shifts, averaged
rows = min(8, len(test["texts"]))
figure = Figure(figsize=(12, 1.2 * rows + 0.4))
axes = figure.subplots(rows, 4, squeeze=False)
for row in range(rows):
    reading = read_plate(pred[row], min_area=config.read_min_area)
    truth = text_to_class_text(test["texts"][row])
    axes[row, 0].imshow(test["crops"][row])
    axes[row, 0].set_title(f"plate {test['texts'][row]!r}", fontsize=8)
    axes[row, 1].imshow(COLORS[test["masks"][row]], interpolation="nearest")
    axes[row, 1].set_title("target", fontsize=8)
    axes[row, 2].imshow(COLORS[pred[row]], interpolation="nearest")
    axes[row, 2].set_title("U-Net", fontsize=8)
    axes[row, 3].imshow(test["crops"][row])
    for (x1, y1, x2, y2), label in zip(reading["boxes"], reading["labels"]):
        axes[row, 3].add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                         edgecolor=COLORS[label], linewidth=1))
    axes[row, 3].set_title(f"read {reading['text']!r} (truth {truth!r})", fontsize=8,
                           color="green" if reading["text"] == truth else "red")
for ax in axes.ravel():
    ax.axis("off")
if args.quick:
    figure.suptitle("--quick: a tiny network trained for seconds, not a trained segmenter "
                    "(docs/figures/06_masks_and_reads.png: the 5-minute run)", color="red")
figure.tight_layout()
save_figure(figure, os.path.join(OUT_DIR, "06_masks_and_reads.png"))

# Which classes does the network confuse? Rows: target, columns: prediction, normalized
# per row, over the character pixels of the test crops.
matrix = confusion_matrix(pred, test["masks"], NUM_CLASSES)
shown = [0] + list(CHARACTER_CLASSES)
sub = matrix[np.ix_(shown, shown)].astype(np.float64)
sub /= np.maximum(sub.sum(axis=1, keepdims=True), 1)
figure = Figure(figsize=(6, 5))
ax = figure.subplots()
image = ax.imshow(sub, cmap="Blues", vmin=0, vmax=1)
ax.set_xticks(range(len(shown)), [NAMES[k] for k in shown])
ax.set_yticks(range(len(shown)), [NAMES[k] for k in shown])
ax.set_xlabel("predicted")
ax.set_ylabel("target")
ax.set_title("test confusion matrix (row-normalized)")
figure.colorbar(image)
figure.tight_layout()
save_figure(figure, os.path.join(OUT_DIR, "06_confusion.png"))
reads = [read_plate(p, min_area=config.read_min_area)["text"] == text_to_class_text(t)
         for p, t in zip(pred, test["texts"])]
print(f"read exactly: {np.mean(reads):.1%} of {len(reads)} test plates "
      f"({time.perf_counter() - start:.0f} s in all)")
plain = [read_plate(p, min_area=config.read_min_area, split_width=None, speck_distance=None)
         ["text"] == text_to_class_text(t) for p, t in zip(pred, test["texts"])]
print(f"without cutting wide blobs and dropping specks: {np.mean(plain):.1%}")
print(f"wrote {OUT_DIR}/06_masks_and_reads.png and {OUT_DIR}/06_confusion.png")
