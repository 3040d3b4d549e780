"""05 — Fully convolutional networks: from a patch classifier to a segmentation map.

The lecture's path from classification to segmentation (Long, Shelhamer and Darrell,
2015, "Fully convolutional networks for semantic segmentation"):

1. train an ordinary classifier on small patches ("is there a character here?"),
2. **convolutionize** it: its dense layers become convolutions, with the very same
   weights; slid over a whole plate crop it gives one answer per window, a *coarse*
   segmentation map, without any pixel-level supervision,
3. train an **FCN-8s** end to end on pixel labels: scores predicted at strides 32, 16
   and 8 are upsampled by transposed convolutions and summed, coarse to fine.

Run it with ``python examples/05_fcn.py`` (a few minutes; ``--quick`` for seconds;
``--out DIR`` chooses where data and figures go, ``out/`` by default).
"""
import argparse
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")  # write files, never open a window
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nn  # noqa: E402
from detection.visualize import save_figure  # noqa: E402
from segmentation.fcn import FCN8s, SmallClassifier, convolutionize  # noqa: E402
from segmentation.losses import segmentation_loss  # noqa: E402
from segmentation.metrics import iou_per_class  # noqa: E402
from plates.segmenter_data import load_crops, preprocess  # noqa: E402
from plates.segmenter_data import prepare_data  # noqa: E402
from plates.train_segmenter import TrainConfig  # noqa: E402

# %% Configuration
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="little data, few steps (seconds)")
parser.add_argument("--out", default="out", help="directory for data and figures")
parser.add_argument("--data", default=None, help="plate dataset (rendered if missing)")
args = parser.parse_args()

SEED = 0
PATCH = 16  # side of the classifier's input patches
CLASSIFIER_STEPS = 20 if args.quick else 400
FCN_STEPS = 10 if args.quick else 300
BATCH = 32
OUT_DIR = os.path.join(args.out, "05_fcn")
os.makedirs(OUT_DIR, exist_ok=True)
nn.manual_seed(SEED)
rng = np.random.default_rng(SEED)
data = TrainConfig(data=args.data or os.path.join(args.out, "plates1024_quick" if args.quick
                                                  else "plates1024"),
                   num_images=16 if args.quick else TrainConfig.num_images,
                   progress=False)

# %% 1. Data: plate crops, and patches cut from them
# Plate crops as tutorial 04 cuts them, at 32x96 here (FCN-8s needs sides divisible by its
# stride 32; the segmenter's default is 40x120), characters labelled per pixel. For the
# classifier we cut 16x16 patches and label each by its centre: "character" when most of
# the central 4x4 pixels belong to a character, "background" when no character pixel
# lies in the central 8x8; patches in between are ambiguous and not used. Each crop is
# standardized (zero mean, unit variance) *before* cutting, so that a patch and the same
# window of a whole crop are the very same numbers.
start = time.perf_counter()
info = prepare_data(data)
CROP = (32, 96)
train = load_crops(data.data, "train", size=CROP, workers=data.data_workers)
val = load_crops(data.data, "val", size=CROP, workers=data.data_workers)
print(f"{len(train['texts'])} training plates, {len(val['texts'])} validation plates "
      f"({'rendered' if info['generated'] else 'reused'} {data.data})")


def is_character(masks):
    """(N, h, w) segmenter labels -> 1 for character pixels (labels 1..11), 0 for the
    background, 255 (outside the image) kept."""
    return np.where(masks == 255, 255, masks != 0).astype(np.int64)


