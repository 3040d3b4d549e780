"""08 — The plate lab end to end: detect the plate on a small copy, segment its characters
in the full frame, read them, put the masks back.

Labwork 7 of the lecture: input a photo of cars or motorbikes, output the properly
segmented characters of their plates, in two stages (detection, then segmentation),
both trained from scratch. ``python -m plates run`` does the whole lab (data, both
trainings, evaluation, LaTeX report); this tutorial runs a short version of it and then
follows one photo through the reader (``plates.reader.PlateReader``):

1. the photo, 1024 x 1024 (256 x 256 with ``--quick``),
2. stage one on a small copy: the detector sees the photo shrunk to 256 px,
3. its boxes scaled back to the full frame,
4. the plates cut from the *full* frame (beside the same crop from the small copy),
5. the U-Net's class maps, and how ``read_plate`` reads them,
6. the character masks pasted back into the photo's pixels,
7. the end-to-end numbers of the short run on its held-out test scenes.

Run it with ``python examples/08_plate_lab.py`` (about 5 minutes: 300 scenes, 4
minutes of training; ``--quick`` for seconds, with practically untrained networks, as
the figures then say; ``--out DIR`` chooses where the run and figures go, ``out/`` by
default; ``--minutes`` the training budget).
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # write files, never open a window
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from detection.datasets.voc import VOCDataset  # noqa: E402
from detection.visualize import draw_boxes, save_figure, show_image  # noqa: E402
from plates.crops import crop_plates  # noqa: E402
from plates.lab import LabConfig, run  # noqa: E402
from plates.reader import PlateReader, annotate, letterbox, load_image  # noqa: E402
from plates.reading import read_plate  # noqa: E402
from plates.segmenter import class_colors  # noqa: E402
from detection.train_retinanet import MEAN, STD  # noqa: E402

# %% Configuration
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="tiny data, networks and run (seconds)")
parser.add_argument("--out", default="out", help="directory for the run and the figures")
parser.add_argument("--minutes", type=float, default=4.0, help="training budget (full mode)")
args = parser.parse_args()

OUT_DIR = os.path.join(args.out, "08_plate_lab")
RUN_DIR = os.path.join(OUT_DIR, "run")
NUM_IMAGES = 300  # the full lab renders 2500; a short run needs fewer
os.makedirs(OUT_DIR, exist_ok=True)


def save(figure, name):
    path = os.path.join(OUT_DIR, name)
    figure.tight_layout()
    save_figure(figure, path)
    print(f"wrote {path}")


# %% The short run
# The whole lab at a small scale: scenes rendered at full resolution, a small copy for
# the detector, RetinaNet and the U-Net trained from random weights (half of the budget
# each: in a few minutes the detector needs more than the lab's 9/19.5 share to find the
# plates), the plate threshold chosen on the validation scenes, the evaluation on the
# test scenes and the report. A second start of this script continues (or reuses) it.
config = LabConfig(out=RUN_DIR, num_images=NUM_IMAGES, minutes=args.minutes, detector_share=0.5,
                   quick=args.quick, progress=not args.quick)
resume = os.path.isfile(os.path.join(RUN_DIR, "lab.json"))
state = run(config, resume=resume)
lab = state["stages"]
reader = PlateReader.from_run(RUN_DIR)
trained = (f"detector {lab['detector'].get('steps')} steps, segmenter "
           f"{lab['segmenter'].get('steps')} steps")
# A figure of networks trained a few steps says so: its boxes and maps are noise.
caveat = ("\n[--quick: practically UNTRAINED networks, " + trained + "]") if args.quick \
    else f"\n[{trained}]"
print(f"reader: plate threshold {reader.plate_threshold:.2f} (chosen on val), detector input "
      f"{reader.detector_size} px, crops {reader.crop_size[0]}x{reader.crop_size[1]}")

# %% 1. A photo
# The first test scene with a plate. Any photo works the same way: ``load_image`` reads
# JPEG/PNG in any mode and applies the EXIF orientation.
scenes = os.path.join(config.data_root, f"scenes{config.image_size}")
test = VOCDataset(scenes, "test", classes=("car", "plate"))
index = next((i for i in range(len(test)) if (test.load_target(i)["labels"] == 2).any()), 0)
path = test._records[index]["image_path"]
image = load_image(path)
truth = test.load_target(index)
true_plates = truth["boxes"][truth["labels"] == 2]
print(f"photo {path}: {image.shape[1]}x{image.shape[0]}, {len(true_plates)} plate(s)")

# %% 2. Stage one on a small copy
# The detector was trained on scenes shrunk to 256 px: plates of 120-500 px become
# 30-125 px, which its anchors cover, and a step costs 16x fewer pixels. A photo of any
# size and aspect is letterboxed: longer side to 256 px (a filtered resize), black
# padding at the bottom/right to a multiple of the largest stride (64).
small, scale = letterbox(image, reader.detector_size, reader.stride)
inputs = (small.astype(np.float32) / 255 - np.float32(MEAN)) / np.float32(STD)
found = reader.detector.predict(inputs[None])[0]
keep = found["scores"] >= reader.plate_threshold
print(f"small copy {small.shape[1]}x{small.shape[0]}; {int(keep.sum())} detections at or above "
      f"{reader.plate_threshold:.2f} (of {len(found['scores'])}); box scale back {scale[:2]}")
figure = Figure(figsize=(5.5, 5.8))
ax = figure.add_subplot()
show_image(ax, small)
draw_boxes(ax, found["boxes"][keep], found["labels"][keep], found["scores"][keep],
           class_names={1: "car", 2: "plate"}, linewidth=1.5, fontsize=7)
ax.set_title(f"stage one: detections on the {small.shape[1]}-px copy{caveat}", fontsize=8)
save(figure, "08_1_small_copy.png")

# %% 3. Boxes back to the full frame, plates cut from it
# ``detect`` scales the boxes by W / w and H / h. Each plate box is then cut from the
# full-resolution frame with a 5% margin, its window grown to the crop's 3:1 aspect, and
# resampled to the segmenter's crop size. Beside it: the same window cut from the small
# copy, 4x fewer pixels each way: the glyphs there are a few pixels wide and blurred.
detections = reader.detect(image)
plates = reader.plate_boxes(detections)
boxes = detections["boxes"][plates]
source = "detected"
if len(boxes) == 0:  # an untrained detector finds nothing: show the next steps anyway
    boxes, source = true_plates, "true (no plate detected)"
crops, class_maps, windows = reader.segment(image, boxes)
small_crops, _, _ = crop_plates(small, boxes / scale.astype(np.float32), reader.crop_size,
                                reader.crop_padding)
shown = min(3, len(crops))
figure = Figure(figsize=(8, 1.6 * shown + 0.6))
axes = np.asarray(figure.subplots(shown, 2, squeeze=False))
for row in range(shown):
    show_image(axes[row, 0], crops[row])
    axes[row, 0].set_title(f"from the {image.shape[1]}-px frame", fontsize=8)
    show_image(axes[row, 1], small_crops[row])
    axes[row, 1].set_title(f"same window, from the {small.shape[1]}-px copy", fontsize=8)
figure.suptitle(f"plate crops of the {source} boxes", fontsize=9)
save(figure, "08_2_crops.png")

# %% 4. Class maps and reading
# The U-Net labels every pixel of all crops in one batch: background, a digit (coloured
# 0 red ... 9 violet) or another character (white, read as '#'). ``read_plate`` takes
# each connected blob as a character (pieces in one column merged, blobs twice a
# character wide cut where they narrow, specks away from the characters dropped), sorts
# them into rows and reads each row left to right.
colors = class_colors()
figure = Figure(figsize=(8, 1.6 * shown + 0.6))
axes = np.asarray(figure.subplots(shown, 2, squeeze=False))
for row in range(shown):
    read = read_plate(class_maps[row], min_area=reader.read_min_area)
    show_image(axes[row, 0], crops[row])
    axes[row, 1].imshow(colors[class_maps[row]], interpolation="nearest")
    axes[row, 1].set_xticks([])
    axes[row, 1].set_yticks([])
    for (x1, y1, x2, y2), text in zip(read["boxes"], read["text"].replace(" ", "")):
        axes[row, 1].add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                         edgecolor="yellow", linewidth=0.8))
    axes[row, 1].set_title(f"read {read['text']!r}", fontsize=8)
    print(f"plate {row}: read {read['text']!r}, {len(read['labels'])} characters")
figure.suptitle(f"the segmenter's class maps and the characters read{caveat}", fontsize=8)
save(figure, "08_3_class_maps.png")

# %% 5. The masks pasted back
# ``read`` does all of the above; each character's box and mask come back through the
# crop window: a photo pixel takes the class-map pixel under its centre. This is what
# ``python -m plates read`` draws and writes to plates.json.
reading = reader.read(image)
drawn = annotate(image, reading)
for plate in reading.plates:
    print(f"plate at {np.round(plate.box).astype(int).tolist()} (score {plate.score:.2f}): "
          f"{plate.text!r}, masks of {[int(c.mask.sum()) for c in plate.characters]} pixels")
figure = Figure(figsize=(11, 5.6))
ax_full, ax_zoom = figure.subplots(1, 2)
show_image(ax_full, drawn)
ax_full.set_title(f"the photo read: {len(reading.plates)} plate(s){caveat}", fontsize=8)
x1, y1, x2, y2 = (reading.plates[0].window if reading.plates else windows[0])
pad = 0.1 * (x2 - x1)
left, top = int(max(0, x1 - pad)), int(max(0, y1 - pad))
right = int(min(image.shape[1], x2 + pad))
bottom = int(min(image.shape[0], y2 + pad))
show_image(ax_zoom, drawn[top:bottom, left:right])
ax_zoom.set_title("zoom on a plate: the character masks in the frame's pixels", fontsize=8)
save(figure, "08_4_masks_in_the_photo.png")

# %% 6. The end-to-end numbers of the run
# Every true test plate counts: a plate the detector missed is a failure. The full
# table, the error causes and a gallery of failures are in the run's report
# (Report.7.Detection.Segmentation.tex / .pdf) and evaluation/.
with open(os.path.join(RUN_DIR, "evaluation", "evaluation.json"), encoding="utf-8") as handle:
    evaluation = json.load(handle)


def number(value, percent=False):
    """A metric as text ('--' where it is undefined, e.g. no plate was detected)."""
    if value is None:
        return "--"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


end = evaluation["end_to_end"]
seg = evaluation["segmentation"]
print(f"test scenes {evaluation['images']}: plate AP50 "
      f"{number(evaluation['detection']['ap50_per_class'].get('plate'))}, character mean IoU "
      f"on the detected crops {number(seg['detected']['mean_iou'])} (true boxes "
      f"{number(seg['ground_truth']['mean_iou'])})")
print(f"read exactly: {end['read']} of {end['plates']} plates "
      f"({number(end['read_exact'], True)}); plates found {number(end['plate_recall'], True)}")
print("outcome of the test plates:", {k: v for k, v in evaluation["errors"].items() if v})
print(f"report: {os.path.join(RUN_DIR, 'Report.7.Detection.Segmentation.tex')}")
