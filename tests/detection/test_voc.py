"""Pascal VOC writer and reader: round trips, the box convention, bad input, atomicity."""
import os
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from nn import io as atomic
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
        # strings XML cannot store: control characters, lone surrogates, a carriage return
        (dict(image_id="a\x01"), "image_id"),
        (dict(image_id="a\ud800"), "image_id"),
        (dict(objects=[{"name": "pl\x01ate", "bbox": (0, 0, 4, 1)}]), r"objects\[0\]\['name'\]"),
        (dict(objects=[{"name": "plate\ud800", "bbox": (0, 0, 4, 1)}]),
         r"objects\[0\]\['name'\]"),
        (dict(objects=[{"name": "pl\rate", "bbox": (0, 0, 4, 1)}]), r"objects\[0\]\['name'\]"),
        (dict(objects=[{"name": "plate", "bbox": (0, 0, 4, 1), "text": "\ud800"}]),
         r"objects\[0\]\['text'\]"),
        (dict(objects=[{"name": "plate", "bbox": (0, 0, 4, 1), "text": "a\x0bb"}]),
         r"objects\[0\]\['text'\]"),
        (dict(objects=[{"name": "plate", "bbox": (0, 0, 4, 1), "text": "a\rb"}]),
         r"objects\[0\]\['text'\]"),
        (dict(objects=[{"name": "plate", "bbox": (0, 0, 4, 1), "text": "\ufffe"}]),
         r"objects\[0\]\['text'\]"),
    ]


@pytest.mark.parametrize("change, message", _bad_cases())
def test_bad_input_is_rejected_before_anything_is_written(tmp_path, change, message):
    args = dict(image_id="ok", image=np.zeros((24, 40, 3), np.uint8), objects=[])
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        write_voc_example(tmp_path, **args)
    assert _all_files(tmp_path) == []


@pytest.mark.parametrize("bad_object, message", [
    ({"name": "plate", "bbox": (8, 8, 16, 16), "text": "\ud800"}, r"\['text'\]"),
    ({"name": "plate", "bbox": (8, 8, 16, 16), "text": "\x01"}, r"\['text'\]"),
    ({"name": "pl\x01ate", "bbox": (8, 8, 16, 16)}, r"\['name'\]"),
    ({"name": "plate", "bbox": (8, 8, 16, 41)}, r"\['bbox'\]"),
])
def test_a_refused_write_leaves_the_example_as_it_was(tmp_path, bad_object, message):
    a = np.full((24, 40, 3), 10, np.uint8)
    b = np.full((24, 40, 3), 200, np.uint8)
    write_voc_example(tmp_path, "x", a, [{"name": "car", "bbox": (0, 0, 4, 4)}],
                      class_mask=np.ones((24, 40), np.uint8), image_format="png")
    before = {f: (tmp_path / f).read_bytes() for f in _all_files(tmp_path)}
    with pytest.raises(ValueError, match=message):
        write_voc_example(tmp_path, "x", b, [bad_object], class_mask=np.zeros((24, 40), np.uint8),
                          image_format="png")
    assert {f: (tmp_path / f).read_bytes() for f in _all_files(tmp_path)} == before


def test_unusual_but_legal_strings_round_trip(tmp_path):
    objects = [{"name": "caf\u00e9 <&>", "bbox": (0, 0, 4, 4), "text": "\u2603\t'\"\U0001f697"},
               {"name": "two\nlines", "bbox": (1, 1, 3, 3), "text": "]]>"}]
    written = write_voc_example(tmp_path, "\u00e9t\u00e9", np.zeros((8, 8, 3), np.uint8), objects,
                                image_format="png")
    read = read_voc_annotation(written["annotation"])
    assert [(o["name"], o["text"]) for o in read["objects"]] == \
        [(o["name"], o["text"]) for o in objects]
    assert read["filename"] == "\u00e9t\u00e9.png"


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


@pytest.mark.parametrize("line", ["../../outside", "/etc/passwd", "a/b", "..", "a\\b"])
def test_read_image_set_refuses_ids_that_are_not_plain_stems(tmp_path, line):
    folder = tmp_path / "ImageSets" / "Main"
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text(f"ok\n{line} 1\n")
    with pytest.raises(ValueError, match=r"train\.txt.*line 2.*" + re.escape(repr(line))):
        read_image_set(tmp_path, "train")


def test_read_image_set_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.txt"):
        read_image_set(tmp_path, "train")


# ------------------------------------------------------------------------- VOCDataset
from plates.classes import PLATE_CLASSES  # noqa: E402
from detection.datasets.voc import VOCDataset, write_class_names  # noqa: E402


