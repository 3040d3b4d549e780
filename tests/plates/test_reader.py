"""The two-stage plate reader: letterboxing, masks mapped back to the photo, image files,
the reader on (untrained) networks with a chosen class map, drawing."""
import io
import os

import numpy as np
import pytest
from PIL import Image

import nn
import plates
from detection.retinanet import RetinaNet
from plates import reader as reader_module
from plates.classes import SEGMENTER_CHAR
from plates.crops import crop_windows
from plates.reader import (Character, Plate, PlateReader, Reading, annotate, letterbox, load_image,
                           pixel_owners, read_characters, resize_longer_side, save_annotated,
                           window_indices)
from plates.segmenter import build_model
from plates.train_detector import plate_detector_config
from plates.train_segmenter import quick_config

CROP = (40, 120)


# ---------------------------------------------------------------------------- helpers
def spelt(characters):
    """The text a list of characters spells, rows joined by one space."""
    rows = {}
    for char in characters:
        rows.setdefault(char.row, []).append(char.label)
    return " ".join("".join(rows[r]) for r in sorted(rows))


def check_plates_json(document, shapes):
    """DESIGN.md's plates.json schema; ``shapes`` maps each file to its (height, width)."""
    assert isinstance(document, dict) and isinstance(document["images"], list)
    assert [entry["file"] for entry in document["images"]] == list(shapes)
    for entry in document["images"]:
        assert {"file", "width", "height", "plates"} <= set(entry)
        assert isinstance(entry["width"], int) and isinstance(entry["height"], int)
        assert (entry["height"], entry["width"]) == shapes[entry["file"]]
        for plate in entry["plates"]:
            assert set(plate) == {"box", "score", "text", "characters"}
            assert isinstance(plate["text"], str) and isinstance(plate["score"], float)
            boxes = [plate["box"]] + [c["box"] for c in plate["characters"]]
            for x1, y1, x2, y2 in boxes:
                assert 0 <= x1 < x2 <= entry["width"] and 0 <= y1 < y2 <= entry["height"]
            labels = [c["label"] for c in plate["characters"]]
            assert all(label in "0123456789#" and len(label) == 1 for label in labels)
            assert all(isinstance(c["score"], float) and 0 <= c["score"] <= 1
                       for c in plate["characters"])
            assert plate["text"].replace(" ", "") == "".join(labels)
            assert "  " not in plate["text"] and plate["text"] == plate["text"].strip()


def two_row_class_map():
    """A crop's class map reading ``"17 3#"``: two rows of blobs (segmenter labels)."""
    class_map = np.zeros(CROP, np.int64)
    for col, label in ((20, 2), (40, 8)):  # '1', '7'
        class_map[4:17, col:col + 12] = label
    for col, label in ((20, 4), (40, SEGMENTER_CHAR)):  # '3', '#'
        class_map[23:36, col:col + 12] = label
    return class_map


@pytest.fixture(scope="module")
def tiny_reader():
    """A reader on freshly initialised networks whose detector calls everything a plate."""
    nn.manual_seed(0)
    detector = RetinaNet(plate_detector_config("small", quick=True))
    k = detector.config.num_classes
    bias = detector.head.cls_logits.bias.data.reshape(-1, k)  # (A, K)
    bias[:, 1] = 6.0  # plate: score ~0.998 everywhere
    bias[:, 0] = -8.0  # car: never
    segmenter = build_model(quick_config(crop_size=CROP))
    return PlateReader(detector, segmenter, detector_size=128, detector_classes=("car", "plate"),
                       crop_size=CROP, crop_padding=0.05, plate_threshold=0.5, max_plates=3)


