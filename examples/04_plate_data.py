"""04 — Plate data: synthetic street scenes, Pascal VOC on disk, transforms and plate crops.

The license-plate lab has two stages: a detector finds cars and plates in a street
image, then a segmenter labels the characters of each plate crop. Both need data
with exact labels, and no dataset can be downloaded here, so detseg renders its own
and stores it in the standard Pascal VOC layout, which any real dataset can use too.
This tutorial

1. renders a small dataset of street scenes (``plates.synthetic``),
2. reads it back with ``VOCDataset``: images, boxes, class maps and instance masks,
3. shows what the detector trains on: only cars and plates, through random
   scale/crop/color transforms that keep boxes and masks consistent,
4. cuts the plates out at a fixed size with their character masks and texts, the
   input of stage two (``PlateCropDataset``),
5. exports the ground truth as COCO JSON, the format evaluation tools read.

Run it with ``python examples/04_plate_data.py`` (``--quick`` for a few-second run;
``--out DIR`` chooses where the dataset and figures go, ``out/`` by default).
"""
import argparse
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")  # write files, never open a window
import matplotlib.patches as patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nn  # noqa: E402
from detection.datasets import transforms as T  # noqa: E402
from plates.classes import PLATE_CLASSES  # noqa: E402
from detection.datasets.coco import COCODataset, voc_to_coco  # noqa: E402
from plates.crops import CROP_PADDING, CROP_SIZE, PlateCropDataset, crop_plates  # noqa: E402
from plates.synthetic import generate_plate_dataset  # noqa: E402
from detection.datasets.transforms import masks_to_boxes  # noqa: E402
from detection.datasets.voc import VOCDataset, voc_palette  # noqa: E402

# %% Configuration
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a handful of images (seconds)")
parser.add_argument("--out", default="out", help="directory for the dataset and figures")
args = parser.parse_args()

SEED = 0
NUM_IMAGES = 12 if args.quick else 60
IMAGE_SIZE = 256
SHOW = 4  # scenes per figure
OUT_DIR = os.path.join(args.out, "04_plate_data")
DATA_DIR = os.path.join(OUT_DIR, "plates")
os.makedirs(OUT_DIR, exist_ok=True)
nn.manual_seed(SEED)
PALETTE = voc_palette() / 255.0  # class id -> RGB in [0, 1], VOC's colors


def color_map(ids):
    """(H, W) class or instance ids -> an RGB picture with the VOC palette."""
    return PALETTE[ids]


def draw_boxes(ax, boxes, labels, names, colors=None):
    """Outline xyxy boxes; a box covering pixels 0..9 spans x = 0..10 (continuous)."""
    colors = colors or {}
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        color = colors.get(names[label], "white")
        # imshow centres pixel (0, 0) at (0, 0): pixel edges are at -0.5, +0.5.
        ax.add_patch(patches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                       edgecolor=color, linewidth=1.2))


def save(fig, axes, name, dpi=80):
    """Hide the axes' ticks, write the figure to OUT_DIR/name and close it."""
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.tight_layout()
    path = os.path.join(OUT_DIR, name)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    print(f"wrote {path}")


# %% 1. Render a small dataset
# Every image comes from its own seeded generator, so a seed gives byte-identical
# files. The generator writes Pascal VOC: JPEGImages, Annotations (XML boxes),
# SegmentationClass (pixel = class id), SegmentationObject (pixel = object index)
# and ImageSets/Main/{train,val,test}.txt; beside them, SegmentationDecoration says
# where the plates' strips, stickers, screws, separators and frames are (none of them a
# character: the digit segmenter's training weighs the marks among them).
start = time.perf_counter()
stats = generate_plate_dataset(DATA_DIR, NUM_IMAGES, seed=SEED, image_size=IMAGE_SIZE,
                               workers=1, splits=(0.5, 0.25, 0.25), progress=False)
print(f"rendered {stats['num_images']} images in {time.perf_counter() - start:.1f} s: "
      f"{stats['cars']} vehicles, {stats['plates']} plates, {stats['characters']} characters, "
      f"splits {stats['splits']}")
