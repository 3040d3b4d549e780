"""Tests of detection.train_rcnn_svm: configuration, proposal cache, minibatches, runs, resume."""
import json
import os
import shutil
from dataclasses import asdict, replace

import numpy as np
import pytest

import nn
import detection.train_rcnn_svm as trainer
from detection.rcnn import RCNN, RCNNConfig
from detection.selective_search import selective_search
from detection.train_rcnn_svm import (ProposalsInterrupted, RegionBatches, TrainConfig,
                                      compute_proposals, evaluate, load_model, load_split,
                                      main, train_rcnn_svm)
from nn.engine import TrainingInterrupted
from tests.commands import (BAD_DETECTION_CONFIGS, BAD_TRAINING_FLAGS, assert_same_weights,
                            ctrl_c_at, interrupt_command, resume_arguments, run_command,
                            usage_error)

CLASSES = ("car", "plate")


@pytest.fixture(scope="module")
def cached_proposals(plate_scenes, tmp_path_factory):
    """The proposal caches of a --quick run on ``plate_scenes``, computed once for every run."""
    folder = tmp_path_factory.mktemp("proposals")
    config = trainer._quick(TrainConfig(data=plate_scenes, out=str(folder), classes=CLASSES))
    for split, limit in (("train", config.max_train_images), ("val", config.max_val_images)):
        images, _, _ = load_split(config, split, limit)
        compute_proposals(images, str(folder / f"proposals_{split}.npz"), progress=False)
    return folder


def run_dir(path, cached_proposals):
    """A run directory holding the shared proposal caches."""
    os.makedirs(path, exist_ok=True)
    for name in ("proposals_train.npz", "proposals_val.npz"):
        shutil.copy(cached_proposals / name, path / name)
    return str(path)


def shapes(rng, count=4, size=48):
    """Flat rectangles on noise: quick, deterministic selective-search inputs."""
    images = np.clip(rng.normal(120, 8, (count, size, size, 3)), 0, 255)
    for image in images:
        for _ in range(3):
            x, y = rng.integers(0, size - 12, 2)
            image[y:y + 12, x:x + 10] = rng.uniform(0, 255, 3)
    return images.astype(np.uint8)


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("overrides, message", BAD_DETECTION_CONFIGS + [
    (dict(minutes=-1.0), "minutes"),
    (dict(batch_size=0), "batch_size"),
    (dict(workers=0), "workers"),
    (dict(proposals="slow"), "proposals"),
    (dict(positive_fraction=1.0), "positive_fraction"),
    (dict(lr=0.0), "lr"),
    (dict(final_lr_factor=2.0), "final_lr_factor"),
    (dict(clip_grad=-1.0), "clip_grad"),
    (dict(checkpoint_minutes=0), "checkpoint_minutes"),
    (dict(seed=-1), "seed"),
    (dict(model={"warp_size": 32, "depth": 3}), "unknown RCNNConfig fields"),
    (dict(model={"num_classes": 5}), "unknown RCNNConfig fields"),
])
def test_bad_train_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides).validate()


@pytest.mark.parametrize("flags, message", BAD_TRAINING_FLAGS + [
    (["--workers", "0"], "--workers"),
    (["--proposals", "slow"], "--proposals"),
    (["--max-train-images", "-3"], "--max-train-images"),
    (["--resume"], "no checkpoint"),
])
def test_bad_flags_are_usage_errors(tmp_path, capsys, flags, message):
    assert message in usage_error(main, ["--data", str(tmp_path), "--out", str(tmp_path / "run"),
                                         *flags], capsys)


def test_a_checkpoint_of_another_trainer_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    os.makedirs(out)
    nn.save({"engine": {"kind": "retinanet"}}, out / "last.npz")
    assert "'retinanet' run" in usage_error(
        main, ["--data", str(tmp_path), "--out", str(out), "--resume"], capsys)


