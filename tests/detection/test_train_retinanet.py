import json
import math
import os

import numpy as np
import pytest

import nn
from plates.synthetic import generate_plate_dataset
from detection.train_retinanet import TrainConfig, WarmupCosine, main, train_retinanet

CLASSES = ("car", "plate")


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    """A tiny generated dataset shared by the runs of this module."""
    root = tmp_path_factory.mktemp("plates")
    generate_plate_dataset(root, 20, seed=3, splits=(0.6, 0.4, 0.0), progress=False)
    return str(root)


def quick_config(data, out, **overrides):
    return TrainConfig(data=data, out=str(out), quick=True, progress=False, classes=CLASSES,
                       **overrides)


# ----------------------------------------------------------------------- schedule
def test_warmup_cosine_rates():
    param = nn.Parameter(np.zeros(1, np.float32))
    optimizer = nn.optim.AdamW([param], lr=0.1)
    schedule = WarmupCosine(optimizer, warmup_iters=4, final_factor=0.1)
    assert schedule.step(0, 0.0) == pytest.approx(0.1 * 1 / 4)  # warm-up: (i + 1) / 4
    assert schedule.step(3, 0.0) == pytest.approx(0.1)
    assert schedule.step(10, 0.5) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))
    assert schedule.step(20, 1.0) == pytest.approx(0.01)
    assert schedule.step(20, 7.0) == pytest.approx(0.01)  # progress clipped to [0, 1]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    restored = WarmupCosine(nn.optim.AdamW([param], lr=0.5), warmup_iters=1)
    restored.load_state_dict(schedule.state_dict())
    assert restored.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    assert restored.step(5, 0.25) == pytest.approx(schedule.step(5, 0.25))


@pytest.mark.parametrize("overrides, message", [
    (dict(backbone="vgg"), "backbone"),
    (dict(minutes=0), "minutes"),
    (dict(iters=0), "iters"),
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
    assert main(["--data", plates, "--out", str(out), "--quick", "--no-progress",
                 "--classes", *CLASSES]) == 0
    printed = capsys.readouterr().out
    assert "val: COCO mAP" in printed and "inference" in printed
    names = sorted(os.listdir(out))
    assert names == ["best.npz", "detections.png", "history.json", "last.npz",
                     "loss_curves.png", "metrics.json", "pr_curves.png"]  # no temp files
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 6
    assert set(metrics["val"]["ap50_per_class"]) <= set(CLASSES)
    for key in ("map", "map_50", "map_75", "mar_100"):
        assert -1.0 <= metrics["val"][key] <= 1.0
    assert metrics["inference_ms_per_image"] > 0
    assert metrics["training_seconds"] > 0
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 6 and all(math.isfinite(v) for v in history["loss"])
    assert [e["iteration"] for e in history["evaluations"]] == [6]
    for figure in ("detections.png", "loss_curves.png", "pr_curves.png"):
        assert (out / figure).stat().st_size > 10_000
    checkpoint = nn.load(out / "best.npz")
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "config"} <= set(checkpoint)
    assert checkpoint["iteration"] == 6 and checkpoint["config"]["quick"] is True


def test_resume_equals_an_uninterrupted_run(plates, tmp_path):
    whole = train_retinanet(quick_config(plates, tmp_path / "whole", seed=1))
    assert whole["iterations"] == 6
    first = train_retinanet(quick_config(plates, tmp_path / "parts", seed=1, stop_after=4))
    assert first == {"interrupted": True, "iteration": 4}
    assert not (tmp_path / "parts" / "metrics.json").exists()
    # The saved config decides the run: a different seed passed on resume is ignored.
    resumed = train_retinanet(quick_config(plates, tmp_path / "parts", seed=99), resume=True)
    assert resumed["iterations"] == 6
    a = nn.load(tmp_path / "whole" / "last.npz")
    b = nn.load(tmp_path / "parts" / "last.npz")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    np.testing.assert_array_equal(a["history"]["loss"], b["history"]["loss"])
    assert a["epoch"] == b["epoch"] and a["batch"] == b["batch"]
    assert a["rng"] == b["rng"]


def test_seeded_runs_differ_by_seed_only(plates, tmp_path):
    losses = []
    for name, seed in (("a", 2), ("b", 2), ("c", 3)):
        # Two iterations of four, then an "interruption": last.npz, no evaluation.
        train_retinanet(quick_config(plates, tmp_path / name, seed=seed, iters=4, stop_after=2))
        losses.append(nn.load(tmp_path / name / "last.npz")["history"]["loss"])
    np.testing.assert_array_equal(losses[0], losses[1])
    assert not np.array_equal(losses[0], losses[2])


def test_resume_needs_a_checkpoint(plates, tmp_path):
    with pytest.raises(FileNotFoundError, match="last.npz"):
        train_retinanet(quick_config(plates, tmp_path / "nothing"), resume=True)

