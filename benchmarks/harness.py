"""What the benchmark scripts share: the timing loop, one process per library, rounds,
and for the training-step benchmarks the step itself and a batch of rendered scenes.

Every comparison runs each library in its own subprocess (the BLAS and OpenMP thread
pools of two libraries in one process spin-wait and slow each other down), with its
thread pools sized by environment variables before NumPy or torch loads, and alternates
the processes for several rounds so that a slow moment of the shared machine hits both
sides. A worker prints its results as JSON on its last line of output.

The scripts import this module as ``harness`` (``python benchmarks/<script>.py`` puts
``benchmarks/`` first on ``sys.path``).
"""
import argparse
import json
import os
import subprocess
import sys
import time

__all__ = ["THREAD_VARIABLES", "time_cases", "run_worker", "add_round_arguments",
           "rounds_and_repeats", "alternate", "forward_backward", "training_step", "scene_batch"]

# BLAS/OpenMP pools of NumPy and torch, and detseg's own kernel threads (which run BLAS
# single-threaded inside them).
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "DETSEG_NUM_THREADS")


def time_cases(cases, repeats, warmup, clock=time.perf_counter):
    """Time zero-argument callables.

    Args:
        cases (dict[str, callable]): what to time, by name.
        repeats (int | dict[str, int]): timed calls of each case (or per case).
        warmup (int): untimed calls before them.
        clock (callable): ``time.perf_counter`` (wall) or ``time.process_time`` (CPU).

    Returns:
        dict[str, list[float]]: the seconds of every timed call, by name.
    """
    times = {}
    for name, run in cases.items():
        count = repeats[name] if isinstance(repeats, dict) else repeats
        for _ in range(warmup):
            run()
        samples = []
        for _ in range(count):
            start = clock()
            run()
            samples.append(clock() - start)
        times[name] = samples
    return times


def run_worker(script, args, threads=2, **env):
    """Run ``python script *args`` in a fresh process and parse its last line as JSON.

    ``threads`` sizes every pool in ``THREAD_VARIABLES``; ``env`` adds variables.
    Raises ``RuntimeError`` with the worker's standard error when it fails.
    """
    variables = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    variables.update({name: str(value) for name, value in env.items()})
    command = [sys.executable, os.path.abspath(script)] + [str(a) for a in args]
    done = subprocess.run(command, env=variables, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {' '.join(command[1:])} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


ROUNDS, QUICK_ROUNDS, REPEATS, QUICK_REPEATS = 5, 2, 7, 3  # the defaults, and with --quick


def add_round_arguments(parser, workers):
    """The options of a rounds x repeats comparison: ``--quick``, ``--rounds``,
    ``--repeats``, and the hidden ``--warmup`` and ``--worker`` (one of ``workers``)."""
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROUNDS} rounds of {QUICK_REPEATS} repeats")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"alternations of the processes (default {ROUNDS})")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed calls per round (default {REPEATS})")
    parser.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=tuple(workers), help=argparse.SUPPRESS)


def rounds_and_repeats(args):
    """``(rounds, repeats)`` from ``add_round_arguments``' options."""
    return (args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS),
            args.repeats or (QUICK_REPEATS if args.quick else REPEATS))


def alternate(libs, rounds, run):
    """Call ``run(lib)`` for every library in every round, the order reversed every other
    round (progress on standard error). Yields ``(lib, result)``."""
    libs = list(libs)
    for r in range(rounds):
        for lib in (libs if r % 2 == 0 else libs[::-1]):
            yield lib, run(lib)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)


def forward_backward(forward, leaves, grad=None):
    """One forward and backward pass as a zero-argument callable, for detseg and torch alike.

    Each call clears the gradients of ``leaves``, computes ``out = forward()`` and
    back-propagates ``grad`` through it.

    Args:
        forward (callable): returns the output tensor.
        leaves (sequence of tensors): the inputs whose ``grad`` is reset first.
        grad (array | tensor | callable | None): the output's gradient; a callable is
            called with the output (e.g. ``torch.ones_like``); None for a scalar output.
    """
    def run():
        for leaf in leaves:
            leaf.grad = None
        out = forward()
        out.backward(grad(out) if callable(grad) else grad)

    return run


def training_step(loss, optimizer, clip=None):
    """One training step as a zero-argument callable, for detseg and torch alike.

    The step computes ``loss()``, zeroes the gradients, back-propagates, calls ``clip()``
    (gradient-norm clipping) when given and updates the parameters; it returns the loss
    as a float.

    Args:
        loss (callable): the forward pass and loss; returns a scalar tensor with
            ``backward()`` and ``item()``.
        optimizer: ``zero_grad()`` and ``step()`` (``nn.optim`` or ``torch.optim``).
        clip (callable | None): called between ``backward`` and ``step``.
    """
    def step():
        value = loss()
        optimizer.zero_grad()
        value.backward()
        if clip is not None:
            clip()
        optimizer.step()
        return value.item()

    return step


def scene_batch(count, size, classes, mean, std, seed=0):
    """Synthetic street scenes (``plates.synthetic.render_scene``), normalized, with targets.

    Args:
        count (int): N scenes, drawn from one generator seeded with ``seed``.
        size (int): their side S.
        classes (tuple of str): the object names kept, labelled 1..K in this order.
        mean, std (tuple of 3 float): per-channel normalization of the [0, 1] pixels.
    Returns:
        tuple: ``images`` (ndarray[N, S, S, 3] float32, ``(x / 255 - mean) / std``) and
        ``targets`` (list of N dicts: ``boxes`` ndarray[G, 4] float32 xyxy, ``labels``
        ndarray[G] int64).
    """
    import numpy as np

    from plates.synthetic import render_scene

    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(count):
        image, objects, _, _ = render_scene(rng, size)
        kept = [o for o in objects if o["name"] in classes]
        boxes = np.array([o["bbox"] for o in kept], np.float32).reshape(-1, 4)
        labels = np.array([classes.index(o["name"]) + 1 for o in kept], np.int64)
        images.append((image / np.float32(255) - np.float32(mean)) / np.float32(std))
        targets.append({"boxes": boxes, "labels": labels})
    return np.stack(images).astype(np.float32), targets
