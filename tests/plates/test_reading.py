"""Reading a plate's class map: reading order, fragments, joined neighbours, specks, text.

Class ids are the segmenter's (``plates.classes``): digit d is ``1 + d``, 11 another
character.
"""
import numpy as np
import pytest

from plates.reading import (
    classes_to_text, isolated_specks, merge_fragments, read_plate, split_wide_blobs,
    text_to_class_text,
)
from segmentation.instances import connected_instances


def draw_plate(rows, h=24, w=48, char=(6, 3)):
    """A class map with characters (class ids) placed in a grid, 2 px apart."""
    m = np.zeros((h, w), np.uint8)
    boxes = []
    for r, row in enumerate(rows):
        for c, cls in enumerate(row):
            y, x = 2 + r * (char[0] + 3), 2 + c * (char[1] + 2)
            m[y:y + char[0], x:x + char[1]] = cls
            boxes.append([x, y, x + char[1], y + char[0]])
    return m, np.array(boxes, np.float32)


def test_one_row_plate_read_left_to_right():
    m, boxes = draw_plate([[3, 11, 1, 10]])
    out = read_plate(m)
    assert out["text"] == "2#09"
    np.testing.assert_array_equal(out["boxes"], boxes)
    np.testing.assert_array_equal(out["rows"], [0, 0, 0, 0])


def test_two_row_plate_read_row_by_row():
    m, _ = draw_plate([[3, 10, 11], [2, 3, 4, 11, 5]])
    assert read_plate(m)["text"] == "29# 123#4"


def test_empty_map_reads_nothing():
    m = np.zeros((6, 6), np.uint8)
    m[1:3, 1:3] = 255
    out = read_plate(m)
    assert out["text"] == "" and out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)


def test_text_helpers():
    assert text_to_class_text("29A-123.45") == "29##123#45"
    assert text_to_class_text("29-B1\n123.45") == "29##1 123#45"
    assert classes_to_text([3, 11, 1], rows=[0, 0, 1]) == "2# 0"


def test_pieces_of_one_character_are_merged_within_a_row():
    m = np.zeros((14, 30), np.uint8)
    m[2:6, 2:6] = 6      # a "5" broken in two: top half ...
    m[8:12, 3:6] = 6     # ... and bottom half, stacked in one column
    m[2:12, 9:11] = 2    # a "1"
    m[10:12, 13:15] = 11  # a dot: a small character of its own
    m[2:12, 17:20] = 7   # a "6" whose top piece ...
    m[2:4, 17:20] = 8   # ... was predicted "7": the character's pixels vote
    out = read_plate(m)
    assert out["text"] == "51#6"
    np.testing.assert_array_equal(out["boxes"][0], [2, 2, 6, 12])  # the union of its pieces
    assert out["scores"][3] == pytest.approx(24 / 30)
    # Without merging, every piece is a character.
    assert read_plate(m, merge_overlap=None)["text"] == "551#6"


def test_two_rows_are_not_merged_although_they_share_columns():
    m, _ = draw_plate([[3, 10, 11], [2, 3, 4]])
    assert read_plate(m)["text"] == "29# 123"


def test_merge_fragments_groups_by_column_and_row():
    boxes = np.array([[0, 0, 4, 3], [1, 5, 3, 8], [6, 0, 9, 8], [0, 12, 4, 16], [3, 0, 7, 8]],
                     np.float32)
    rows = np.array([0, 0, 0, 1, 0])
    # Blob 4 overlaps blob 0 by 1 px of 4 (0.25), blob 1 not at all and blob 2 by 1 px of 3
    # (0.33 > 0.3): linked to blob 2 only.
    groups = merge_fragments(boxes, rows, overlap=0.3)
    assert groups[0] == groups[1] != groups[2] == groups[4]
    assert groups[3] not in (groups[0], groups[2])  # same column, other row
    assert merge_fragments(np.zeros((0, 4)), np.zeros(0)).shape == (0,)
    assert len(set(merge_fragments(boxes, rows, overlap=1.0))) == 5  # nothing overlaps fully


def test_joined_neighbours_are_cut_apart():
    m = np.zeros((10, 26), np.uint8)
    m[2:8, 2:5], m[2:8, 6:9], m[2:8, 10:13] = 3, 11, 1  # "2#0", one column apart ...
    m[4:6, 5], m[4:6, 9] = 11, 11                        # ... bridged: one blob, 11 px wide
    m[2:8, 15:19], m[2:8, 21:25] = 10, 5                 # "9" and "4", 4 px wide, apart
    assert read_plate(m, split_width=None)["text"] == "#94"  # one blob, its majority wins
    out = read_plate(m)
    assert out["text"] == "2#094"
    # Each part's box covers its own pixels; the cut columns (the bridges) belong to no part.
    np.testing.assert_array_equal(out["boxes"][:3, [0, 2]], [[2, 5], [6, 9], [10, 13]])


