"""Tests of detection.training through the detection trainers that share it: the
configuration checks, the flags, ``--resume`` of another trainer's checkpoint, the
``--quick`` settings, a resumed configuration read back, a run interrupted by Ctrl-C and
resumed equal to an uninterrupted one."""
import os

import pytest

import nn
import detection.train_rcnn as train_rcnn
import detection.train_retinanet as train_retinanet
import detection.train_yolo as train_yolo
from detection.retinanet import RetinaNet
from detection.training import quick_config
from detection.yolo import YOLO
from nn.engine import ResumeError, TrainingInterrupted, saved_config
from tests.commands import (BAD_DETECTION_CONFIGS, BAD_TRAINING_FLAGS, assert_same_run,
                            ctrl_c_at, usage_error)

TRAINERS = {"retinanet": train_retinanet, "yolo": train_yolo, "faster_rcnn": train_rcnn}


@pytest.mark.parametrize("kind", TRAINERS)
@pytest.mark.parametrize("overrides, message", BAD_DETECTION_CONFIGS + [
    (dict(minutes=0), "minutes must be > 0"),
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(lr=0.0), "need lr > 0"),
    (dict(min_scale=1.5, max_scale=1.0), "need 0 < min_scale <= max_scale"),
    (dict(classes="plate"), "classes must be distinct class names"),
    (dict(model={"no_such_field": 3}), "model has unknown"),
])
def test_shared_config_checks(kind, overrides, message):
    with pytest.raises(ValueError, match=message):
        TRAINERS[kind].TrainConfig(**overrides).validate()


@pytest.mark.parametrize("kind, overrides, message", [
    ("retinanet", dict(backbone="vgg"), "backbone"),
    ("retinanet", dict(model={"num_anchors": 3}), "unknown RetinaNetConfig fields"),
    ("yolo", dict(image_size=200), "multiple of the stride 16"),
    ("yolo", dict(image_size=240, model={"stride": 32}), "multiple of the stride 32"),
    ("yolo", dict(model={"num_anchors": 3}), "unknown YOLOConfig fields"),
    ("faster_rcnn", dict(detector="yolo"), "detector"),
    ("faster_rcnn", dict(backbone="vgg"), "backbone"),
    ("faster_rcnn", dict(workers=0), "workers"),
    ("faster_rcnn", dict(proposals="slow"), "proposals"),
    ("faster_rcnn", dict(model={"mask_channels": 8}), "unknown FasterRCNNConfig fields"),
])
def test_each_trainers_own_config_checks(kind, overrides, message):
    with pytest.raises(ValueError, match=message):
        TRAINERS[kind].TrainConfig(**overrides).validate()


@pytest.mark.parametrize("kind", TRAINERS)
def test_model_overrides_must_be_a_dict(kind):
    with pytest.raises(TypeError, match="model must be a dict of"):
        TRAINERS[kind].TrainConfig(model=[("width_multiplier", 0.5)]).validate()


@pytest.mark.parametrize("kind", TRAINERS)
@pytest.mark.parametrize("flags, message", BAD_TRAINING_FLAGS + [
    (["--lr", "nan"], "--lr: must be a finite number > 0"),
    (["--seed", "-2"], "--seed: must be an int >= 0"),
    (["--batch-size", "0"], "--batch-size: must be an int >= 1"),
])
def test_bad_flags(kind, tmp_path, capsys, flags, message):
    assert message in usage_error(TRAINERS[kind].main, [
        "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *flags], capsys)
    assert not os.path.exists(tmp_path / "run")  # refused before any work


def test_yolo_stride_flag(tmp_path, capsys):
    assert "--stride: invalid choice" in usage_error(
        train_yolo.main, ["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--stride", "8"],
        capsys)


@pytest.mark.parametrize("kind, other", [("retinanet", "yolo"), ("yolo", "retinanet"),
                                         ("faster_rcnn", "retinanet")])
def test_resume_needs_a_checkpoint_of_the_same_trainer(kind, other, tmp_path, capsys):
    module = TRAINERS[kind]
    config = module.TrainConfig(data=str(tmp_path), out=str(tmp_path / "nothing"))
    train = getattr(module, "train_rcnn" if kind == "faster_rcnn" else f"train_{kind}")
    with pytest.raises(ResumeError, match="last.npz"):
        train(config, resume=True)
    os.makedirs(tmp_path / "other")
    nn.save({"engine": {"kind": other}}, tmp_path / "other" / "last.npz")
    error = usage_error(module.main, ["--data", str(tmp_path), "--out", str(tmp_path / "other"),
                                      "--resume"], capsys)
    assert f"a checkpoint of a '{other}' run, not of '{kind}'" in error


def test_quick_settings_shrink_the_run_and_keep_smaller_limits():
    config = train_yolo.TrainConfig(batch_size=8, max_train_images=5, steps=None)
    quick = quick_config(config, batch_size=4, train_images=16, val_images=8)
    assert (quick.steps, quick.warmup_steps, quick.eval_at, quick.batch_size) == (6, 2, (1.0,), 4)
    assert (quick.max_train_images, quick.max_val_images) == (5, 8)
    assert quick_config(train_yolo.TrainConfig(steps=3), 4, 16, 8).steps == 3


def test_a_saved_configuration_comes_back_with_its_tuples():
    config = train_retinanet.TrainConfig(classes=("car", "plate"), eval_at=(0.5, 1.0),
                                         model={"anchor_sizes": (16, 32, 64, 128)})
    saved = {"classes": ["car", "plate"], "eval_at": [0.5, 1.0],
             "model": {"anchor_sizes": [16, 32, 64, 128]}}
    values = {k: v for k, v in vars(config).items() if k not in saved}
    assert saved_config(train_retinanet.TrainConfig, {**values, **saved}, "x") == config
    with pytest.raises(ResumeError, match="not a RetinaNet run's: .*backbone"):
        saved_config(train_retinanet.TrainConfig, {**values, **saved, "backbone": "vgg"},
                     "a RetinaNet run's")


@pytest.mark.slow
@pytest.mark.parametrize("kind, model_class", [("retinanet", RetinaNet), ("yolo", YOLO)])
def test_resume_after_ctrl_c_equals_an_uninterrupted_run(kind, model_class, plate_scenes,
                                                         tmp_path, monkeypatch, sigint_raises):
    module = TRAINERS[kind]
    train = getattr(module, f"train_{kind}")

    def config(out, seed):
        return module.TrainConfig(data=plate_scenes, out=str(out), quick=True, progress=False,
                                  classes=("car", "plate"), seed=seed)

    whole = train(config(tmp_path / "whole", 1))
    assert whole["steps"] == 6
    ctrl_c_at(monkeypatch, model_class, 4)
    with pytest.raises(TrainingInterrupted) as stop:
        train(config(tmp_path / "parts", 1))
    assert stop.value.step == 4 and stop.value.saved
    assert not (tmp_path / "parts" / "metrics.json").exists()
    monkeypatch.undo()
    # The saved config decides the run: a different seed passed on resume is ignored.
    resumed = train(config(tmp_path / "parts", 99), resume=True)
    assert resumed["steps"] == 6 and resumed["config"]["seed"] == 1
    assert_same_run(tmp_path / "whole" / "last.npz", tmp_path / "parts" / "last.npz")
    assert_same_run(tmp_path / "whole" / "best.npz", tmp_path / "parts" / "best.npz")
