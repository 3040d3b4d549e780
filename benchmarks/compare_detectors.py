"""The lecture's detector comparison, measured: proposals, time and accuracy of each model.

Run as a script, on the trained runs of each detector and their dataset::

    python benchmarks/compare_detectors.py --data data/plates \\
        --run rcnn=runs/rcnn --run fast_rcnn=runs/fast_rcnn --run faster_rcnn=runs/faster_rcnn \\
        --run mask_rcnn=runs/mask_rcnn --run yolo=runs/yolo --run retinanet=runs/retinanet \\
        [--images 100] [--timed 20] [--markdown table.md] [--figure recall.png]
    python benchmarks/compare_detectors.py --quick ...      # 4 test images, 2 timed

Every model is evaluated on the same first ``--images`` scenes of the test split (one
image per call, batch 1, at the runs' 256-px size, ``--threads`` of our kernels):

- **candidates per image**: the boxes the model scores: selective-search proposals
  (R-CNN, Fast R-CNN; the first ``max_proposals`` of them for R-CNN), RPN proposals
  after NMS (Faster and Mask R-CNN), the S x S x B boxes of YOLO, the anchors of
  RetinaNet (all five FPN levels);
- **inference per image** (median of ``--timed`` images), and its split: proposals
  (selective search, or the RPN's objectness and NMS), features (the shared backbone or,
  for R-CNN, the warps and the CNN on every region), heads (RoI heads, SVMs, dense heads,
  decoding and NMS; Mask R-CNN's mask head included);
- **accuracy**: COCO mAP and AP50 per class (``detection.metrics``);
- **training**: steps and minutes from each run's ``metrics.json`` (selective search on
  the training images, computed before the clock starts, given apart).

Then the recall of the ground-truth cars and plates against the number of proposals
kept, at IoU 0.5 and 0.7, for selective search ("fast" mode) and for the RPN of the
Faster R-CNN run (its proposals ranked by objectness, up to 2000 after NMS): the figure
``--figure``. The timings are wall clock of this process: on a shared machine they grow
with its load, which the output states.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import nn                                                                   # noqa: E402
from bench_selective_search import best_overlaps                           # noqa: E402
from detection.datasets.transforms import Compose, Normalize, Resize       # noqa: E402
from detection.datasets.voc import VOCDataset                              # noqa: E402
from detection.metrics import mean_average_precision                       # noqa: E402
from detection.metrics import precision_recall_curve                       # noqa: E402
from detection.selective_search import selective_search                    # noqa: E402
from detection.training import MEAN, STD                                   # noqa: E402

KINDS = ("rcnn", "fast_rcnn", "faster_rcnn", "mask_rcnn", "yolo", "retinanet")
TITLES = {"rcnn": "R-CNN", "fast_rcnn": "Fast R-CNN", "faster_rcnn": "Faster R-CNN",
          "mask_rcnn": "Mask R-CNN", "yolo": "YOLOv1", "retinanet": "RetinaNet"}
RECALL_COUNTS = (10, 20, 50, 100, 200, 300, 500, 1000, 2000)


# ------------------------------------------------------------------------ models
def load(kind, run):
    """``(model, class names, metrics.json of the run)`` from a run directory."""
    metrics_path = os.path.join(run, "metrics.json")
    metrics = json.load(open(metrics_path)) if os.path.exists(metrics_path) else {}
    if kind == "rcnn":
        from detection.train_rcnn_svm import load_model
        model, names = load_model(os.path.join(run, "model.npz"))
        return model, list(names), metrics
    if kind in ("fast_rcnn", "faster_rcnn", "mask_rcnn"):
        from detection.train_rcnn import load_run
    elif kind == "yolo":
        from detection.train_yolo import load_run
    else:
        from detection.train_retinanet import load_run
    model, checkpoint = load_run(os.path.join(run, "best.npz"))
    return model, list(checkpoint["config"]["classes"]), metrics


def _median_ms(values):
    return float(np.median(values) * 1000) if values else float("nan")


def run_model(kind, model, raw, normalized, proposals):
    """Predictions and per-stage seconds of one image.

    Args:
        raw (ndarray[H, W, 3] uint8), normalized (ndarray[H, W, 3] float32): the image.
        proposals (ndarray[P, 4]): selective search's boxes of the image (R-CNN, Fast R-CNN).
    Returns:
        tuple: ``prediction`` dict, ``stages`` dict of seconds (proposals, features,
        heads), ``candidates`` (int).
    """
    x = normalized[None]
    size = raw.shape[:2]
    if kind == "rcnn":
        prediction = model.detect(raw, proposals)
        t = model.timings
        count = min(len(proposals), model.config.max_proposals)
        return prediction, {"features": t["warp"] + t["features"], "heads": t["heads"]}, count
    with nn.no_grad():
        model.eval()
        start = time.perf_counter()
        if kind == "fast_rcnn":
            features = model.features(nn.Tensor(x))
            middle = time.perf_counter()
            prediction = model.roi_heads.predict(features, [proposals], size)[0]
            end = time.perf_counter()
            return prediction, {"features": middle - start, "heads": end - middle}, len(proposals)
        if kind in ("faster_rcnn", "mask_rcnn"):
            features = model.features(nn.Tensor(x))
            middle = time.perf_counter()
            objectness, deltas = model.rpn(features)
            anchors = model.rpn.anchors(size, features.shape[1:3])
            boxes, _ = model.rpn.propose(objectness.data, deltas.data, anchors, size)
            after_rpn = time.perf_counter()
            if kind == "faster_rcnn":
                prediction = model.roi_heads.predict(features, boxes, size)[0]
                end = time.perf_counter()
            else:
                # The heads' time of Mask R-CNN is its whole predict minus features and
                # RPN timed here (the same image, the same work).
                again = time.perf_counter()
                prediction = model.predict(x)[0]
                whole = time.perf_counter() - again
                end = after_rpn + max(whole - (after_rpn - start), 0.0)
            return prediction, {"features": middle - start, "proposals": after_rpn - middle,
                                "heads": end - after_rpn}, len(boxes[0])
        # One-stage: the network, then decoding and NMS.
        output = model.forward(nn.Tensor(x))
        middle = time.perf_counter()
        prediction = model.predict(x)[0]
        end = time.perf_counter()
        whole = end - middle
        network = middle - start
        if kind == "yolo":
            c = model.config
            count = (size[0] // c.stride) * (size[1] // c.stride) * c.boxes_per_cell
        else:
            count = int(output[0].shape[1])
        return prediction, {"features": network, "heads": max(whole - network, 0.0)}, count


def evaluate(predictions, targets, names):
    metrics = mean_average_precision(predictions, targets)
    curves = precision_recall_curve(predictions, targets, iou_threshold=0.5)
    ap50 = {names[int(k) - 1]: float(ap) for k, ap in zip(curves["labels"], curves["ap"])}
    return {"map": float(metrics["map"]), "map_50": float(metrics["map_50"]),
            "ap50_per_class": ap50}


def training_summary(metrics):
    summary = {"steps": metrics.get("steps"), "train_minutes": None, "proposal_minutes": None}
    if metrics.get("train_seconds") is not None:
        summary["train_minutes"] = metrics["train_seconds"] / 60
    for key in ("proposal_seconds", "proposals_seconds"):
        value = metrics.get(key)
        if isinstance(value, dict):
            value = value.get("train")
        if value is not None:
            summary["proposal_minutes"] = float(value) / 60
    return summary


# ------------------------------------------------------------------------ recall
def rpn_proposals(model, normalized, keep=2000):
    """The RPN's proposals of one image ranked by objectness, up to ``keep`` after NMS."""
    rpn = model.rpn
    saved = rpn.pre_nms_top_n, rpn.post_nms_top_n
    rpn.pre_nms_top_n = (saved[0][0], max(saved[0][1], 4 * keep))
    rpn.post_nms_top_n = (saved[1][0], keep)
    try:
        with nn.no_grad():
            model.eval()
            features = model.features(nn.Tensor(normalized[None]))
            objectness, deltas = rpn(features)
            anchors = rpn.anchors(normalized.shape[:2], features.shape[1:3])
            boxes, _ = rpn.propose(objectness.data, deltas.data, anchors, normalized.shape[:2])
    finally:
        rpn.pre_nms_top_n, rpn.post_nms_top_n = saved
    return boxes[0]


