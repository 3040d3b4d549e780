"""Training commands in a subprocess: interrupted with a real Ctrl-C, resumed, compared.

A trainer's test starts ``python -m <trainer> ...``, sends SIGINT once the progress
bar shows a given step (``interrupt_command``; ``start_command`` and ``ctrl_c_when``
for another sign that the step is reached), checks the exit status 130 and the
resume command printed last (``resume_arguments``), runs it (``run_command``) and
compares the weights with those of an uninterrupted run (``assert_same_weights``,
``assert_same_run``).
In this process, ``ctrl_c_at`` presses Ctrl-C during a given training step,
``run_quick_detector`` runs a detection trainer's ``--quick`` command and
``usage_error`` a command that must refuse its arguments (``BAD_TRAINING_FLAGS``: bad
values of the flags every trainer shares; ``BAD_DETECTION_CONFIGS``: of the configuration
fields every detection trainer has).
"""
import json
import os
import re
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "MPLBACKEND": "Agg"}

# Bad values of the flags every trainer shares (``nn.engine.add_training_arguments``) and
# what the usage error says: the flag tests of every trainer's command run them.
BAD_TRAINING_FLAGS = [
    (["--minutes", "0"], "--minutes: must be a finite number > 0"),
    (["--minutes", "nan"], "--minutes: must be a finite number > 0"),
    (["--steps", "0"], "--steps: must be an int >= 1"),
    (["--seed", "-1"], "--seed: must be an int >= 0"),
    (["--threads", "0"], "--threads: must be an int >= 1"),
]


# Bad values of the fields every detection trainer's ``TrainConfig`` has (the budget, the
# image limits, the evaluation schedule, the classes) and what ``validate()``'s
# ValueError says (a regular expression).
BAD_DETECTION_CONFIGS = [
    (dict(minutes=0), "minutes must be "),
    (dict(steps=0), "steps must be a positive int"),
    (dict(steps=None, minutes=None), "give minutes, steps or both"),
    (dict(max_train_images=0), "max_train_images must be a positive int"),
    (dict(max_val_images=0), "max_val_images must be a positive int"),
    (dict(eval_at=(0.75, 0.5)), r"eval_at must be increasing fractions in \(0, 1\]"),
    (dict(classes=("car", "car")), "classes must be distinct class names"),
    (dict(classes="car"), "classes must be distinct class names"),
]


def usage_error(main, argv, capsys):
    """Run ``main(argv)`` in this process; asserts that it stops with a usage error (exit
    status 2).

    Returns:
        str: what it printed on standard error.
    """
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def start_command(args, text=False):
    """Start ``python *args`` from the repository root, its output piped (``str`` with
    ``text``, else ``bytes``), SIGINT at Python's default (a background job starts with it
    ignored).

    Returns:
        subprocess.Popen
    """
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=text,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def ctrl_c_when(process, ready, timeout=120):
    """Press Ctrl-C in a started command once ``ready(process)`` returns, and wait for its
    end (it is killed if anything fails on the way).

    Args:
        process (subprocess.Popen): from ``start_command``.
        ready (callable): process -> None, returns when the command is where SIGINT
            should reach it (reading its output, or waiting for a file).
        timeout (float): seconds the command may take to stop after the signal.
    Returns:
        tuple: the exit status (int), the rest of its standard output and of its
        standard error.
    """
    try:
        ready(process)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return process.returncode, stdout, stderr


def interrupt_command(args, progress, timeout=120):
    """Run ``python *args`` from the repository root and press Ctrl-C during the run.

    Args:
        args (list of str): the arguments after ``python``.
        progress (bytes): a regular expression; SIGINT is sent once the command's
            standard error (its progress bar) matches it.
        timeout (float): seconds the command may take to stop after the signal.
    Returns:
        tuple: the exit status (int) and the whole standard error (str).
    """
    seen = []

    def ready(process):
        while not re.search(progress, b"".join(seen)):
            chunk = process.stderr.read1(256)
            assert chunk, b"".join(seen).decode(errors="replace")  # ended before the step
            seen.append(chunk)

    status, _, stderr = ctrl_c_when(start_command(args), ready, timeout)
    return status, (b"".join(seen) + stderr).decode(errors="replace")


def resume_arguments(stderr, module):
    """The arguments after ``python`` of the resume command an interrupted run printed.

    Asserts that the last line of ``stderr`` is ``python -m <module> ... --resume``.
    """
    command = shlex.split(stderr.strip().splitlines()[-1])
    assert command[:3] == ["python", "-m", module], command
    assert command[-1] == "--resume", command
    return command[1:]


def run_command(args, timeout=300):
    """Run ``python *args`` from the repository root to its end; asserts exit status 0.

    Returns:
        str: its standard output.
    """
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_same_weights(path_a, path_b):
    """The ``model`` entries of two saved files (``nn.save``) are equal, array by array."""
    a, b = nn.load(path_a)["model"], nn.load(path_b)["model"]
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{path_a} vs {path_b}: {key}")


def ctrl_c_at(monkeypatch, owner, step, name="loss", when=None):
    """Press Ctrl-C (SIGINT to this process) during the ``step``-th call of
    ``owner.name``, a method of a class or a function of a module (a training step when
    it is the loss); ``monkeypatch.undo()`` restores it.

    Args:
        when (callable, optional): first argument (the instance of a method) -> bool;
            only the calls it accepts are counted (e.g. one of two models trained in turn).
    """
    original, calls = getattr(owner, name), []

    def interrupted(*args, **kwargs):
        if when is None or when(args[0]):
            calls.append(1)
            if len(calls) == step:
                os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)


def assert_same_run(path_a, path_b):
    """Two saved runs (``nn.save`` checkpoints of the engine) are at the same point: the
    same weights, optimizer state, loss history, data position and random states."""
    assert_same_weights(path_a, path_b)
    a, b = nn.load(path_a), nn.load(path_b)
    for index, values in a["optimizer"]["state"].items():
        for key, value in values.items():
            np.testing.assert_array_equal(value, b["optimizer"]["state"][index][key],
                                          err_msg=f"optimizer {index} {key}")
    assert set(a["history"]["losses"]) == set(b["history"]["losses"])
    for name, values in a["history"]["losses"].items():
        np.testing.assert_array_equal(values, b["history"]["losses"][name], err_msg=name)
    np.testing.assert_equal(a["batches"], b["batches"])
    np.testing.assert_equal(a["generators"], b["generators"])


RUN_FILES = ["best.npz", "detections.png", "history.json", "last.npz", "loss_curves.png",
             "metrics.json", "pr_curves.png"]


def run_quick_detector(main, data, out, capsys, classes=("car", "plate")):
    """``main([... --quick --quiet])`` of a detection trainer in this process: exit status 0,
    the summary line printed, exactly the files of a run in ``out`` (no temporary file).

    Returns:
        tuple: ``metrics.json`` and ``history.json``, read.
    """
    assert main(["--data", str(data), "--out", str(out), "--quick", "--quiet",
                 "--classes", *classes]) == 0
    printed = capsys.readouterr().out
    assert "val: COCO mAP" in printed and "inference" in printed
    assert sorted(os.listdir(out)) == RUN_FILES
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    with open(os.path.join(out, "history.json"), encoding="utf-8") as handle:
        history = json.load(handle)
    assert metrics["steps"] == 6 and metrics["stopped_by"] == "steps"
    assert set(metrics["val"]["ap50_per_class"]) <= set(classes)
    return metrics, history