def test_a_saved_detector_loads_with_its_configuration(tmp_path):
    config = RCNNConfig(num_classes=2, warp_size=16, widths=(8, 16), feature_dim=32,
                        nms_threshold=0.4, svm_bg_iou=0.2, regression_fg_iou=0.7)
    model = RCNN(config)
    model.svm_weight = np.random.default_rng(0).normal(size=model.svm_weight.shape)
    path = tmp_path / "model.npz"
    nn.save({"model": model.state_dict(), "model_config": asdict(config),
             "classes": list(CLASSES)}, path)
    loaded, names = load_model(path)
    assert loaded.config == config and names == CLASSES
    np.testing.assert_array_equal(loaded.svm_weight, model.svm_weight)


# ---------------------------------------------------------------------- proposals
def test_proposals_are_cached_and_a_partial_cache_is_completed(tmp_path, monkeypatch):
    images = shapes(np.random.default_rng(0))
    path = str(tmp_path / "proposals.npz")
    expected = [selective_search(image) for image in images]
    searched = []
    search = trainer._search

    def counting(job):
        searched.append(1)
        return search(job)

    monkeypatch.setattr(trainer, "_search", counting)
    compute_proposals(images[:2], path, progress=False)             # the first two only
    found, seconds = compute_proposals(images, path, progress=False)
    assert len(searched) == 4 and seconds > 0                       # 2, then the other 2
    for mine, theirs in zip(found, expected):
        np.testing.assert_array_equal(mine, theirs)
    again, seconds = compute_proposals(images, path, progress=False)
    assert len(searched) == 4 and seconds == 0.0                    # all from the cache
    for mine, theirs in zip(again, expected):
        np.testing.assert_array_equal(mine, theirs)
    other = images[::-1].copy()                                     # other images: recomputed
    compute_proposals(other, path, progress=False)
    assert len(searched) == 8
    compute_proposals(images, path, mode="quality", progress=False)  # another mode too
    assert len(searched) == 12


def test_proposals_in_worker_processes_are_the_same(tmp_path):
    images = shapes(np.random.default_rng(1), count=3)
    one, _ = compute_proposals(images, str(tmp_path / "one.npz"), progress=False)
    two, _ = compute_proposals(images, str(tmp_path / "two.npz"), workers=2, progress=False)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_ctrl_c_during_proposals_keeps_what_was_computed(tmp_path, monkeypatch):
    images = shapes(np.random.default_rng(2))
    path = str(tmp_path / "proposals.npz")
    search, calls = trainer._search, []

    def interrupted(job):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return search(job)

    monkeypatch.setattr(trainer, "_search", interrupted)
    with pytest.raises(ProposalsInterrupted) as stop:
        compute_proposals(images, path, progress=False)
    assert (stop.value.done, stop.value.total) == (2, 4)
    monkeypatch.setattr(trainer, "_search", search)
    assert len(trainer._read_cache(path, "fast", [trainer._checksum(i) for i in images])) == 2


# -------------------------------------------------------------------- minibatches
def test_region_batches_quarter_objects_and_resume_exactly():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    labels = np.array([0] * 300 + [1] * 40 + [2] * 20 + [-1] * 5)
    regions = {"image": rng.integers(0, 3, labels.size),
               "boxes": np.tile([[2.0, 3.0, 20.0, 25.0]], (labels.size, 1)), "labels": labels}
    batches = RegionBatches(images, regions, 128, 0.25, 8, 16 / 227, np.random.default_rng(5))
    crops, picked = next(batches)
    assert crops.shape == (128, 8, 8, 3) and (picked > 0).sum() == 32 and (picked == 0).sum() == 96
    state = batches.state_dict()
    expected = next(batches)
    again = RegionBatches(images, regions, 128, 0.25, 8, 16 / 227, np.random.default_rng(99))
    again.load_state_dict(state)
    crops, picked = next(again)
    np.testing.assert_array_equal(crops, expected[0])
    np.testing.assert_array_equal(picked, expected[1])
    assert again.state_dict()["drawn"] == 2
    with pytest.raises(ValueError, match="drawn"):
        again.load_state_dict({"rng": state["rng"], "drawn": -1})
    with pytest.raises(ValueError, match="rng"):
        again.load_state_dict({"drawn": 1})
    few = RegionBatches(images, {**regions, "labels": np.array([0] * 360 + [1] * 5)}, 128, 0.25,
                        8, 0.0, np.random.default_rng(0))
    _, picked = next(few)
    assert (picked > 0).sum() == 5 and picked.size == 128         # every object, then background


