"""Tests of detection.train_yolo: a quick run end to end and the saved model (the
configuration checks, the flags and resume after Ctrl-C: test_training.py)."""
import math

import numpy as np
import pytest

from detection.train_yolo import TrainConfig, load_run, main
from detection.yolo import YOLO
from tests.commands import run_quick_detector

CLASSES = ("car", "plate")


def test_quick_command_end_to_end(plate_scenes, tmp_path, capsys):
    out = tmp_path / "run"
    metrics, history = run_quick_detector(main, plate_scenes, out, capsys, CLASSES)
    assert metrics["kind"] == "yolo" and metrics["best_step"] == 6
    assert metrics["model_config"]["num_classes"] == 2 and metrics["model_config"]["stride"] == 16
    losses = history["losses"]
    assert set(losses) == {"loss", "coord", "size", "object", "no_object", "class",
                           "num_objects", "dropped"}
    assert len(losses["loss"]) == 6 and all(math.isfinite(v) for v in losses["loss"])
    terms = sum(np.array(losses[k]) for k in ("coord", "size", "object", "no_object", "class"))
    np.testing.assert_allclose(terms, losses["loss"], rtol=1e-5)
    for figure in ("detections.png", "loss_curves.png", "pr_curves.png"):
        assert (out / figure).stat().st_size > 10_000
    model, checkpoint = load_run(out / "best.npz")
    assert isinstance(model, YOLO) and not model.training
    assert checkpoint["engine"]["kind"] == "yolo" and checkpoint["config"]["quick"] is True
    # The saved model predicts what the run evaluated: the same val mAP again.
    from detection.train_retinanet import build_datasets, evaluate
    config = TrainConfig(**{**checkpoint["config"], "eval_at": (1.0,),
                            "classes": tuple(checkpoint["config"]["classes"])})
    _, val_set = build_datasets(config, np.random.default_rng(0))
    assert evaluate(model, val_set)["metrics"]["map"] == pytest.approx(metrics["val"]["map"])
