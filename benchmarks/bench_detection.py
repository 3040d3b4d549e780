"""Speed of the detection toolkit against its references (onnxruntime, pycocotools).

Run as a script::

    python benchmarks/bench_detection.py              # every section
    python benchmarks/bench_detection.py --quick      # fewer rounds and repeats
    python benchmarks/bench_detection.py --only nms

Sections:

- ``nms``: ``detection.nms.nms`` (IoU threshold 0.5, float32) against onnxruntime's
  ``NonMaxSuppression`` (opset 11, ``center_point_box=0``) on 10,000 detector-like boxes
  (jittered copies of 100 objects, random scores; about 100 are kept) and on 10,000
  uniformly random boxes (about 4,000 kept). A "naive NumPy" NMS (sort once, IoU of
  each kept box against all remaining boxes, compact the arrays every step) is timed
  too, to show what the windowed kernel buys. The kept indices of ours and
  onnxruntime's are compared.
- ``map``: ``detection.metrics.mean_average_precision`` against pycocotools'
  ``COCOeval`` (bbox) on 5,000 images x 100 detections (~7 objects, 10 classes per
  image). Ours is timed from the lists of dicts; pycocotools' ``evaluate()`` +
  ``accumulate()`` from COCO objects built beforehand. No warm-up (each pycocotools
  call takes about a minute); the 12 summary numbers of both are compared.

Method (``../shared/bench/BASELINES.md``): each library runs in its own process, the
processes are interleaved round by round (the order alternating), and each case
reports the median of all its timed repeats after warm-up. The machine is shared,
so the ratio (ours / reference) is the figure to read.

Adding a section: write ``<name>_runners(impl, quick)`` returning
``{case: (callable, check_value)}`` for each implementation (it runs inside the
worker process of that implementation), and ``<name>_section(args)`` that calls
``compare(...)`` and prints a table; then add one line to ``SECTIONS`` and one to
``RUNNERS``.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

THREADS = 2


# ==================================================================== harness
def time_runners(runners, repeats, warmup):
    """Time each zero-argument callable; return ``{case: {"times": [...], "check": str}}``."""
    times = harness.time_cases({case: run for case, (run, _) in runners.items()}, repeats,
                               warmup)
    return {case: {"times": times[case], "check": check()}
            for case, (_, check) in runners.items()}


def compare(section, impls, rounds, quick):
    """Interleave the implementations' processes for ``rounds`` rounds.

    Returns:
        dict: ``{impl: {case: {"times": [all repeats of all rounds], "check": str}}}``.
    """
    def run(impl):
        args = ["--worker", section, "--impl", impl] + (["--quick"] if quick else [])
        return harness.run_worker(__file__, args, THREADS)

    merged = {impl: {} for impl in impls}
    for impl, result in harness.alternate(impls, rounds, run):
        for case, timed in result.items():
            slot = merged[impl].setdefault(case, {"times": [], "check": timed["check"]})
            slot["times"].extend(timed["times"])
    return merged


def median_ms(times):
    return 1e3 * float(np.median(times))


def print_table(title, header, rows):
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def digest(array):
    """A short fingerprint of an index array, to compare results across processes."""
    array = np.ascontiguousarray(array, dtype=np.int64)
    return f"{len(array)}:{hashlib.sha1(array.tobytes()).hexdigest()[:12]}"


# ======================================================================== NMS
NMS_THRESHOLD = 0.5
NMS_CASES = ("clustered", "uniform")


def nms_data(case, num_boxes=10_000, seed=0):
    """float32 ``boxes (N, 4)`` and distinct ``scores (N,)``, the same in every process."""
    rng = np.random.default_rng(seed)
    if case == "clustered":
        # A detector's raw output: ~100 boxes around each of 100 objects (5% jitter).
        objects = 100
        centers = rng.uniform(0, 800, (objects, 2))
        sizes = rng.uniform(20, 200, (objects, 2))
        owner = rng.integers(0, objects, num_boxes)
        center = centers[owner] + rng.normal(0, 0.05, (num_boxes, 2)) * sizes[owner]
        size = sizes[owner] * np.exp(rng.normal(0, 0.05, (num_boxes, 2)))
    else:
        center = rng.uniform(0, 800, (num_boxes, 2))
        size = rng.uniform(10, 200, (num_boxes, 2))
    boxes = np.concatenate([center - size / 2, center + size / 2], axis=1).astype(np.float32)
    scores = ((rng.permutation(num_boxes) + rng.random(num_boxes)) / num_boxes).astype(np.float32)
    return boxes, scores


def naive_nms(boxes, scores, iou_threshold):
    """Textbook NumPy NMS: IoU of the best box against all remaining ones, every step."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[order, k] for k in range(4))
    area = (x2 - x1) * (y2 - y1)
    index = order
    keep = []
    while index.size:
        keep.append(index[0])
        inter = (np.maximum(np.minimum(x2[1:], x2[0]) - np.maximum(x1[1:], x1[0]), 0)
                 * np.maximum(np.minimum(y2[1:], y2[0]) - np.maximum(y1[1:], y1[0]), 0))
        iou = inter / (area[1:] + area[0] - inter)
        survive = np.flatnonzero(iou <= iou_threshold) + 1
        x1, y1, x2, y2, area, index = (a[survive] for a in (x1, y1, x2, y2, area, index))
    return np.array(keep, dtype=np.int64)


