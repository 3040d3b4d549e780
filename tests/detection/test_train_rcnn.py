"""Tests of detection.train_rcnn: configuration, quick runs of the three detectors, resume."""
import json
import os

import pytest

import nn
from detection.faster_rcnn import FasterRCNN
from detection.train_rcnn import TrainConfig, load_run, main, model_config, train_rcnn
from nn.engine import TrainingInterrupted
from tests.commands import assert_same_weights, ctrl_c_at

CLASSES = ("car", "plate")


# The configuration checks and flags: tests/detection/test_training.py.
@pytest.mark.slow
@pytest.mark.parametrize("detector", ["faster_rcnn", "mask_rcnn"])
def test_quick_command_end_to_end(plate_scenes, tmp_path, capsys, detector):
    out = tmp_path / "run"
    assert main(["--model", detector, "--data", plate_scenes, "--out", str(out), "--quick",
                 "--quiet", "--classes", *CLASSES]) == 0
    printed = capsys.readouterr().out
    assert "val: COCO box mAP" in printed
    assert ("mask mAP" in printed) == (detector == "mask_rcnn")
    for name in ("last.npz", "best.npz", "metrics.json", "history.json", "loss_curves.png",
                 "detections.png", "pr_curves.png"):
        assert os.path.isfile(out / name), name
    with open(out / "metrics.json") as handle:
        metrics = json.load(handle)
    assert metrics["steps"] == 6 and 0 <= metrics["val"]["map"] <= 1
    assert ("segm" in metrics["val"]) == (detector == "mask_rcnn")
    model, checkpoint = load_run(str(out / "best.npz"))
    assert type(model).__name__ == {"faster_rcnn": "FasterRCNN", "mask_rcnn": "MaskRCNN"}[detector]
    assert checkpoint["config"]["detector"] == detector


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(plate_scenes, tmp_path, monkeypatch,
                                                                  sigint_raises):
    def config(out):
        return TrainConfig(data=plate_scenes, out=str(out), quick=True, progress=False,
                           classes=CLASSES, steps=5, minutes=None)

    straight = train_rcnn(config(tmp_path / "a"))
    ctrl_c_at(monkeypatch, FasterRCNN, 3)  # Ctrl-C during step 3
    with pytest.raises(TrainingInterrupted):
        train_rcnn(config(tmp_path / "b"))
    monkeypatch.undo()
    resumed = train_rcnn(config(tmp_path / "b"), resume=True)
    assert resumed["steps"] == straight["steps"] == 5
    assert_same_weights(tmp_path / "a" / "last.npz", tmp_path / "b" / "last.npz")


@pytest.mark.slow
def test_fast_rcnn_quick_run_caches_its_proposals(plate_scenes, tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(detector="fast_rcnn", data=plate_scenes, out=str(out), quick=True,
                         progress=False, classes=CLASSES)
    result = train_rcnn(config)
    assert result["proposal_seconds"]["train"] > 0
    cached = nn.load(str(out / "proposals_train.npz"))
    assert cached["boxes"].shape[1] == 4 and len(cached["counts"]) == 8 and cached["mode"] == "fast"
    again = train_rcnn(config)  # the cache is read, not recomputed
    assert again["proposal_seconds"]["train"] == 0


def test_model_config_pools_with_roi_align_except_fast_rcnn():
    assert model_config("faster_rcnn", 2).pooler == "align"
    assert model_config("mask_rcnn", 2).pooler == "align"
    assert model_config("fast_rcnn", 2).pooler == "pool"       # the paper's RoIPool
    assert model_config("faster_rcnn", 2, pooler="pool").pooler == "pool"
    assert model_config("faster_rcnn", 2).box_bg_iou_low == 0.0
    assert model_config("faster_rcnn", 2).num_classes == 3     # background added
