"""The training engine: budget by steps and by time, exact resume, the best checkpoint,
metrics.json, Ctrl-C (a real SIGINT, in this process and in a command), the shared
command-line flags."""
import json
import math
import os
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

import nn
from nn.engine import (TIME_MARGIN, Engine, ResumeError, TrainingInterrupted, fit_total_steps,
                       load_checkpoint, refit_total_steps)
from tests.commands import BAD_TRAINING_FLAGS, ctrl_c_when, start_command, usage_error
from tests.nn import tiny_trainer

SCRIPT = tiny_trainer.__file__


def _config(tmp_path, name="run", **overrides):
    config = {"data": str(tmp_path / "data"), "out": str(tmp_path / name), "steps": 30,
              "minutes": None, "seed": 0, "lr": 0.01, "eval_every": 10, "sleep": 0.0,
              "announce": 0, "quiet": True}
    config.update(overrides)
    return config


def _ctrl_c_at(engine, step, times=1):
    """Make the engine's loss send this process SIGINT (``times`` times) at ``step``."""
    loss = engine.loss

    def interrupted_loss(batch):
        if engine.state["step"] + 1 == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return loss(batch)

    engine.loss = interrupted_loss
    return engine


def _assert_same_run(path_a, path_b):
    a, b = nn.load(path_a), nn.load(path_b)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    for index, values in a["optimizer"]["state"].items():
        for name, value in values.items():
            np.testing.assert_array_equal(value, b["optimizer"]["state"][index][name])
    for name, values in a["history"]["losses"].items():
        np.testing.assert_array_equal(values, b["history"]["losses"][name], err_msg=name)
    np.testing.assert_array_equal(a["history"]["lr"], b["history"]["lr"])
    assert a["batches"] == b["batches"] and a["generators"] == b["generators"]
    assert a["schedule"] == b["schedule"]
    for key in ("step", "best_step", "best_value", "evaluated_at"):
        assert a["engine"][key] == b["engine"][key], key
    evaluations = [json.loads(c["evaluations"]) for c in (a, b)]
    assert [{k: v for k, v in e.items() if k != "elapsed"} for e in evaluations[0]] \
        == [{k: v for k, v in e.items() if k != "elapsed"} for e in evaluations[1]]


# --------------------------------------------------------------------------------- budget
def test_a_run_of_a_given_number_of_steps(tmp_path):
    engine = tiny_trainer.build(_config(tmp_path, steps=25, eval_every=10))
    summary = engine.fit()
    assert summary["steps"] == 25 and summary["total_steps"] == 25
    assert summary["stopped_by"] == "steps"
    assert [e["step"] for e in summary["evaluations"]] == [10, 20, 25]  # and the end
    assert len(engine.history["losses"]["loss"]) == 25
    assert len(engine.history["losses"]["rmse"]) == 25
    # The rate of each step is WarmupCosine's closed form with the run's length.
    expected = [0.01 * engine.schedule.factor(t) for t in range(25)]
    np.testing.assert_allclose(engine.history["lr"], expected, rtol=1e-12)
    assert engine.history["lr"][0] == pytest.approx(0.01 * 0.05)
    last = nn.load(tmp_path / "run" / "last.npz")
    assert last["engine"]["step"] == 25 and last["batches"]["epoch"] == 4  # 5 batches an epoch
    assert summary["train_seconds"] > 0


def test_a_run_fitted_to_a_time_budget(tmp_path):
    minutes = 0.03  # 1.8 s, steps of about 10 ms
    engine = tiny_trainer.build(_config(tmp_path, steps=None, minutes=minutes, sleep=0.01,
                                        eval_every=1000))
    summary = engine.fit()
    total = summary["total_steps"]
    assert isinstance(total, int) and total > 4  # fitted after the 4 calibration steps
    assert engine.schedule.total_steps == total
    assert summary["stopped_by"] in ("steps", "time")
    assert summary["steps"] == total or summary["stopped_by"] == "time"
    assert summary["train_seconds"] <= 60 * minutes + 1.0  # (a loaded machine: some slack)
    assert summary["train_seconds"] >= 0.6 * 60 * minutes  # and used most of it
    assert summary["evaluations"][-1]["step"] == summary["steps"]  # the end is evaluated