# --------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_quick_command_end_to_end(plate_scenes, cached_proposals, tmp_path, capsys):
    out = run_dir(tmp_path / "run", cached_proposals)
    assert main(["--data", plate_scenes, "--out", out, "--quick", "--quiet",
                 "--classes", *CLASSES]) == 0
    printed = capsys.readouterr().out
    assert "val: COCO mAP" in printed and "proposals" in printed
    for name in ("last.npz", "best.npz", "model.npz", "metrics.json", "history.json",
                 "loss_curves.png", "detections.png", "pr_curves.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "metrics.json")) as handle:
        metrics = json.load(handle)
    assert metrics["steps"] == 6 and metrics["kind"] == "rcnn"
    assert metrics["proposal_seconds"] == {"train": 0.0, "val": 0.0}    # the caches were used
    timing = metrics["inference_seconds_per_image"]
    assert set(timing) == {"total", "proposals", "warp", "features", "heads", "images"}
    assert timing["total"] == pytest.approx(sum(timing[s] for s in trainer.STAGES))
    # The saved detector gives the evaluation that metrics.json reports.
    model, names = load_model(os.path.join(out, "model.npz"))
    assert names == CLASSES and model.svm_weight.any() and model.regressors.any()
    config = trainer._quick(TrainConfig(data=plate_scenes, out=out, classes=CLASSES))
    images, targets, _ = load_split(config, "val", config.max_val_images)
    proposals, _ = compute_proposals(images, os.path.join(out, "proposals_val.npz"),
                                     progress=False)
    again = evaluate(model, images, targets, proposals, names)["metrics"]
    assert again["map"] == pytest.approx(metrics["val"]["map"])
    assert again["ap50_per_class"] == pytest.approx(metrics["val"]["ap50_per_class"])


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(plate_scenes, cached_proposals,
                                                                  tmp_path, monkeypatch,
                                                                  sigint_raises):
    def config(name):
        return replace(TrainConfig(data=plate_scenes, classes=CLASSES, quick=True, progress=False),
                       out=run_dir(tmp_path / name, cached_proposals), steps=8, minutes=None)

    straight = train_rcnn_svm(config("a"))
    ctrl_c_at(monkeypatch, RegionBatches, 4, "__next__")  # Ctrl-C during step 4
    with pytest.raises(TrainingInterrupted) as stop:
        train_rcnn_svm(config("b"))
    assert stop.value.step == 4
    monkeypatch.undo()
    resumed = train_rcnn_svm(config("b"), resume=True)
    assert resumed["steps"] == straight["steps"] == 8
    assert resumed["val"]["map"] == straight["val"]["map"]
    for name in ("last.npz", "model.npz"):
        assert_same_weights(tmp_path / "a" / name, tmp_path / "b" / name)


@pytest.mark.slow
def test_ctrl_c_in_the_command_then_resume(plate_scenes, cached_proposals, tmp_path):
    """A real SIGINT to ``python -m detection.train_rcnn_svm``: exit 130, last.npz, the
    printed command continues the run to the weights of an uninterrupted one."""
    args = ["-m", "detection.train_rcnn_svm", "--data", plate_scenes, "--quick", "--steps", "30",
            "--classes", *CLASSES]
    cut = run_dir(tmp_path / "cut", cached_proposals)
    status, stderr = interrupt_command([*args, "--out", cut], rb"rcnn:.* ([4-9]|1\d)/30")
    assert status == 130, stderr
    stopped = nn.load(os.path.join(cut, "last.npz"))["engine"]["step"]
    assert 4 <= stopped < 30
    assert not os.path.exists(os.path.join(cut, "model.npz"))
    resumed = run_command([*resume_arguments(stderr, "detection.train_rcnn_svm"), "--quiet"])
    assert "30 steps" in resumed
    whole = run_dir(tmp_path / "whole", cached_proposals)
    run_command([*args, "--out", whole, "--quiet"])
    for name in ("last.npz", "model.npz"):
        assert_same_weights(os.path.join(whole, name), os.path.join(cut, name))