def _plate_scene(rng, height=32, width=48):
    """A car, its plate with characters "7A", and masks with characters on top."""
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    class_mask = np.zeros((height, width), np.uint8)
    instance_mask = np.zeros((height, width), np.uint8)
    objects = [
        {"name": "car", "bbox": (2, 3, 44, 30)},
        {"name": "plate", "bbox": (10, 20, 30, 28)},
        {"name": "7", "bbox": (12, 21, 17, 27)},
        {"name": "char", "bbox": (19, 21, 24, 27), "text": "A", "difficult": True},
    ]
    for index, (obj, class_id) in enumerate(zip(objects, (1, 2, 10, 13)), start=1):
        x1, y1, x2, y2 = obj["bbox"]
        class_mask[y1:y2, x1:x2] = class_id  # later objects are on top
        instance_mask[y1:y2, x1:x2] = index
    return image, objects, class_mask, instance_mask


@pytest.fixture
def voc_root(tmp_path):
    rng = np.random.default_rng(3)
    ids = []
    for i in range(3):
        image, objects, class_mask, instance_mask = _plate_scene(rng)
        if i == 2:  # an image without any object
            objects, class_mask[:], instance_mask[:] = [], 0, 0
        write_voc_example(tmp_path, f"{i:06d}", image, objects, class_mask, instance_mask,
                          image_format="png")
        ids.append(f"{i:06d}")
    write_image_sets(tmp_path, {"train": ids[:2], "val": ids[2:]})
    write_class_names(tmp_path, PLATE_CLASSES)
    return tmp_path


def test_voc_dataset_items(voc_root):
    dataset = VOCDataset(voc_root, "train", return_masks=True, return_instance_masks=True)
    assert len(dataset) == 2
    image, target = dataset[0]
    assert image.dtype == np.uint8 and image.shape == (32, 48, 3)
    assert np.array_equal(image, np.asarray(Image.open(voc_root / "JPEGImages" / "000000.png")))
    assert target["image_id"] == "000000"
    assert target["boxes"].dtype == np.float32 and target["boxes"].shape == (4, 4)
    assert target["boxes"][1].tolist() == [10, 20, 30, 28]
    assert target["labels"].dtype == np.int64
    names = ("car", "plate", "7", "char")
    assert target["labels"].tolist() == [PLATE_CLASSES.index(n) for n in names]
    assert target["difficult"].tolist() == [False, False, False, True]
    assert target["masks"].dtype == np.uint8 and target["masks"].shape == (32, 48)
    assert target["masks"][24, 13] == PLATE_CLASSES.index("7")
    masks = target["instance_masks"]
    assert masks.dtype == bool and masks.shape == (4, 32, 48)
    # Each instance mask's tight box is the object's box (objects are rectangles here).
    for mask, box in zip(masks, target["boxes"]):
        ys, xs = np.nonzero(mask)
        if len(xs):
            assert xs.min() >= box[0] and xs.max() + 1 <= box[2]
            assert ys.min() >= box[1] and ys.max() + 1 <= box[3]
    assert masks[0].sum() < 42 * 27  # the car is partly covered by its plate
    assert dataset[-1][1]["image_id"] == "000001"
    assert dataset.label_names == PLATE_CLASSES and dataset.num_classes == len(PLATE_CLASSES)


def test_voc_dataset_empty_image_has_empty_targets(voc_root):
    dataset = VOCDataset(voc_root, "val", return_instance_masks=True)
    image, target = dataset[0]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == np.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == np.int64
    assert target["difficult"].shape == (0,) and target["difficult"].dtype == bool
    assert target["instance_masks"].shape == (0, 32, 48)
    assert target["instance_masks"].dtype == bool


def test_voc_dataset_class_subset_for_a_detector(voc_root):
    dataset = VOCDataset(voc_root, "train", classes=("plate", "car"), return_masks=True,
                         return_instance_masks=True)
    image, target = dataset[0]
    assert dataset.label_names == ("background", "plate", "car") and dataset.num_classes == 2
    assert target["labels"].tolist() == [2, 1]
    assert target["boxes"].tolist() == [[2, 3, 44, 30], [10, 20, 30, 28]]
    assert target["instance_masks"].shape == (2, 32, 48)
    assert set(np.unique(target["masks"]).tolist()) <= {0, 1, 2}
    assert target["masks"][24, 13] == 0  # a digit pixel: not a detector class
    assert target["masks"][22, 11] == 1  # plate pixel -> label 1