def test_the_total_is_fitted_to_the_time_left():
    # 10 steps timed in 5 s, 20 s of 100 used: 0.9 * 80 s / 0.5 s = 144 more steps.
    assert fit_total_steps(12, 20.0, 10, 5.0, 100.0) == 12 + 144
    assert fit_total_steps(12, 120.0, 10, 5.0, 100.0) == 13  # over time: one more step
    assert refit_total_steps(1000, 200, 60.0, 300.0, 0.29) == 1000  # 232 s of steps, 240 s left
    lengthened = refit_total_steps(1000, 200, 60.0, 300.0, 0.2)  # 160 s of steps for 240 s
    assert lengthened == 200 + int(TIME_MARGIN * 240 / 0.2) > 1000
    shortened = refit_total_steps(1000, 200, 60.0, 300.0, 0.5)  # 400 s of steps for 240 s
    assert shortened == 200 + int(TIME_MARGIN * 240 / 0.5) < 1000
    assert refit_total_steps(1000, 200, 310.0, 300.0, 0.5) == 201


# --------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("stop_at", [2, 8, 10, 17])
def test_an_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, sigint_raises,
                                                                     stop_at):
    whole = tiny_trainer.build(_config(tmp_path, "whole", steps=24, eval_every=5))
    whole.fit()
    cut = _ctrl_c_at(tiny_trainer.build(_config(tmp_path, "cut", steps=24, eval_every=5)),
                     stop_at)
    with pytest.raises(TrainingInterrupted) as stop:
        cut.fit()
    assert stop.value.saved and stop.value.step == stop_at  # the step in progress finished
    checkpoint = load_checkpoint(tmp_path / "cut" / "last.npz", "tiny")
    assert checkpoint["engine"]["step"] == stop_at
    # A new process: everything rebuilt from the configuration, then the checkpoint.
    nn.manual_seed(123)
    again = tiny_trainer.build(checkpoint["config"])
    summary = again.fit(checkpoint)
    assert summary["steps"] == 24
    _assert_same_run(tmp_path / "whole" / "last.npz", tmp_path / "cut" / "last.npz")
    _assert_same_run(tmp_path / "whole" / "best.npz", tmp_path / "cut" / "best.npz")


def test_ctrl_c_during_an_evaluation_evaluates_again_on_resume(tmp_path, sigint_raises):
    whole = tiny_trainer.build(_config(tmp_path, "whole", steps=12, eval_every=4))
    whole.fit()
    cut = tiny_trainer.build(_config(tmp_path, "cut", steps=12, eval_every=4))
    evaluate, calls = cut.evaluate, []

    def evaluate_then_ctrl_c():
        calls.append(1)
        if len(calls) == 2:  # the evaluation at step 8
            os.kill(os.getpid(), signal.SIGINT)
        return evaluate()

    cut.evaluate = evaluate_then_ctrl_c
    with pytest.raises(TrainingInterrupted) as stop:
        cut.fit()
    assert stop.value.step == 8
    checkpoint = load_checkpoint(tmp_path / "cut" / "last.npz", "tiny")
    assert checkpoint["engine"]["evaluated_at"] == 4  # the one at step 8 never finished
    again = tiny_trainer.build(checkpoint["config"])
    again.fit(checkpoint)
    assert [e["step"] for e in again.history["evaluations"]] == [4, 8, 12]
    _assert_same_run(tmp_path / "whole" / "last.npz", tmp_path / "cut" / "last.npz")


def test_a_second_ctrl_c_abandons_the_step_and_keeps_the_last_checkpoint(tmp_path,
                                                                         sigint_raises):
    engine = _ctrl_c_at(tiny_trainer.build(_config(tmp_path, steps=30, eval_every=5)), 8,
                        times=2)
    with pytest.raises(TrainingInterrupted) as stop:
        engine.fit()
    assert not stop.value.saved and stop.value.step == 5  # the checkpoint of step 5
    assert nn.load(tmp_path / "run" / "last.npz")["engine"]["step"] == 5
    early = _ctrl_c_at(tiny_trainer.build(_config(tmp_path, "early", steps=30)), 2, times=2)
    with pytest.raises(TrainingInterrupted) as stop:
        early.fit()
    assert stop.value.step is None and not os.path.exists(tmp_path / "early" / "last.npz")


def test_resuming_a_finished_run_trains_no_more(tmp_path):
    config = _config(tmp_path, steps=10)
    first = tiny_trainer.build(config)
    first.fit()
    before = nn.load(tmp_path / "run" / "last.npz")
    checkpoint = load_checkpoint(tmp_path / "run" / "last.npz", "tiny")
    again = tiny_trainer.build(config)
    summary = again.fit(checkpoint)
    assert summary["steps"] == 10 and len(summary["evaluations"]) == 1
    after = nn.load(tmp_path / "run" / "last.npz")
    for key in before["model"]:
        np.testing.assert_array_equal(before["model"][key], after["model"][key])


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    tiny_trainer.build(_config(tmp_path, steps=4)).fit()
    checkpoint = load_checkpoint(tmp_path / "run" / "last.npz", "tiny")
    checkpoint["model"]["0.weight"] = np.zeros((4, 3), np.float32)
    with pytest.raises(ResumeError, match="model"):
        tiny_trainer.build(_config(tmp_path, steps=4)).fit(checkpoint)
    checkpoint = load_checkpoint(tmp_path / "run" / "last.npz", "tiny")
    del checkpoint["generators"]["noise"]
    with pytest.raises(ResumeError, match="generators"):
        tiny_trainer.build(_config(tmp_path, steps=4)).fit(checkpoint)