for folder in sorted(os.listdir(DATA_DIR)):
    print(f"  {folder}/")

# %% 2. Read it back with VOCDataset
# An item is an image (H, W, 3) uint8 and a target dict: "boxes" (G, 4) float32 xyxy,
# "labels" (G,) int64 (ids of PLATE_CLASSES: 1 car, 2 plate, 3..12 digits, 13 other
# character), "difficult", and on request the class map "masks" (H, W) and the
# per-object "instance_masks" (G, H, W).
dataset = VOCDataset(DATA_DIR, "train", return_masks=True, return_instance_masks=True)
print(dataset)
# The scenes with the most plates come first in the figures (load_target reads the XML only).
plate_counts = [int((dataset.load_target(i)["labels"] == PLATE_CLASSES.index("plate")).sum())
                for i in range(len(dataset))]
busiest = np.argsort(plate_counts, kind="stable")[::-1]
image, target = dataset[int(busiest[0])]
print(f"image {image.shape} {image.dtype}; boxes {target['boxes'].shape}; labels "
      f"{[PLATE_CLASSES[label] for label in target['labels'][:12]]} ...")

# The generator's boxes are the tight boxes of the visible pixels of each object
# (SegmentationObject): check it on every train image.
gaps = []
for i in range(len(dataset)):
    _, t = dataset[i]
    if len(t["boxes"]):
        gaps.append(np.abs(masks_to_boxes(t["instance_masks"]) - t["boxes"]).max())
print(f"largest gap between a box and the tight box of its mask: {max(gaps, default=0):.2f} px")

box_colors = {"car": "deepskyblue", "plate": "yellow", "char": "red",
              **{str(d): "red" for d in range(10)}}
fig, axes = plt.subplots(3, SHOW, figsize=(3 * SHOW, 9))
for column in range(SHOW):
    image, target = dataset[int(busiest[column % len(dataset)])]
    axes[0, column].imshow(image)
    draw_boxes(axes[0, column], target["boxes"], target["labels"], PLATE_CLASSES, box_colors)
    axes[0, column].set_title(f"{target['image_id']}: {len(target['boxes'])} objects")
    axes[1, column].imshow(color_map(target["masks"]))
    axes[1, column].set_title("class map (VOC colors)")
    instance_ids = np.zeros(image.shape[:2], np.int64)
    for g, mask in enumerate(target["instance_masks"]):
        instance_ids[mask] = g + 1
    axes[2, column].imshow(color_map(instance_ids % 256))
    axes[2, column].set_title("instance masks")
save(fig, axes, "04_scenes.png")

# %% 3. What the detector sees
# The detector only cares about cars and plates: classes=("car", "plate") keeps those
# objects and renumbers them 1..2 (label - 1 is the column of a RetinaNet's sigmoid
# output). The transforms move boxes and masks with the image; RandomCrop drops an
# object when less than half of it stays in the window. No horizontal flip: mirrored
# plates would teach the detector mirror writing.
augment = T.Compose([
    T.RandomScale(0.75, 1.25),
    T.RandomCrop((192, 192), min_visible=0.5),
    T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02),
])
detector_data = VOCDataset(DATA_DIR, "train", classes=("car", "plate"),
                           return_instance_masks=True, transforms=augment)
print(f"detector labels: {detector_data.label_names}")
fig, axes = plt.subplots(1, SHOW, figsize=(3 * SHOW, 3.4))
fig.suptitle("after RandomScale, RandomCrop, ColorJitter: cars and plates only")
worst = 0.0
for column in range(SHOW):
    image, target = detector_data[int(busiest[column % len(detector_data)])]
    for box, mask in zip(target["boxes"], target["instance_masks"]):
        if mask.any():  # a box stays within a pixel of its transformed mask
            worst = max(worst, float(np.abs(masks_to_boxes(mask[None])[0] - box).max()))
    axes[column].imshow(image)
    draw_boxes(axes[column], target["boxes"], target["labels"], detector_data.label_names,
               {"car": "deepskyblue", "plate": "yellow"})
    axes[column].set_title(f"{len(target['boxes'])} boxes")