def recall_table(overlaps):
    """Recall per N at IoU 0.5 and 0.7 from stacked best overlaps ``(len(counts), G)``."""
    if overlaps.shape[1] == 0:
        return {}
    return {threshold: (overlaps >= threshold).mean(axis=1) for threshold in (0.5, 0.7)}


def plot_recall(curves, path, images):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    styles = {"selective search": "-", "RPN": "--"}
    colors = {"car": "tab:blue", "plate": "tab:red"}
    for ax, threshold in zip(axes, (0.5, 0.7)):
        for (method, name), table in curves.items():
            if threshold in table:
                ax.plot(RECALL_COUNTS, table[threshold], styles[method], color=colors.get(name),
                        marker="o", markersize=3, label=f"{method}, {name}")
        ax.set_xscale("log")
        ax.set_xlabel("proposals kept per image")
        ax.set_title(f"recall at IoU {threshold}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("recall of ground-truth boxes")
    axes[0].set_ylim(0, 1.02)
    axes[1].legend(fontsize=8, loc="lower right")
    figure.suptitle(f"proposals and recall, {images} test scenes (256 px)", fontsize=10)
    figure.tight_layout()
    from nn.io import atomic_write_bytes
    import io
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


# -------------------------------------------------------------------------- main
def parse_runs(values):
    """``{name: (kind, directory)}`` from ``KIND=DIR`` or ``KIND:LABEL=DIR`` arguments
    (the label tells apart two runs of one kind, e.g. ``faster_rcnn:align=runs/x``)."""
    runs = {}
    for value in values:
        name, sep, path = value.partition("=")
        kind, _, label = name.partition(":")
        if not sep or kind not in KINDS:
            raise SystemExit(f"--run must be KIND=DIR or KIND:LABEL=DIR with KIND one of "
                             f"{', '.join(KINDS)}; got {value!r}")
        if not os.path.isdir(path):
            raise SystemExit(f"--run {name}: {path} is not a directory")
        if name in runs:
            raise SystemExit(f"--run {name} given twice (add :LABEL to tell them apart)")
        runs[name] = (kind, path)
    return runs


def title(name):
    kind, _, label = name.partition(":")
    return TITLES[kind] + (f" ({label})" if label else "")


def markdown(rows, images, load):
    lines = [f"Same {images} test scenes for every model (256 px, batch 1); load average "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} during the timings.", "",
             "| model | candidates / image | train | inference / image (proposals / "
             "features / heads) | mAP | AP50 car / plate |",
             "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        t = row["timing_ms"]
        split = " / ".join("–" if np.isnan(t.get(s, np.nan)) else f"{t[s]:.0f}"
                           for s in ("proposals", "features", "heads"))
        train = row["training"]
        minutes = train["train_minutes"]
        text = f"{minutes:.1f} min, {train['steps']} steps" if minutes is not None else "–"
        if train["proposal_minutes"]:
            text += f" (+{train['proposal_minutes']:.1f} min proposals)"
        ap = row["accuracy"]["ap50_per_class"]
        lines.append(f"| {title(name)} | {row['candidates']:.0f} | {text} | "
                     f"{t['total']:.0f} ms ({split}) | {row['accuracy']['map']:.3f} | "
                     f"{ap.get('car', float('nan')):.3f} / {ap.get('plate', float('nan')):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the runs' VOC dataset")
    parser.add_argument("--run", action="append", default=[], metavar="KIND[:LABEL]=DIR",
                        help=f"a run directory, KIND one of {', '.join(KINDS)} (repeat; a "
                             f"LABEL tells apart two runs of one kind)")
    parser.add_argument("--images", type=int, default=100, help="test scenes evaluated")
    parser.add_argument("--timed", type=int, default=20, help="scenes timed")
    parser.add_argument("--size", type=int, default=256, help="image side the runs use")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", help="write the table here (Markdown)")
    parser.add_argument("--json", help="write every figure here (JSON)")
    parser.add_argument("--figure", help="write the recall figure here (PNG)")
    parser.add_argument("--quick", action="store_true", help="4 scenes, 2 timed")
    args = parser.parse_args(argv)
    runs = parse_runs(args.run)
    if not runs:
        parser.error("give at least one --run KIND=DIR")
    if args.images < 1 or args.timed < 1:
        parser.error("--images and --timed must be >= 1")
    if args.quick:
        args.images, args.timed = min(args.images, 4), min(args.timed, 2)
    nn.set_num_threads(args.threads)

    models = {name: load(kind, path) for name, (kind, path) in runs.items()}
    kinds = {name: kind for name, (kind, _) in runs.items()}
    names = next(iter(models.values()))[1]
    for name, (_, classes, _) in models.items():
        if list(classes) != list(names):
            raise SystemExit(f"--run {name} detects {classes}, the first run {names}: "
                             f"compare runs of the same classes")
    size = (args.size, args.size)
    raw_set = VOCDataset(args.data, "test", classes=names, transforms=Resize(size))
    norm_set = VOCDataset(args.data, "test", classes=names,
                          transforms=Compose([Resize(size), Normalize(MEAN, STD)]))
    count = min(args.images, len(raw_set))

    predictions = {kind: [] for kind in runs}
    stages = {kind: [] for kind in runs}
    candidates = {kind: [] for kind in runs}
    overlaps = {}
    targets, search_seconds = [], []
    load_samples = []
    for i in range(count):
        raw, target = raw_set[i]
        normalized, _ = norm_set[i]
        raw = np.asarray(raw, np.uint8)
        normalized = np.asarray(normalized, np.float32)
        truth = {"boxes": np.asarray(target["boxes"], np.float32).reshape(-1, 4),
                 "labels": np.asarray(target["labels"], np.int64).reshape(-1)}
        targets.append(truth)
        start = time.perf_counter()
        proposals = selective_search(raw, mode="fast")
        search_seconds.append(time.perf_counter() - start)
        by_name = {name: truth["boxes"][truth["labels"] == k + 1] for k, name in enumerate(names)}
        for name, boxes in by_name.items():
            overlaps.setdefault(("selective search", name), []).append(
                best_overlaps(boxes, proposals, RECALL_COUNTS))
        first_rpn = next((n for n in runs if kinds[n] == "faster_rcnn"), None)
        if first_rpn is not None:
            rpn = rpn_proposals(models[first_rpn][0], normalized)
            for name, boxes in by_name.items():
                overlaps.setdefault(("RPN", name), []).append(
                    best_overlaps(boxes, rpn, RECALL_COUNTS))
        for name, (model, _, _) in models.items():
            prediction, seconds, found = run_model(kinds[name], model, raw, normalized,
                                                   proposals)
            if kinds[name] in ("rcnn", "fast_rcnn"):
                seconds["proposals"] = search_seconds[-1]
            predictions[name].append(prediction)
            if i < args.timed:
                stages[name].append(seconds)
            candidates[name].append(found)
        if i < args.timed:
            load_samples.append(os.getloadavg())
        print(f"\rscene {i + 1}/{count}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    rows = {}
    for name in sorted(runs, key=lambda name: KINDS.index(kinds[name])):
        timing = {stage: _median_ms([s[stage] for s in stages[name] if stage in s])
                  for stage in ("proposals", "features", "heads")}
        timing["total"] = float(np.median([sum(s.values()) for s in stages[name]]) * 1000)
        rows[name] = {"run": runs[name][1], "candidates": float(np.mean(candidates[name])),
                      "timing_ms": timing,
                      "accuracy": evaluate(predictions[name], targets, names),
                      "training": training_summary(models[name][2])}
    machine_load = tuple(np.mean(load_samples, axis=0)) if load_samples else os.getloadavg()
    table = markdown(rows, count, machine_load)
    print(table)
    curves = {key: recall_table(np.concatenate(value, axis=1)) for key, value in overlaps.items()}
    for (method, name), recall in sorted(curves.items()):
        for threshold, values in recall.items():
            pairs = ", ".join(f"{n}: {v:.3f}" for n, v in zip(RECALL_COUNTS, values))
            print(f"recall {method:16s} {name:5s} IoU {threshold}: {pairs}")
    print(f"selective search: {np.median(search_seconds):.2f} s per image (median of {count})")
    from nn.io import atomic_write_text
    if args.markdown:
        atomic_write_text(args.markdown, table)
    if args.json:
        payload = {"images": count, "timed": min(args.timed, count), "load_average": list(machine_load),
                   "threads": args.threads, "rows": rows,
                   "selective_search_seconds": float(np.median(search_seconds)),
                   "recall_counts": list(RECALL_COUNTS),
                   "recall": {f"{m}/{n}": {str(t): v.tolist() for t, v in r.items()}
                              for (m, n), r in curves.items()}}
        atomic_write_text(args.json, json.dumps(payload, indent=1, default=float))
    if args.figure:
        plot_recall(curves, args.figure, count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