def test_voc_dataset_keep_difficult_false_drops_them(voc_root):
    dataset = VOCDataset(voc_root, "train", keep_difficult=False, return_instance_masks=True)
    _, target = dataset[0]
    assert target["labels"].tolist() == [1, 2, 10]
    assert not target["difficult"].any()
    assert target["instance_masks"].shape[0] == 3


def test_voc_dataset_applies_transforms(voc_root):
    calls = []

    def transforms(image, target):
        calls.append(target["image_id"])
        return image[:, ::-1], dict(target, flipped=True)

    image, target = VOCDataset(voc_root, "train", transforms=transforms)[1]
    assert calls == ["000001"] and target["flipped"] is True


def test_voc_dataset_reads_rgb_colour_masks(voc_root):
    path = voc_root / "SegmentationClass" / "000000.png"
    ids = np.asarray(Image.open(path))
    Image.fromarray(voc_palette()[ids]).save(path)  # the colour version of the same mask
    _, target = VOCDataset(voc_root, "train", return_masks=True)[0]
    assert np.array_equal(target["masks"], ids)


def test_voc_dataset_errors_name_the_file(voc_root):
    with pytest.raises(FileNotFoundError, match="test.txt"):
        VOCDataset(voc_root, "test")
    with pytest.raises(FileNotFoundError, match="VOC root"):
        VOCDataset(voc_root / "nothing", "train")
    with pytest.raises(ValueError, match="unknown class name 'car'.*000000.xml"):
        VOCDataset(voc_root, "train", class_names=("background", "plate", "7", "char"))
    with pytest.raises(ValueError, match="classes"):
        VOCDataset(voc_root, "train", classes=("bus",))

    os.remove(voc_root / "SegmentationObject" / "000001.png")
    VOCDataset(voc_root, "train")  # masks not requested: fine
    with pytest.raises(FileNotFoundError, match="SegmentationObject.000001.png"):
        VOCDataset(voc_root, "train", return_instance_masks=True)

    small = Image.fromarray(np.zeros((31, 48), np.uint8))
    small.save(voc_root / "SegmentationClass" / "000000.png")
    dataset = VOCDataset(voc_root, "train", return_masks=True)
    with pytest.raises(ValueError, match="SegmentationClass.000000.png is 48x31"):
        dataset[0]
    with pytest.raises(IndexError):
        dataset[2]

    xml_path = voc_root / "Annotations" / "000001.xml"
    xml_path.write_text(xml_path.read_text()[:200])  # truncated file
    with pytest.raises(ValueError, match="malformed VOC annotation .*000001.xml"):
        VOCDataset(voc_root, "train")
    xml_path.write_text("<annotation><size><width>4</width><height>4</height></size>"
                        "<object><name>car</name></object></annotation>")
    with pytest.raises(ValueError, match="000001.xml: object 0 .*bndbox"):
        VOCDataset(voc_root, "train")
    os.remove(xml_path)
    with pytest.raises(FileNotFoundError, match="000001.xml"):
        VOCDataset(voc_root, "train")


def test_voc_dataset_missing_image_names_the_files(voc_root):
    os.remove(voc_root / "JPEGImages" / "000000.png")
    with pytest.raises(FileNotFoundError, match="VOC image not found .*000000.xml"):
        VOCDataset(voc_root, "train")


def test_voc_dataset_image_size_disagreeing_with_xml(voc_root):
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(voc_root / "JPEGImages" / "000000.png")
    with pytest.raises(ValueError, match="000000.png is 10x10 but .*000000.xml says 48x32"):
        VOCDataset(voc_root, "train")[0]


def test_voc_dataset_reads_16_bit_instance_masks(tmp_path):
    image = np.zeros((4, 300, 3), np.uint8)
    objects = [{"name": "char", "bbox": (i, 0, i + 1, 2)} for i in range(300)]
    instance_mask = np.zeros((4, 300), np.uint16)
    instance_mask[:2] = np.arange(1, 301)
    write_voc_example(tmp_path, "many", image, objects, instance_mask=instance_mask,
                      image_format="png")
    write_image_sets(tmp_path, {"train": ["many"]})
    write_class_names(tmp_path, PLATE_CLASSES)
    _, target = VOCDataset(tmp_path, "train", return_instance_masks=True)[0]
    masks = target["instance_masks"]
    assert masks.shape == (300, 4, 300)
    assert masks[299, :2, 299].all() and masks.sum() == 600


# --------------------------------------------------------------- hostile datasets
def _set_filename(xml_path, filename):
    text = xml_path.read_text()
    start, end = text.index("<filename>") + len("<filename>"), text.index("</filename>")
    xml_path.write_text(text[:start] + filename + text[end:])


