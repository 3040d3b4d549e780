"""Plate crops for stage two: windows, resampling against a loop reference, texts, dataset."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from plates.crops import (
    PlateCropDataset, crop_plates, crop_to_image, crop_windows, plate_texts, reading_order,
)
from detection.datasets.voc import write_class_names, write_image_sets, write_voc_example
from plates.classes import PLATE_CLASSES


def crop_plates_reference(image, windows, size, class_mask):
    """Slow, obviously-correct resampling: one pixel at a time."""
    height, width = size
    image_h, image_w = image.shape[:2]
    crops = np.zeros((len(windows), height, width, 3), np.uint8)
    masks = np.zeros((len(windows), height, width), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(windows, np.float64)):
        for i in range(height):
            for j in range(width):
                x = x1 + (j + 0.5) * (x2 - x1) / width
                y = y1 + (i + 0.5) * (y2 - y1) / height
                if not (0 <= x < image_w and 0 <= y < image_h):
                    masks[k, i, j] = 255
                    continue
                masks[k, i, j] = class_mask[int(np.floor(y)), int(np.floor(x))]
                fx, fy = x - 0.5, y - 0.5
                x0, y0 = int(np.floor(fx)), int(np.floor(fy))
                ax, ay = fx - x0, fy - y0
                value = np.zeros(3)
                for dy, wy in ((0, 1 - ay), (1, ay)):
                    for dx, wx in ((0, 1 - ax), (1, ax)):
                        yy = min(max(y0 + dy, 0), image_h - 1)
                        xx = min(max(x0 + dx, 0), image_w - 1)
                        value += wy * wx * image[yy, xx]
                crops[k, i, j] = np.clip(np.rint(value), 0, 255)
    return crops, masks


def test_crop_windows_pad_then_grow_to_the_aspect_ratio():
    boxes = np.array([[10, 10, 40, 20], [0, 0, 10, 10], [0, 0, 60, 10]], np.float32)
    windows = crop_windows(boxes, size=(32, 96), padding=0.0)
    assert windows.dtype == np.float32
    assert windows[0].tolist() == [10, 10, 40, 20]  # already 3:1
    assert windows[1].tolist() == [-10, 0, 20, 10]  # widened around the centre
    assert windows[2].tolist() == [0, -5, 60, 15]  # heightened around the centre
    padded = crop_windows(boxes[:1], size=(32, 96), padding=0.5)
    assert padded[0].tolist() == [-5, 5, 55, 25]
    assert crop_windows(np.zeros((0, 4)), (32, 96)).shape == (0, 4)


def test_crop_of_an_aligned_window_is_the_image_slice():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)
    class_mask = rng.integers(0, 14, (20, 40), dtype=np.uint8)
    crops, masks, windows = crop_plates(image, [[10, 5, 25, 10]], size=(5, 15), padding=0.0,
                                        class_mask=class_mask)
    assert np.array_equal(crops[0], image[5:10, 10:25])
    assert np.array_equal(masks[0], class_mask[5:10, 10:25])
    assert windows.tolist() == [[10, 5, 25, 10]]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 4), st.sampled_from([(4, 12), (6, 9), (8, 8)]),
       st.sampled_from([0.0, 0.1, 0.3]))
def test_crop_plates_matches_the_loop_reference(seed, count, size, padding):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    class_mask = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    xy = rng.uniform(-4, 20, size=(count, 2))
    wh = rng.uniform(0.5, 14, size=(count, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)  # some reach outside the image
    crops, masks, windows = crop_plates(image, boxes, size, padding, class_mask)
    want_crops, want_masks = crop_plates_reference(image, windows, size, class_mask)
    assert crops.shape == (count,) + size + (3,) and crops.dtype == np.uint8
    assert masks.shape == (count,) + size and masks.dtype == np.uint8
    # float32 vs float64 weights may round a .5 differently: at most 1 grey level apart.
    assert np.abs(crops.astype(int) - want_crops).max(initial=0) <= 1
    assert np.array_equal(masks, want_masks)


def test_crop_to_image_inverts_the_crop_mapping():
    boxes = np.array([[30.5, 40, 70, 52]])
    _, _, windows = crop_plates(np.zeros((100, 100, 3), np.uint8), boxes, size=(32, 96))
    # The plate box in crop pixels, mapped back, is the plate box.
    window = windows[0].astype(np.float64)
    scale_x = 96 / (window[2] - window[0])
    scale_y = 32 / (window[3] - window[1])
    in_crop = (boxes - window[[0, 1, 0, 1]]) * [scale_x, scale_y, scale_x, scale_y]
    np.testing.assert_allclose(crop_to_image(in_crop, window, (32, 96)), boxes, atol=1e-4)


@pytest.mark.parametrize("shape", [(0, 4), (0, 2), (2, 0, 4)])
def test_crop_to_image_of_no_points_is_empty_of_the_same_shape(shape):
    mapped = crop_to_image(np.zeros(shape, np.float32), [10.0, 20.0, 58.0, 36.0], (32, 96))
    assert mapped.shape == shape and mapped.dtype == np.float64


@pytest.mark.parametrize("points", [np.zeros((2, 3)), np.zeros((0, 3)), np.float64(1.0)])
def test_crop_to_image_rejects_points_without_xy_pairs(points):
    with pytest.raises(ValueError, match="points"):
        crop_to_image(points, [10.0, 20.0, 58.0, 36.0], (32, 96))


@pytest.mark.parametrize("kwargs, message", [
    (dict(image=np.zeros((4, 4), np.uint8)), "image"),
    (dict(image=np.zeros((4, 4, 3), np.float32)), "image"),
    (dict(boxes=np.zeros((1, 3))), "boxes"),
    (dict(boxes=np.array([[2, 0, 1, 1]])), "x2 > x1"),
    (dict(boxes=np.array([[0, 0, np.inf, 1]])), "finite"),
    (dict(size=(32,)), "size"),
    (dict(size=(0, 9)), "size"),
    (dict(padding=-0.1), "padding"),
    (dict(class_mask=np.zeros((4, 5), np.uint8)), "class_mask"),
])
def test_crop_plates_rejects_bad_input(kwargs, message):
    args = dict(image=np.zeros((4, 4, 3), np.uint8), boxes=np.array([[0, 0, 2, 2]]))
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        crop_plates(**args)


def _char(name, box, text=None):
    obj = {"name": name, "bbox": box, "difficult": False, "truncated": False, "text": text}
    return obj


def test_plate_texts_reading_order_rows_and_ownership():
    objects = [
        _char("car", (0, 0, 100, 60)),
        _char("plate", (10, 10, 40, 30)),  # a two-row plate
        _char("5", (22, 21, 26, 28)), _char("1", (12, 21, 16, 28)),  # second row
        _char("char", (17, 21, 21, 28), "."),
        _char("2", (20, 11, 24, 18)), _char("char", (25, 11, 29, 18), "B"),
        _char("9", (14, 12, 18, 19)),  # first row, slightly lower
        _char("plate", (50, 40, 90, 50)),  # a one-row plate
        _char("char", (52, 41, 56, 49), "A"), _char("char", (58, 41, 62, 49)),
        _char("7", (95, 5, 99, 9)),  # outside every plate: nobody's
    ]
    assert plate_texts(objects) == [(1, "92B 1.5"), (8, "A?")]
    assert plate_texts(objects[:1]) == []
    assert plate_texts([_char("plate", (0, 0, 5, 5))]) == [(0, "")]
    # A character inside two plates belongs to the smaller one.
    nested = [_char("plate", (0, 0, 50, 50)), _char("plate", (10, 10, 20, 20)),
              _char("3", (12, 12, 15, 15))]
    assert plate_texts(nested) == [(0, ""), (1, "3")]


def _row_of_glyphs(x0, y0, slope, heights, width=4, step=5):
    """Character boxes along a line of the given slope; heights give dots and dashes."""
    boxes = []
    for i, h in enumerate(heights):
        x = x0 + i * step
        y_base = y0 + slope * x  # the row's baseline under the tilt
        boxes.append([x, y_base - h, x + width, y_base])
    return np.array(boxes, dtype=np.float64)


def test_reading_order_keeps_a_tilted_one_row_plate_in_one_row():
    # "29A-123.45" tilted by ~17 degrees, small glyphs (only parts of them survive in
    # the masks, so their boxes are short); the dash floats mid-height, the dot sits
    # on the baseline. Sorting raw centres against a gap of half the median glyph
    # height (1.5 px) would cut this row wherever the tilt adds 1.5 px.
    heights = [3, 3, 3, 1, 3, 3, 3, 1, 3, 3]
    boxes = _row_of_glyphs(0, 20, 0.3, heights)
    boxes[3, 1:4:2] -= 1  # the dash
    shuffled = np.random.default_rng(0).permutation(len(boxes))
    order, rows = reading_order(boxes[shuffled], plate_box=(-2, 14, 52, 38))
    assert shuffled[order].tolist() == list(range(10))
    assert rows.tolist() == [0] * 10


def test_reading_order_splits_a_small_two_row_plate():
    # A 34x18 motorbike plate: rows only ~6.5 px apart (0.36 plate heights).
    top = _row_of_glyphs(12, 181, 0.0, [5, 5, 5], step=4)
    bottom = _row_of_glyphs(9, 187.5, 0.0, [5, 5, 1, 5, 5], step=4)
    boxes = np.concatenate([bottom, top])  # bottom row listed first
    order, rows = reading_order(boxes, plate_box=(175, 174, 209, 192))
    assert order.tolist() == [5, 6, 7, 0, 1, 2, 3, 4]
    assert rows.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    empty_order, empty_rows = reading_order(np.zeros((0, 4)), plate_box=(0, 0, 1, 1))
    assert empty_order.shape == (0,) and empty_rows.dtype == np.int64


@pytest.fixture
def plate_root(tmp_path):
    """Two images: one with a yellow plate "7A" and a car, one without plates."""
    image = np.full((40, 60, 3), 90, np.uint8)
    class_mask = np.zeros((40, 60), np.uint8)
    image[20:30, 10:40] = (230, 200, 40)
    class_mask[10:35, 5:55] = 1
    class_mask[20:30, 10:40] = 2
    class_mask[22:28, 14:18] = 10  # "7"
    class_mask[22:28, 22:26] = 13  # "A"
    image[class_mask >= 3] = 20
    objects = [{"name": "car", "bbox": (5, 10, 55, 35)},
               {"name": "plate", "bbox": (10, 20, 40, 30)},
               {"name": "7", "bbox": (14, 22, 18, 28), "text": "7"},
               {"name": "char", "bbox": (22, 22, 26, 28), "text": "A"}]
    write_voc_example(tmp_path, "a", image, objects, class_mask, image_format="png")
    write_voc_example(tmp_path, "b", image, objects[:1], np.minimum(class_mask, 1),
                      image_format="png")
    write_image_sets(tmp_path, {"train": ["a", "b"]})
    write_class_names(tmp_path, PLATE_CLASSES)
    return tmp_path


def test_plate_crop_dataset(plate_root):
    dataset = PlateCropDataset(plate_root, "train", size=(16, 48), padding=0.0)
    assert len(dataset) == 1
    crop, mask, text = dataset[0]
    assert text == "7A"
    assert crop.shape == (16, 48, 3) and crop.dtype == np.uint8
    assert mask.shape == (16, 48) and mask.dtype == np.uint8
    # The 30x10 plate window is 3:1: crop pixels are 0.625 image pixels.
    # The segmenter's labels: "7" is 1 + 7, "A" another character (11); car and plate
    # are background.
    assert set(np.unique(mask).tolist()) == {0, 8, 11}
    assert np.array_equal(mask[8, 6:8], [8, 8])
    raw = PlateCropDataset(plate_root, "train", size=(16, 48), padding=0.0,
                           characters_only=False)
    assert set(np.unique(raw[0][1]).tolist()) == {2, 10, 13}
    seen = []
    wrapped = PlateCropDataset(plate_root, "train", transforms=lambda c, m, t: seen.append(t) or t)
    assert wrapped[0] == "7A" and seen == ["7A"]
    with pytest.raises(IndexError):
        dataset[1]


def test_plate_crop_dataset_needs_class_masks(plate_root):
    import os

    os.remove(plate_root / "SegmentationClass" / "b.png")
    with pytest.raises(FileNotFoundError, match="b.png"):
        PlateCropDataset(plate_root, "train")


def test_on_generated_scenes(tmp_path):
    """The readers on the generator's output: boxes tight to masks, texts in order."""
    from detection.datasets.coco import COCODataset, voc_to_coco
    from plates.synthetic import generate_plate_dataset
    from detection.datasets.transforms import masks_to_boxes
    from detection.datasets.voc import VOCDataset

    generate_plate_dataset(tmp_path, 6, seed=3, image_size=128, splits=(1.0, 0.0, 0.0),
                           progress=False)
    voc = VOCDataset(tmp_path, "train", return_masks=True, return_instance_masks=True)
    assert len(voc) == 6
    plates_seen = 0
    for i in range(len(voc)):
        image, target = voc[i]
        assert image.shape == (128, 128, 3)
        assert np.array_equal(masks_to_boxes(target["instance_masks"]), target["boxes"])
        # The class map agrees with the instance masks and their labels.
        for mask, label in zip(target["instance_masks"], target["labels"]):
            assert (target["masks"][mask] == label).all()
        plates_seen += int((target["labels"] == 2).sum())
    assert plates_seen >= 3
    crops = PlateCropDataset(tmp_path, "train")
    assert len(crops) == plates_seen
    for index in range(len(crops)):
        image_index, box, text = crops.items[index]
        objects = voc.annotation(image_index)["objects"]
        plate = next(o for o in objects if o["name"] == "plate" and o["bbox"] == box)
        # Characters can vanish from the masks (a dot under a pixel), never reorder.
        remaining = iter(plate["text"].replace(" ", ""))
        assert all(c in remaining for c in text.replace(" ", ""))
        assert text.count(" ") <= plate["text"].count(" ")
        crop, mask, _ = crops[index]
        assert crop.shape == (40, 120, 3) and mask.shape == (40, 120)  # the default CROP_SIZE
    coco = voc_to_coco(tmp_path, "train", tmp_path / "gt.json", include_masks=True)
    assert len(coco["annotations"]) == sum(len(voc.load_target(i)["boxes"]) for i in range(6))
    back = COCODataset(tmp_path / "gt.json", tmp_path / "JPEGImages", return_instance_masks=True)
    for i in range(len(back)):
        assert np.array_equal(back[i][1]["instance_masks"], voc[i][1]["instance_masks"])