def nms_runners(impl, quick):
    runners = {}
    if impl == "onnxruntime":
        from tests.oracles import onnx_nms_session

        session = onnx_nms_session(THREADS)
    for case in NMS_CASES:
        boxes, scores = nms_data(case)
        if impl == "ours":
            from detection.nms import nms

            def run(boxes=boxes, scores=scores):
                return nms(boxes, scores, NMS_THRESHOLD)
        elif impl == "naive":
            if case == "uniform" and quick:
                continue

            def run(boxes=boxes, scores=scores):
                return naive_nms(boxes, scores, NMS_THRESHOLD)
        else:
            yxyx = np.ascontiguousarray(boxes[:, [1, 0, 3, 2]])     # ONNX: y1, x1, y2, x2
            feeds = {"boxes": yxyx[None],
                     "scores": scores[None, None],
                     "max_output": np.array([len(boxes)], np.int64),
                     "iou_threshold": np.array([NMS_THRESHOLD], np.float32)}

            def run(feeds=feeds):
                return session.run(None, feeds)[0][:, 2]
        runners[case] = (run, lambda run=run: digest(run()))
    return runners


def nms_section(args):
    rounds = 2 if args.quick else 5
    results = compare("nms", ["ours", "onnxruntime", "naive"], rounds, args.quick)
    rows = []
    for case in NMS_CASES:
        ours = median_ms(results["ours"][case]["times"])
        reference = median_ms(results["onnxruntime"][case]["times"])
        naive = results["naive"].get(case)
        same = results["ours"][case]["check"] == results["onnxruntime"][case]["check"]
        kept = results["ours"][case]["check"].split(":")[0]
        rows.append([f"{case} 10,000 boxes", kept, f"{ours:.2f}", f"{reference:.2f}",
                     f"{ours / reference:.2f}",
                     f"{median_ms(naive['times']):.1f}" if naive else "-",
                     "yes" if same else "NO"])
    print_table(f"NMS, IoU > {NMS_THRESHOLD}, float32 ({rounds} rounds, medians)",
                ["case", "kept", "ours ms", "onnxruntime ms", "ratio", "naive NumPy ms",
                 "same indices"], rows)


# ======================================================================== mAP
MAP_CASE = {"images": 5000, "detections": 100, "objects": 7, "classes": 10}
MAP_QUICK_IMAGES = 500
MAP_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
            "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


def map_data(num_images, seed=0):
    """Detector-like predictions and targets (lists of dicts), the same in every process.

    Per image: Poisson(7) objects of 10 classes, 8-300 px wide, 2% crowd regions; 100
    detections, half of them jittered copies of the objects (10% with a wrong class,
    scores skewed high), half background boxes (scores skewed low).
    """
    rng = np.random.default_rng(seed)
    num_classes = MAP_CASE["classes"]
    n_true = MAP_CASE["detections"] // 2
    n_background = MAP_CASE["detections"] - n_true
    predictions, targets = [], []
    for _ in range(num_images):
        g = max(1, int(rng.poisson(MAP_CASE["objects"])))
        center = rng.uniform(0, 640, (g, 2))
        size = np.exp(rng.uniform(np.log(8), np.log(300), (g, 2)))
        gt_boxes = np.concatenate([center - size / 2, center + size / 2], axis=1)
        gt_labels = rng.integers(0, num_classes, g)
        crowd = (rng.random(g) < 0.02).astype(np.int64)
        src = rng.integers(0, g, n_true)
        near = gt_boxes[src] + rng.normal(0, 0.1, (n_true, 4)) * np.tile(size[src], 2)
        wrong = rng.integers(0, num_classes, n_true)
        near_labels = np.where(rng.random(n_true) < 0.9, gt_labels[src], wrong)
        center = rng.uniform(0, 640, (n_background, 2))
        side = np.exp(rng.uniform(np.log(8), np.log(300), (n_background, 2)))
        far = np.concatenate([center - side / 2, center + side / 2], axis=1)
        boxes = np.concatenate([near, far])
        boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                                np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
        scores = np.concatenate([rng.beta(5, 2, n_true), rng.beta(2, 5, n_background)])
        labels = np.concatenate([near_labels, rng.integers(0, num_classes, n_background)])
        predictions.append({"boxes": boxes, "scores": scores, "labels": labels})
        targets.append({"boxes": gt_boxes, "labels": gt_labels, "iscrowd": crowd})
    return predictions, targets


