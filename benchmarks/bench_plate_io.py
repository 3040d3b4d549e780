"""Speed of the dataset I/O: COCO RLE against pycocotools, VOC reading against raw Pillow.

Run as a script::

    python benchmarks/bench_plate_io.py            # 5 rounds
    python benchmarks/bench_plate_io.py --quick    # 2 rounds, fewer repeats

Cases:

- RLE encode / decode of 64 object masks of 256x256 (rectangles and ellipses, as
  cars and plates): ours (``detection.datasets.coco.rle_encode`` / ``rle_decode``,
  NumPy array operations) against ``pycocotools.mask`` (C).
- Reading one VOC example with its class map and instance masks (``VOCDataset``)
  against the floor of decoding the same three files with Pillow alone.
- ``crop_plates`` of 3 plates with masks, and ``write_voc_example`` (JPEG + 2 PNG +
  XML, atomic) — ours only, for scale.

Method (``../shared/bench/BASELINES.md``): ours and the reference each in their own
process, interleaved round by round (alternating order), medians of all timed
repeats after warm-up. The machine is shared: read the ratios.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE = dict(masks=64, size=256, voc_images=8)


def object_masks(rng):
    """(N, H, W) bool masks of rectangles and ellipses of 10..120 px."""
    n, size = CASE["masks"], CASE["size"]
    ys, xs = np.mgrid[0:size, 0:size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        h, w = rng.integers(10, 120, size=2)
        top, left = rng.integers(0, size - h), rng.integers(0, size - w)
        if i % 2:
            masks[i, top:top + h, left:left + w] = True
        else:
            masks[i] = ((ys + 0.5 - top - h / 2) / (h / 2)) ** 2 \
                + ((xs + 0.5 - left - w / 2) / (w / 2)) ** 2 <= 1
    return masks


def make_voc(root):
    """A few generated scenes (PNG: exact pixels) written once, shared by both workers."""
    sys.path.insert(0, ROOT)
    from plates.synthetic import generate_plate_dataset

    generate_plate_dataset(root, CASE["voc_images"], seed=0, image_size=CASE["size"],
                           splits=(1.0, 0.0, 0.0), image_format="png", progress=False)


def ours_cases(voc_root):
    sys.path.insert(0, ROOT)
    from detection.datasets.coco import rle_decode, rle_encode
    from plates.crops import crop_plates
    from detection.datasets.voc import VOCDataset, write_voc_example

    masks = object_masks(np.random.default_rng(0))
    encoded = [rle_encode(m) for m in masks]
    dataset = VOCDataset(voc_root, "train", return_masks=True, return_instance_masks=True)
    image, target = dataset[0]
    plates = np.array([[20, 100, 80, 120], [120, 150, 170, 165], [200, 30, 240, 60]], np.float32)
    scratch = os.path.join(voc_root, "scratch")  # removed with the benchmark's VOC root
    os.makedirs(scratch, exist_ok=True)
    objects = [{"name": "car", "bbox": (10, 10, 200, 200)}]
    instance = target["masks"].astype(bool).astype(np.uint8)

    def read_voc():
        for i in range(len(dataset)):
            dataset[i]

    return {
        "rle encode": lambda: [rle_encode(m) for m in masks],
        "rle decode": lambda: [rle_decode(r) for r in encoded],
        "read VOC example": read_voc,
        "crop_plates (3 plates)": lambda: crop_plates(image, plates, (32, 96), 0.1,
                                                      target["masks"]),
        "write_voc_example": lambda: write_voc_example(scratch, "x", image, objects,
                                                       target["masks"], instance),
    }


def reference_cases(voc_root):
    from PIL import Image
    from pycocotools import mask as mask_utils

    masks = object_masks(np.random.default_rng(0))
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))  # (H, W, N)
    encoded = mask_utils.encode(fortran)
    ids = [line.strip() for line in open(os.path.join(voc_root, "ImageSets/Main/train.txt"))]

    def read_pillow():
        for image_id in ids:
            for folder, ext in (("JPEGImages", ".png"), ("SegmentationClass", ".png"),
                                ("SegmentationObject", ".png")):
                with Image.open(os.path.join(voc_root, folder, image_id + ext)) as f:
                    np.asarray(f)

    return {
        "rle encode": lambda: mask_utils.encode(fortran),
        "rle decode": lambda: mask_utils.decode(encoded),
        "read VOC example": read_pillow,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_round_arguments(parser, ("ours", "reference"))
    parser.add_argument("--voc", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds, repeats = harness.rounds_and_repeats(args)
    if args.worker:
        make = ours_cases if args.worker == "ours" else reference_cases
        print(json.dumps(harness.time_cases(make(args.voc), repeats, args.warmup)))
        return

    def run(lib):
        return harness.run_worker(__file__, ["--worker", lib, "--voc", voc_root,
                                             "--repeats", repeats, "--warmup", args.warmup])

    voc_root = tempfile.mkdtemp(prefix="bench_plate_voc_")
    try:
        make_voc(voc_root)
        samples = {"ours": {}, "reference": {}}
        for lib, result in harness.alternate(("ours", "reference"), rounds, run):
            for name, values in result.items():
                samples[lib].setdefault(name, []).extend(values)
    finally:
        shutil.rmtree(voc_root, ignore_errors=True)

    median = {lib: {name: 1e3 * float(np.median(v)) for name, v in cases.items()}
              for lib, cases in samples.items()}
    print(f"\n{CASE['masks']} masks of {CASE['size']}x{CASE['size']}; VOC: {CASE['voc_images']} "
          f"generated {CASE['size']}x{CASE['size']} PNG scenes per 'read' (all three files); "
          f"medians of {rounds} rounds x {repeats} repeats")
    print(f"{'case':26s} {'ours ms':>9s} {'reference ms':>13s} {'ratio':>6s}  reference")
    names = {"rle encode": "pycocotools.mask.encode", "rle decode": "pycocotools.mask.decode",
             "read VOC example": "Pillow decode of the same files"}
    for name, ours in median["ours"].items():
        if name in median["reference"]:
            ref = median["reference"][name]
            print(f"{name:26s} {ours:9.2f} {ref:13.2f} {ours / ref:6.2f}  {names[name]}")
        else:
            print(f"{name:26s} {ours:9.2f} {'-':>13s} {'-':>6s}  (ours only)")


if __name__ == "__main__":
    main()
