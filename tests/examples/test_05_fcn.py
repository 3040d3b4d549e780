"""The FCN tutorial runs end to end in --quick mode and writes its figure."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_tutorial_05_quick(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "05_fcn.py"), "--quick",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, result.stderr
    # The convolutionized classifier computes the classifier's logits on a patch.
    difference = float(result.stdout.split("max |difference| ")[1].split()[0])
    assert difference < 1e-4
    assert "score map (3, 11) (stride 8)" in result.stdout
    figure = tmp_path / "05_fcn" / "05_coarse_to_fine.png"
    assert figure.exists() and figure.stat().st_size > 10_000
    assert sorted(os.listdir(tmp_path / "05_fcn")) == ["05_coarse_to_fine.png"]  # no temp files
