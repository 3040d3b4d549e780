"""Speed and memory of the vision kernels against their references (torch, onnxruntime).

Run as a script::

    python benchmarks/bench_kernels.py            # all kernels, 5 rounds
    python benchmarks/bench_kernels.py --quick    # 2 rounds, fewer repeats
    python benchmarks/bench_kernels.py --only conv --only convt

What is timed (float32, channels-last for us, NCHW for torch):

- ``conv``: ``conv2d`` forward + backward through autograd (input, weight and bias
  gradients; the first layer's 3-channel input needs no gradient in either library);
- ``convt``: ``conv_transpose2d`` forward + backward;
- ``pool``: ``max_pool2d`` 2x2/2 forward + backward;
- ``roi``: ``roi_align`` forward against onnxruntime's ``RoiAlign`` (opset 16,
  ``output_half_pixel``, i.e. ``aligned=False``);
- ``mem``: peak memory of forward + backward of the largest conv layer.

Method (``../shared/bench/BASELINES.md``): each library runs in its own process
(BLAS / OpenMP thread pools spin-wait and disturb each other in one process), with
2 threads (``OPENBLAS_NUM_THREADS=2``, ``torch.set_num_threads(2)``, onnxruntime
``intra_op_num_threads=2``); the processes are interleaved round by round, the order
alternating, and each case reports the median of all its timed repeats after warm-up.
The machine is shared, so the ratio (ours / reference) is the figure to read; the
"best-of" column divides the fastest repeats, the least disturbed by other processes.
``--threads 1 --clock cpu`` measures process CPU time with one thread per library:
a comparison of the work done that other processes' load hardly moves. When the
cores are busy (load average above ~2 on 2 cores), a 2-thread BLAS or OpenMP call
can wait a whole scheduler slice for its descheduled worker thread (timings jump
from ~5 to 100-400 ms, in both libraries); the wall-clock medians then measure the
scheduler more than the kernels, and the header prints the load average to say so.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (N, C_in, H, W, C_out, k, stride, padding)
CONV_LAYERS = [
    (16, 3, 64, 64, 16, 3, 1, 1),
    (16, 16, 64, 64, 32, 3, 2, 1),
    (16, 32, 32, 32, 64, 3, 1, 1),
    (8, 64, 16, 16, 128, 3, 1, 1),
    (8, 128, 8, 8, 256, 3, 1, 1),
    (8, 256, 16, 16, 256, 3, 1, 1),
    (16, 64, 32, 32, 64, 1, 1, 0),
]
CONVT_LAYERS = [
    (16, 64, 16, 16, 32, 2, 2, 0),
    (16, 64, 16, 16, 32, 4, 2, 1),
    (8, 128, 8, 8, 64, 2, 2, 0),
]
POOL_SHAPE = (16, 32, 64, 64)  # N, C, H, W; 2x2 window, stride 2
ROI = dict(images=2, channels=256, size=32, boxes=512, output=7, sampling_ratio=2)
MEMORY_LAYER = (8, 256, 16, 16, 256, 3, 1, 1)  # the largest layer (weights, FLOPs, columns)
GROUPS = ("conv", "convt", "pool", "roi")
THREADS = int(os.environ.get("DETSEG_BENCH_THREADS", "2"))  # set by the driver for its workers
TARGETS = {  # (median ratio, max ratio) the kernels are held to
    "conv": (1.3, 2.0),
    "convt": (1.3, None),
    "pool": (1.0, None),
    "roi": (2.0, None),
}


def conv_name(layer):
    n, c, h, w, co, k, s, p = layer
    return f"conv {n},{c},{h},{w}->{co} k{k} s{s} p{p}"


def convt_name(layer):
    n, c, h, w, co, k, s, p = layer
    return f"convt {n},{c},{h},{w}->{co} k{k} s{s} p{p}"


def conv_cases(groups, add_conv):
    """The cases of the "conv" and "convt" groups asked for, by name.

    ``add_conv(layer, transposed)`` makes the timed callable of one layer of
    ``CONV_LAYERS`` (``transposed=False``) or ``CONVT_LAYERS`` (``True``).
    """
    cases = {}
    if "conv" in groups:
        cases.update({conv_name(layer): add_conv(layer, False) for layer in CONV_LAYERS})
    if "convt" in groups:
        cases.update({convt_name(layer): add_conv(layer, True) for layer in CONVT_LAYERS})
    return cases


POOL_NAME = "max_pool2d 2x2/2 {},{},{},{}".format(*POOL_SHAPE)
ROI_NAME = "roi_align {images}x{size}x{size}x{channels}, {boxes} boxes, {output}x{output}".format(
    **ROI)


def roi_inputs(rng):
    """Feature maps (N, H, W, C) and boxes (K, 5) [batch, x1, y1, x2, y2] inside the map."""
    size = ROI["size"]
    features = rng.standard_normal((ROI["images"], size, size, ROI["channels"])).astype(np.float32)
    k = ROI["boxes"]
    xy = rng.uniform(0, size - 4, size=(k, 2))
    wh = rng.uniform(2, size / 2, size=(k, 2))
    x2y2 = np.minimum(xy + wh, size - 1)
    batch = rng.integers(0, ROI["images"], size=(k, 1)).astype(np.float64)
    boxes = np.concatenate([batch, xy, x2y2], axis=1).astype(np.float32)
    return features, boxes


# ============================================================ cases per library
def numpy_cases(groups):
    """Callables timing our kernels (one forward + backward each)."""
    sys.path.insert(0, ROOT)
    import nn
    import nn.functional as F

    rng = np.random.default_rng(0)

    def add_conv(layer, transposed):
        n, c, h, w, co, k, s, p = layer
        needs_dx = c != 3  # the first layer's image needs no gradient
        x = nn.Tensor(rng.standard_normal((n, h, w, c)).astype(np.float32), requires_grad=needs_dx)
        # HWIO (kh, kw, C_in, C_out) for conv2d; (kh, kw, C_in, C_out/groups) for the transpose.
        weight = nn.Tensor(rng.standard_normal((k, k, c, co)).astype(np.float32) * 0.05,
                           requires_grad=True)
        bias = nn.Tensor(np.zeros(co, np.float32), requires_grad=True)
        fn = F.conv_transpose2d if transposed else F.conv2d
        out_shape = fn(x, weight, bias, stride=s, padding=p).shape
        grad = rng.standard_normal(out_shape).astype(np.float32)
        return harness.forward_backward(lambda: fn(x, weight, bias, stride=s, padding=p),
                                        (x, weight, bias), grad)

    cases = conv_cases(groups, add_conv)
    if "pool" in groups and hasattr(F, "max_pool2d"):
        n, c, h, w = POOL_SHAPE
        x = nn.Tensor(rng.standard_normal((n, h, w, c)).astype(np.float32), requires_grad=True)
        grad = rng.standard_normal((n, h // 2, w // 2, c)).astype(np.float32)
        cases[POOL_NAME] = harness.forward_backward(lambda: F.max_pool2d(x, 2, 2), (x,), grad)
    if "roi" in groups and hasattr(F, "roi_align"):
        features, boxes = roi_inputs(rng)
        out = ROI["output"]

        def run_roi():
            with nn.no_grad():
                F.roi_align(features, boxes, (out, out), spatial_scale=1.0,
                            sampling_ratio=ROI["sampling_ratio"], aligned=False)

        cases[ROI_NAME] = run_roi
    return cases


def torch_cases(groups):
    import torch

    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    tf = torch.nn.functional

    def add_conv(layer, transposed):
        n, c, h, w, co, k, s, p = layer
        x = torch.tensor(rng.standard_normal((n, c, h, w)).astype(np.float32), requires_grad=c != 3)
        shape = (c, co, k, k) if transposed else (co, c, k, k)
        weight = torch.tensor(rng.standard_normal(shape).astype(np.float32) * 0.05,
                              requires_grad=True)
        bias = torch.zeros(co, requires_grad=True)
        fn = tf.conv_transpose2d if transposed else tf.conv2d
        grad = torch.randn_like(fn(x, weight, bias, stride=s, padding=p))
        return harness.forward_backward(lambda: fn(x, weight, bias, stride=s, padding=p),
                                        (x, weight, bias), grad)

    cases = conv_cases(groups, add_conv)
    if "pool" in groups:
        n, c, h, w = POOL_SHAPE
        x = torch.randn(n, c, h, w, requires_grad=True)
        grad = torch.randn(n, c, h // 2, w // 2)
        cases[POOL_NAME] = harness.forward_backward(lambda: tf.max_pool2d(x, 2, 2), (x,), grad)
    return cases


def onnxruntime_cases(groups):
    if "roi" not in groups:
        return {}
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    out = ROI["output"]
    node = helper.make_node(
        "RoiAlign", ["X", "rois", "batch_indices"], ["Y"], mode="avg",
        output_height=out, output_width=out, sampling_ratio=ROI["sampling_ratio"],
        spatial_scale=1.0, coordinate_transformation_mode="output_half_pixel",
    )
    n, size, channels, k = ROI["images"], ROI["size"], ROI["channels"], ROI["boxes"]
    graph = helper.make_graph(
        [node], "roi_align",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, channels, size, size]),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, [k, 4]),
         helper.make_tensor_value_info("batch_indices", TensorProto.INT64, [k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [k, channels, out, out])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    features, boxes = roi_inputs(np.random.default_rng(0))
    feeds = {
        "X": np.ascontiguousarray(features.transpose(0, 3, 1, 2)),
        "rois": np.ascontiguousarray(boxes[:, 1:]),
        "batch_indices": boxes[:, 0].astype(np.int64),
    }
    return {ROI_NAME: lambda: session.run(None, feeds)}


# ==================================================================== workers
def worker(lib, groups, repeats, warmup, clock):
    make = {"numpy": numpy_cases, "torch": torch_cases, "onnxruntime": onnxruntime_cases}[lib]
    clock = {"wall": time.perf_counter, "cpu": time.process_time}[clock]
    print(json.dumps(harness.time_cases(make(groups), repeats, warmup, clock)))


def memory_worker(lib):
    """Peak memory of one forward + backward of MEMORY_LAYER, in a fresh process.

    Both libraries: the growth of the resident set's high-water mark
    (``resource.getrusage(...).ru_maxrss``) over the call, inputs already allocated
    and a tiny layer run first (thread pools and other one-time setup).
    NumPy also: ``tracemalloc``'s peak of traced allocations (NumPy reports its data
    buffers to tracemalloc; torch's allocator does not, hence maxrss for both).
    """
    import resource
    import tracemalloc

    n, c, h, w, co, k, s, p = MEMORY_LAYER
    rng = np.random.default_rng(0)
    result = {}
    if lib == "numpy":
        sys.path.insert(0, ROOT)
        import nn
        import nn.functional as F

        x = nn.Tensor(rng.standard_normal((n, h, w, c)).astype(np.float32), requires_grad=True)
        weight = nn.Tensor(rng.standard_normal((k, k, c, co)).astype(np.float32),
                           requires_grad=True)
        bias = nn.Tensor(np.zeros(co, np.float32), requires_grad=True)
        grad = rng.standard_normal((n, h, w, co)).astype(np.float32)
        # A tiny layer first, so that one-time setup is not counted as the big layer's.
        small = nn.Tensor(np.ones((1, 8, 8, 4), np.float32), requires_grad=True)
        F.conv2d(small, nn.Tensor(np.ones((3, 3, 4, 4), np.float32), requires_grad=True),
                 padding=1).sum().backward()
        tracemalloc.start()
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        F.conv2d(x, weight, bias, stride=s, padding=p).backward(grad)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _, peak = tracemalloc.get_traced_memory()
        result["tracemalloc_mib"] = (peak - before) / 2**20
    else:
        import torch

        torch.set_num_threads(THREADS)
        x = torch.tensor(rng.standard_normal((n, c, h, w)).astype(np.float32), requires_grad=True)
        weight = torch.tensor(rng.standard_normal((co, c, k, k)).astype(np.float32),
                              requires_grad=True)
        bias = torch.zeros(co, requires_grad=True)
        grad = torch.tensor(rng.standard_normal((n, co, h, w)).astype(np.float32))
        small = torch.ones(1, 4, 8, 8, requires_grad=True)
        torch.nn.functional.conv2d(small, torch.ones(4, 4, 3, 3, requires_grad=True),
                                   padding=1).sum().backward()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        torch.nn.functional.conv2d(x, weight, bias, stride=s, padding=p).backward(grad)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["maxrss_mib"] = (rss1 - rss0) / 1024  # ru_maxrss is in KiB on Linux
    print(json.dumps(result))


# ===================================================================== driver
def run_worker(args, threads=2):
    return harness.run_worker(__file__, args, threads, DETSEG_BENCH_THREADS=threads)


def _load():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def reference_of(name):
    return "onnxruntime" if name.startswith("roi_align") else "torch"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_round_arguments(parser, ("numpy", "torch", "onnxruntime"))
    parser.add_argument("--only", action="append", choices=GROUPS + ("mem",),
                        help="kernel group(s) to run (repeatable); default all")
    parser.add_argument("--memory", choices=("numpy", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help="threads per library (default 2)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock time (default) or process CPU time")
    args = parser.parse_args()
    groups = tuple(args.only) if args.only else GROUPS + ("mem",)
    rounds, repeats = harness.rounds_and_repeats(args)

    if args.worker:
        worker(args.worker, groups, repeats, args.warmup, args.clock)
        return
    if args.memory:
        memory_worker(args.memory)
        return

    timed = [g for g in groups if g in GROUPS]
    libs = ["numpy"]
    if set(timed) & {"conv", "convt", "pool"}:
        libs.append("torch")
    if "roi" in timed:
        libs.append("onnxruntime")
    samples = {}
    if timed:
        def run(lib):
            worker_args = ["--worker", lib, "--repeats", repeats, "--warmup", args.warmup,
                           "--clock", args.clock]
            for g in timed:
                worker_args += ["--only", g]
            return run_worker(worker_args, args.threads)

        for lib, result in harness.alternate(libs, rounds, run):
            for name, values in result.items():
                samples.setdefault((name, lib), []).extend(values)
        report(samples, timed, rounds, repeats, args.threads, args.clock)
    if "mem" in groups:
        memory = {}
        for _ in range(3):  # fresh processes; the smallest reading is the least disturbed
            for lib in ("numpy", "torch"):
                reading = run_worker(["--memory", lib])
                for key, value in reading.items():
                    memory.setdefault((lib, key), []).append(value)
        n, c, h, w, co, k = MEMORY_LAYER[:6]
        print(f"\nPeak memory, conv2d fwd+bwd {n},{c},{h},{w}->{co} k{k} "
              f"(float32, min of 3 fresh processes):")
        print(f"  ours : {min(memory[('numpy', 'tracemalloc_mib')]):6.1f} MiB (tracemalloc peak), "
              f"{min(memory[('numpy', 'maxrss_mib')]):6.1f} MiB (maxrss growth)")
        print(f"  torch: {min(memory[('torch', 'maxrss_mib')]):6.1f} MiB (maxrss growth)")


def report(samples, groups, rounds, repeats, threads, clock):
    names = []
    for (name, _lib) in samples:
        if name not in names:
            names.append(name)
    print(f"\nfloat32 fwd+bwd (roi_align: forward), medians of {rounds} rounds x {repeats} "
          f"repeats, {threads} thread(s), {clock} clock; load average {_load()}\n")
    print(f"{'case':<44} {'ours ms':>9} {'ref ms':>9} {'ref':>12} {'ratio':>7} "
          f"{'best-of ratio':>14}")
    ratios = {}
    for name in names:
        ref = reference_of(name)
        ours = samples.get((name, "numpy"))
        theirs = samples.get((name, ref))
        if ours is None or theirs is None:
            continue
        ours_ms, ref_ms = 1e3 * np.median(ours), 1e3 * np.median(theirs)
        ratio = ours_ms / ref_ms
        # The fastest repeat of each is the least disturbed by other processes.
        best_ratio = min(ours) / min(theirs)
        ratios.setdefault(name.split()[0], []).append(ratio)
        print(f"{name:<44} {ours_ms:9.2f} {ref_ms:9.2f} {ref:>12} {ratio:7.2f} {best_ratio:14.2f}")
    print()
    group_of = {"conv": "conv", "convt": "convt", "max_pool2d": "pool", "roi_align": "roi"}
    for key, values in ratios.items():
        group = group_of[key]
        median_target, max_target = TARGETS[group]
        median = float(np.median(values))
        line = f"{group:<6} median ratio {median:5.2f} (target <= {median_target})"
        line += "  met" if median <= median_target else "  MISSED"
        if max_target is not None:
            worst = max(values)
            line += f"; max {worst:5.2f} (target <= {max_target})"
            line += "  met" if worst <= max_target else "  MISSED"
        print(line)
    for group in groups:
        if group not in [group_of[k] for k in ratios]:
            missing = {"pool": "nn.functional.max_pool2d",
                       "roi": "nn.functional.roi_align"}.get(group)
            print(f"{group:<6} not measured: {missing or group} is not available in this checkout")


if __name__ == "__main__":
    main()
