import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

import nn
from detection.retinanet import RetinaNet
from detection.train_retinanet import TrainConfig, main, train_retinanet
from nn.engine import ResumeError, TrainingInterrupted
from plates.synthetic import generate_plate_dataset

CLASSES = ("car", "plate")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    """A tiny generated dataset shared by the runs of this module."""
    root = tmp_path_factory.mktemp("plates")
    generate_plate_dataset(root, 20, seed=3, splits=(0.6, 0.4, 0.0), progress=False)
    return str(root)


def quick_config(data, out, **overrides):
    return TrainConfig(data=data, out=str(out), quick=True, progress=False, classes=CLASSES,
                       **overrides)


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt in this process (it may be ignored in a background job)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c_at(monkeypatch, step):
    """Press Ctrl-C (SIGINT to this process) during training step ``step``."""
    loss, calls = RetinaNet.loss, []

    def interrupted_loss(self, images, targets):
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGINT)
        return loss(self, images, targets)

    monkeypatch.setattr(RetinaNet, "loss", interrupted_loss)


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("overrides, message", [
    (dict(backbone="vgg"), "backbone"),
    (dict(minutes=0), "minutes"),
    (dict(steps=0), "steps"),
    (dict(steps=None, minutes=None), "minutes, steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(min_scale=1.5, max_scale=1.0), "min_scale"),
    (dict(eval_at=(0.75, 0.5)), "eval_at"),
    (dict(model={"num_anchors": 3}), "model"),
])
def test_bad_train_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides).validate()


# -------------------------------------------------------------------------- runs
def test_quick_command_end_to_end(plates, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--data", plates, "--out", str(out), "--quick", "--quiet",
                 "--classes", *CLASSES]) == 0
    printed = capsys.readouterr().out
    assert "val: COCO mAP" in printed and "inference" in printed
    names = sorted(os.listdir(out))
    assert names == ["best.npz", "detections.png", "history.json", "last.npz",
                     "loss_curves.png", "metrics.json", "pr_curves.png"]  # no temp files
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["stopped_by"] == "steps"
    assert set(metrics["val"]["ap50_per_class"]) <= set(CLASSES)
    for key in ("map", "map_50", "map_75", "mar_100"):
        assert -1.0 <= metrics["val"][key] <= 1.0
    assert metrics["inference_ms_per_image"] > 0
    assert metrics["train_seconds"] > 0 and metrics["best_step"] == 6
    history = json.loads((out / "history.json").read_text())
    losses = history["losses"]
    assert set(losses) == {"loss", "classification", "box_regression", "num_foreground"}
    assert len(losses["loss"]) == 6 and all(math.isfinite(v) for v in losses["loss"])
    assert [e["step"] for e in history["evaluations"]] == [6]
    for figure in ("detections.png", "loss_curves.png", "pr_curves.png"):
        assert (out / figure).stat().st_size > 10_000
    checkpoint = nn.load(out / "best.npz")
    assert {"model", "optimizer", "schedule", "batches", "generators", "config"} <= set(checkpoint)
    assert checkpoint["engine"]["step"] == 6 and checkpoint["config"]["quick"] is True
    assert checkpoint["engine"]["kind"] == "retinanet"


def _assert_same_weights(path_a, path_b):
    a, b = nn.load(path_a), nn.load(path_b)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    for name in a["history"]["losses"]:
        np.testing.assert_array_equal(a["history"]["losses"][name], b["history"]["losses"][name])
    assert a["batches"] == b["batches"] and a["generators"] == b["generators"]


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(plates, tmp_path, monkeypatch,
                                                         sigint_raises):
    whole = train_retinanet(quick_config(plates, tmp_path / "whole", seed=1))
    assert whole["steps"] == 6
    ctrl_c_at(monkeypatch, 4)
    with pytest.raises(TrainingInterrupted) as stop:
        train_retinanet(quick_config(plates, tmp_path / "parts", seed=1))
    assert stop.value.step == 4 and stop.value.saved
    assert not (tmp_path / "parts" / "metrics.json").exists()
    monkeypatch.undo()
    # The saved config decides the run: a different seed passed on resume is ignored.
    resumed = train_retinanet(quick_config(plates, tmp_path / "parts", seed=99), resume=True)
    assert resumed["steps"] == 6 and resumed["config"]["seed"] == 1
    _assert_same_weights(tmp_path / "whole" / "last.npz", tmp_path / "parts" / "last.npz")
    _assert_same_weights(tmp_path / "whole" / "best.npz", tmp_path / "parts" / "best.npz")


def test_seeded_runs_differ_by_seed_only(plates, tmp_path, monkeypatch, sigint_raises):
    losses = []
    for name, seed in (("a", 2), ("b", 2), ("c", 3)):
        ctrl_c_at(monkeypatch, 2)  # two steps of four, then Ctrl-C: last.npz, no evaluation
        with pytest.raises(TrainingInterrupted):
            train_retinanet(quick_config(plates, tmp_path / name, seed=seed, steps=4))
        monkeypatch.undo()
        losses.append(nn.load(tmp_path / name / "last.npz")["history"]["losses"]["loss"])
    assert len(losses[0]) == 2
    np.testing.assert_array_equal(losses[0], losses[1])
    assert not np.array_equal(losses[0], losses[2])


def test_resume_needs_a_checkpoint_of_a_retinanet_run(plates, tmp_path, capsys):
    with pytest.raises(ResumeError, match="last.npz"):
        train_retinanet(quick_config(plates, tmp_path / "nothing"), resume=True)
    os.makedirs(tmp_path / "other")
    nn.save({"engine": {"kind": "tiny"}}, tmp_path / "other" / "last.npz")
    with pytest.raises(SystemExit) as exit_:
        main(["--data", plates, "--out", str(tmp_path / "other"), "--resume"])
    assert exit_.value.code == 2
    assert "a checkpoint of a 'tiny' run, not of 'retinanet'" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--minutes", "0"], "--minutes: must be a finite number > 0"),
    (["--lr", "nan"], "--lr: must be a finite number > 0"),
    (["--steps", "0"], "--steps: must be an int >= 1"),
    (["--seed", "-2"], "--seed: must be an int >= 0"),
    (["--batch-size", "0"], "--batch-size: must be an int >= 1"),
])
def test_bad_flags(plates, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        main(["--data", plates, "--out", str(tmp_path / "run"), *flags])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_in_the_command_then_resume(plates, tmp_path):
    """A real SIGINT to ``python -m detection.train_retinanet``: exit 130, last.npz, the
    printed command continues the run to the weights of an uninterrupted one."""
    args = ["-m", "detection.train_retinanet", "--data", plates, "--classes", *CLASSES,
            "--quick", "--steps", "24", "--seed", "5"]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    process = subprocess.Popen(
        [sys.executable, *args, "--out", str(tmp_path / "cut")], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = b""
        while not re.search(rb"retinanet:.* ([4-9]|1\d)/24", seen):  # the bar at step 4+
            chunk = process.stderr.read1(256)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    stderr = (seen + stderr).decode(errors="replace")
    assert process.returncode == 130, stderr
    stopped = nn.load(tmp_path / "cut" / "last.npz")["engine"]["step"]
    assert 4 <= stopped < 24
    command = shlex.split(stderr.strip().splitlines()[-1])
    assert command[:3] == ["python", "-m", "detection.train_retinanet"]
    assert command[-1] == "--resume"
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "24 steps" in resumed.stdout
    whole = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "whole"), "--quiet"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    _assert_same_weights(tmp_path / "whole" / "last.npz", tmp_path / "cut" / "last.npz")