def cut_patches(crops, masks, count):
    """``count`` labelled patches at random centres: (count', 16, 16, 3), (count',)."""
    x = preprocess(crops)
    chars = is_character(masks)
    n, h, w = chars.shape
    which = rng.integers(0, n, count)
    top = rng.integers(0, h - PATCH + 1, count)
    left = rng.integers(0, w - PATCH + 1, count)
    offsets = np.arange(PATCH)
    rows = top[:, None] + offsets  # (count, 16)
    cols = left[:, None] + offsets
    patches = x[which[:, None, None], rows[:, :, None], cols[:, None, :]]  # (count, 16, 16, 3)
    labels = chars[which[:, None, None], rows[:, :, None], cols[:, None, :]]  # (count, 16, 16)
    centre = labels[:, 6:10, 6:10].reshape(count, -1)
    ring = labels[:, 4:12, 4:12].reshape(count, -1)
    is_char = (centre == 1).mean(axis=1) >= 0.5
    is_background = ((ring == 1).sum(axis=1) == 0) & ((ring == 255).mean(axis=1) < 0.5)
    keep = is_char | is_background
    return patches[keep], is_char[keep].astype(np.int64)


patches, labels = cut_patches(train["crops"], train["masks"], 4000 if args.quick else 40000)
val_patches, val_labels = cut_patches(val["crops"], val["masks"], 4000)
print(f"patches {patches.shape}: {labels.mean():.0%} characters")