# ------------------------------------------------------------------------ best checkpoint
@pytest.mark.parametrize("mode, best_step", [("min", 9), ("max", 6)])
def test_the_best_checkpoint_follows_the_metric(tmp_path, mode, best_step):
    values = iter([0.5, 0.9, 0.3, 0.4])  # at steps 3, 6, 9, 12
    weights = {}

    def scripted():
        weights[engine.state["step"]] = engine.model.state_dict()
        return {"score": next(values), "per_class": [0.1, math.nan]}

    engine = tiny_trainer.build(_config(tmp_path, steps=12, eval_every=3), evaluate=scripted)
    engine.metric, engine.mode = "score", mode
    summary = engine.fit()
    assert summary["best_step"] == best_step
    assert summary["best"] == {"score": {"min": 0.3, "max": 0.9}[mode]}
    best = nn.load(tmp_path / "run" / "best.npz")
    assert best["engine"]["step"] == best_step
    assert sorted(weights) == [3, 6, 9, 12]
    for key, value in best["model"].items():  # the weights evaluated at that step
        np.testing.assert_array_equal(value, weights[best_step][key], err_msg=key)
    assert not np.array_equal(weights[6]["0.weight"], weights[12]["0.weight"])


def test_an_evaluation_without_the_metric_is_an_error(tmp_path):
    engine = tiny_trainer.build(_config(tmp_path, steps=3), evaluate=lambda: {"other": 1.0})
    with pytest.raises(ValueError, match="val_mse"):
        engine.fit()


# -------------------------------------------------------------------------- metrics.json
def test_metrics_and_history_files(tmp_path):
    config = _config(tmp_path, steps=20, eval_every=1000)
    engine = tiny_trainer.build(config)
    engine.eval_at = (0.25, 0.5)
    engine.fit()
    written = engine.write_results({"test": {"val_mse": 0.125, "per_class": [1.0, math.nan]}})
    names = sorted(os.listdir(tmp_path / "run"))
    assert names == ["best.npz", "history.json", "last.npz", "metrics.json"]  # no temporaries
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["kind"] == "tiny" and metrics["steps"] == 20
    assert metrics["stopped_by"] == "steps" and metrics["total_steps"] == 20
    assert [e["step"] for e in metrics["evaluations"]] == [5, 10, 20]
    best = min(metrics["evaluations"], key=lambda e: e["val_mse"])
    assert metrics["best_step"] == best["step"] and metrics["best"] == {"val_mse": best["val_mse"]}
    assert metrics["test"] == {"val_mse": 0.125, "per_class": [1.0, None]}  # NaN: null
    assert metrics["config"] == config
    assert metrics["train_seconds"] == written["train_seconds"] > 0
    assert set(metrics) >= {"cpu_seconds", "schedule_refits", "load_average", "cpu_count"}
    with open(tmp_path / "run" / "history.json") as f:
        history = json.load(f)
    assert history["step"] == list(range(1, 21))
    assert history["losses"]["loss"] == engine.history["losses"]["loss"]
    assert history["lr"] == engine.history["lr"]
    assert history["evaluations"] == metrics["evaluations"]


def _engine_arguments(tmp_path):
    model = nn.Linear(2, 1)
    optimizer = nn.optim.SGD(model.parameters(), lr=0.1)
    loader = nn.data.DataLoader(nn.data.TensorDataset(np.zeros((4, 2))), batch_size=2)
    return dict(out=str(tmp_path), kind="tiny", model=model, optimizer=optimizer,
                loss=lambda batch: {}, batches=loader, evaluate=lambda: {}, metric="m", steps=3)


