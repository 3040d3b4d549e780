"""Every tutorial runs end to end with --quick, writes its figures and leaves no temp files.

Tutorials with checks of their own printed numbers have a dedicated test file
(``test_01_autograd.py``); this one covers the rest, so a new tutorial is tested the
day it is added.
"""
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TUTORIALS = sorted(
    os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "examples", "[0-9][0-9]_*.py"))
)
DEDICATED = {  # tutorials with a test file of their own, tests/examples/test_NN_topic.py
    os.path.basename(p)[len("test_"):]
    for p in glob.glob(os.path.join(ROOT, "tests", "examples", "test_[0-9][0-9]_*.py"))
}


def test_the_tutorials_are_found():
    assert "02_convolution.py" in TUTORIALS and "03_boxes_iou_nms.py" in TUTORIALS


@pytest.mark.slow
@pytest.mark.parametrize("name", [t for t in TUTORIALS if t not in DEDICATED])
def test_tutorial_quick(name, tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path),
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    written = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files]
    figures = [f for f in written if f.endswith(".png")]
    assert figures, f"{name} wrote no figure into --out"
    # At least one real figure (a tutorial may also write small PNG masks of a dataset).
    assert max(os.path.getsize(f) for f in figures) > 20_000
    leftovers = [f for f in written if ".tmp" in os.path.basename(f) or f.endswith("~")]
    assert leftovers == [], f"{name} left temporary files: {leftovers}"