def pycocotools_objects(predictions, targets):
    """pycocotools' ground-truth and result objects (xywh, area = box area), built untimed."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    annotations, results = [], []
    for i, target in enumerate(targets):
        for j, (x1, y1, x2, y2) in enumerate(target["boxes"].tolist()):
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1,
                "category_id": int(target["labels"][j]), "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1), "iscrowd": int(target["iscrowd"][j]),
            })
    for i, prediction in enumerate(predictions):
        for j, (x1, y1, x2, y2) in enumerate(prediction["boxes"].tolist()):
            results.append({
                "image_id": i + 1, "category_id": int(prediction["labels"][j]),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(prediction["scores"][j]),
            })
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = {
            "images": [{"id": i + 1} for i in range(len(targets))],
            "categories": [{"id": c} for c in range(MAP_CASE["classes"])],
            "annotations": annotations,
        }
        ground_truth.createIndex()
        detections = ground_truth.loadRes(results)
    return ground_truth, detections


def map_runners(impl, quick):
    predictions, targets = map_data(MAP_QUICK_IMAGES if quick else MAP_CASE["images"])
    last = {}
    if impl == "ours":
        from detection.metrics import mean_average_precision

        def run():
            # Everything from the lists of dicts: checks, matching, accumulation, summary.
            result = mean_average_precision(predictions, targets)
            last["stats"] = [result[key] for key in MAP_KEYS]
    else:
        import contextlib
        import io

        from pycocotools.cocoeval import COCOeval
        ground_truth, detections = pycocotools_objects(predictions, targets)

        def run():
            with contextlib.redirect_stdout(io.StringIO()):
                evaluator = COCOeval(ground_truth, detections, "bbox")
                evaluator.evaluate()
                evaluator.accumulate()
                evaluator.summarize()  # reads the accumulated arrays: milliseconds
            last["stats"] = evaluator.stats.tolist()
    return {"detector-like": (run, lambda: json.dumps(last["stats"]))}


def map_section(args):
    rounds = 2 if args.quick else 3
    images = MAP_QUICK_IMAGES if args.quick else MAP_CASE["images"]
    results = compare("map", ["ours", "pycocotools"], rounds, args.quick)
    rows = []
    for case, ours_result in results["ours"].items():
        reference_result = results["pycocotools"][case]
        ours = median_ms(ours_result["times"])
        reference = median_ms(reference_result["times"])
        gap = np.max(np.abs(np.array(json.loads(ours_result["check"]))
                            - np.array(json.loads(reference_result["check"]))))
        rows.append([f"{case}, {images:,} images x {MAP_CASE['detections']} detections",
                     f"{ours:.0f}", f"{reference:.0f}", f"{ours / reference:.3f}", f"{gap:.1e}"])
    print_table(f"COCO mAP: ours (from the lists of dicts) vs pycocotools evaluate + accumulate "
                f"(~{MAP_CASE['objects']} objects per image, {MAP_CASE['classes']} classes; "
                f"{rounds} rounds, medians)",
                ["case", "ours ms", "pycocotools ms", "ratio", "max |12 stats diff|"], rows)


# =================================================================== registry
SECTIONS = {"nms": nms_section, "map": map_section}
RUNNERS = {"nms": nms_runners, "map": map_runners}
REPEATS = {"nms": ({"clustered": 40, "uniform": 6}, {"clustered": 15, "uniform": 2}),
           "map": (1, 1)}
WARMUP = {"map": 0}  # calls before timing; default 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and repeats")
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS),
                        help="run only these sections")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        full, quick = REPEATS[args.worker]
        repeats = quick if args.quick else full
        warmup = WARMUP.get(args.worker, 2)
        results = time_runners(RUNNERS[args.worker](args.impl, args.quick), repeats, warmup)
        print(json.dumps(results))
        return
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cores")
    for name in args.only or list(SECTIONS):
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
