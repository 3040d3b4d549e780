"""COCO JSON: RLE codec, writers, reader, VOC conversion round trips, pycocotools oracle."""
import json
import os
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from plates.classes import PLATE_CLASSES
from detection.datasets.coco import (
    COCODataset, polygons_to_mask, rle_decode, rle_encode, voc_to_coco, write_coco_ground_truth,
    write_coco_predictions,
)
from detection.datasets.voc import (VOCDataset, write_class_names, write_image_sets,
                                    write_voc_example)
from tests.oracles import require


def rle_counts_reference(mask):
    """Slow run-length counts: walk the column-major pixels one by one."""
    counts, current, run = [], 0, 0
    for value in np.asarray(mask, bool).T.ravel():
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return counts


def counts_string_reference(counts):
    """maskApi.c's rleToString, transcribed loop for loop."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


@st.composite
def binary_masks(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    height, width = draw(st.integers(0, 30)), draw(st.integers(0, 30))
    density = draw(st.sampled_from([0.0, 0.02, 0.5, 0.98, 1.0]))
    mask = rng.random((height, width)) < density
    if draw(st.booleans()) and mask.size:  # big blocks: long runs, multi-group counts
        mask[: height // 2] = draw(st.booleans())
    return mask


@settings(max_examples=60, deadline=None)
@given(binary_masks())
def test_rle_matches_the_loop_reference_and_round_trips(mask):
    rle = rle_encode(mask)
    assert rle["size"] == list(mask.shape)
    counts = rle_counts_reference(mask) if mask.size else []
    assert rle["counts"] == counts_string_reference(counts)
    assert np.array_equal(rle_decode(rle), mask)
    assert np.array_equal(rle_decode({"size": rle["size"], "counts": counts}), mask)


def test_rle_decode_rejects_bad_input():
    with pytest.raises(ValueError, match="size"):
        rle_decode({"counts": "1"})
    with pytest.raises(ValueError, match="sum"):
        rle_decode({"size": [2, 2], "counts": [1, 1]})
    with pytest.raises(ValueError, match="middle of a count"):
        rle_decode({"size": [2, 2], "counts": "P"})  # continuation bit on the last char
    with pytest.raises(ValueError, match="alphabet"):
        rle_decode({"size": [2, 2], "counts": " "})


def test_polygons_to_mask_fills_a_square():
    mask = polygons_to_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 6, 8)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (2, 6, 1, 4)


# ------------------------------------------------------------------------- fixtures
def _voc(tmp_path):
    """Three images: two with cars/plates/characters (one difficult), one empty."""
    rng = np.random.default_rng(7)
    ids = []
    for i in range(3):
        image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        class_mask = np.zeros((30, 40), np.uint8)
        instance_mask = np.zeros((30, 40), np.uint8)
        objects = []
        if i < 2:
            objects = [{"name": "car", "bbox": (1, 2, 35, 28)},
                       {"name": "plate", "bbox": (10 + i, 18, 26, 25), "difficult": i == 1},
                       {"name": "4", "bbox": (12 + i, 19, 15 + i, 24), "text": "4"}]
            for k, (obj, cls) in enumerate(zip(objects, (1, 2, 7)), start=1):
                x1, y1, x2, y2 = obj["bbox"]
                class_mask[y1:y2, x1:x2] = cls
                instance_mask[y1:y2, x1:x2] = k
        write_voc_example(tmp_path, f"im{i}", image, objects, class_mask, instance_mask,
                          image_format="png")
        ids.append(f"im{i}")
    write_image_sets(tmp_path, {"train": ids})
    write_class_names(tmp_path, PLATE_CLASSES)
    return tmp_path


# ------------------------------------------------------------------------- writers
def test_ground_truth_from_target_list(tmp_path):
    targets = [
        {"boxes": np.array([[1, 2, 11, 7]], np.float32), "labels": np.array([2]),
         "image_id": "a"},
        {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
         "image_id": "b"},
    ]
    path = tmp_path / "gt.json"
    coco = write_coco_ground_truth(path, targets, PLATE_CLASSES, image_sizes=[(8, 12), (5, 5)])
    assert json.loads(path.read_text()) == coco
    assert [c["name"] for c in coco["categories"]] == list(PLATE_CLASSES[1:])
    assert coco["categories"][1]["id"] == 2
    assert coco["images"] == [{"id": 1, "file_name": "a", "width": 12, "height": 8},
                              {"id": 2, "file_name": "b", "width": 5, "height": 5}]
    assert coco["annotations"] == [{"id": 1, "image_id": 1, "category_id": 2,
                                    "bbox": [1.0, 2.0, 10.0, 5.0], "area": 50.0, "iscrowd": 0}]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_sizes=None), "image_sizes"),
    (dict(class_names=("background", "car")), "not categories"),
    (dict(image_ids=[1, 1]), "distinct"),
    (dict(targets=[{"boxes": np.zeros((1, 3)), "labels": [1]}]), "boxes"),
    (dict(targets=[{"boxes": np.zeros((1, 4)), "labels": [1.5]}]), "labels"),
    (dict(include_masks=True), "instance_masks"),
])
def test_ground_truth_bad_input_writes_nothing(tmp_path, kwargs, message):
    args = dict(targets=[{"boxes": np.array([[0, 0, 2, 2]]), "labels": np.array([2])}] * 2,
                class_names=PLATE_CLASSES, image_sizes=[(4, 4)] * 2)
    args.update(kwargs)
    if "targets" in kwargs:
        args["image_sizes"] = [(4, 4)] * len(args["targets"])
    targets = args.pop("targets")
    with pytest.raises((ValueError, TypeError), match=message):
        write_coco_ground_truth(tmp_path / "gt.json", targets, **args)
    assert os.listdir(tmp_path) == []


def test_predictions_with_string_ids(tmp_path):
    root = _voc(tmp_path / "voc")
    gt = voc_to_coco(root, "train", tmp_path / "gt.json")
    predictions = [
        {"boxes": np.array([[1, 2, 35, 28]]), "scores": np.array([0.75]), "labels": np.array([1])},
        {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)},
    ]
    results = write_coco_predictions(tmp_path / "dt.json", predictions, ["im2", "im0.png"],
                                     ground_truth=tmp_path / "gt.json")
    assert results == [{"image_id": 3, "category_id": 1, "bbox": [1.0, 2.0, 34.0, 26.0],
                        "score": 0.75}]
    assert json.loads((tmp_path / "dt.json").read_text()) == results
    assert [i["file_name"] for i in gt["images"]] == ["im0.png", "im1.png", "im2.png"]
    with pytest.raises(ValueError, match="'im9' is not a file_name"):
        write_coco_predictions(tmp_path / "x.json", predictions[:1], ["im9"], ground_truth=gt)
    with pytest.raises(ValueError, match="ground_truth"):
        write_coco_predictions(tmp_path / "x.json", predictions[:1], ["im0"])
    with pytest.raises(ValueError, match="scores"):
        write_coco_predictions(tmp_path / "x.json", [dict(predictions[0], scores=[0.1, 0.2])],
                               [1])
    assert not (tmp_path / "x.json").exists()


# ------------------------------------------------------------------------- round trips
def test_voc_to_coco_to_dataset_round_trip(tmp_path):
    root = _voc(tmp_path / "voc")
    voc_to_coco(root, "train", tmp_path / "gt.json", include_masks=True)
    voc = VOCDataset(root, "train", return_masks=True, return_instance_masks=True)
    coco = COCODataset(tmp_path / "gt.json", root / "JPEGImages", return_masks=True,
                       return_instance_masks=True)
    assert len(coco) == len(voc) == 3
    assert coco.label_names[:3] == ("background", "car", "plate")
    for i in range(3):
        voc_image, voc_target = voc[i]
        coco_image, coco_target = coco[i]
        assert np.array_equal(voc_image, coco_image)
        assert np.array_equal(voc_target["boxes"], coco_target["boxes"])
        assert np.array_equal(voc_target["labels"], coco_target["labels"])
        assert np.array_equal(voc_target["instance_masks"], coco_target["instance_masks"])
        assert np.array_equal(voc_target["masks"], coco_target["masks"])
        assert coco_target["image_id"] == i + 1
        assert coco_target["iscrowd"].dtype == bool and not coco_target["iscrowd"].any()
        assert np.array_equal(coco_target["area"],
                              voc_target["instance_masks"].sum(axis=(1, 2)).astype(np.float32))


def test_voc_to_coco_with_a_class_subset(tmp_path):
    root = _voc(tmp_path / "voc")
    gt = voc_to_coco(root, "train", tmp_path / "gt.json", classes=("plate",))
    assert gt["categories"] == [{"id": 1, "name": "plate", "supercategory": "none"}]
    assert [a["category_id"] for a in gt["annotations"]] == [1, 1]
    dataset = COCODataset(tmp_path / "gt.json", root / "JPEGImages")
    assert dataset[1][1]["boxes"].tolist() == [[11, 18, 26, 25]]


def test_coco_dataset_contiguous_labels_and_crowd_mask(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "x.png")
    crowd = np.zeros((6, 8), bool)
    crowd[4:, :] = True
    coco = {"images": [{"id": 7, "file_name": "x.png", "width": 8, "height": 6}],
            "categories": [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 9, "bbox": [1, 1, 4, 2], "iscrowd": 0,
                 "segmentation": [[1, 1, 4, 1, 4, 2, 1, 2]]},
                {"id": 2, "image_id": 7, "category_id": 5, "bbox": [0, 4, 8, 2], "iscrowd": 1,
                 "segmentation": rle_encode(crowd)},
                {"id": 3, "image_id": 7, "category_id": 5, "bbox": [0, 0, 0, 3]},  # no area
            ]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    dataset = COCODataset(tmp_path / "c.json", tmp_path, contiguous_labels=True,
                          return_masks=True, return_instance_masks=True)
    image, target = dataset[0]
    assert dataset.label_names == ("background", "cat", "dog")
    assert target["labels"].tolist() == [2, 1]
    assert target["boxes"].tolist() == [[1, 1, 5, 3], [0, 4, 8, 6]]
    assert target["iscrowd"].tolist() == [False, True]
    assert target["image_id"] == 7
    assert (target["masks"][4:] == 255).all()
    assert (target["masks"][1:3, 1:5] == 2).all() and target["masks"][0, 0] == 0
    raw = COCODataset(tmp_path / "c.json", tmp_path)
    assert raw[0][1]["labels"].tolist() == [9, 5] and raw.label_names[9] == "dog"


def test_coco_dataset_errors_name_the_file(tmp_path):
    path = tmp_path / "c.json"
    with pytest.raises(FileNotFoundError, match="c.json"):
        COCODataset(path, tmp_path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="malformed COCO JSON .*c.json"):
        COCODataset(path, tmp_path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="c.json: need lists"):
        COCODataset(path, tmp_path)
    image = {"id": 1, "file_name": "missing.png", "width": 4, "height": 4}
    path.write_text(json.dumps({"images": [image], "annotations": [], "categories": []}))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        COCODataset(path, tmp_path)
    bad = {"images": [image], "categories": [{"id": 1, "name": "a"}],
           "annotations": [{"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}]}
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="unknown image id 2"):
        COCODataset(path, tmp_path)
    bad["annotations"][0].update(image_id=1, category_id=3)
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="unknown category id 3"):
        COCODataset(path, tmp_path)


def test_coco_dataset_image_size_mismatch(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "c.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "x.png", "width": 4, "height": 4}],
        "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match="x.png is 5x5 but .*c.json says 4x4"):
        COCODataset(tmp_path / "c.json", tmp_path)[0]


# ------------------------------------------------------------------------- oracle
# pycocotools' decode trips NumPy 2's copy-keyword deprecation: their issue, not ours.
@pytest.mark.oracle
@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_rle_matches_pycocotools_byte_for_byte():
    mask_utils = require("pycocotools.mask")
    rng = np.random.default_rng(0)
    for trial in range(30):
        height, width = rng.integers(1, 60, size=2)
        mask = rng.random((height, width)) < rng.choice([0.01, 0.3, 0.9])
        if trial % 3 == 0:
            mask[: height // 2] = True  # long runs: counts of several 5-bit groups
        theirs = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = rle_encode(mask)
        assert ours["counts"].encode() == theirs["counts"]
        assert ours["size"] == list(theirs["size"])
        assert np.array_equal(rle_decode(theirs), mask)
        assert np.array_equal(mask_utils.decode({"size": ours["size"],
                                                 "counts": ours["counts"].encode()}), mask)


@pytest.mark.oracle
@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_written_files_load_and_evaluate_in_pycocotools(tmp_path, capsys):
    require("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root = _voc(tmp_path / "voc")
    gt_path = tmp_path / "gt.json"
    voc_to_coco(root, "train", gt_path, include_masks=True)
    dataset = VOCDataset(root, "train", return_instance_masks=True)
    # Perfect predictions (the ground truth with scores), plus one false positive.
    predictions = []
    for i in range(len(dataset)):
        _, target = dataset[i]
        count = len(target["boxes"])
        predictions.append({"boxes": target["boxes"], "labels": target["labels"],
                            "scores": np.linspace(0.9, 0.8, count),
                            "masks": target["instance_masks"]})
    predictions[2] = {"boxes": np.array([[0, 0, 5, 5]], np.float32), "labels": np.array([1]),
                      "scores": np.array([0.1]), "masks": np.ones((1, 30, 40), bool)}
    dt_path = tmp_path / "dt.json"
    write_coco_predictions(dt_path, predictions, dataset.ids, ground_truth=gt_path,
                           include_masks=True)
    gt = COCO(str(gt_path))
    assert sorted(gt.getImgIds()) == [1, 2, 3]
    assert len(gt.getAnnIds()) == 6
    assert gt.loadCats(2)[0]["name"] == "plate"
    assert np.array_equal(gt.annToMask(gt.loadAnns(gt.getAnnIds(imgIds=[1]))[0]),
                          dataset[0][1]["instance_masks"][0])
    detections = gt.loadRes(str(dt_path))
    for iou_type in ("bbox", "segm"):
        evaluator = COCOeval(gt, detections, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        # Every ground-truth object is found first: AP = 1 (the late false positive
        # on an image without objects ranks below all true positives).
        assert evaluator.stats[0] == pytest.approx(1.0)
        assert evaluator.stats[1] == pytest.approx(1.0)
    capsys.readouterr()


# --------------------------------------------------------------- hostile datasets
def _one_image_coco(tmp_path, file_name="x.png", categories=({"id": 1, "name": "a"},),
                    category_id=1, size=(6, 8)):
    from PIL import Image

    height, width = size
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(tmp_path / "x.png")
    coco = {"images": [{"id": 1, "file_name": file_name, "width": width, "height": height}],
            "categories": list(categories),
            "annotations": [{"id": 1, "image_id": 1, "category_id": category_id,
                             "bbox": [1, 1, 4, 2], "segmentation": [[1, 1, 5, 1, 5, 3, 1, 3]]}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coco))
    return path


def test_coco_dataset_refuses_file_names_outside_the_image_dir(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(outside)
    os.symlink(outside, images / "link.png")
    for entry in ("../secret.png", str(outside), "link.png"):
        path = _one_image_coco(images, file_name=entry)
        with pytest.raises(ValueError, match=r"c\.json: image 1 file_name "
                           + re.escape(repr(entry)) + ".*outside"):
            COCODataset(path, images)
    (images / "sub").mkdir()
    os.replace(images / "x.png", images / "sub" / "x.png")
    path = _one_image_coco(images, file_name="sub/x.png")
    assert COCODataset(path, images)[0][0].shape == (6, 8, 3)


def test_coco_category_ids_beyond_the_uint8_class_map(tmp_path):
    categories = ({"id": 300, "name": "big"}, {"id": 255, "name": "void-like"})
    path = _one_image_coco(tmp_path, categories=categories, category_id=300)
    with pytest.raises(ValueError, match=r"c\.json.*category id 300.*uint8.*contiguous_labels"):
        COCODataset(path, tmp_path, return_masks=True)
    assert COCODataset(path, tmp_path)[0][1]["labels"].tolist() == [300]   # boxes only: fine
    _, target = COCODataset(path, tmp_path, return_masks=True, contiguous_labels=True)[0]
    assert target["labels"].tolist() == [1] and target["masks"].max() == 1
    path = _one_image_coco(tmp_path, categories=categories[1:], category_id=255)
    with pytest.raises(ValueError, match="category id 255"):    # 255 would read as ignore
        COCODataset(path, tmp_path, return_masks=True)


@pytest.mark.parametrize("categories, contiguous, message", [
    (({"id": 0, "name": "a"},), False, "category id 0"),
    (({"id": -3, "name": "a"},), False, "category id -3"),
    (({"id": 1, "name": "a"}, {"id": 1, "name": "b"}), False, "duplicate category id 1"),
    (({"id": 1, "name": "a"}, {"id": 1, "name": "b"}), True, "duplicate category id 1"),
    (({"id": 10 ** 9, "name": "a"},), False, "contiguous_labels"),
])
def test_coco_dataset_refuses_bad_category_ids(tmp_path, categories, contiguous, message):
    path = _one_image_coco(tmp_path, categories=categories, category_id=categories[0]["id"])
    with pytest.raises(ValueError, match=r"c\.json.*" + message):
        COCODataset(path, tmp_path, contiguous_labels=contiguous)


def test_coco_dataset_accepts_huge_ids_with_contiguous_labels(tmp_path):
    path = _one_image_coco(tmp_path, categories=({"id": 10 ** 9, "name": "a"},),
                           category_id=10 ** 9)
    dataset = COCODataset(path, tmp_path, contiguous_labels=True, return_masks=True)
    assert dataset.label_names == ("background", "a") and dataset[0][1]["labels"].tolist() == [1]


def test_coco_readers_name_the_file_of_a_bomb_or_memory_error(tmp_path, monkeypatch):
    from PIL import Image
    from detection.datasets import coco as coco_module

    path = _one_image_coco(tmp_path)
    dataset = COCODataset(path, tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)        # 8x6 > 2·10 pixels
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "x.png")) + ".*bomb"):
        dataset[0]
    monkeypatch.undo()

    def out_of_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(coco_module.json, "load", out_of_memory)
    with pytest.raises(MemoryError, match=re.escape(str(path))):
        COCODataset(path, tmp_path)


def test_ground_truth_refuses_boxes_whose_area_is_not_a_number(tmp_path):
    targets = [{"boxes": np.array([[0, 0, 1e200, 1e200]]), "labels": np.array([2])}]
    with pytest.raises(ValueError, match=r"targets\[0\].*area"):
        write_coco_ground_truth(tmp_path / "gt.json", targets, PLATE_CLASSES,
                                image_sizes=[(4, 4)])
    targets = [{"boxes": np.array([[-1.7e308, 0, 1.7e308, 1]]), "labels": np.array([2])}]
    with pytest.raises(ValueError, match=r"targets\[0\].*width"):
        write_coco_ground_truth(tmp_path / "gt.json", targets, PLATE_CLASSES,
                                image_sizes=[(4, 4)])
    assert os.listdir(tmp_path) == []
