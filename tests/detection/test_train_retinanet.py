import math

import numpy as np
import pytest

import nn
from detection.retinanet import RetinaNet
from detection.train_retinanet import TrainConfig, main, train_retinanet
from nn.engine import TrainingInterrupted
from tests.commands import (assert_same_run, ctrl_c_at, interrupt_command, resume_arguments,
                            run_command, run_quick_detector)

CLASSES = ("car", "plate")


def quick_config(data, out, **overrides):
    return TrainConfig(data=data, out=str(out), quick=True, progress=False, classes=CLASSES,
                       **overrides)


# -------------------------------------------------------------------------- runs
# The configuration checks, the flags and resume after Ctrl-C: tests/detection/test_training.py.
def test_quick_command_end_to_end(plate_scenes, tmp_path, capsys):
    out = tmp_path / "run"
    metrics, history = run_quick_detector(main, plate_scenes, out, capsys, CLASSES)
    for key in ("map", "map_50", "map_75", "mar_100"):
        assert -1.0 <= metrics["val"][key] <= 1.0
    assert metrics["inference_ms_per_image"] > 0
    assert metrics["train_seconds"] > 0 and metrics["best_step"] == 6
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


def test_seeded_runs_differ_by_seed_only(plate_scenes, tmp_path, monkeypatch, sigint_raises):
    losses = []
    for name, seed in (("a", 2), ("b", 2), ("c", 3)):
        # Two steps of four, then Ctrl-C: last.npz, no evaluation.
        ctrl_c_at(monkeypatch, RetinaNet, 2)
        with pytest.raises(TrainingInterrupted):
            train_retinanet(quick_config(plate_scenes, tmp_path / name, seed=seed, steps=4))
        monkeypatch.undo()
        losses.append(nn.load(tmp_path / name / "last.npz")["history"]["losses"]["loss"])
    assert len(losses[0]) == 2
    np.testing.assert_array_equal(losses[0], losses[1])
    assert not np.array_equal(losses[0], losses[2])


@pytest.mark.slow
def test_ctrl_c_in_the_command_then_resume(plate_scenes, tmp_path):
    """A real SIGINT to ``python -m detection.train_retinanet``: exit 130, last.npz, the
    printed command continues the run to the weights of an uninterrupted one."""
    args = ["-m", "detection.train_retinanet", "--data", plate_scenes, "--classes", *CLASSES,
            "--quick", "--steps", "24", "--seed", "5"]
    status, stderr = interrupt_command([*args, "--out", str(tmp_path / "cut")],
                                       rb"retinanet:.* ([4-9]|1\d)/24")  # the bar at step 4+
    assert status == 130, stderr
    stopped = nn.load(tmp_path / "cut" / "last.npz")["engine"]["step"]
    assert 4 <= stopped < 24
    assert "24 steps" in run_command(resume_arguments(stderr, "detection.train_retinanet"))
    run_command([*args, "--out", str(tmp_path / "whole"), "--quiet"])
    assert_same_run(tmp_path / "whole" / "last.npz", tmp_path / "cut" / "last.npz")
