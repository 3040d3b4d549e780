"""One training step of a detseg model against the identical architecture in PyTorch.

Usage::

    python benchmarks/bench_train_step.py --model unet [--rounds 5] [--steps 5]
    python benchmarks/bench_train_step.py --model retinanet [--threads 1]
    python benchmarks/bench_train_step.py --model faster_rcnn

A training step is forward, loss, backward and the optimizer update, on the batch
and input size used for training. The model-specific code lives in
``benchmarks/train_step_<model>.py``, which defines ``make_ours()`` and
``make_torch()``, each returning a zero-argument callable that runs one step
(torch is imported inside ``make_torch`` only), and a one-line ``DESCRIPTION``.

Each library runs in its own subprocess (BLAS and OpenMP thread pools of two
libraries in one process spin-wait and slow each other down); the subprocesses
alternate ``--rounds`` times, each timing ``--steps`` steps after a warm-up, and the
medians are compared. The last line printed is a JSON object
``{"ours_ms": ..., "torch_ms": ..., "ratio": ...}``.

``--threads`` (default 2) sets both libraries' thread counts (``DETSEG_NUM_THREADS``
and the BLAS/OpenMP variables for ours, ``torch.set_num_threads`` for torch). On a machine shared with other jobs
the 2-thread timings of both sides swing by several times (a GEMM's threads wait for
each other when one is descheduled); ``--threads 1`` measures the kernels themselves.
"""
import argparse
import importlib
import json
import os
import statistics
import sys

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("unet", "retinanet", "faster_rcnn")


def worker(model, side, steps, warmup, threads=2):
    """Run in a subprocess: time ``steps`` steps of one side, print per-step ms as JSON."""
    sys.path.insert(0, os.path.dirname(HERE))
    sys.path.insert(0, HERE)
    module = importlib.import_module(f"train_step_{model}")
    if side == "torch":
        import torch

        torch.set_num_threads(threads)
        step = module.make_torch()
    else:
        step = module.make_ours()
    seconds = harness.time_cases({"step": step}, steps, warmup)["step"]
    print(json.dumps([1000 * t for t in seconds]))


def run_side(model, side, steps, warmup, threads=2):
    # BLAS pools are sized when NumPy loads: the variables are set for the process.
    return harness.run_worker(__file__, ["--model", model, "--worker", side, "--steps", steps,
                                         "--warmup", warmup, "--threads", threads], threads)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two processes")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    parser.add_argument("--threads", type=int, default=2, help="threads of each library")
    parser.add_argument("--worker", choices=("ours", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--rounds, --steps and --threads must be >= 1 and --warmup >= 0")
    if args.worker:
        worker(args.model, args.worker, args.steps, args.warmup, args.threads)
        return None

    # The module describes the configuration; it imports torch only inside make_torch().
    description = getattr(importlib.import_module(f"train_step_{args.model}"), "DESCRIPTION", "")
    ours, theirs = [], []
    for r in range(args.rounds):
        ours += run_side(args.model, "ours", args.steps, args.warmup, args.threads)
        theirs += run_side(args.model, "torch", args.steps, args.warmup, args.threads)
        print(f"round {r + 1}/{args.rounds}: ours {statistics.median(ours):.1f} ms, "
              f"torch {statistics.median(theirs):.1f} ms", flush=True)
    ours_ms, torch_ms = statistics.median(ours), statistics.median(theirs)
    if description:
        print(description)
    print(f"{args.threads} thread(s) each; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs; best steps: ours {min(ours):.1f} ms, torch {min(theirs):.1f} ms")
    print(f"{'model':<12}{'ours ms':>10}{'torch ms':>10}{'ratio':>8}")
    print(f"{args.model:<12}{ours_ms:>10.1f}{torch_ms:>10.1f}{ours_ms / torch_ms:>8.2f}")
    summary = {"ours_ms": round(ours_ms, 2), "torch_ms": round(torch_ms, 2), "ratio": round(ours_ms / torch_ms, 3)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.path.insert(0, os.path.dirname(HERE))
    main()
