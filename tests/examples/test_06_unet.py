"""The U-Net tutorial runs end to end in --quick mode: data, training, figures."""
import json
import os

import pytest

from tests.commands import ROOT, run_command


@pytest.mark.slow
def test_tutorial_06_quick(tmp_path):
    printed = run_command([os.path.join(ROOT, "examples", "06_unet.py"), "--quick",
                           "--out", str(tmp_path)], timeout=600)
    assert "logits (2, 32, 96, 12)" in printed
    folder = tmp_path / "06_unet"
    for name in ("06_data.png", "06_masks_and_reads.png", "06_confusion.png"):
        assert (folder / name).stat().st_size > 10_000, name
    with open(folder / "run_quick" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["steps"] == 30
    assert 0 <= metrics["test"]["read_exact"] <= 1
    assert not [n for n in os.listdir(folder) if n.startswith(".")]  # no temp files left
