"""The autograd tutorial runs end to end in --quick mode and writes its figure."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tutorial_01_quick(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "01_autograd.py"), "--quick",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, result.stderr
    assert "gradcheck of cross_entropy(tanh(x @ w)): True" in result.stdout
    accuracy = float(result.stdout.split("training accuracy ")[1].split()[0])
    assert accuracy > 0.9
    figure = tmp_path / "01_autograd_decision_boundary.png"
    assert figure.exists() and figure.stat().st_size > 10_000
    assert sorted(os.listdir(tmp_path)) == ["01_autograd_decision_boundary.png"]  # no temp files
