"""The lab's detector: the plate anchors, and its command rendering missing data."""
import json
import os

import numpy as np

from detection.boxes import box_iou
from detection.retinanet import RetinaNet
from plates.classes import PLATE_CLASSES
from plates.synthetic import render_scene
from plates.train_detector import DETECTOR_CLASSES, PLATE_ANCHORS, main
from plates.train_detector import plate_detector_config as plate_retinanet_config


def test_plate_config_levels_and_anchor_counts():
    model = RetinaNet(plate_retinanet_config("small", fpn_channels=8, head_convs=1))
    _, _, sizes = model(np.zeros((1, 256, 256, 3), np.float32))
    assert sizes == [(32, 32), (16, 16), (8, 8), (4, 4)]  # P3..P6
    assert model.strides == (8, 16, 32, 64)
    assert len(model.anchors((256, 256), sizes)) == 9 * (32 * 32 + 16 * 16 + 8 * 8 + 4 * 4)
    assert RetinaNet(plate_retinanet_config("resnet18", fpn_channels=8)).backbone.out_channels \
        == (32, 64, 128, 256)


def test_plate_anchors_cover_the_generated_objects():
    """The anchor choice of the module docstring, on freshly rendered scenes."""
    model = RetinaNet(plate_retinanet_config("small", quick=True))
    anchors = model.anchors((256, 256), [(32, 32), (16, 16), (8, 8), (4, 4)])
    rng = np.random.default_rng(7)
    best = {"car": [], "plate": []}
    for _ in range(12):
        _, objects, _, _ = render_scene(rng, 256)
        for obj in objects:
            if obj["name"] in best:
                iou = box_iou(np.array([obj["bbox"]], np.float32), anchors)
                best[obj["name"]].append(iou.max())
    assert len(best["car"]) >= 8 and len(best["plate"]) >= 8
    assert min(best["car"]) >= 0.5
    assert np.mean(np.array(best["plate"]) >= 0.5) >= 0.75
    assert min(best["plate"]) > 0.2


def test_missing_dataset_is_rendered_then_trained(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "run"
    assert main(["--data", str(data), "--out", str(out), "--quick", "--steps", "1",
                 "--num-images", "10", "--quiet"]) == 0
    assert os.path.isfile(data / "ImageSets" / "Main" / "train.txt")
    assert (data / "labels.txt").read_text().split() == list(PLATE_CLASSES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 1
    assert metrics["config"]["classes"] == list(DETECTOR_CLASSES)
    assert metrics["model_config"]["anchor_sizes"] == list(PLATE_ANCHORS["anchor_sizes"])
    assert "val: COCO mAP" in capsys.readouterr().out