@pytest.mark.parametrize("overrides, match", [
    (dict(steps=None, minutes=None), "steps, minutes"),
    (dict(steps=0), "steps"),
    (dict(minutes=-1.0), "minutes"),
    (dict(minutes=math.inf), "minutes"),
    (dict(eval_every=0), "eval_every"),
    (dict(mode="best"), "mode"),
    (dict(eval_at=(0.5, 0.25)), "eval_at"),
    (dict(clip_grad=0.0), "clip_grad"),
    (dict(kind=""), "kind"),
])
def test_bad_engine_arguments(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        Engine(**{**_engine_arguments(tmp_path), **overrides})


@pytest.mark.parametrize("overrides, match", [
    (dict(batches=[1, 2]), "state_dict"),
    (dict(loss=None), "loss"),
    (dict(generators={"noise": 3}), "generators"),
    (dict(steps=None, minutes=1.0, schedule=object()), "stretch"),
])
def test_bad_engine_parts(tmp_path, overrides, match):
    with pytest.raises(TypeError, match=match):
        Engine(**{**_engine_arguments(tmp_path), **overrides})


# ------------------------------------------------------------------------ Ctrl-C, for real
def _run(args, **kwargs):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_ctrl_c_in_a_command_saves_and_prints_how_to_continue(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "cut")
    args = ["--data", data, "--out", out, "--steps", "60", "--quiet", "--eval-every", "7"]

    def step_15(process):
        for line in process.stdout:  # wait until step 15 runs
            if line.strip() == "step 15":
                break

    process = start_command([SCRIPT, *args, "--sleep", "0.02", "--announce", "15"], text=True)
    status, _, stderr = ctrl_c_when(process, step_15, timeout=60)
    assert status == 130, stderr
    assert "interrupted" in stderr and "last.npz saved at step" in stderr
    stopped = nn.load(os.path.join(out, "last.npz"))["engine"]["step"]
    assert 15 <= stopped < 60
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    # The printed command continues the run to its end ...
    command = shlex.split(stderr.strip().splitlines()[-1])
    assert command[0] == "python" and command[-1] == "--resume"
    resumed = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "trained 60 steps" in resumed.stdout
    # ... with the weights of a run that was never interrupted.
    whole = _run(["--data", data, "--out", str(tmp_path / "whole"), "--steps", "60", "--quiet",
                  "--eval-every", "7"])
    assert whole.returncode == 0, whole.stderr
    _assert_same_run(tmp_path / "whole" / "last.npz", tmp_path / "cut" / "last.npz")
    with open(tmp_path / "cut" / "metrics.json") as f:
        assert json.load(f)["steps"] == 60


# ----------------------------------------------------------------------- command line
def _usage_error(capsys, argv):
    return usage_error(tiny_trainer.main, argv, capsys)


@pytest.mark.parametrize("flags, message", BAD_TRAINING_FLAGS + [
    (["--minutes", "0"], "--minutes: must be a finite number > 0, got '0'"),
    (["--minutes", "-3"], "--minutes: must be a finite number > 0"),
    (["--minutes", "inf"], "--minutes: must be a finite number > 0"),
    (["--lr", "0"], "--lr: must be a finite number > 0"),
    (["--lr", "inf"], "--lr: must be a finite number > 0"),
    (["--steps", "2.5"], "--steps: must be an int >= 1"),
    (["--resume"], "no checkpoint"),
])
def test_bad_flags_are_usage_errors(tmp_path, capsys, flags, message):
    error = _usage_error(capsys, ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"),
                                  *flags])
    assert message in error
    assert not os.path.exists(tmp_path / "d")  # checked before any work


def test_out_must_not_be_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    error = _usage_error(capsys, ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "file")])
    assert "is a file" in error


def test_resume_refuses_foreign_and_tampered_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--data", str(tmp_path / "d"), "--out", str(out), "--quiet"]
    assert tiny_trainer.main(flags + ["--steps", "12"]) == 0
    good = nn.load(out / "last.npz")
    cases = [
        ({"weight": np.zeros(3)}, "not a checkpoint of a training run"),
        ({**good, "engine": {**good["engine"], "kind": "retinanet"}}, "'retinanet' run"),
        ({**good, "engine": {**good["engine"], "step": -7}}, "step must be an int >= 0"),
        ({**good, "engine": {**good["engine"], "elapsed": -1.0}}, "elapsed must be a finite"),
        ({**good, "engine": {**good["engine"], "step": 13}}, "the history holds [12] steps"),
        ({**good, "batches": {**good["batches"], "batch": 1_000_000_000}}, "batch 1000000000"),
        ({**good, "batches": {**good["batches"], "epoch": -2}}, "epoch must be"),
    ]
    for checkpoint, message in cases:
        nn.save(checkpoint, out / "last.npz")
        error = _usage_error(capsys, flags + ["--resume"])
        assert message in error, error
        assert "Traceback" not in error
    nn.save(good, out / "last.npz")
    (out / "last.npz").write_bytes((out / "last.npz").read_bytes()[:200])  # truncated
    assert "not a readable .npz" in _usage_error(capsys, flags + ["--resume"])
    # The same through the command, from outside: exit status 2 and the message.
    result = _run(flags + ["--resume"])
    assert result.returncode == 2 and "not a readable .npz" in result.stderr
    assert "Traceback" not in result.stderr
