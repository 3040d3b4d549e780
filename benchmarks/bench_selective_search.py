"""Selective search on rendered street scenes: time per image and recall of cars and plates.

Run as a script::

    python benchmarks/bench_selective_search.py              # 20 scenes, 256 px
    python benchmarks/bench_selective_search.py --quick      # 4 scenes
    python benchmarks/bench_selective_search.py --mode quality --images 5

Prints, for the scenes ``plates.synthetic.render_scene(np.random.default_rng(1000 + i))``:

- the time of ``selective_search`` per image, wall clock and CPU time of this process
  (median and mean), and its proposal count;
- recall at IoU 0.5 and 0.7 of the cars and of the plates (a ground-truth box is found
  when some proposal among the first N overlaps it that much) for several N;
- the CPU time of ``felzenszwalb`` against ``skimage.segmentation.felzenszwalb`` on the
  same images (HSV, k = 50 and 100, the "fast" mode's segmentations), measured
  alternately in one process, as a ratio of medians, and whether the two partitions
  were equal.

The machine is shared: wall-clock times grow with its load, CPU times much less, the
ratio least.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from detection.boxes import box_iou                                         # noqa: E402
from detection.selective_search import (convert_color, felzenszwalb,       # noqa: E402
                                        selective_search)
from plates.synthetic import render_scene                                   # noqa: E402

PROPOSAL_COUNTS = (100, 300, 500, 1000, 2000)
IMAGE_SIZE = 256


def best_overlaps(truth, proposals, counts):
    """Best IoU of each truth box with the first N proposals, for each N: (len(counts), G)."""
    if truth.shape[0] == 0:
        return np.zeros((len(counts), 0))
    iou = box_iou(truth, proposals)                                  # (G, R)
    return np.stack([iou[:, :n].max(axis=1) if n and iou.shape[1] else np.zeros(truth.shape[0])
                     for n in counts])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="4 scenes")
    parser.add_argument("--mode", default="fast", choices=("fast", "quality"))
    args = parser.parse_args(argv)
    count = 4 if args.quick else args.images

    times, cpu_times, sizes = [], [], []
    overlaps = {"car": [], "plate": []}
    segment_times = {"ours": [], "skimage": []}
    equal = []
    try:
        from skimage.segmentation import felzenszwalb as skimage_felzenszwalb
    except ImportError:
        skimage_felzenszwalb = None
    for i in range(count):
        image, objects, _, _ = render_scene(np.random.default_rng(1000 + i), IMAGE_SIZE)
        start, cpu = time.perf_counter(), time.process_time()
        proposals = selective_search(image, mode=args.mode)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
        sizes.append(proposals.shape[0])
        for name in overlaps:
            truth = np.array([o["bbox"] for o in objects if o["name"] == name],
                             np.float32).reshape(-1, 4)
            overlaps[name].append(best_overlaps(truth, proposals, PROPOSAL_COUNTS))
        if skimage_felzenszwalb is not None:
            hsv = convert_color(image / 255.0, "hsv")
            for k in (50, 100):
                start = time.process_time()
                ours = felzenszwalb(hsv, scale=k, sigma=0.8, min_size=k)
                segment_times["ours"].append(time.process_time() - start)
                start = time.process_time()
                theirs = skimage_felzenszwalb(hsv, scale=k, sigma=0.8, min_size=k)
                segment_times["skimage"].append(time.process_time() - start)
                equal.append(bool(np.array_equal(ours, theirs)))

    print(f"selective_search(mode={args.mode!r}) on {count} scenes of {IMAGE_SIZE} px")
    print(f"  time per image: wall median {np.median(times):.2f} s, mean {np.mean(times):.2f} s; "
          f"CPU median {np.median(cpu_times):.2f} s, mean {np.mean(cpu_times):.2f} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  proposals: median {int(np.median(sizes))}, max {max(sizes)}")
    header = "  ".join(f"N={n:>4}" for n in PROPOSAL_COUNTS)
    for name, per_image in overlaps.items():
        best = np.concatenate(per_image, axis=1)                      # (len(counts), G)
        print(f"  {name}s ({best.shape[1]} boxes)      {header}")
        for threshold in (0.5, 0.7):
            row = "  ".join(f"{(best[c] >= threshold).mean():6.3f}" if best.shape[1] else "   n/a"
                            for c in range(len(PROPOSAL_COUNTS)))
            print(f"    recall @ IoU {threshold}   {row}")
    if skimage_felzenszwalb is None:
        print("  scikit-image not installed: no felzenszwalb comparison")
    else:
        ours, theirs = np.median(segment_times["ours"]), np.median(segment_times["skimage"])
        print(f"  felzenszwalb (HSV, k=50/100), CPU: ours {ours * 1e3:.0f} ms, scikit-image "
              f"{theirs * 1e3:.0f} ms, ratio {ours / theirs:.2f}; equal partitions "
              f"{sum(equal)}/{len(equal)}")


if __name__ == "__main__":
    main()
