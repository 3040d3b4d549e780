"""Speed of roi_align / roi_pool (forward, forward + backward) against onnxruntime.

Run as a script::

    python benchmarks/bench_roi.py            # 5 rounds
    python benchmarks/bench_roi.py --quick    # 2 rounds, fewer repeats

The case: 2 images × 32×32×256 (float32), 512 boxes, 7×7 bins,
sampling ratio 2, boxes of 2-16 feature cells inside the map (spatial_scale 1).
onnxruntime has only forward kernels (``RoiAlign`` opset 16 with
``output_half_pixel`` = ``aligned=False``, and ``MaxRoiPool``), so every row is
divided by onnxruntime's *forward* time: the backward rows show what a training
step costs relative to one reference forward. onnxruntime is timed with 2 threads
(as we get from BLAS) and with 1 thread: our sparse products run on one core, and
on a loaded machine a 2-thread pool loses more than a single thread does.

Method (``../shared/bench/BASELINES.md``): each library in its own process with 2
threads, processes interleaved round by round (alternating order), medians of all
timed repeats after warm-up. The machine is shared: read the ratios.
"""
import argparse
import json
import os
import sys

import numpy as np

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE = dict(images=2, size=32, channels=256, boxes=512, output=7, sampling_ratio=2)


def inputs(rng):
    """Feature maps (N, H, W, C) float32 and boxes (K, 5) [batch, x1, y1, x2, y2]."""
    size = CASE["size"]
    features = rng.standard_normal((CASE["images"], size, size, CASE["channels"]))
    k = CASE["boxes"]
    xy = rng.uniform(0, size - 4, size=(k, 2))
    wh = rng.uniform(2, size / 2, size=(k, 2))
    batch = np.sort(rng.integers(0, CASE["images"], size=(k, 1)), axis=0)
    boxes = np.concatenate([batch, xy, np.minimum(xy + wh, size - 1)], axis=1)
    return features.astype(np.float32), boxes.astype(np.float32)


def numpy_cases():
    sys.path.insert(0, ROOT)
    import nn
    import nn.functional as F

    features, boxes = inputs(np.random.default_rng(0))
    out = CASE["output"]
    ratio = CASE["sampling_ratio"]
    grad = np.random.default_rng(1).standard_normal(
        (CASE["boxes"], out, out, CASE["channels"])).astype(np.float32)

    def align_forward():
        with nn.no_grad():
            F.roi_align(features, boxes, out, 1.0, ratio, False)

    def align_backward_x():
        x = nn.Tensor(features, requires_grad=True)
        F.roi_align(x, boxes, out, 1.0, ratio, False).backward(grad)

    def align_backward_x_boxes():
        x = nn.Tensor(features, requires_grad=True)
        b = nn.Tensor(boxes, requires_grad=True)
        F.roi_align(x, b, out, 1.0, ratio, False).backward(grad)

    def pool_forward():
        with nn.no_grad():
            F.roi_pool(features, boxes, out, 1.0)

    def pool_backward_x():
        x = nn.Tensor(features, requires_grad=True)
        F.roi_pool(x, boxes, out, 1.0).backward(grad)

    return {
        "roi_align forward": align_forward,
        "roi_align fwd+bwd (x)": align_backward_x,
        "roi_align fwd+bwd (x, boxes)": align_backward_x_boxes,
        "roi_pool forward": pool_forward,
        "roi_pool fwd+bwd (x)": pool_backward_x,
    }


def onnxruntime_cases():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    features, boxes = inputs(np.random.default_rng(0))
    out = CASE["output"]
    x_nchw = np.ascontiguousarray(features.transpose(0, 3, 1, 2))

    def session(node, names, threads=2):
        kinds = {"X": TensorProto.FLOAT, "rois": TensorProto.FLOAT,
                 "batch_indices": TensorProto.INT64}
        graph = helper.make_graph(
            [node], node.op_type,
            [helper.make_tensor_value_info(n, kinds[n], None) for n in names],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
        opset = 16 if node.op_type == "RoiAlign" else 13
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])

    align_node = helper.make_node(
        "RoiAlign", ["X", "rois", "batch_indices"], ["Y"], mode="avg", output_height=out,
        output_width=out, sampling_ratio=CASE["sampling_ratio"], spatial_scale=1.0,
        coordinate_transformation_mode="output_half_pixel")
    pool_node = helper.make_node("MaxRoiPool", ["X", "rois"], ["Y"], pooled_shape=[out, out],
                                 spatial_scale=1.0)
    align_names, pool_names = ["X", "rois", "batch_indices"], ["X", "rois"]
    align, align_1 = session(align_node, align_names), session(align_node, align_names, 1)
    pool, pool_1 = session(pool_node, pool_names), session(pool_node, pool_names, 1)
    align_feeds = {"X": x_nchw, "rois": np.ascontiguousarray(boxes[:, 1:]),
                   "batch_indices": boxes[:, 0].astype(np.int64)}
    pool_feeds = {"X": x_nchw, "rois": boxes}
    return {
        "RoiAlign forward": lambda: align.run(None, align_feeds),
        "RoiAlign forward, 1 thread": lambda: align_1.run(None, align_feeds),
        "MaxRoiPool forward": lambda: pool.run(None, pool_feeds),
        "MaxRoiPool forward, 1 thread": lambda: pool_1.run(None, pool_feeds),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_round_arguments(parser, ("numpy", "onnxruntime"))
    args = parser.parse_args()
    rounds, repeats = harness.rounds_and_repeats(args)
    if args.worker:
        cases = numpy_cases() if args.worker == "numpy" else onnxruntime_cases()
        print(json.dumps(harness.time_cases(cases, repeats, args.warmup)))
        return

    def run(lib):
        return harness.run_worker(__file__, ["--worker", lib, "--repeats", repeats,
                                             "--warmup", args.warmup])

    samples = {}
    for _, result in harness.alternate(("numpy", "onnxruntime"), rounds, run):
        for name, values in result.items():
            samples.setdefault(name, []).extend(values)

    median = {name: 1e3 * float(np.median(values)) for name, values in samples.items()}
    print(f"\n{CASE['images']} images x {CASE['size']}x{CASE['size']}x{CASE['channels']} float32, "
          f"{CASE['boxes']} boxes, {CASE['output']}x{CASE['output']}, sampling "
          f"{CASE['sampling_ratio']}; medians of {rounds} rounds x {repeats} repeats")
    print(f"{'case':30s} {'ours ms':>8s} {'ort fwd ms':>11s} {'ratio':>6s} "
          f"{'ort 1-thread ms':>16s} {'ratio':>6s}")
    for name in samples:
        if not name.startswith("roi_"):
            continue
        reference = "RoiAlign forward" if name.startswith("roi_align") else "MaxRoiPool forward"
        single = reference + ", 1 thread"
        print(f"{name:30s} {median[name]:8.1f} {median[reference]:11.1f} "
              f"{median[name] / median[reference]:6.2f} {median[single]:16.1f} "
              f"{median[name] / median[single]:6.2f}")


if __name__ == "__main__":
    main()
