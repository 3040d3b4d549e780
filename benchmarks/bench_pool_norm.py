"""Speed of pooling, interpolation and normalization against torch.

Run as a script::

    python benchmarks/bench_pool_norm.py            # 5 rounds
    python benchmarks/bench_pool_norm.py --quick    # 2 rounds, fewer repeats

What is timed (float32, forward + backward through autograd, input gradient and,
for the norms, weight and bias gradients): ``max_pool2d`` 2x2/2 and 3x3/2 with
padding 1 (ResNet's stem), ``batch_norm`` in training mode, ``group_norm`` with 8
groups, ``interpolate`` 2x nearest and 2x bilinear (``align_corners=False``). We
run channels-last ``(N, H, W, C)``; torch runs both its default NCHW layout and
``channels_last`` memory format, and each ratio is taken against the faster of the
two.

Method (``../shared/bench/BASELINES.md``): each library runs in its own process
with 2 threads (``--threads``), the processes interleaved round by round (order
alternating); each case reports the median of all its timed repeats after warm-up.
The machine is shared, so read the ratio (ours / torch); the best-of ratio (fastest
repeat over fastest repeat) is the least disturbed figure. On a busy machine,
``--threads 1`` keeps torch's OpenMP workers from waiting on descheduled threads
(our kernels' threads follow the same count, ``DETSEG_NUM_THREADS``).
"""
import argparse
import json
import os
import sys

import numpy as np

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (N, H, W, C) of the input
CASES = {
    "max_pool2d 2x2/2 16,64,64,32": (16, 64, 64, 32),
    "max_pool2d 3x3/2 p1 16,64,64,32": (16, 64, 64, 32),
    "batch_norm train 16,64,64,32": (16, 64, 64, 32),
    "group_norm G=8 16,64,64,32": (16, 64, 64, 32),
    "nearest 2x 16,32,32,64": (16, 32, 32, 64),
    "bilinear 2x 16,32,32,64": (16, 32, 32, 64),
}
TARGETS = {"max_pool2d 2x2/2 16,64,64,32": 1.0}  # the target, against torch NCHW


def layer_call(name, functional, x, weight, bias, running):
    """The layer of case ``name`` as a zero-argument call of ``functional``.

    ``functional`` is ``nn.functional`` or ``torch.nn.functional``: ours has PyTorch's
    names and arguments, so one call serves both libraries.
    """
    if name.startswith("max_pool2d 3x3"):
        return lambda: functional.max_pool2d(x, 3, 2, 1)  # ResNet's stem
    if name.startswith("max_pool2d"):
        return lambda: functional.max_pool2d(x, 2, 2)
    if name.startswith("batch_norm"):
        return lambda: functional.batch_norm(x, running[0], running[1], weight, bias,
                                             training=True)
    if name.startswith("group_norm"):
        return lambda: functional.group_norm(x, 8, weight, bias)
    mode = "nearest" if name.startswith("nearest") else "bilinear"
    return lambda: functional.interpolate(x, scale_factor=2, mode=mode)


def numpy_cases():
    sys.path.insert(0, ROOT)
    import nn
    import nn.functional as F

    rng = np.random.default_rng(0)
    cases = {}
    for name, (n, h, w, c) in CASES.items():
        x = nn.Tensor(rng.standard_normal((n, h, w, c)).astype(np.float32), requires_grad=True)
        weight = nn.Tensor(np.ones(c, np.float32), requires_grad=True)
        bias = nn.Tensor(np.zeros(c, np.float32), requires_grad=True)
        running = (np.zeros(c, np.float32), np.ones(c, np.float32))
        fn = layer_call(name, F, x, weight, bias, running)
        grad = rng.standard_normal(fn().shape).astype(np.float32)
        cases[name] = harness.forward_backward(fn, (x, weight, bias), grad)
    return cases


def torch_cases(threads):
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    cases = {}
    for name, (n, h, w, c) in CASES.items():
        for layout in ("nchw", "channels_last"):
            data = torch.tensor(rng.standard_normal((n, c, h, w)).astype(np.float32))
            if layout == "channels_last":
                data = data.contiguous(memory_format=torch.channels_last)
            x = data.requires_grad_()
            weight = torch.ones(c, requires_grad=True)
            bias = torch.zeros(c, requires_grad=True)
            running = (torch.zeros(c), torch.ones(c))
            fn = layer_call(name, torch.nn.functional, x, weight, bias, running)
            out = fn()
            memory_format = (torch.channels_last if layout == "channels_last"
                             else torch.contiguous_format)
            grad = torch.randn(out.shape).contiguous(memory_format=memory_format)
            cases[f"{name}|{layout}"] = harness.forward_backward(fn, (x, weight, bias), grad)
    return cases


def report(samples, rounds, repeats, threads):
    print(f"\nfloat32 fwd+bwd, medians of {rounds} rounds x {repeats} repeats, "
          f"{threads} thread(s)\n")
    print(f"{'case':<32} {'ours ms':>8} {'torch NCHW':>11} {'torch CL':>9} {'ratio':>6} "
          f"{'best-of ratio':>14}")
    for name in CASES:
        ours = samples[(name, "numpy")]
        layouts = {layout: samples[(f"{name}|{layout}", "torch")]
                   for layout in ("nchw", "channels_last")}
        medians = {layout: np.median(v) for layout, v in layouts.items()}
        fastest = min(medians, key=medians.get)
        ratio = np.median(ours) / medians[fastest]
        best = min(ours) / min(min(v) for v in layouts.values())
        line = (f"{name:<32} {1e3 * np.median(ours):8.2f} {1e3 * medians['nchw']:11.2f} "
                f"{1e3 * medians['channels_last']:9.2f} {ratio:6.2f} {best:14.2f}")
        if name in TARGETS:
            # The target is against torch's default layout (bench_kernels measures
            # the same); the ratio column is against the faster layout, a stricter bar.
            nchw = np.median(ours) / medians["nchw"]
            verdict = "met" if nchw <= TARGETS[name] else "MISSED"
            line += f"   vs NCHW {nchw:.2f}, target <= {TARGETS[name]}: {verdict}"
        print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_round_arguments(parser, ("numpy", "torch"))
    parser.add_argument("--threads", type=int, default=2,
                        help="threads of each library (1 isolates kernels from scheduling noise)")
    args = parser.parse_args()
    rounds, repeats = harness.rounds_and_repeats(args)
    if args.worker:
        cases = numpy_cases() if args.worker == "numpy" else torch_cases(args.threads)
        print(json.dumps(harness.time_cases(cases, repeats, args.warmup)))
        return

    def run(lib):
        return harness.run_worker(__file__, ["--worker", lib, "--repeats", repeats, "--warmup",
                                             args.warmup, "--threads", args.threads],
                                  threads=args.threads)

    samples = {}
    for lib, result in harness.alternate(("numpy", "torch"), rounds, run):
        for name, values in result.items():
            samples.setdefault((name, lib), []).extend(values)
    report(samples, rounds, repeats, args.threads)


if __name__ == "__main__":
    main()
