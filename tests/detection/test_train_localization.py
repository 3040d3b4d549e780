"""Tests of detection.train_localization: configuration checks, a quick run end to end
(four stages, the comparison table), Ctrl-C (a real SIGINT, in this process and in the
command) and --resume equal to an uninterrupted run, flags."""
import json
import os
import signal
import time

import numpy as np
import pytest

import nn
from detection.localization import Localizer
from detection.train_localization import (STAGES, TrainConfig, build_windows, load_stage, main,
                                          train_localization)
from detection.datasets.voc import VOCDataset
from nn.engine import ResumeError, TrainingInterrupted
from plates.synthetic import generate_plate_dataset
from tests.commands import (BAD_DETECTION_CONFIGS, BAD_TRAINING_FLAGS, ctrl_c_when,
                            resume_arguments, run_command, start_command, usage_error)

CLASSES = ("plate",) + tuple(str(d) for d in range(10)) + ("char",)


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    """A tiny generated dataset shared by the runs of this module."""
    root = tmp_path_factory.mktemp("plates")
    generate_plate_dataset(root, 12, seed=3, splits=(0.5, 0.25, 0.25), progress=False)
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


@pytest.mark.parametrize("overrides, message", BAD_DETECTION_CONFIGS + [
    (dict(slots=1), "slots"),
    (dict(window=50), "multiple of the stride 8"),
    (dict(scale_range=(0.8, 2.0)), "scale_range"),
    (dict(encoding="xyxy"), "encoding"),
    (dict(classes=("plate", "1"), slot_classes=("2",)), "slot_classes"),
    (dict(model={"depth": 3}), "unknown Localizer arguments"),
])
def test_bad_train_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides).validate()


def test_windows_of_a_voc_split(plates):
    config = quick_config(plates, "unused", window=32, draws=2)
    dataset = VOCDataset(plates, "train", classes=CLASSES)
    data = build_windows(dataset, config, num_objects=2, stream=0)
    count = len(data["windows"])
    assert count > 0 and data["windows"].shape == (count, 32, 32, 3)
    assert data["windows"].dtype == np.uint8
    assert data["labels"].shape == (count, 2) and data["labels"].min() >= 0
    assert data["labels"].max() < len(CLASSES)
    assert data["boxes"].shape == (count, 2, 4)
    # Whole objects inside the window, left to right.
    assert data["boxes"].min() >= -1e-3 and data["boxes"].max() <= 32 + 1e-3
    centres = data["boxes"][..., 0] + data["boxes"][..., 2]
    assert np.all(centres[:, 0] <= centres[:, 1])
    again = build_windows(dataset, config, num_objects=2, stream=0)
    np.testing.assert_array_equal(again["windows"], data["windows"])  # seeded
    # Objects of some classes only: the labels keep the run's numbering.
    digits = build_windows(dataset, config, num_objects=2, stream=0, classes=CLASSES[1:11])
    assert len(digits["windows"]) > 0
    assert digits["labels"].min() >= 1 and digits["labels"].max() <= 10
    with pytest.raises(ValueError, match="not among the run's classes"):
        build_windows(dataset, config, num_objects=1, stream=0, classes=("car",))