# %% 2. A patch classifier
# Three blocks of two 3x3 convolutions and a 2x2 max pooling (stride 8 in all), then two
# dense layers on the flattened 2x2x32 feature map: the shape of VGG/AlexNet, in small.
classifier = SmallClassifier(3, 2, input_size=PATCH, width=8, hidden=32)
optimizer = nn.optim.Adam(classifier.parameters(), lr=3e-3)
# Balance the two classes in every batch (there are more background patches).
by_class = [np.flatnonzero(labels == k) for k in (0, 1)]
for step in range(CLASSIFIER_STEPS):
    batch = np.concatenate([rng.choice(idx, BATCH // 2) for idx in by_class])
    loss = nn.functional.cross_entropy(classifier(nn.Tensor(patches[batch])), labels[batch])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 100 == 0 or step == CLASSIFIER_STEPS - 1:
        print(f"classifier step {step}: loss {loss.item():.3f}")
classifier.eval()
with nn.no_grad():
    val_logits = classifier(nn.Tensor(val_patches)).data
accuracy = float(np.mean(val_logits.argmax(axis=1) == val_labels))
print(f"patch accuracy on validation plates: {accuracy:.1%}")

# %% 3. Convolutionize
# fc1 sees the flattened (2, 2, 32) map: its weight (2·2·32, 32) *is* a 2x2 convolution
# kernel (2, 2, 32, 32) in channels-last order, and fc2 (32, 2) a 1x1 convolution. On a
# 16x16 patch the convolutional version computes exactly the classifier's logits; on a
# whole 32x96 crop it slides: one pair of logits per 16x16 window, every 8 pixels.
fully_conv = convolutionize(classifier)
with nn.no_grad():
    same = fully_conv(nn.Tensor(val_patches[:64])).data  # (64, 1, 1, 2)
    difference = np.abs(same[:, 0, 0] - val_logits[:64]).max()
    coarse = fully_conv(nn.Tensor(preprocess(val["crops"]))).data  # (P, 3, 11, 2)
print(f"convolutionized == classifier on patches: max |difference| {difference:.2e}")
print(f"on whole crops {val['crops'].shape[1:3]}: score map {coarse.shape[1:3]} (stride 8)")
coarse_prob = np.exp(coarse[..., 1]) / np.exp(coarse).sum(axis=-1)  # P(character) per window

# %% 4. FCN-8s: learn the map itself, coarse to fine
# Now train on the pixel labels. The encoder's five blocks end at stride 32; a 1x1
# convolution scores each stride-32 cell, a transposed convolution (initialised to
# bilinear interpolation) upsamples the scores 2x and adds the scores of the stride-16
# map, again for stride 8, and a last 8x transposed convolution returns to the input's
# resolution. Loss: cross entropy + Dice (character vs background, 255 ignored).
fcn = FCN8s(3, 2, width=8)
optimizer = nn.optim.Adam(fcn.parameters(), lr=3e-3)
train_x = preprocess(train["crops"])
train_y = is_character(train["masks"])
for step in range(FCN_STEPS):
    batch = rng.choice(len(train_x), min(16, len(train_x)), replace=False)
    loss = segmentation_loss(fcn(nn.Tensor(train_x[batch])), train_y[batch])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 100 == 0 or step == FCN_STEPS - 1:
        print(f"FCN-8s step {step}: loss {loss.item():.3f}")
fcn.eval()


def fcn_stages(model, x):
    """Character probability after each fusion: stride 32 alone, + 16, + 8 (the output)."""
    f8 = model.block3(model.block2(model.block1(x)))
    f16 = model.block4(f8)
    f32 = model.block5(f16)
    s32 = model.score32(f32)
    s16 = model.up32(s32) + model.score16(f16)
    s8 = model.up16(s16) + model.score8(f8)
    size = x.shape[1:3]
    maps = [nn.functional.interpolate(s32, size=size, mode="bilinear"),
            nn.functional.interpolate(s16, size=size, mode="bilinear"),
            model.up8(s8)]
    return [nn.functional.softmax(m, axis=-1).data[..., 1] for m in maps]


with nn.no_grad():
    val_x = nn.Tensor(preprocess(val["crops"]))
    stages = fcn_stages(fcn, val_x)
    pred = fcn(val_x).data.argmax(axis=-1)
iou = iou_per_class(pred, is_character(val["masks"]), 2)
print(f"FCN-8s on validation crops: IoU character {iou[1]:.3f}, background {iou[0]:.3f}")

# %% 5. Look: coarse to fine
# Row by row: the crop, its character pixels, the convolutionized classifier's map (one
# value per 16x16 window, drawn at the window centres), and the FCN-8s scores after each
# fusion. The stride-32 scores alone are a blur of 1x3 cells; each finer stride adds
# the detail the coarse map cannot hold.
rows = min(5, len(val["texts"]))
titles = ["crop", "character pixels", "convolutionized (stride 8)",
          "FCN: stride 32", "+ stride 16", "+ stride 8 = FCN-8s"]
figure = Figure(figsize=(18, 1.1 * rows + 0.6))
axes = figure.subplots(rows, len(titles), squeeze=False)
h, w = val["crops"].shape[1:3]
for row in range(rows):
    # Window (i, j) of the coarse map covers pixels 8i..8i+15, 8j..8j+15: centre 8i+7.5.
    extent = (7.5 - 4, 7.5 + 8 * (coarse.shape[2] - 1) + 4,
              7.5 + 8 * (coarse.shape[1] - 1) + 4, 7.5 - 4)
    panels = [val["crops"][row], np.where(val["masks"][row] == 255, 0.5,
                                          is_character(val["masks"][row][None])[0])]
    axes[row, 0].imshow(panels[0])
    axes[row, 1].imshow(panels[1], cmap="gray", vmin=0, vmax=1)
    axes[row, 2].imshow(coarse_prob[row], cmap="magma", vmin=0, vmax=1, extent=extent,
                        interpolation="nearest")
    axes[row, 2].set_xlim(-0.5, w - 0.5)
    axes[row, 2].set_ylim(h - 0.5, -0.5)
    for column, stage in enumerate(stages, start=3):
        axes[row, column].imshow(stage[row], cmap="magma", vmin=0, vmax=1)
for ax, title in zip(axes[0], titles):
    ax.set_title(title, fontsize=9)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
figure.suptitle(f"P(character): patch classifier {accuracy:.0%} accurate; "
                f"FCN-8s character IoU {iou[1]:.2f}", fontsize=10)
figure.tight_layout()
path = os.path.join(OUT_DIR, "05_coarse_to_fine.png")
save_figure(figure, path, dpi=90)
print(f"wrote {path} ({time.perf_counter() - start:.0f} s in all)")
