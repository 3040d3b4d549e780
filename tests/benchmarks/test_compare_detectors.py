"""benchmarks/compare_detectors.py: recall of proposals, run arguments, the table."""
import importlib.util
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "benchmarks", "compare_detectors.py")


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_detectors", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_best_overlaps_match_a_loop_over_the_first_n_boxes(compare):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, size=(30, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 30, size=(30, 2))], axis=1).astype(np.float32)
    truth = boxes[[3, 17]] + 1.5
    counts = (1, 4, 10, 30)
    got = compare.best_overlaps(truth, boxes, counts)
    assert got.shape == (4, 2)
    for row, n in enumerate(counts):
        for g in range(2):
            expected = max(_iou(truth[g], boxes[j]) for j in range(n))
            assert got[row, g] == pytest.approx(expected, rel=1e-5)


def test_best_overlaps_of_no_truth_or_no_boxes(compare):
    assert compare.best_overlaps(np.zeros((0, 4), np.float32), np.ones((3, 4)), (1, 2)).shape \
        == (2, 0)
    none = compare.best_overlaps(np.array([[0, 0, 5, 5]], np.float32),
                                 np.zeros((0, 4), np.float32), (1, 2))
    assert none.tolist() == [[0.0], [0.0]]


def test_recall_table_counts_boxes_found_at_each_threshold(compare):
    overlaps = np.array([[0.4, 0.6, 0.75, 0.1],
                         [0.5, 0.69, 0.8, 0.9]])
    table = compare.recall_table(overlaps)
    assert table[0.5].tolist() == [0.5, 1.0]
    assert table[0.7].tolist() == [0.25, 0.5]
    assert compare.recall_table(np.zeros((2, 0))) == {}


def test_runs_must_be_kind_equals_an_existing_directory(compare, tmp_path):
    assert compare.parse_runs([f"yolo={tmp_path}"]) == {"yolo": ("yolo", str(tmp_path))}
    assert compare.parse_runs([f"faster_rcnn={tmp_path}", f"faster_rcnn:align={tmp_path}"]) \
        == {"faster_rcnn": ("faster_rcnn", str(tmp_path)),
            "faster_rcnn:align": ("faster_rcnn", str(tmp_path))}
    assert compare.title("faster_rcnn:align") == "Faster R-CNN (align)"
    with pytest.raises(SystemExit, match="given twice"):
        compare.parse_runs([f"yolo={tmp_path}", f"yolo={tmp_path}"])
    with pytest.raises(SystemExit, match="KIND=DIR"):
        compare.parse_runs([f"ssd={tmp_path}"])
    with pytest.raises(SystemExit, match="KIND=DIR"):
        compare.parse_runs([str(tmp_path)])
    with pytest.raises(SystemExit, match="not a directory"):
        compare.parse_runs([f"yolo={tmp_path / 'missing'}"])


def test_markdown_row_shows_split_and_dashes_for_stages_a_model_lacks(compare):
    rows = {"yolo": {"candidates": 512.0, "timing_ms": {"proposals": float("nan"),
                                                      "features": 12.0, "heads": 1.5,
                                                      "total": 13.4},
                     "training": {"steps": 900, "train_minutes": 15.0,
                                  "proposal_minutes": None},
                     "accuracy": {"map": 0.5, "ap50_per_class": {"car": 0.9, "plate": 0.8}}}}
    table = compare.markdown(rows, 100, (1.0, 1.5, 2.0))
    assert "| YOLOv1 | 512 | 15.0 min, 900 steps | 13 ms (– / 12 / 2) | 0.500 | 0.900 / 0.800 |" \
        in table
    assert "Same 100 test scenes" in table