def test_quick_command_end_to_end(plates, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--data", plates, "--out", str(out), "--quick", "--quiet",
                 "--classes", *CLASSES]) == 0
    printed = capsys.readouterr().out
    assert "finetune" in printed and "2 slots" in printed
    assert sorted(os.listdir(out)) == sorted(STAGES + ("metrics.json", "run.json"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["table"]) == {"prior", "classify", "localize", "finetune"}
    for row in metrics["table"].values():
        assert set(row) >= {"accuracy", "mean_iou", "iou_50", "both", "count"}
        assert row["count"] == metrics["windows"]["eval"]
    assert metrics["eval_split"] == "test" and metrics["classes"] == list(CLASSES)
    assert set(metrics["slots"]["by_objects"]) <= {"1", "2", "3"}
    for stage in STAGES:
        assert metrics["stages"][stage]["steps"] == 4
        assert sorted(os.listdir(out / stage)) == ["best.npz", "history.json", "last.npz",
                                                   "metrics.json"]
    # The saved models evaluate to the table's numbers.
    model, checkpoint = load_stage(out / "finetune" / "best.npz")
    assert isinstance(model, Localizer) and not model.training
    assert checkpoint["info"]["regime"] == "finetune"
    slots, _ = load_stage(out / "slots" / "best.npz")
    assert slots.num_slots == 2
    # The frozen stage changed only the box head of the classifier it started from.
    classify = nn.load(out / "classify" / "best.npz")["model"]
    localize = nn.load(out / "localize" / "last.npz")["model"]
    for key, value in classify.items():
        same = np.array_equal(value, localize[key])
        assert same != key.startswith("box_head."), key
    # A second run into the same directory is refused; --resume of a finished run works.
    assert "--resume" in usage_error(main, ["--data", plates, "--out", str(out), "--quick",
                                            "--quiet"], capsys)
    assert main(["--data", plates, "--out", str(out), "--resume", "--quiet"]) == 0


def _assert_same_stages(path_a, path_b):
    for stage in STAGES:
        a, b = nn.load(path_a / stage / "last.npz"), nn.load(path_b / stage / "last.npz")
        for key in a["model"]:
            np.testing.assert_array_equal(a["model"][key], b["model"][key],
                                          err_msg=f"{stage} {key}")
        for name in a["history"]["losses"]:
            np.testing.assert_array_equal(a["history"]["losses"][name],
                                          b["history"]["losses"][name])


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(plates, tmp_path, monkeypatch,
                                                         sigint_raises):
    whole = train_localization(quick_config(plates, tmp_path / "whole", steps=6, seed=1))
    loss, calls = Localizer.head_loss, []

    def interrupted_loss(self, *batch):
        calls.append(1)
        if len(calls) == 9:  # the third step of the second stage (localize)
            os.kill(os.getpid(), signal.SIGINT)
        return loss(self, *batch)

    monkeypatch.setattr(Localizer, "head_loss", interrupted_loss)
    with pytest.raises(TrainingInterrupted) as stop:
        train_localization(quick_config(plates, tmp_path / "parts", steps=6, seed=1))
    assert stop.value.saved and stop.value.step == 3
    assert stop.value.path == str(tmp_path / "parts" / "localize" / "last.npz")
    monkeypatch.undo()
    run = json.loads((tmp_path / "parts" / "run.json").read_text())
    assert list(run["stages"]) == ["classify"]
    resumed = train_localization(quick_config(plates, tmp_path / "parts", seed=99), resume=True)
    assert resumed["config"]["seed"] == 1
    assert resumed["table"] == whole["table"] and resumed["slots"] == whole["slots"]
    _assert_same_stages(tmp_path / "whole", tmp_path / "parts")


def test_resume_needs_a_run(plates, tmp_path, capsys):
    with pytest.raises(ResumeError, match="run.json"):
        train_localization(quick_config(plates, tmp_path / "nothing"), resume=True)
    assert "holds no localization run" in usage_error(
        main, ["--data", plates, "--out", str(tmp_path / "nothing"), "--resume"], capsys)


@pytest.mark.parametrize("flags, message", BAD_TRAINING_FLAGS + [
    (["--slots", "1"], "slots must be an int >= 2"),
    (["--window", "44"], "multiple of the stride 8"),
    (["--batch-size", "0"], "--batch-size: must be an int >= 1"),
])
def test_bad_flags(plates, tmp_path, capsys, flags, message):
    assert message in usage_error(main, ["--data", plates, "--out", str(tmp_path / "run"), *flags],
                                  capsys)
    assert not os.path.exists(tmp_path / "run")


def test_missing_data_is_a_usage_error(tmp_path, capsys):
    assert "python -m plates.synthetic" in usage_error(
        main, ["--data", str(tmp_path / "none"), "--out", str(tmp_path / "run")], capsys)


@pytest.mark.slow
def test_ctrl_c_in_the_command_and_the_printed_resume_command(plates, tmp_path):
    flags = ["--data", plates, "--quick", "--quiet", "--steps", "120", "--classes", *CLASSES]
    command = ["-m", "detection.train_localization"]
    cut = tmp_path / "cut"

    def classify_saved(process):
        deadline = time.monotonic() + 120
        while not (cut / "classify" / "last.npz").exists() and time.monotonic() < deadline \
                and process.poll() is None:
            time.sleep(0.02)  # the classify stage's first evaluation (half way) is written

    process = start_command(command + flags + ["--out", str(cut)], text=True)
    status, _, stderr = ctrl_c_when(process, classify_saved)
    assert status == 130, stderr
    assert "interrupted" in stderr and "Continue with" in stderr
    assert not (cut / "metrics.json").exists()
    run_command(resume_arguments(stderr, "detection.train_localization"), timeout=300)
    run_command(command + flags + ["--out", str(tmp_path / "whole")], timeout=300)
    _assert_same_stages(tmp_path / "whole", cut)