# ---------------------------------------------------------------------------- stage one
def test_letterbox_keeps_the_aspect_pads_black_and_maps_boxes_back():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 1000, 3), dtype=np.uint8)
    padded, scale = letterbox(image, 256, multiple=64)
    assert padded.shape == (128, 256, 3)  # 300 * 0.256 = 76.8 -> 77, padded to 128
    expected = np.asarray(Image.fromarray(image).resize((256, 77), Image.Resampling.BILINEAR))
    assert np.array_equal(padded[:77], expected)
    assert not padded[77:].any()
    np.testing.assert_allclose(scale, [1000 / 256, 300 / 77, 1000 / 256, 300 / 77])
    # A box of the small image covering the whole content is the whole photo.
    np.testing.assert_allclose(np.array([0, 0, 256, 77]) * scale, [0, 0, 1000, 300])


@pytest.mark.parametrize("shape, size, expected", [
    ((1024, 1024, 3), 256, (256, 256)), ((100, 2000, 3), 256, (13, 256)),
    ((16, 16, 3), 256, (256, 256)), ((2000, 3, 3), 100, (100, 1))])
def test_resize_longer_side_shapes(shape, size, expected):
    image = np.full(shape, 7, np.uint8)
    assert resize_longer_side(image, size).shape[:2] == expected


@pytest.mark.parametrize("image, size", [(np.zeros((4, 4), np.uint8), 8),
                                         (np.zeros((4, 4, 3), np.float32), 8),
                                         (np.zeros((0, 4, 3), np.uint8), 8),
                                         (np.zeros((4, 4, 3), np.uint8), 0)])
def test_resize_refuses_bad_input(image, size):
    with pytest.raises(ValueError):
        resize_longer_side(image, size)


# ----------------------------------------------------------------- masks to the photo
def test_window_indices_equal_a_footprint_loop():
    rng = np.random.default_rng(1)
    for _ in range(20):
        low = rng.uniform(-50, 50)
        high = low + rng.uniform(5, 300)
        n = int(rng.integers(4, 130))
        start = int(np.floor(low)) - 3
        stop = int(np.ceil(high)) + 3
        got = window_indices((low, high), n, start, stop)
        step = (high - low) / n
        for x in range(start, stop):
            centre, expected = x + 0.5, -1
            for j in range(n):  # the crop pixel whose footprint holds the centre
                if low + j * step <= centre < low + (j + 1) * step:
                    expected = j
            assert got[x - start] == expected, (low, high, n, x)


def test_pixel_owners_nearest_box_and_background():
    class_map = np.zeros((10, 20), np.int64)
    class_map[2:8, 2:6] = 3
    class_map[2:8, 8:12] = 5
    class_map[0, 19] = 7  # a speck outside every box
    boxes = np.array([[2, 2, 6, 8], [5, 2, 12, 8]], np.float32)  # overlapping at column 5
    owners = pixel_owners(class_map, boxes)
    assert owners.shape == (10, 20) and owners.dtype == np.int64
    assert (owners[2:8, 2:5] == 0).all()
    assert (owners[2:8, 8:12] == 1).all()
    # column 5 (centre 5.5) is inside both boxes: nearer box 0's centre x=4 than box 1's 8.5
    assert (owners[2:8, 5] == 0).all()
    assert owners[0, 19] == -1 and (owners[class_map == 0] == -1).all()
    assert (pixel_owners(class_map, np.zeros((0, 4))) == -1).all()


def test_read_characters_maps_masks_and_boxes_through_the_window():
    class_map = two_row_class_map()
    window = np.array([100, 50, 100 + 2 * CROP[1], 50 + 2 * CROP[0]], np.float32)  # 2x2 px
    text, characters = read_characters(class_map, window, CROP, image_size=(400, 600))
    assert text == "17 3#" and spelt(characters) == text
    assert [c.label for c in characters] == ["1", "7", "3", "#"]
    assert [c.row for c in characters] == [0, 0, 1, 1]
    first = characters[0]  # crop rows 4..16, columns 20..31
    np.testing.assert_allclose(first.box, [100 + 40, 50 + 8, 100 + 64, 50 + 34])
    expected = np.zeros((400, 600), bool)
    expected[58:84, 140:164] = True
    assert np.array_equal(first.full_mask(400, 600), expected)
    assert first.score == 1.0


