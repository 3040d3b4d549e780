"""The lab's LaTeX report: escaping, architecture tables counted on the models, the report of
a --quick run (its numbers, the comparison section), and that pdflatex compiles it."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import nn
from detection.retinanet import RetinaNet
from plates.__main__ import main
from plates.report import (COMPARISON_FILE, REPORT_NAME, build_report, detector_architecture,
                           escape, segmenter_architecture, write_report)
from plates.segmenter import build_model
from plates.train_detector import plate_detector_config
from plates.train_segmenter import quick_config
from tests.plates.lab_run import copy_of_quick_run, quick_run

NASTY = "50% of #1 & $2 {x_y} ~a^b \\ <c> |d| 3×4 µs – Ω"


def require_pdflatex():
    """pdflatex, or skip (fail under DETSEG_REQUIRE_ORACLES=1)."""
    if shutil.which("pdflatex") is None:
        message = "pdflatex is not installed (apt-get install texlive-latex-base ...)"
        if os.environ.get("DETSEG_REQUIRE_ORACLES") == "1":
            pytest.fail(message)
        pytest.skip(message)


def test_escape_every_special_character():
    assert escape("a_b") == r"a\_b"
    assert escape("100%") == r"100\%"
    assert escape("#&$") == r"\#\&\$"
    assert escape("{}") == r"\{\}"
    assert escape("~^\\") == r"\textasciitilde{}\textasciicircum{}\textbackslash{}"
    assert escape("3×4") == r"3$\times$4" and escape("Ω") == "?"
    assert escape(12) == "12"


def test_escaped_text_compiles(tmp_path):
    require_pdflatex()
    (tmp_path / "t.tex").write_text("\\documentclass{article}\\usepackage[T1]{fontenc}"
                                    "\\begin{document}" + escape(NASTY) + "\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                          cwd=tmp_path, capture_output=True, text=True, errors="replace")
    assert done.returncode == 0, done.stdout[-2000:]


def test_architecture_tables_count_the_models_parameters():
    nn.manual_seed(0)
    detector = RetinaNet(plate_detector_config("small"))
    rows, total = detector_architecture(detector, 256)
    assert total == sum(p.data.size for p in detector.parameters())
    assert sum(row[3] for row in rows) == total  # the parts cover the whole model
    _, _, sizes = detector(np.zeros((1, 256, 256, 3), np.float32))
    fpn = [row for row in rows if row[0] == "FPN"][0]
    assert fpn[2].count("times") == 2 * len(sizes) and f"{sizes[0][0]} \\times" in fpn[2]
    segmenter = build_model(quick_config(crop_size=(40, 120)))
    rows, total = segmenter_architecture(segmenter, (40, 120))
    assert total == sum(p.data.size for p in segmenter.parameters())
    assert sum(row[3] for row in rows) == total
    logits = segmenter(nn.Tensor(np.zeros((1, 40, 120, 3), np.float32)))
    assert rows[-1][2] == "$" + " \\times ".join(str(s) for s in logits.shape[1:]) + "$"


@pytest.mark.slow
def test_the_report_of_a_quick_run(tmp_path_factory):
    run_dir = quick_run(tmp_path_factory)
    tex = (run_dir / f"{REPORT_NAME}.tex").read_text()
    evaluation = json.loads((run_dir / "evaluation" / "evaluation.json").read_text())
    detector = json.loads((run_dir / "detector" / "metrics.json").read_text())
    for title in ("Stage one: plate detection", "Stage two: digit segmentation",
                  "Evaluation on the held-out test scenes", "Error analysis",
                  "Comparison with a ResNet backbone", "Timings and machine", "A smoke run"):
        assert title in tex
    assert "has not been run" in tex  # no comparison.json in this run
    end = evaluation["end_to_end"]
    assert f"{100 * end['read_exact']:.1f}\\% ({end['read']})" in tex
    parameters = f"{detector['parameters']:,}".replace(",", "\\,")
    assert f"\\textbf{{{parameters}}}" in tex  # the table's total equals the trained model's
    assert "keepaspectratio]{detector/loss_curves.png}" in tex
    if shutil.which("pdflatex"):
        assert os.path.getsize(run_dir / f"{REPORT_NAME}.pdf") > 20_000


@pytest.mark.slow
def test_the_comparison_section_and_compiling(tmp_path_factory, tmp_path, capsys):
    require_pdflatex()
    run_dir = copy_of_quick_run(tmp_path_factory, tmp_path / "run")
    comparison = {"rows": [{"backbone": "small_resnet", "map": 0.70123, "params": 648646},
                           {"backbone": NASTY, "map": 0.674, "params": 2_000_000}],
                  "note": NASTY}
    (run_dir / COMPARISON_FILE).write_text(json.dumps(comparison))
    assert main(["report", "--run", str(run_dir)]) == 0
    assert "Report.7.Detection.Segmentation.pdf" in capsys.readouterr().out
    tex = (run_dir / f"{REPORT_NAME}.tex").read_text()
    assert "has not been run" not in tex.split("Comparison with a ResNet")[1].split("section")[0]
    assert "small\\_resnet & 0.7012 & 648646" in tex and escape(NASTY) in tex
    # another shape of comparison file: nested values become a key/value table
    (run_dir / COMPARISON_FILE).write_text(json.dumps({"resnet18": {"map": 0.5, "x": [1, 2]}}))
    result = write_report(run_dir)
    assert result["compiled"] and "resnet18/map & 0.5000" in build_report(run_dir)


def test_the_report_of_a_run_not_trained_yet(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "lab.json").write_text(json.dumps({"config": {"out": str(run_dir), "quick": True},
                                                  "stages": {}}))
    tex = build_report(run_dir)
    assert tex.count("has not been run yet") == 4  # data, detector, segmenter, evaluation
    result = write_report(run_dir, compile_pdf=shutil.which("pdflatex") is not None)
    assert os.path.isfile(result["tex"])
    assert main(["report", "--run", str(tmp_path / "missing")]) == 2


def test_a_latex_error_is_reported_with_its_log(tmp_path, monkeypatch, capsys):
    require_pdflatex()
    from plates import report

    monkeypatch.setattr(report, "build_report", lambda run_dir: (
        "\\documentclass{article}\\begin{document}\\notacommand\\end{document}\n"))
    assert main(["report", "--run", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "pdflatex failed" in error and "notacommand" in error
