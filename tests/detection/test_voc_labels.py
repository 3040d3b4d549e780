"""A VOC dataset's class names: labels.txt, or Pascal VOC's 21 names."""
import numpy as np
import pytest

from detection.datasets.voc import (VOC_CLASSES, VOCDataset, read_class_names, write_class_names,
                                    write_image_sets, write_voc_example)


def test_default_names_are_pascal_voc():
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background" and VOC_CLASSES[7] == "car"


def test_labels_file_round_trip_and_default(tmp_path):
    assert read_class_names(tmp_path) == VOC_CLASSES
    write_class_names(tmp_path, ("background", "cat", "7"))
    assert (tmp_path / "labels.txt").read_text() == "background\ncat\n7\n"
    assert read_class_names(tmp_path) == ("background", "cat", "7")


@pytest.mark.parametrize("names", [("a", "a"), (), "ab", ("a", "b\nc"), ("a", " b"), ("a", 3)])
def test_bad_names_refused_before_writing(tmp_path, names):
    with pytest.raises(ValueError):
        write_class_names(tmp_path, names)
    assert not (tmp_path / "labels.txt").exists()


def test_dataset_reads_the_labels_file(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    write_voc_example(tmp_path, "a", image, [{"name": "dog", "bbox": (1, 1, 5, 5)}],
                      image_format="png")
    write_image_sets(tmp_path, {"train": ["a"]}, segmentation=False)
    # Without labels.txt: Pascal VOC's ids ("dog" is 12).
    assert VOCDataset(tmp_path, "train")[0][1]["labels"].tolist() == [12]
    write_class_names(tmp_path, ("background", "dog"))
    assert VOCDataset(tmp_path, "train")[0][1]["labels"].tolist() == [1]
    # Given names win over the file.
    assert VOCDataset(tmp_path, "train", class_names=("bg", "x", "dog"))[0][1]["labels"].tolist() == [2]


def test_a_duplicated_name_in_the_file_names_the_file(tmp_path):
    (tmp_path / "labels.txt").write_text("background\ndog\ndog\n")
    with pytest.raises(ValueError, match="labels.txt"):
        read_class_names(tmp_path)