def test_read_characters_masks_equal_a_pixel_loop_for_any_window():
    rng = np.random.default_rng(2)
    class_map = two_row_class_map()
    class_map[10:14, 70:90] = 6  # a third, wide character in the first row
    height, width = 480, 640
    for _ in range(5):
        x1, y1 = rng.uniform(-20, 300, 2)
        w = rng.uniform(60, 500)
        window = np.array([x1, y1, x1 + w, y1 + w / 3], np.float64)
        text, characters = read_characters(class_map, window, CROP, (height, width))
        assert text.replace(" ", "") == "".join(c.label for c in characters)
        crop_boxes = _crop_boxes(class_map)
        owners = pixel_owners(class_map, crop_boxes)
        image_boxes = _image_boxes(crop_boxes, window, height, width)
        for char in characters:
            k = int(np.abs(image_boxes - char.box).sum(axis=1).argmin())
            x0, y0 = char.mask_origin
            assert (x0, y0) == (int(np.floor(char.box[0])), int(np.floor(char.box[1])))
            expected = np.zeros(char.mask.shape, bool)
            for yy in range(expected.shape[0]):  # photo pixel -> the crop pixel under it
                for xx in range(expected.shape[1]):
                    i = int(np.floor((y0 + yy + 0.5 - window[1]) * CROP[0]
                                     / (window[3] - window[1])))
                    j = int(np.floor((x0 + xx + 0.5 - window[0]) * CROP[1]
                                     / (window[2] - window[0])))
                    expected[yy, xx] = 0 <= i < CROP[0] and 0 <= j < CROP[1] \
                        and owners[i, j] == k
            assert np.array_equal(char.mask, expected)
            assert char.mask.any()


def _crop_boxes(class_map):
    from plates.reading import read_plate

    return read_plate(class_map)["boxes"]


def _image_boxes(crop_boxes, window, height, width):
    from plates.crops import crop_to_image

    boxes = crop_to_image(crop_boxes, window, CROP)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return boxes


def test_characters_outside_the_photo_are_left_out_of_the_text():
    class_map = two_row_class_map()
    # The window starts 70 px left of the photo: the crop's columns < 35 lie outside,
    # the first character of each row (columns 20..31) with them.
    window = np.array([-70, 0, 170, 80], np.float32)
    text, characters = read_characters(class_map, window, CROP, (80, 200))
    assert text == "7 #" and [c.label for c in characters] == ["7", "#"]
    with pytest.raises(ValueError, match="class_map"):
        read_characters(np.zeros((8, 8), np.int64), window, CROP, (80, 200))
    with pytest.raises(ValueError, match="image_size"):
        read_characters(class_map, window, CROP, (80, 200, 3))


def test_read_characters_of_an_empty_class_map_is_no_character():
    window = np.array([10, 20, 10 + CROP[1], 20 + CROP[0]], np.float32)
    text, characters = read_characters(np.zeros(CROP, np.int64), window, CROP, 300)
    assert text == "" and characters == []


# ------------------------------------------------------------------------------ images
def _png(image, mode=None, **info):
    buffer = io.BytesIO()
    picture = Image.fromarray(image) if mode is None else Image.fromarray(image, mode)
    picture.save(buffer, format="PNG", **info)
    return buffer.getvalue()