def test_a_wide_solid_letter_is_not_cut():
    m = np.zeros((10, 30), np.uint8)
    m[2:8, 2:5], m[2:8, 7:10] = 3, 4  # "23", 3 px wide
    m[2:8, 12:18] = 11                # an "M" twice as wide, solid across: no waist
    m[2:8, 20:23] = 5                 # "4"
    assert read_plate(m)["text"] == "23#4"
    inst = connected_instances(m, return_masks=True, return_votes=True)
    rows, large = np.zeros(4, np.int64), np.ones(4, bool)
    cut = split_wide_blobs(m, inst["masks"], inst["boxes"], inst["votes"], rows, large, waist=1.0)
    assert len(cut[0]) == 5  # without the waist rule the width alone cuts it


def test_split_cuts_at_the_thinnest_column():
    m = np.zeros((12, 40), np.uint8)
    for x in (2, 8, 14):
        m[2:10, x:x + 4] = 2  # three "1"s, 4 px wide, 2 px apart
    m[2:10, 22:26] = 3        # a "2" ...
    m[2:10, 27:31] = 4        # ... and a "3", bridged by two pixels in column 26 ...
    m[5:7, 26] = 4            # ... not in the middle of the joined blob (22..30)
    out = read_plate(m)
    assert out["text"] == "11123"
    np.testing.assert_array_equal(out["boxes"][3], [22, 2, 26, 10])
    np.testing.assert_array_equal(out["boxes"][4], [27, 2, 31, 10])


def test_split_wide_blobs_keeps_blobs_of_normal_width_and_rows_apart():
    m, _ = draw_plate([[3, 10, 11], [2, 3, 4, 11, 5]])
    inst = connected_instances(m, return_masks=True, return_votes=True)
    rows = (inst["boxes"][:, 1] > 8).astype(np.int64)
    large = np.ones(len(rows), bool)
    boxes, votes, out_rows = split_wide_blobs(m, inst["masks"], inst["boxes"], inst["votes"],
                                              rows, large)
    np.testing.assert_array_equal(boxes, inst["boxes"])
    np.testing.assert_array_equal(votes, inst["votes"])
    np.testing.assert_array_equal(out_rows, rows)
    empty = split_wide_blobs(m, np.zeros((0,) + m.shape, bool), np.zeros((0, 4)),
                             np.zeros((0, 12), np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
    assert [a.shape for a in empty] == [(0, 4), (0, 12), (0,)]


@pytest.mark.parametrize("split_width", [1.0, 0, -2, "1.5", True])
def test_read_plate_rejects_bad_split_width(split_width):
    with pytest.raises(ValueError, match="split_width"):
        read_plate(np.zeros((4, 4), np.uint8), split_width=split_width)


def test_specks_away_from_the_characters_are_dropped_dots_beside_them_kept():
    m, _ = draw_plate([[3, 11, 1, 10]], h=30, w=40)  # characters 6x3 at rows 2..7
    m[6:8, 22] = 11  # a 2-pixel dot right after the last character: kept
    m[26, 36] = 11   # a pixel in the far corner, 18 px below: dropped
    m[1, 38] = 2     # one just above the row but 14 px right of the last character: dropped
    assert read_plate(m, min_area=1)["text"] == "2#09#"
    # Kept, the noise reads as characters, even as rows of their own.
    assert read_plate(m, min_area=1, speck_distance=None)["text"] == "1 2#09# #"


def test_isolated_specks_geometry():
    boxes = np.array([[0, 0, 4, 10], [6, 0, 10, 10], [11, 8, 12, 10], [30, 0, 31, 1],
                      [12, 0, 16, 10]], float)
    areas = np.array([40, 40, 2, 1, 40])
    # box 2 touches the characters (gap 0 to box 4); box 3 is 14 px from the nearest (box 4).
    np.testing.assert_array_equal(isolated_specks(boxes, areas), [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(isolated_specks(boxes, areas, distance=1.5), [0, 0, 0, 0, 0])
    assert isolated_specks(np.zeros((0, 4)), np.zeros(0)).shape == (0,)
    assert not isolated_specks(boxes[3:4], areas[3:4]).any()  # a lone blob is no speck


@pytest.mark.parametrize("distance", [-1, "0.5", True])
def test_read_plate_rejects_bad_speck_distance(distance):
    with pytest.raises(ValueError, match="speck_distance"):
        read_plate(np.zeros((4, 4), np.uint8), speck_distance=distance)
