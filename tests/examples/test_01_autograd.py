"""The autograd tutorial runs end to end in --quick mode and writes its figure."""
import os

from tests.commands import ROOT, run_command


def test_tutorial_01_quick(tmp_path):
    printed = run_command([os.path.join(ROOT, "examples", "01_autograd.py"), "--quick",
                           "--out", str(tmp_path)], timeout=300)
    assert "gradcheck of cross_entropy(tanh(x @ w)): True" in printed
    accuracy = float(printed.split("training accuracy ")[1].split()[0])
    assert accuracy > 0.9
    figure = tmp_path / "01_autograd_decision_boundary.png"
    assert figure.exists() and figure.stat().st_size > 10_000
    assert sorted(os.listdir(tmp_path)) == ["01_autograd_decision_boundary.png"]  # no temp files
