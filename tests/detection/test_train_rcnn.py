"""Tests of detection.train_rcnn: configuration, quick runs of the three detectors, resume."""
import json
import os
import signal

import numpy as np
import pytest

import nn
from detection.faster_rcnn import FasterRCNN
from detection.train_rcnn import TrainConfig, load_run, main, train_rcnn
from nn.engine import TrainingInterrupted
from plates.synthetic import generate_plate_dataset

CLASSES = ("car", "plate")


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    """A tiny generated dataset shared by the runs of this module."""
    root = tmp_path_factory.mktemp("plates")
    generate_plate_dataset(root, 16, seed=3, splits=(0.6, 0.4, 0.0), progress=False)
    return str(root)


@pytest.mark.parametrize("overrides, message", [
    (dict(detector="yolo"), "detector"),
    (dict(backbone="vgg"), "backbone"),
    (dict(steps=None, minutes=None), "minutes, steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(proposals="slow"), "proposals"),
    (dict(eval_at=(0.75, 0.5)), "eval_at"),
    (dict(model={"mask_channels": 8}), "unknown FasterRCNNConfig fields"),
])
def test_bad_train_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides).validate()


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["faster_rcnn", "mask_rcnn"])
def test_quick_command_end_to_end(plates, tmp_path, capsys, detector):
    out = tmp_path / "run"
    assert main(["--model", detector, "--data", plates, "--out", str(out), "--quick", "--quiet",
                 "--classes", *CLASSES]) == 0
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


@pytest.fixture
def sigint_raises():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(plates, tmp_path, monkeypatch,
                                                                  sigint_raises):
    def config(out):
        return TrainConfig(data=plates, out=str(out), quick=True, progress=False,
                           classes=CLASSES, steps=5, minutes=None)

    straight = train_rcnn(config(tmp_path / "a"))
    loss, calls = FasterRCNN.loss, []

    def interrupted(self, images, targets):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during step 3
        return loss(self, images, targets)

    monkeypatch.setattr(FasterRCNN, "loss", interrupted)
    with pytest.raises(TrainingInterrupted):
        train_rcnn(config(tmp_path / "b"))
    monkeypatch.setattr(FasterRCNN, "loss", loss)
    resumed = train_rcnn(config(tmp_path / "b"), resume=True)
    assert resumed["steps"] == straight["steps"] == 5
    a = nn.load(str(tmp_path / "a" / "last.npz"))["model"]
    b = nn.load(str(tmp_path / "b" / "last.npz"))["model"]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow
def test_fast_rcnn_quick_run_caches_its_proposals(plates, tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(detector="fast_rcnn", data=plates, out=str(out), quick=True,
                         progress=False, classes=CLASSES)
    result = train_rcnn(config)
    assert result["proposal_seconds"]["train"] > 0
    cached = nn.load(str(out / "proposals_train.npz"))
    assert cached["boxes"].shape[1] == 4 and len(cached["counts"]) == 8 and cached["mode"] == "fast"
    again = train_rcnn(config)  # the cache is read, not recomputed
    assert again["proposal_seconds"]["train"] == 0
