"""The FCN tutorial runs end to end in --quick mode and writes its figure."""
import os

import pytest

from tests.commands import ROOT, run_command


@pytest.mark.slow
def test_tutorial_05_quick(tmp_path):
    printed = run_command([os.path.join(ROOT, "examples", "05_fcn.py"), "--quick",
                           "--out", str(tmp_path)], timeout=600)
    # The convolutionized classifier computes the classifier's logits on a patch.
    difference = float(printed.split("max |difference| ")[1].split()[0])
    assert difference < 1e-4
    assert "score map (3, 11) (stride 8)" in printed
    figure = tmp_path / "05_fcn" / "05_coarse_to_fine.png"
    assert figure.exists() and figure.stat().st_size > 10_000
    assert sorted(os.listdir(tmp_path / "05_fcn")) == ["05_coarse_to_fine.png"]  # no temp files
