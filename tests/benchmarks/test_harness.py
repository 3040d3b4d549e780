"""benchmarks/harness.py: the timing loop, worker processes and rounds the scripts share."""
import argparse
import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.join(HERE, "..", "..", "benchmarks")


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("harness", os.path.join(BENCHMARKS, "harness.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_cases_warms_up_then_times_each_case(harness):
    calls = {"a": 0, "b": 0}
    ticks = iter(range(100))
    cases = {name: (lambda name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls}
    times = harness.time_cases(cases, {"a": 3, "b": 1}, warmup=2, clock=lambda: next(ticks))
    assert calls == {"a": 5, "b": 3}
    assert times == {"a": [1, 1, 1], "b": [1]}  # each reading one tick after the last


def test_run_worker_sizes_the_thread_pools_and_reads_the_last_line(harness, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        "import json, os, sys\n"
        "print('noise first')\n"
        "print(json.dumps({'args': sys.argv[1:], 'blas': os.environ['OPENBLAS_NUM_THREADS'],\n"
        "                  'ours': os.environ['DETSEG_NUM_THREADS'], 'extra': os.environ['X']}))\n")
    result = harness.run_worker(str(script), ["--n", 3], threads=1, X=7)
    assert result == {"args": ["--n", "3"], "blas": "1", "ours": "1", "extra": "7"}
    failing = tmp_path / "failing.py"
    failing.write_text("import sys\nsys.exit('no such case')\n")
    with pytest.raises(RuntimeError, match="no such case"):
        harness.run_worker(str(failing), [])


def test_alternate_reverses_the_order_every_other_round(harness, capsys):
    seen = [lib for lib, _ in harness.alternate(["a", "b", "c"], 3, lambda lib: lib.upper())]
    assert seen == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert "round 3/3 done" in capsys.readouterr().err
    assert list(harness.alternate(["a"], 1, lambda lib: 1)) == [("a", 1)]


def test_round_arguments_and_their_defaults(harness):
    parser = argparse.ArgumentParser()
    harness.add_round_arguments(parser, ("ours", "torch"))
    assert harness.rounds_and_repeats(parser.parse_args([])) == (5, 7)
    assert harness.rounds_and_repeats(parser.parse_args(["--quick"])) == (2, 3)
    assert harness.rounds_and_repeats(parser.parse_args(["--rounds", "4", "--repeats", "9"])) \
        == (4, 9)
    args = parser.parse_args(["--worker", "torch"])
    assert args.worker == "torch" and args.warmup == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--worker", "tensorflow"])
