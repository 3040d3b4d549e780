"""One ``python -m plates run --quick`` per test session, shared by the lab's test files
(``test_lab.py``, ``test_report.py``). Tests that change a run work on a copy."""
import shutil

from plates.__main__ import main

_RUNS = {}


def quick_run(tmp_path_factory):
    """The directory of a finished quick run (made on first use)."""
    if "path" not in _RUNS:
        out = tmp_path_factory.mktemp("lab") / "run"
        assert main(["run", "--out", str(out), "--quick", "--quiet"]) == 0
        _RUNS["path"] = out
    return _RUNS["path"]


def copy_of_quick_run(tmp_path_factory, target):
    """A copy of the shared quick run at ``target`` (for tests that change it)."""
    shutil.copytree(quick_run(tmp_path_factory), target)
    return target
