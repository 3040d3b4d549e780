"""The U-Net tutorial runs end to end in --quick mode: data, training, figures."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_tutorial_06_quick(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "06_unet.py"), "--quick",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, result.stderr
    assert "logits (2, 32, 96, 12)" in result.stdout
    folder = tmp_path / "06_unet"
    for name in ("06_data.png", "06_masks_and_reads.png", "06_confusion.png"):
        assert (folder / name).stat().st_size > 10_000, name
    with open(folder / "run_quick" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["steps"] == 30
    assert 0 <= metrics["test"]["read_exact"] <= 1
    assert not [n for n in os.listdir(folder) if n.startswith(".")]  # no temp files left