def test_load_image_modes(tmp_path):
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:3, :, 3] = 255  # top half opaque red, bottom transparent -> white
    (tmp_path / "rgba.png").write_bytes(_png(rgba))
    got = load_image(tmp_path / "rgba.png")
    assert got.shape == (6, 8, 3) and got.dtype == np.uint8
    assert (got[:3] == [200, 0, 0]).all() and (got[3:] == 255).all()

    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    (tmp_path / "grey.png").write_bytes(_png(grey))
    assert np.array_equal(load_image(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, 2))

    deep = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1365)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    got = load_image(tmp_path / "deep.png")
    assert np.array_equal(got[..., 0], np.rint(deep / 257.0).astype(np.uint8))

    palette = Image.fromarray(grey % 4, "L").convert("P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    palette.save(tmp_path / "palette.png")
    got = load_image(tmp_path / "palette.png")
    assert (got[0, 0] == [255, 0, 0]).all() and (got[0, 1] == [0, 255, 0]).all()


def test_load_image_applies_the_exif_orientation(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :10] = 255  # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(image).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    got = load_image(tmp_path / "rotated.jpg")
    assert got.shape == (40, 20, 3)  # displayed upright: portrait
    assert got[:10].mean() > 200 and got[-10:].mean() < 50  # the band is now on top


def test_load_image_errors_name_the_file(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "notes.png").write_text("not an image")
    for name in ("cut.jpg", "notes.png"):
        with pytest.raises(ValueError, match=name):
            load_image(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(TypeError):
        load_image(3)


# --------------------------------------------------------------------------- the reader
def test_the_reader_reads_every_plate_in_one_segmenter_batch(tiny_reader, monkeypatch):
    calls = []

    def chosen_maps(model, crops, batch_size=64, tta=False):
        calls.append(len(crops))
        return np.broadcast_to(two_row_class_map(), crops.shape[:3]).copy()

    monkeypatch.setattr(reader_module, "predict", chosen_maps)
    image = np.random.default_rng(3).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    reading = tiny_reader.read(image)
    assert calls == [3]  # max_plates crops, one batch
    assert (reading.width, reading.height) == (500, 300) and len(reading.plates) == 3
    scores = [p.score for p in reading.plates]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.5

    for plate in reading.plates:
        assert plate.crop.shape == CROP + (3,) and plate.class_map.shape == CROP
        np.testing.assert_allclose(plate.window, crop_windows(plate.box[None], CROP, 0.05)[0])
        assert plate.text == spelt(plate.characters)
        for char in plate.characters:  # every mask pixel lies in its box
            ys, xs = np.nonzero(char.full_mask(300, 500))
            assert xs.min() >= np.floor(char.box[0]) and xs.max() < np.ceil(char.box[2])
            assert ys.min() >= np.floor(char.box[1]) and ys.max() < np.ceil(char.box[3])
    check_plates_json({"images": [reading.to_json("x.png")]}, {"x.png": (300, 500)})


def test_plate_boxes_threshold_overlap_size_and_count(tiny_reader, monkeypatch):
    detections = {
        "boxes": np.array([[0, 0, 100, 30], [40, 0, 140, 30],  # IoU 60/140 = 0.43
                           [200, 0, 300, 30], [0, 50, 100, 80], [300, 50, 300.5, 80],
                           [0, 100, 100, 130]], np.float32),
        "scores": np.array([0.9, 0.8, 0.7, 0.95, 0.9, 0.4], np.float32),
        "labels": np.array([2, 2, 2, 1, 2, 2])}  # a car, a plate half a pixel wide
    assert tiny_reader.plate_boxes(detections).tolist() == [0, 2]
    assert tiny_reader.plate_boxes(detections, threshold=0.0).tolist() == [0, 2, 5]
    monkeypatch.setitem(tiny_reader.settings, "plate_nms", 0.5)
    assert tiny_reader.plate_boxes(detections).tolist() == [0, 1, 2]
    monkeypatch.setitem(tiny_reader.settings, "max_plates", 2)
    assert tiny_reader.plate_boxes(detections).tolist() == [0, 1]
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
             "labels": np.zeros(0, np.int64)}
    assert tiny_reader.plate_boxes(empty).shape == (0,)


@pytest.mark.parametrize("shape", [(16, 16, 3), (100, 2000, 3), (2000, 100, 3)])
def test_the_reader_takes_any_size_and_aspect(tiny_reader, shape):
    image = np.random.default_rng(4).integers(0, 256, shape, dtype=np.uint8)
    reading = tiny_reader.read(image)
    height, width = shape[:2]
    assert (reading.height, reading.width) == (height, width)
    boxes = reading.detections["boxes"]
    assert len(boxes) and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
    assert (boxes >= 0).all()
    check_plates_json({"images": [reading.to_json("y")]}, {"y": (height, width)})


def test_the_reader_refuses_bad_input(tiny_reader):
    with pytest.raises(ValueError, match="image"):
        tiny_reader.read(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="plate_threshold"):
        PlateReader(tiny_reader.detector, tiny_reader.segmenter, 128, ("car", "plate"), CROP,
                    0.05, plate_threshold=1.5)
    with pytest.raises(ValueError, match="plate_nms"):
        PlateReader(tiny_reader.detector, tiny_reader.segmenter, 128, ("car", "plate"), CROP,
                    0.05, plate_nms=-0.1)
    with pytest.raises(ValueError, match="plate"):
        PlateReader(tiny_reader.detector, tiny_reader.segmenter, 128, ("car", "bus"), CROP, 0.05)
    with pytest.raises(FileNotFoundError, match="detector"):
        PlateReader.from_run("/nonexistent/run")
    with pytest.raises(TypeError, match="unknown reader settings"):
        PlateReader.from_run("/nonexistent/run", speed=3)
    assert plates.PlateReader is PlateReader


def test_an_empty_photo_reads_no_plate(tiny_reader, monkeypatch):
    monkeypatch.setitem(tiny_reader.settings, "plate_threshold", 1.0)
    reading = tiny_reader.read(np.zeros((64, 64, 3), np.uint8))
    assert reading.plates == [] and reading.to_json("z")["plates"] == []


def test_annotate_tints_the_masks_and_draws_the_boxes(tiny_reader, monkeypatch, tmp_path):
    monkeypatch.setattr(reader_module, "predict",
                        lambda model, crops, **kw: np.broadcast_to(
                            two_row_class_map(), crops.shape[:3]).copy())
    image = np.full((300, 500, 3), 128, np.uint8)
    reading = tiny_reader.read(image)
    drawn = annotate(image, reading)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    char = reading.plates[-1].characters[0]
    mask = char.full_mask(300, 500)
    assert (drawn[mask] != 128).any(axis=1).all()  # every mask pixel is tinted
    far = np.ones((300, 500), bool)
    for plate in reading.plates:
        # the crop window (where characters are), the box and its label above or below it
        x1, y1 = np.minimum(plate.box[:2], plate.window[:2])
        x2, y2 = np.maximum(plate.box[2:], plate.window[2:])
        far[max(0, int(y1) - 30):int(y2) + 30, max(0, int(x1) - 4):int(max(x2, x1 + 150)) + 4] \
            = False
    assert far.mean() > 0.3 and (drawn[far] == 128).all()  # nothing drawn away from the plates
    save_annotated(tmp_path / "a.jpg", image, reading)
    assert load_image(tmp_path / "a.jpg").shape == image.shape
    assert os.listdir(tmp_path) == ["a.jpg"]
    with pytest.raises(ValueError, match="reading"):
        annotate(np.zeros((10, 10, 3), np.uint8), reading)


def test_json_boxes_are_rounded_outwards():
    char = Character(box=np.array([1.0012, 0.0, 1.0049, 7.001], np.float32), label="5",
                     score=0.5, row=0, mask=np.zeros((1, 1), bool), mask_origin=(1, 0))
    plate = Plate(box=np.array([0.004, 0.5, 8.0, 8.0], np.float32), score=0.9, text="5",
                  characters=[char], window=np.zeros(4, np.float32), crop=None, class_map=None)
    entry = Reading(width=8, height=8, plates=[plate], detections={}).to_json("p.png")
    assert entry["plates"][0]["box"] == [0.0, 0.5, 8.0, 8.0]
    assert entry["plates"][0]["characters"][0]["box"] == [1.0, 0.0, 1.01, 7.01]
    check_plates_json({"images": [entry]}, {"p.png": (8, 8)})


def test_full_mask_of_a_character():
    char = Character(box=np.array([2, 1, 4, 3], np.float32), label="5", score=1.0, row=0,
                     mask=np.array([[True, False], [True, True]]), mask_origin=(2, 1))
    expected = np.zeros((4, 6), bool)
    expected[1, 2] = expected[2, 2] = expected[2, 3] = True
    assert np.array_equal(char.full_mask(4, 6), expected)
