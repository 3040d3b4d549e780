"""Speed of the nn core's hot training ops against torch (CPU), float32.

Run as a script::

    python benchmarks/bench_core.py            # 5 rounds
    python benchmarks/bench_core.py --quick    # 2 rounds, fewer repeats

What is timed (forward + backward through autograd unless noted):

- ``gather rows``: ``x[idx]`` on ``(20000, 64)`` with 40000 random (repeating) row
  indices — the fancy-index backward that replaced ``np.add.at``;
- ``gather pairs``: ``logits[arange(N), labels]`` on ``(200000, 10)`` (unique positions);
- ``mask select``: ``x[mask]`` with a boolean mask on ``(64, 64, 64)``;
- ``cross_entropy``: segmentation-sized logits ``(16, 64, 64, 21)``, 5% ignored
  (torch gets ``(16, 21, 64, 64)``, its layout);
- ``focal``: ``sigmoid_focal_loss`` on ``(4, 20000, 20)`` (torch: torchvision's
  formula with torch ops; torchvision cannot be imported here), sum reduction;
- ``linear``: ``(4096, 256) -> 256``;
- ``log_softmax``: ``(4096, 1000)``;
- ``adam step``: one ``Adam.step()`` over 1.2 M parameters in 8 tensors (update only).

For the gather cases the column ``add.at`` is the old backward (``np.add.at``),
timed in our process, for reference.

Method (``../shared/bench/BASELINES.md``): each library runs in its own process with
2 threads; processes are interleaved round by round (order alternating), and each
case reports the median of all timed repeats after warm-up. The machine is shared,
so the ratio (ours / torch) is the figure to read.
"""
import argparse
import json
import os
import sys

import numpy as np

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADAM_SHAPES = [(3, 3, 64, 128), (3, 3, 128, 128), (3, 3, 128, 256), (256,), (256, 1000), (1000,),
               (1, 1, 256, 256), (3, 3, 64, 64)]


def _inputs():
    rng = np.random.default_rng(0)
    data = {
        "rows_x": rng.standard_normal((20000, 64)).astype(np.float32),
        "rows_idx": rng.integers(0, 20000, size=40000),
        "pairs_x": rng.standard_normal((200000, 10)).astype(np.float32),
        "pairs_t": rng.integers(0, 10, size=200000),
        "mask_x": rng.standard_normal((64, 64, 64)).astype(np.float32),
        "ce_x": rng.standard_normal((16, 64, 64, 21)).astype(np.float32),
        "ce_t": rng.integers(0, 21, size=(16, 64, 64)),
        "focal_x": (rng.standard_normal((4, 20000, 20)) * 3).astype(np.float32),
        "focal_y": (rng.random((4, 20000, 20)) < 0.01).astype(np.float32),
        "lin_x": rng.standard_normal((4096, 256)).astype(np.float32),
        "lin_w": (rng.standard_normal((256, 256)) * 0.05).astype(np.float32),
        "lin_b": np.zeros(256, np.float32),
        "ls_x": rng.standard_normal((4096, 1000)).astype(np.float32),
        "adam": [rng.standard_normal(s).astype(np.float32) for s in ADAM_SHAPES],
        "adam_g": [rng.standard_normal(s).astype(np.float32) for s in ADAM_SHAPES],
    }
    data["ce_t"][rng.random(data["ce_t"].shape) < 0.05] = 255
    data["mask"] = data["mask_x"] > 0.5
    return data


# ============================================================ cases per library
def numpy_cases():
    sys.path.insert(0, ROOT)
    import nn
    import nn.functional as F

    d = _inputs()
    cases = {}

    def fwd_bwd(make_output, *leaves):
        def ones(out):  # a scalar loss needs no gradient
            return None if out.size == 1 else np.ones(out.shape, out.dtype)

        return harness.forward_backward(make_output, leaves, ones)

    rows_x = nn.Tensor(d["rows_x"], requires_grad=True)
    cases["gather rows"] = fwd_bwd(lambda: rows_x[d["rows_idx"]], rows_x)
    pairs_x = nn.Tensor(d["pairs_x"], requires_grad=True)
    rows = np.arange(len(d["pairs_t"]))
    cases["gather pairs"] = fwd_bwd(lambda: pairs_x[rows, d["pairs_t"]], pairs_x)
    mask_x = nn.Tensor(d["mask_x"], requires_grad=True)
    cases["mask select"] = fwd_bwd(lambda: mask_x[d["mask"]], mask_x)

    ce_x = nn.Tensor(d["ce_x"], requires_grad=True)
    cases["cross_entropy"] = fwd_bwd(lambda: F.cross_entropy(ce_x, d["ce_t"], ignore_index=255), ce_x)
    focal_x = nn.Tensor(d["focal_x"], requires_grad=True)
    cases["focal"] = fwd_bwd(lambda: F.sigmoid_focal_loss(focal_x, d["focal_y"], reduction="sum"),
                             focal_x)
    lin = [nn.Tensor(d[k], requires_grad=True) for k in ("lin_x", "lin_w", "lin_b")]
    cases["linear"] = fwd_bwd(lambda: F.linear(*lin), *lin)
    ls_x = nn.Tensor(d["ls_x"], requires_grad=True)
    cases["log_softmax"] = fwd_bwd(lambda: F.log_softmax(ls_x), ls_x)

    params = [nn.Parameter(a.copy()) for a in d["adam"]]
    for p, g in zip(params, d["adam_g"]):
        p.grad = g
    opt = nn.optim.Adam(params, lr=1e-4)
    cases["adam step"] = opt.step

    # The old backward, for reference: np.add.at into a zero array.
    def add_at_rows():
        out = np.zeros_like(d["rows_x"])
        np.add.at(out, d["rows_idx"], np.ones((len(d["rows_idx"]), 64), np.float32))

    def add_at_pairs():
        out = np.zeros_like(d["pairs_x"])
        np.add.at(out, (rows, d["pairs_t"]), np.ones(len(rows), np.float32))

    def add_at_mask():
        out = np.zeros_like(d["mask_x"])
        np.add.at(out, d["mask"], np.ones(int(d["mask"].sum()), np.float32))

    cases["add.at gather rows"] = add_at_rows
    cases["add.at gather pairs"] = add_at_pairs
    cases["add.at mask select"] = add_at_mask
    return cases


