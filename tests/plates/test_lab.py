"""``python -m plates``: the whole lab on a --quick run, ``read`` on odd images, resuming."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from detection.datasets.voc import (VOCDataset, read_class_names, read_image_set,
                                    write_class_names, write_image_sets, write_voc_example)
from detection.retinanet import RetinaNet
from plates import reader as reader_module
from plates.__main__ import main
from plates.classes import PLATE_CLASSES
from plates.lab import QUICK, STAGES, LabConfig, run, write_detector_copy
from tests.commands import ctrl_c_at
from tests.plates.lab_run import quick_run
from tests.plates.test_reader import check_plates_json, two_row_class_map


def _json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# ------------------------------------------------------------------------- the quick run
@pytest.mark.slow
def test_a_quick_run_writes_every_stage(tmp_path_factory):
    out = quick_run(tmp_path_factory)
    lab = _json(out / "lab.json")
    assert list(lab["stages"]) == list(STAGES)
    assert all(record["done"] and record["sessions"] == 1 and record["seconds"] > 0
               for record in lab["stages"].values())
    assert lab["stages"]["detector"]["steps"] == QUICK["detector_steps"]
    assert lab["stages"]["segmenter"]["steps"] == QUICK["segmenter_steps"]
    for name in ("metrics.json", "reader.json", "Report.7.Detection.Segmentation.tex",
                 "detector/best.npz", "detector/loss_curves.png", "segmenter/best.npz",
                 "segmenter/loss_curve.png", "evaluation/evaluation.json",
                 "evaluation/failures.png", "evaluation/end_to_end.png"):
        assert os.path.isfile(out / name), name
    evaluation = _json(out / "evaluation" / "evaluation.json")
    metrics = _json(out / "metrics.json")
    assert metrics["evaluation"]["end_to_end"] == evaluation["end_to_end"]
    assert metrics["detector"]["steps"] == QUICK["detector_steps"]
    assert metrics["machine"]["cores"] == os.cpu_count()
    test_ids = read_image_set(out / "data" / "scenes256", "test")
    assert evaluation["images"] == len(test_ids) > 0
    truth = VOCDataset(out / "data" / "scenes256", "test", classes=("plate",))
    assert evaluation["end_to_end"]["plates"] == sum(len(truth.load_target(i)["boxes"])
                                                    for i in range(len(truth)))
    assert _json(out / "reader.json")["chosen_on"] == "val"
    # the detector's copy: the same scenes at the detector's size
    small = out / "data" / "scenes256_at128"
    assert read_image_set(small, "test") == test_ids
    assert Image.open(small / "JPEGImages" / f"{test_ids[0]}.jpg").size == (128, 128)


@pytest.mark.slow
def test_read_command_on_odd_images(tmp_path_factory, tmp_path, monkeypatch, capsys):
    run_dir = quick_run(tmp_path_factory)
    # Characters on every plate: the quick segmenter is untrained, so its class map is
    # replaced by a chosen one (two rows, "17 3#"); plates from any score.
    def chosen_maps(model, crops, **kwargs):
        count, height, width = crops.shape[:3]
        rows = np.arange(height) * 40 // height  # the 40x120 map resampled to the crop size
        cols = np.arange(width) * 120 // width
        return np.broadcast_to(two_row_class_map()[rows[:, None], cols[None, :]],
                               (count, height, width)).copy()

    monkeypatch.setattr(reader_module, "predict", chosen_maps)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    scene = run_dir / "data" / "scenes256" / "JPEGImages" / "000000.jpg"
    shutil.copy(scene, photos / "scene.jpg")
    rgba = rng.integers(0, 256, (60, 90, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(photos / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8)).save(photos / "grey.png")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).convert("P").save(
        photos / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (30, 80, 3), dtype=np.uint8)).save(
        photos / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(rng.integers(0, 256, (100, 2000, 3), dtype=np.uint8)).save(
        photos / "wide.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(photos / "tiny.png")
    data = (photos / "scene.jpg").read_bytes()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cut.jpg").write_bytes(data[:len(data) // 3])
    (broken / "notes.png").write_text("no image here")
    out = tmp_path / "readings"
    status = main(["read", "--run", str(run_dir), str(photos), str(broken / "cut.jpg"),
                   str(broken / "notes.png"), "--out", str(out), "--threshold", "0", "--quiet"])
    captured = capsys.readouterr()
    assert status == 1  # some inputs could not be read, the others were
    assert "cut.jpg" in captured.err and "notes.png" in captured.err
    document = _json(out / "plates.json")
    names = ("grey.png", "palette.png", "rgba.png", "rotated.jpg", "scene.jpg", "tiny.png",
             "wide.png")
    sizes = {"grey.png": (50, 70), "palette.png": (40, 40), "rgba.png": (60, 90),
             "rotated.jpg": (80, 30), "scene.jpg": (256, 256), "tiny.png": (16, 16),
             "wide.png": (100, 2000)}
    shapes = {os.path.join(str(photos), name): sizes[name] for name in names}
    check_plates_json(document, shapes)
    assert [e["file"] for e in document["errors"]] == [str(broken / "cut.jpg"),
                                                      str(broken / "notes.png")]
    plates_read = [p for e in document["images"] for p in e["plates"]]
    assert plates_read and any(p["characters"] for p in plates_read)
    for entry in document["images"]:
        drawn = Image.open(out / entry["annotated"])
        assert drawn.size == (entry["width"], entry["height"])
    assert not [f for f in os.listdir(out) if ".tmp" in f]


def test_read_command_usage_errors(tmp_path, capsys):
    assert main(["read", "--run", str(tmp_path / "none"), "x.jpg", "--out",
                 str(tmp_path / "o")]) == 2
    assert "detector" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["read", "--run", str(tmp_path)])  # no image, no --out


# ------------------------------------------------------------------------------ resuming
@pytest.mark.slow
def test_ctrl_c_in_the_detector_then_resume_skips_finished_stages(
        tmp_path_factory, tmp_path, monkeypatch, capsys, sigint_raises):
    data = tmp_path / "data"
    shutil.copytree(quick_run(tmp_path_factory) / "data", data)  # rendered scenes, reused
    out = tmp_path / "run"
    ctrl_c_at(monkeypatch, RetinaNet, 3)  # Ctrl-C during the detector's third step
    command = ["run", "--out", str(out), "--data", str(data), "--quick", "--quiet"]
    assert main(command) == 130
    assert "--resume" in capsys.readouterr().err
    lab = _json(out / "lab.json")
    assert lab["stages"]["render"]["sessions"] == 0  # the data was there
    assert "done" not in lab["stages"]["detector"]
    assert os.path.isfile(out / "detector" / "last.npz")
    assert not os.path.exists(out / "detector" / "metrics.json")
    monkeypatch.undo()

    assert main(command + ["--resume"]) == 0
    lab = _json(out / "lab.json")
    detector = lab["stages"]["detector"]
    assert detector["sessions"] == 2 and detector["resumed"] is True
    assert detector["steps"] == QUICK["detector_steps"]
    assert lab["stages"]["segmenter"]["sessions"] == 1
    best = os.path.getmtime(out / "segmenter" / "best.npz")

    os.remove(out / "evaluation" / "evaluation.json")  # as if stopped during the evaluation
    assert main(command + ["--resume"]) == 0
    lab = _json(out / "lab.json")
    assert [lab["stages"][s]["sessions"] for s in STAGES] == [0, 0, 2, 1, 2, 2]
    assert os.path.getmtime(out / "segmenter" / "best.npz") == best
    assert os.path.isfile(out / "evaluation" / "evaluation.json")


def test_run_refuses_an_existing_run_and_a_resume_without_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quick", "--resume", "--quiet"]) == 2
    assert "holds no lab run" in capsys.readouterr().err
    out.mkdir()
    (out / "lab.json").write_text(json.dumps({"config": {"out": str(out)}, "stages": {}}))
    assert main(["run", "--out", str(out), "--quick", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    for bad in (["--minutes", "-1"], ["--num-images", "3"], ["--threads", "0"]):
        assert main(["run", "--out", str(tmp_path / "other"), "--quiet"] + bad) == 2
    with pytest.raises(TypeError):
        run("not a config")
    with pytest.raises(ValueError, match="detector_share"):
        LabConfig(out=str(tmp_path), detector_share=1.0)


# ----------------------------------------------------------------------- the small copy
def test_the_detector_copy_scales_boxes_and_keeps_the_splits(tmp_path):
    source, target = tmp_path / "full", tmp_path / "small"
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        objects = [{"name": "car", "bbox": (20, 100, 300, 230)},
                   {"name": "plate", "bbox": (100.5, 150, 220, 190), "difficult": i == 1},
                   {"name": "7", "bbox": (110, 155, 120, 185)}]
        write_voc_example(source, f"00000{i}", image, objects)
    write_image_sets(source, {"train": ["000000"], "val": ["000001"], "test": ["000002"]})
    write_class_names(source, PLATE_CLASSES)
    summary = write_detector_copy(source, target, 128, workers=1)
    assert summary["images"] == 3
    assert read_class_names(target) == PLATE_CLASSES
    for split, ids in (("train", ["000000"]), ("val", ["000001"]), ("test", ["000002"])):
        assert read_image_set(target, split) == ids
    copy = VOCDataset(target, "val", classes=("car", "plate"))
    image, labelled = copy[0]
    assert image.shape == (96, 128, 3)  # 240 x 320 -> longer side 128
    np.testing.assert_allclose(labelled["boxes"], np.array(
        [[20, 100, 300, 230], [100.5, 150, 220, 190]]) * 0.4, atol=0.006)
    assert labelled["labels"].tolist() == [1, 2] and labelled["difficult"].tolist() == [0, 1]
    names = [o["name"] for o in copy.annotation(0)["objects"]]
    assert names == ["car", "plate"]  # characters are not the detector's


@pytest.mark.parametrize("flags, expected", [([], None), (["--tta"], True),
                                             (["--no-tta"], False)])
def test_read_command_passes_the_segmentation_passes_to_the_reader(tmp_path, monkeypatch,
                                                                    capsys, flags, expected):
    seen = {}

    def from_run(run_dir, **settings):
        seen.update(settings)
        raise ValueError("stop here")

    monkeypatch.setattr(reader_module.PlateReader, "from_run", staticmethod(from_run))
    status = main(["read", "--run", str(tmp_path), "x.jpg", "--out", str(tmp_path / "out")]
                  + flags)
    assert status == 2 and "stop here" in capsys.readouterr().err
    assert seen["tta"] is expected
