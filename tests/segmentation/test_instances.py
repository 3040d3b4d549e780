"""Connected components of a class map: instances, majority votes, boxes, reading order."""
import numpy as np
import pytest

from segmentation.instances import connected_instances, reading_order


def test_majority_vote_and_score():
    m = np.zeros((10, 10), np.uint8)
    m[2:8, 2:5] = 8  # 18 pixels of digit 5
    m[2:4, 2:5] = 9  # 6 of them say digit 6
    inst = connected_instances(m)
    assert inst["labels"].tolist() == [8]
    assert inst["scores"][0] == pytest.approx(12 / 18)
    assert inst["areas"].tolist() == [18]


def test_small_specks_dropped_and_masks():
    m = np.zeros((10, 10), np.uint8)
    m[1:5, 1:4] = 3
    m[8, 8] = 4
    inst = connected_instances(m, min_area=2, return_masks=True)
    assert inst["labels"].tolist() == [3]
    assert inst["masks"].shape == (1, 10, 10)
    assert inst["masks"][0].sum() == 12


def test_empty_map_and_ignore():
    m = np.zeros((6, 6), np.uint8)
    m[1:3, 1:3] = 255
    inst = connected_instances(m, return_masks=True)
    assert inst["boxes"].shape == (0, 4) and inst["masks"].shape == (0, 6, 6)
    order, rows = reading_order(np.zeros((0, 4)))
    assert order.shape == (0,) and rows.shape == (0,)


@pytest.mark.parametrize("bad, error", [(np.zeros((2, 2, 2), int), ValueError),
                                        (np.zeros((2, 2)), TypeError)])
def test_bad_input(bad, error):
    with pytest.raises(error):
        connected_instances(bad)


def test_num_classes_inferred_or_checked():
    m = np.zeros((4, 4), np.uint8)
    m[1, 1] = 7
    assert connected_instances(m, min_area=1, return_votes=True)["votes"].shape == (1, 8)
    with pytest.raises(ValueError, match="outside"):
        connected_instances(m, num_classes=5)
    with pytest.raises(ValueError, match="num_classes"):
        connected_instances(m, num_classes=0)