def torch_cases():
    import torch

    torch.set_num_threads(2)
    d = _inputs()
    t = torch.from_numpy
    cases = {}

    def fwd_bwd(make_output, *leaves):
        return harness.forward_backward(make_output, leaves, torch.ones_like)

    rows_x = t(d["rows_x"]).requires_grad_()
    rows_idx = t(d["rows_idx"])
    cases["gather rows"] = fwd_bwd(lambda: rows_x[rows_idx], rows_x)
    pairs_x = t(d["pairs_x"]).requires_grad_()
    rows, cols = torch.arange(len(d["pairs_t"])), t(d["pairs_t"])
    cases["gather pairs"] = fwd_bwd(lambda: pairs_x[rows, cols], pairs_x)
    mask_x = t(d["mask_x"]).requires_grad_()
    mask = t(d["mask"])
    cases["mask select"] = fwd_bwd(lambda: mask_x[mask], mask_x)

    ce_x = t(np.ascontiguousarray(d["ce_x"].transpose(0, 3, 1, 2))).requires_grad_()
    ce_t = t(d["ce_t"])
    cases["cross_entropy"] = fwd_bwd(
        lambda: torch.nn.functional.cross_entropy(ce_x, ce_t, ignore_index=255), ce_x)

    focal_x, focal_y = t(d["focal_x"]).requires_grad_(), t(d["focal_y"])

    def focal():
        p = torch.sigmoid(focal_x)
        ce = torch.nn.functional.binary_cross_entropy_with_logits(focal_x, focal_y, reduction="none")
        p_t = p * focal_y + (1 - p) * (1 - focal_y)
        loss = ce * ((1 - p_t) ** 2.0)
        alpha_t = 0.25 * focal_y + 0.75 * (1 - focal_y)
        return (alpha_t * loss).sum()

    cases["focal"] = fwd_bwd(focal, focal_x)
    lin_x = t(d["lin_x"]).requires_grad_()
    lin_w = t(np.ascontiguousarray(d["lin_w"].T)).requires_grad_()
    lin_b = t(d["lin_b"]).requires_grad_()
    cases["linear"] = fwd_bwd(lambda: torch.nn.functional.linear(lin_x, lin_w, lin_b), lin_x, lin_w, lin_b)
    ls_x = t(d["ls_x"]).requires_grad_()
    cases["log_softmax"] = fwd_bwd(lambda: torch.log_softmax(ls_x, dim=-1), ls_x)

    params = [t(a.copy()).requires_grad_() for a in d["adam"]]
    for p, g in zip(params, d["adam_g"]):
        p.grad = t(g)
    opt = torch.optim.Adam(params, lr=1e-4)
    cases["adam step"] = opt.step
    return cases


# ==================================================================== driver
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_round_arguments(parser, ("numpy", "torch"))
    args = parser.parse_args()
    rounds, repeats = harness.rounds_and_repeats(args)

    if args.worker:
        make = numpy_cases if args.worker == "numpy" else torch_cases
        print(json.dumps(harness.time_cases(make(), repeats, args.warmup)))
        return

    samples = {}
    def run(lib):
        return harness.run_worker(__file__, ["--worker", lib, "--repeats", repeats,
                                             "--warmup", args.warmup])

    for lib, result in harness.alternate(("numpy", "torch"), rounds, run):
        for name, values in result.items():
            samples.setdefault((name, lib), []).extend(values)

    print(f"\nfloat32 fwd+bwd (adam: one step), medians of {rounds} rounds x {repeats} repeats, "
          f"2 threads\n")
    print(f"{'case':<16} {'ours ms':>9} {'torch ms':>9} {'ratio':>7} {'add.at ms':>10} {'speed-up':>9}")
    for (name, lib) in list(samples):
        if lib != "numpy" or name.startswith("add.at"):
            continue
        ours = 1e3 * np.median(samples[(name, "numpy")])
        theirs = 1e3 * np.median(samples[(name, "torch")])
        line = f"{name:<16} {ours:9.2f} {theirs:9.2f} {ours / theirs:7.2f}"
        old = samples.get((f"add.at {name}", "numpy"))
        if old is not None:
            # add.at alone (backward only) against our whole forward + backward
            old_ms = 1e3 * np.median(old)
            line += f" {old_ms:10.2f} {old_ms / ours:8.1f}x"
        print(line)


if __name__ == "__main__":
    main()