def test_voc_dataset_refuses_an_image_path_outside_the_dataset(voc_root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.png"
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(outside)
    xml_path = voc_root / "Annotations" / "000000.xml"
    for entry in (os.path.relpath(outside, voc_root / "JPEGImages"), str(outside)):
        _set_filename(xml_path, entry)
        with pytest.raises(ValueError, match=r"000000\.xml.*" + re.escape(repr(entry))
                           + ".*outside"):
            VOCDataset(voc_root, "train")
    # a symlink inside JPEGImages that leads out is refused as well
    os.symlink(outside, voc_root / "JPEGImages" / "link.png")
    _set_filename(xml_path, "link.png")
    with pytest.raises(ValueError, match=r"000000\.xml.*'link\.png'.*outside"):
        VOCDataset(voc_root, "train")
    # a file in a subfolder of JPEGImages is inside
    (voc_root / "JPEGImages" / "sub").mkdir()
    os.replace(voc_root / "JPEGImages" / "000000.png", voc_root / "JPEGImages" / "sub" / "0.png")
    _set_filename(xml_path, "sub/0.png")
    assert VOCDataset(voc_root, "train")[0][0].shape == (32, 48, 3)


def test_voc_dataset_with_a_symlinked_image_folder_is_fine(voc_root, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("images") / "JPEGImages"
    os.replace(voc_root / "JPEGImages", elsewhere)
    os.symlink(elsewhere, voc_root / "JPEGImages")
    image, _ = VOCDataset(voc_root, "train")[1]
    assert image.shape == (32, 48, 3)


def test_voc_dataset_refuses_image_set_ids_leaving_the_dataset(voc_root):
    (voc_root / "ImageSets" / "Main" / "train.txt").write_text("000000\n../../../etc/passwd\n")
    with pytest.raises(ValueError, match=r"train\.txt.*'\.\./\.\./\.\./etc/passwd'"):
        VOCDataset(voc_root, "train")


@pytest.mark.parametrize("box, message", [
    ((0, 1, 10, 10), "xmin=0"),        # x1 = -1: left of the image
    ((1, 1, 49, 10), "xmax=49"),       # beyond W = 48
    ((1, -3, 10, 10), "ymin=-3"),
    ((1, 1, 10, 33), "ymax=33"),       # beyond H = 32
])
def test_reader_refuses_boxes_outside_the_image_as_the_writer_does(voc_root, box, message):
    xml_path = voc_root / "Annotations" / "000000.xml"
    text = xml_path.read_text()
    start, end = text.index("<bndbox>"), text.index("</bndbox>")
    xmin, ymin, xmax, ymax = box
    bndbox = (f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
              f"<ymax>{ymax}</ymax>")
    xml_path.write_text(text[:start] + bndbox + text[end:])
    with pytest.raises(ValueError, match=r"000000\.xml.*object 0 .*outside the 48x32 image.*"
                       + message):
        read_voc_annotation(xml_path)
    with pytest.raises(ValueError, match=r"objects\[0\]\['bbox'\]"):  # and the writer agrees
        write_voc_example(voc_root, "again", np.zeros((32, 48, 3), np.uint8),
                          [{"name": "car", "bbox": (xmin - 1, ymin - 1, xmax, ymax)}])


def test_reader_accepts_boxes_touching_the_image_border(tmp_path):
    written = write_voc_example(tmp_path, "edge", np.zeros((32, 48, 3), np.uint8),
                                [{"name": "car", "bbox": (0, 0, 48, 32)}], image_format="png")
    assert read_voc_annotation(written["annotation"])["objects"][0]["bbox"] == (0, 0, 48, 32)


@pytest.mark.parametrize("reader, folder, name", [
    ("read_rgb", "JPEGImages", "000000.png"),
    ("read_label_map", "SegmentationClass", "000000.png"),
])
def test_image_readers_name_the_file_of_a_decompression_bomb_or_memory_error(
        voc_root, monkeypatch, reader, folder, name):
    from detection.datasets import voc

    path = str(voc_root / folder / name)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)      # 48x32 > 2·100 pixels: a "bomb"
    with pytest.raises(ValueError, match=re.escape(path) + ".*decompression bomb"):
        getattr(voc, reader)(path)
    monkeypatch.undo()

    def out_of_memory(self, *args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(Image.Image, "load", out_of_memory)
    monkeypatch.setattr(Image.Image, "convert", out_of_memory)
    with pytest.raises(MemoryError, match=re.escape(path)):
        getattr(voc, reader)(path)
