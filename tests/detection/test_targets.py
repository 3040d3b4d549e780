import numpy as np
import pytest

from detection.boxes import as_boxes
from detection.targets import check_detection_targets


def test_valid_targets_come_back_as_float_boxes_and_int64_labels():
    targets = [{"boxes": [[0, 0, 4, 5]], "labels": [2]}, {"boxes": [], "labels": []}]
    (boxes0, labels0), (boxes1, labels1) = check_detection_targets(targets, 2, num_images=2)
    np.testing.assert_array_equal(boxes0, [[0, 0, 4, 5]])
    assert boxes0.dtype == np.float32 and labels0.dtype == np.int64
    assert labels0.tolist() == [2]
    assert boxes1.shape == (0, 4) and boxes1.dtype == np.float32
    assert labels1.shape == (0,) and labels1.dtype == np.int64
    (boxes, _), = check_detection_targets(targets[:1], 2, dtype=np.float64)
    assert boxes.dtype == np.float64


@pytest.mark.parametrize("box, extent, ok", [
    ([5, 0, 5, 5], "any", True), ([6, 0, 5, 5], "any", True),
    ([5, 0, 5, 5], "ordered", True), ([6, 0, 5, 5], "ordered", False),
    ([5, 0, 5, 5], "positive", False), ([4, 0, 5, 5], "positive", True),
])
def test_box_extent_rules(box, extent, ok):
    targets = [{"boxes": [box], "labels": [1]}]
    if ok:
        assert len(check_detection_targets(targets, 1, box_extent=extent)) == 1
    else:
        message = "x2 >= x1" if extent == "ordered" else "positive widths and heights"
        with pytest.raises(ValueError, match=message):
            check_detection_targets(targets, 1, box_extent=extent)


@pytest.mark.parametrize("targets, error, message", [
    ({"boxes": [], "labels": []}, TypeError, "targets must be a list of dicts, got dict"),
    ([{"boxes": []}], ValueError, r"targets\[0\] must be a dict with 'boxes' and 'labels'"),
    ([{"boxes": [[0, 0, 4]], "labels": [1]}], ValueError,
     r"targets\[0\]\['boxes'\] must have shape \(G, 4\)"),
    ([{"boxes": [[0, 0, np.nan, 4]], "labels": [1]}], ValueError, "non-finite"),
    ([{"boxes": [[0, 0, 4, 4]], "labels": [1.0]}], ValueError, r"labels'\] must be 1 integers"),
    ([{"boxes": [[0, 0, 4, 4]], "labels": [1, 2]}], ValueError, r"labels'\] must be 1 integers"),
    ([{"boxes": [[0, 0, 4, 4]], "labels": [3]}], ValueError,
     r"labels'\] must lie in 1..2, got \[3\]"),
    ([{"boxes": [[0, 0, 4, 4]], "labels": [0]}], ValueError, r"must lie in 1..2, got \[0\]"),
])
def test_bad_targets_name_the_entry(targets, error, message):
    with pytest.raises(error, match=message):
        check_detection_targets(targets, 2)


def test_number_of_images_and_box_reader():
    targets = [{"boxes": [[0, 0, 4, 4]], "labels": [1]}]
    with pytest.raises(ValueError, match="got 2 images but 1 targets"):
        check_detection_targets(targets, 2, num_images=2)
    with pytest.raises(TypeError, match=r"targets\[0\]\['boxes'\] must be a numeric array"):
        check_detection_targets([{"boxes": [["a", "b", "c", "d"]], "labels": [1]}], 2,
                                read_boxes=as_boxes)
    (boxes, _), = check_detection_targets(targets, 2, read_boxes=as_boxes, dtype=np.float64)
    assert boxes.dtype == np.float64
    with pytest.raises(ValueError, match="box_extent"):
        check_detection_targets(targets, 2, box_extent="nonnegative")
