"""benchmarks/harness.py: the timing loop, worker processes and rounds the scripts share."""
import argparse
import importlib.util
import os

import numpy as np
import pytest

from tests.oracles import require

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.join(HERE, "..", "..", "benchmarks")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def harness():
    return _load("harness")


def test_time_cases_warms_up_then_times_each_case(harness):
    calls = {"a": 0, "b": 0}
    ticks = iter(range(100))
    cases = {name: (lambda name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls}
    times = harness.time_cases(cases, {"a": 3, "b": 1}, warmup=2, clock=lambda: next(ticks))
    assert calls == {"a": 5, "b": 3}
    assert times == {"a": [1, 1, 1], "b": [1]}  # each reading one tick after the last


def test_run_worker_sizes_the_thread_pools_and_reads_the_last_line(harness, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        "import json, os, sys\n"
        "print('noise first')\n"
        "print(json.dumps({'args': sys.argv[1:], 'blas': os.environ['OPENBLAS_NUM_THREADS'],\n"
        "                  'ours': os.environ['DETSEG_NUM_THREADS'], 'extra': os.environ['X']}))\n")
    result = harness.run_worker(str(script), ["--n", 3], threads=1, X=7)
    assert result == {"args": ["--n", "3"], "blas": "1", "ours": "1", "extra": "7"}
    failing = tmp_path / "failing.py"
    failing.write_text("import sys\nsys.exit('no such case')\n")
    with pytest.raises(RuntimeError, match="no such case"):
        harness.run_worker(str(failing), [])


def test_alternate_reverses_the_order_every_other_round(harness, capsys):
    seen = [lib for lib, _ in harness.alternate(["a", "b", "c"], 3, lambda lib: lib.upper())]
    assert seen == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert "round 3/3 done" in capsys.readouterr().err
    assert list(harness.alternate(["a"], 1, lambda lib: 1)) == [("a", 1)]


def test_round_arguments_and_their_defaults(harness):
    parser = argparse.ArgumentParser()
    harness.add_round_arguments(parser, ("ours", "torch"))
    assert harness.rounds_and_repeats(parser.parse_args([])) == (5, 7)
    assert harness.rounds_and_repeats(parser.parse_args(["--quick"])) == (2, 3)
    assert harness.rounds_and_repeats(parser.parse_args(["--rounds", "4", "--repeats", "9"])) \
        == (4, 9)
    args = parser.parse_args(["--worker", "torch"])
    assert args.worker == "torch" and args.warmup == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--worker", "tensorflow"])


class _Recorder:
    """A loss and an optimizer that log the calls a training step makes."""

    def __init__(self):
        self.calls = []

    def backward(self):
        self.calls.append("backward")

    def item(self):
        return 1.5

    def zero_grad(self):
        self.calls.append("zero_grad")

    def step(self):
        self.calls.append("step")


def test_training_step_runs_loss_zero_grad_backward_clip_step_in_order(harness):
    log = _Recorder()

    def loss():
        log.calls.append("loss")
        return log

    step = harness.training_step(loss, log, clip=lambda: log.calls.append("clip"))
    assert step() == 1.5
    assert log.calls == ["loss", "zero_grad", "backward", "clip", "step"]
    log.calls.clear()
    assert harness.training_step(loss, log)() == 1.5
    assert log.calls == ["loss", "zero_grad", "backward", "step"]


def test_scene_batch_is_seeded_normalized_and_labelled(harness):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    images, targets = harness.scene_batch(2, 64, ("car", "plate"), mean, std, seed=3)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.float32
    pixels = images * np.float32(std) + np.float32(mean)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    np.testing.assert_allclose(pixels * 255, np.round(pixels * 255), atol=1e-3)  # uint8 scenes
    assert len(targets) == 2
    for target in targets:
        assert target["boxes"].dtype == np.float32 and target["boxes"].shape[1:] == (4,)
        assert target["labels"].dtype == np.int64
        assert target["labels"].shape == (target["boxes"].shape[0],)
        assert set(target["labels"].tolist()) <= {1, 2}
    again, same = harness.scene_batch(2, 64, ("car", "plate"), mean, std, seed=3)
    np.testing.assert_array_equal(again, images)
    for a, b in zip(same, targets):
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
        np.testing.assert_array_equal(a["labels"], b["labels"])


@pytest.mark.oracle
def test_torch_blocks_equal_our_box_iou_and_box_coder():
    torch = require("torch")
    from detection.box_coder import BoxCoder
    from detection.boxes import box_iou

    blocks = _load("torch_blocks")
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, (2, 7, 2))
    a, b = (np.concatenate([c, c + rng.uniform(1, 30, (7, 2))], axis=1) for c in corners)
    np.testing.assert_allclose(blocks.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy(),
                               box_iou(a, b), atol=1e-12)
    degenerate = np.array([[3.0, 3.0, 3.0, 3.0]])
    assert blocks.box_iou(torch.from_numpy(degenerate), torch.from_numpy(degenerate)).item() == 0
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        np.testing.assert_allclose(
            blocks.encode(torch.from_numpy(a), torch.from_numpy(b), weights).numpy(),
            BoxCoder(weights).encode(a, b), atol=1e-10)


@pytest.mark.oracle
@pytest.mark.parametrize("build", ["resnet_small", "resnet18"])
def test_torch_resnet_has_our_backbones_stages(build):
    torch = require("torch")
    from detection import backbones

    blocks = _load("torch_blocks")
    ours = getattr(backbones, build)(width_multiplier=0.125)
    theirs = blocks.torch_resnet(ours)
    outputs = theirs(torch.zeros((1, 3, 64, 64)))
    assert [tuple(o.shape[1:]) for o in outputs] \
        == [(c, 64 // s, 64 // s) for c, s in zip(ours.out_channels, (4, 8, 16, 32))]
    ours_count = sum(p.data.size for p in ours.parameters())
    assert sum(p.numel() for p in theirs.parameters()) == ours_count


class _Output:
    def __init__(self, log):
        self.log = log

    def backward(self, grad=None):
        self.log.append(("backward", grad))


class _Leaf:
    grad = "stale"


def test_forward_backward_clears_the_leaves_then_back_propagates_grad(harness):
    log, leaves = [], (_Leaf(), _Leaf())
    forward = lambda: log.append("forward") or _Output(log)  # noqa: E731
    harness.forward_backward(forward, leaves, grad="g")()
    assert log == ["forward", ("backward", "g")] and all(leaf.grad is None for leaf in leaves)
    log.clear()
    harness.forward_backward(forward, leaves, grad=lambda out: type(out).__name__)()
    assert log == ["forward", ("backward", "_Output")]
    log.clear()
    harness.forward_backward(forward, ())()
    assert log == ["forward", ("backward", None)]
