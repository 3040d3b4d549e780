"""Pascal VOC writer and reader: round trips, the box convention, bad input, atomicity."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from detection.datasets import atomic
from detection.datasets.voc import (
    read_image_set, read_voc_annotation, voc_palette, write_image_sets, write_voc_example,
)


def _scene(rng, height=24, width=40):
    """A tiny example: a car with a plate, each with exact masks."""
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    class_mask = np.zeros((height, width), np.uint8)
    instance_mask = np.zeros((height, width), np.uint8)
    class_mask[4:20, 2:30] = 1
    instance_mask[4:20, 2:30] = 1
    class_mask[14:18, 10:22] = 2
    instance_mask[14:18, 10:22] = 2
    class_mask[3, 2:30] = 255  # an ignore border
    objects = [
        {"name": "car", "bbox": (2, 4, 30, 20)},
        {"name": "plate", "bbox": (10, 14, 22, 18), "difficult": True, "truncated": False},
    ]
    return image, objects, class_mask, instance_mask


def _all_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)


# ------------------------------------------------------------------------- palette
def test_voc_palette_matches_voc_colours():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    # Colours from the VOC devkit's labelcolormap: background, aeroplane, bicycle, ..., void.
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[2].tolist() == [0, 128, 0]
    assert palette[3].tolist() == [128, 128, 0]
    assert palette[15].tolist() == [192, 128, 128]
    assert palette[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in palette.tolist()}) == 256


@pytest.mark.parametrize("bad", [0, 257, 2.0, True])
def test_voc_palette_rejects_bad_size(bad):
    with pytest.raises(ValueError, match="num_colors"):
        voc_palette(bad)


# ------------------------------------------------------------------------- writer
def test_write_png_example_round_trips_exactly(tmp_path, rng):
    image, objects, class_mask, instance_mask = _scene(rng)
    written = write_voc_example(tmp_path, "000001", image, objects, class_mask, instance_mask,
                                image_format="png")
    assert _all_files(tmp_path) == [
        "Annotations/000001.xml", "JPEGImages/000001.png",
        "SegmentationClass/000001.png", "SegmentationObject/000001.png",
    ]
    assert written["image"] == os.path.join(str(tmp_path), "JPEGImages", "000001.png")
    assert np.array_equal(np.asarray(Image.open(written["image"])), image)
    saved_class = Image.open(written["class_mask"])
    assert saved_class.mode == "P"
    assert np.array_equal(np.asarray(saved_class), class_mask)
    assert np.array_equal(np.asarray(saved_class.getpalette(), np.uint8).reshape(-1, 3)[:256],
                          voc_palette())
    assert np.array_equal(np.asarray(Image.open(written["instance_mask"])), instance_mask)

    annotation = read_voc_annotation(written["annotation"])
    assert annotation["filename"] == "000001.png"
    assert (annotation["width"], annotation["height"]) == (40, 24)
    assert [o["name"] for o in annotation["objects"]] == ["car", "plate"]
    assert annotation["objects"][0]["bbox"] == (2.0, 4.0, 30.0, 20.0)
    assert annotation["objects"][1]["difficult"] is True
    assert annotation["objects"][0]["difficult"] is False


def test_xml_uses_one_based_inclusive_pixel_boxes(tmp_path, rng):
    image, _, _, _ = _scene(rng)
    objects = [{"name": "plate", "bbox": (0, 0, 10, 5)},
               {"name": "char", "bbox": (3.5, 2.25, 7.333, 9.0), "text": "A"}]
    written = write_voc_example(tmp_path, "x", image, objects)
    xml = open(written["annotation"]).read()
    # A box over pixel columns 0..9 is VOC's xmin=1, xmax=10.
    assert "<xmin>1</xmin>" in xml and "<xmax>10</xmax>" in xml
    assert "<ymin>1</ymin>" in xml and "<ymax>5</ymax>" in xml
    # Non-integers: up to 2 decimals, no trailing zeros.
    assert "<xmin>4.5</xmin>" in xml and "<ymin>3.25</ymin>" in xml
    assert "<xmax>7.33</xmax>" in xml and "<ymax>9</ymax>" in xml
    assert "<text>A</text>" in xml
    assert "<segmented>0</segmented>" in xml
    assert read_voc_annotation(written["annotation"])["objects"][1]["text"] == "A"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3900), st.integers(0, 2300),
                          st.integers(1, 99), st.integers(1, 99)), max_size=6))
def test_box_coordinates_round_trip_in_hundredths(tmp_path_factory, boxes):
    root = tmp_path_factory.mktemp("voc")
    image = np.zeros((24, 40, 3), np.uint8)
    objects = []
    for x, y, w, h in boxes:
        x1, y1 = x / 100, y / 100  # multiples of 0.01 inside the image
        x2, y2 = min(x1 + w / 100 + 0.5, 40.0), min(y1 + h / 100 + 0.5, 24.0)
        objects.append({"name": "plate", "bbox": (x1, y1, x2, y2)})
    written = write_voc_example(root, "r", image, objects)
    read = read_voc_annotation(written["annotation"])["objects"]
    assert len(read) == len(objects)
    for got, want in zip(read, objects):
        np.testing.assert_allclose(got["bbox"], want["bbox"], rtol=0, atol=1e-9)


def test_jpeg_example_is_close_and_quality_matters(tmp_path):
    y, x = np.mgrid[0:32, 0:48]
    image = np.stack([x * 5, y * 7, (x + y) * 3], axis=-1).astype(np.uint8)  # smooth
    high = write_voc_example(tmp_path / "high", "a", image, [], jpeg_quality=95)
    low = write_voc_example(tmp_path / "low", "a", image, [], jpeg_quality=10)
    assert high["image"].endswith(os.path.join("JPEGImages", "a.jpg"))
    decoded = np.asarray(Image.open(high["image"])).astype(int)
    assert np.abs(decoded - image).mean() < 3.0
    assert os.path.getsize(low["image"]) < os.path.getsize(high["image"])


def test_writing_is_deterministic(tmp_path, rng):
    image, objects, class_mask, instance_mask = _scene(rng)
    first = write_voc_example(tmp_path / "a", "1", image, objects, class_mask, instance_mask)
    second = write_voc_example(tmp_path / "b", "1", image, objects, class_mask, instance_mask)
    for key in first:
        assert open(first[key], "rb").read() == open(second[key], "rb").read()


def test_more_than_254_objects_use_a_16_bit_instance_png(tmp_path):
    image = np.zeros((20, 300, 3), np.uint8)
    objects = [{"name": "char", "bbox": (i, 0, i + 1, 1)} for i in range(300)]
    instance_mask = np.zeros((20, 300), np.uint16)
    instance_mask[0, :] = np.arange(1, 301)
    written = write_voc_example(tmp_path, "many", image, objects, instance_mask=instance_mask)
    saved = np.asarray(Image.open(written["instance_mask"]))
    assert saved.dtype == np.uint16
    assert np.array_equal(saved, instance_mask)


def test_switching_image_format_removes_the_stale_image(tmp_path, rng):
    image, objects, _, _ = _scene(rng)
    write_voc_example(tmp_path, "s", image, objects, image_format="jpg")
    write_voc_example(tmp_path, "s", image, objects, image_format="png")
    assert _all_files(tmp_path) == ["Annotations/s.xml", "JPEGImages/s.png"]


def test_empty_objects_are_valid(tmp_path):
    written = write_voc_example(tmp_path, "e", np.zeros((4, 5, 3), np.uint8), [],
                                class_mask=np.zeros((4, 5), np.uint8),
                                instance_mask=np.zeros((4, 5), np.uint8))
    assert read_voc_annotation(written["annotation"])["objects"] == []


def _bad_cases():
    image = np.zeros((24, 40, 3), np.uint8)
    ok_objects = [{"name": "car", "bbox": (2, 4, 30, 20)}]
    ok_mask = np.zeros((24, 40), np.uint8)
    return [
        (dict(image_id=""), "image_id"),
        (dict(image_id="a/b"), "image_id"),
        (dict(image_id="a b"), "image_id"),
        (dict(image_id=7), "image_id"),
        (dict(image=image.astype(np.float32)), "image"),
        (dict(image=image[..., :1]), "image"),
        (dict(image=np.zeros((0, 4, 3), np.uint8)), "image"),
        (dict(objects="car"), "objects"),
        (dict(objects=[["car"]]), r"objects\[0\]"),
        (dict(objects=[{"bbox": (0, 0, 1, 1)}]), r"objects\[0\]\['name'\]"),
        (dict(objects=[{"name": "car", "bbox": (0, 0, 1)}]), r"objects\[0\]\['bbox'\]"),
        (dict(objects=[{"name": "car", "bbox": (5, 0, 5, 1)}]), r"objects\[0\]\['bbox'\]"),
        (dict(objects=[{"name": "car", "bbox": (0, 0, 41, 1)}]), r"objects\[0\]\['bbox'\]"),
        (dict(objects=[{"name": "car", "bbox": (-1, 0, 4, 1)}]), r"objects\[0\]\['bbox'\]"),
        (dict(objects=[{"name": "car", "bbox": (0, 0, np.nan, 1)}]), r"objects\[0\]\['bbox'\]"),
        (dict(objects=[{"name": "car", "bbox": ("0", 0, 4, 1)}]), r"objects\[0\]\['bbox'\]"),
        (dict(objects=[{"name": "car", "bbox": (0, 0, 4, 1), "colour": 1}]), "unknown keys"),
        (dict(objects=[{"name": "car", "bbox": (0, 0, 4, 1), "difficult": 2}]), "difficult"),
        (dict(objects=ok_objects, class_mask=ok_mask[:10]), "class_mask"),
        (dict(objects=ok_objects, class_mask=ok_mask.astype(np.int32)), "class_mask"),
        (dict(objects=ok_objects, instance_mask=ok_mask[:, :5]), "instance_mask"),
        (dict(objects=ok_objects, instance_mask=ok_mask.astype(np.float32)), "instance_mask"),
        (dict(objects=ok_objects, instance_mask=ok_mask + 2), "instance_mask values"),
        (dict(objects=ok_objects, image_format="bmp"), "image_format"),
        (dict(objects=ok_objects, jpeg_quality=0), "jpeg_quality"),
    ]


@pytest.mark.parametrize("change, message", _bad_cases())
def test_bad_input_is_rejected_before_anything_is_written(tmp_path, change, message):
    args = dict(image_id="ok", image=np.zeros((24, 40, 3), np.uint8), objects=[])
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        write_voc_example(tmp_path, **args)
    assert _all_files(tmp_path) == []


def test_failed_write_leaves_old_file_and_no_temp_file(tmp_path, rng, monkeypatch):
    image, objects, class_mask, _ = _scene(rng)
    written = write_voc_example(tmp_path, "k", image, objects, class_mask)
    before = open(written["class_mask"], "rb").read()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_voc_example(tmp_path, "k", image, objects, np.zeros_like(class_mask))
    monkeypatch.undo()
    assert open(written["class_mask"], "rb").read() == before
    assert not [f for f in _all_files(tmp_path) if f.endswith(".tmp")]


def test_atomic_write_rejects_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic.atomic_write_bytes(tmp_path / "nope" / "f.bin", b"x")
    with pytest.raises(TypeError, match="data"):
        atomic.atomic_write_bytes(tmp_path / "f.bin", "text")


# ------------------------------------------------------------------------- image sets
def test_write_image_sets_writes_main_and_segmentation(tmp_path):
    paths = write_image_sets(tmp_path, {"train": ["a", "b"], "val": ["c"], "test": []})
    assert len(paths) == 6
    assert open(tmp_path / "ImageSets" / "Main" / "train.txt").read() == "a\nb\n"
    assert open(tmp_path / "ImageSets" / "Segmentation" / "val.txt").read() == "c\n"
    assert open(tmp_path / "ImageSets" / "Main" / "test.txt").read() == ""
    assert read_image_set(tmp_path, "train") == ["a", "b"]
    assert read_image_set(tmp_path, "val", folder="Segmentation") == ["c"]
    write_image_sets(tmp_path / "only", {"train": ["a"]}, segmentation=False)
    assert _all_files(tmp_path / "only") == ["ImageSets/Main/train.txt"]


@pytest.mark.parametrize("splits, message", [
    (["a"], "splits"),
    ({"train": "abc"}, r"splits\['train'\]"),
    ({"train": ["a b"]}, r"splits\['train'\]\[0\]"),
    ({"tr/ain": ["a"]}, "split name"),
])
def test_write_image_sets_rejects_bad_splits(tmp_path, splits, message):
    with pytest.raises((TypeError, ValueError), match=message):
        write_image_sets(tmp_path, splits)
    assert _all_files(tmp_path) == []


def test_read_image_set_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.txt"):
        read_image_set(tmp_path, "train")