print(f"largest gap between a transformed box and its mask's tight box: {worst:.2f} px")
save(fig, axes, "04_detector_view.png")

# %% 4. What the digit segmenter sees
# Each plate box (here the ground truth; at test time the detector's) gets a 5% margin
# (CROP_PADDING), is grown to the crop's 3:1 aspect ratio with real image context (no
# stretching: a two-row motorbike plate keeps its shape) and resampled to 40x120
# (CROP_SIZE), with its label map in the segmenter's classes: 0 background, 1..10 the
# digits 0..9, 11 any other character (letters, dash, dot). Where the grown window
# leaves the image the crop is black and the label 255, "ignore": no loss, no metric
# counts those pixels. A crop can hold no character at all (a plate seen edge-on, or
# whose characters are all under a pixel): it still teaches the segmenter background.
# The text is read from the character objects: rows top to bottom, left to right, rows
# joined by one space.
plates = PlateCropDataset(DATA_DIR, "train", size=CROP_SIZE, padding=CROP_PADDING)
print(plates)
rows = min(8, len(plates))
fig, axes = plt.subplots(rows, 2, figsize=(6, 1.1 * rows), squeeze=False)
for row in range(rows):
    crop, mask, text = plates[row]
    axes[row, 0].imshow(crop)
    axes[row, 0].set_title(repr(text), fontsize=8)
    axes[row, 1].imshow(color_map(mask))
    labels = sorted(set(np.unique(mask).tolist()) - {0})
    axes[row, 1].set_title(f"labels {labels} (11 = other char, 255 = ignore)", fontsize=7)
save(fig, axes, "04_plate_crops.png", dpi=100)

# The same crops from any boxes (e.g. a detector's), all plates of an image at once.
# The windows map crop pixels back to the image (crop_to_image), e.g. to draw the
# characters stage two finds on the original photo.
image, target = dataset[int(busiest[0])]
plate_boxes = target["boxes"][target["labels"] == PLATE_CLASSES.index("plate")]
crops, crop_masks, windows = crop_plates(image, plate_boxes, CROP_SIZE, CROP_PADDING,
                                         class_mask=target["masks"])
print(f"crop_plates: {len(plate_boxes)} plates -> crops {crops.shape}, masks "
      f"{crop_masks.shape}, windows {np.round(windows.astype(float), 1).tolist()}")
texts = [plates.items[i][2] for i in range(len(plates))]
character_pixels = np.mean([((plates[i][1] > 0) & (plates[i][1] != 255)).mean()
                            for i in range(len(plates))]) if len(plates) else 0.0
two_rows = sum(len(t.split(" ")) == 2 for t in texts)
empty = sum(len(t) == 0 for t in texts)
print(f"{len(plates)} plates: {two_rows} with two rows, {empty} without a readable character; "
      f"characters cover {100 * character_pixels:.1f}% of a crop on average (class balance "
      f"for stage two)")

# %% 5. COCO JSON
# Evaluation tools (pycocotools) and many training codes read COCO: one JSON with
# images, xywh boxes, category ids and RLE masks. voc_to_coco converts a split; the
# COCODataset reads the same objects back.
coco_path = os.path.join(OUT_DIR, "plates_val_coco.json")
coco = voc_to_coco(DATA_DIR, "val", coco_path, include_masks=True)
back = COCODataset(coco_path, os.path.join(DATA_DIR, "JPEGImages"), return_instance_masks=True)
voc_val = VOCDataset(DATA_DIR, "val", return_instance_masks=True)
same = all(np.array_equal(back[i][1]["boxes"], voc_val[i][1]["boxes"])
           and np.array_equal(back[i][1]["instance_masks"], voc_val[i][1]["instance_masks"])
           for i in range(len(back)))
print(f"wrote {coco_path}: {len(coco['images'])} images, {len(coco['annotations'])} objects, "
      f"{len(coco['categories'])} categories; read back identical: {same}")
