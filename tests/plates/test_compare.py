"""The ResNet-18 comparison: the segmenter's encoder option, which runs are reused, the
summary and the Markdown table written from the numbers, the report's section, and
``python -m plates compare --quick`` on a quick lab run (schema, reuse, resume)."""
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

import nn
from detection.retinanet import RetinaNet
from detection.datasets.voc import read_image_set
from plates.__main__ import main
from plates.compare import (COMPARISON_DIR, KIND, MODELS, CompareConfig, lab_train_configs,
                            markdown_table, run_config, summarize, _reusable)
from plates.lab import QUICK, LabConfig
from plates.report import COMPARISON_FILE, REPORT_NAME, build_report, write_report
from plates.segmenter import NUM_CLASSES, build_model
from plates.train_detector import plate_detector_config
from plates.train_segmenter import TrainConfig, load_segmenter, quick_config
from segmentation.resnet_unet import ResNetUNet
from segmentation.unet import UNet
from tests.commands import ctrl_c_at
from tests.plates.lab_run import copy_of_quick_run


def _count(model):
    return int(sum(p.data.size for p in model.parameters()))


# ======================================================== the segmenter's encoder option
def test_the_segmenter_config_builds_a_resnet18_unet():
    model = build_model(TrainConfig(encoder="resnet18", encoder_width=0.25))
    assert isinstance(model, ResNetUNet) and model.widths == (16, 32, 64, 128)
    assert _count(model) == 889_100  # tests/segmentation/test_resnet_unet.py counts it by hand
    prior = np.log(np.array([0.89] + [0.01] * 11))  # the class-prior bias, as for the U-Net
    np.testing.assert_allclose(model.head.bias.data, prior - np.log(np.exp(prior).sum()),
                               rtol=1e-6)
    plain = build_model(TrainConfig())
    assert isinstance(plain, UNet) and not isinstance(plain, ResNetUNet)
    logits = model(nn.Tensor(np.zeros((2, 40, 120, 3), np.float32)))
    assert logits.shape == (2, 40, 120, NUM_CLASSES)


@pytest.mark.parametrize("fields, message", [
    (dict(encoder="vgg16"), "encoder must be one of"),
    (dict(encoder="resnet18", encoder_width=0), "encoder_width"),
    (dict(encoder="resnet18", encoder_width=float("inf")), "encoder_width"),
    (dict(encoder="resnet18", crop_size=(36, 120)), "divisible by 8"),
])
def test_bad_encoder_settings(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)
    TrainConfig(crop_size=(36, 120), depth=3)  # the plain U-Net of depth 3: a multiple of 4


def test_a_checkpoint_rebuilds_its_encoder(tmp_path):
    config = quick_config(encoder="resnet18", encoder_width=0.125, seed=3)
    model = build_model(config)
    nn.save({"config": config.to_dict(), "model": model.state_dict()}, tmp_path / "best.npz")
    loaded, loaded_config, _ = load_segmenter(tmp_path / "best.npz")
    assert isinstance(loaded, ResNetUNet) and loaded_config.encoder == "resnet18"
    x = nn.Tensor(np.random.default_rng(0).standard_normal((1, 32, 96, 3)).astype(np.float32))
    model.eval()
    np.testing.assert_array_equal(loaded(x).data, model(x).data)
    # A configuration saved before the option existed is a plain U-Net.
    old = {k: v for k, v in quick_config().to_dict().items()
           if k not in ("encoder", "encoder_width")}
    unet = build_model(quick_config())
    nn.save({"config": old, "model": unet.state_dict()}, tmp_path / "old.npz")
    assert isinstance(load_segmenter(tmp_path / "old.npz")[0], UNet)


# ============================================================================ the plan
def test_run_configs_change_only_the_network_and_the_budget(tmp_path):
    lab = LabConfig(out=str(tmp_path / "run"))
    base = lab_train_configs(lab)
    assert base["detector"].minutes == pytest.approx(9.0)  # the lab's 9/19.5 of 19.5 minutes
    assert base["segmenter"].minutes == pytest.approx(10.5)
    assert base["detector"].backbone == "small" and base["segmenter"].encoder == "unet"

    def changed(a, b):
        a, b = dataclasses.asdict(a), dataclasses.asdict(b)
        return {k for k in a if a[k] != b[k]}

    resnet = run_config("detector", base["detector"], "resnet18", "time", 0.5)
    assert changed(base["detector"], resnet) == {"backbone", "model"}
    assert resnet.model == {**base["detector"].model, "width_multiplier": 0.5}
    steps = run_config("segmenter", base["segmenter"], "resnet18", "steps", 0.25, steps=700)
    assert changed(base["segmenter"], steps) == {"encoder", "steps", "minutes"}
    assert (steps.steps, steps.minutes, steps.encoder_width) == (700, None, 0.25)
    same = run_config("segmenter", base["segmenter"], "unet", "time", 0.25, minutes=2.0)
    assert changed(base["segmenter"], same) == {"minutes"}
    with pytest.raises(ValueError, match="needs steps"):
        run_config("detector", base["detector"], "small", "steps", 0.5)
    with pytest.raises(ValueError, match="model must be one of"):
        run_config("detector", base["detector"], "unet", "time", 0.5)


def test_which_finished_runs_are_reused(tmp_path):
    base = lab_train_configs(LabConfig(out=str(tmp_path / "run")))["segmenter"]
    saved = dict(base.to_dict(), out="elsewhere", progress=False, data="moved/data")
    finished = {"config": saved, "stopped_by": "steps", "steps": 640, "total_steps": 640}
    # The same configuration (paths and progress bars aside): reused.
    assert _reusable("segmenter", base, finished)
    # A time run that ended at its 640th step with its schedule done stands for 640 steps...
    asked = run_config("segmenter", base, "unet", "steps", 0.25, steps=640)
    assert _reusable("segmenter", asked, finished)
    # ...but not for another count, nor when the clock stopped it before its schedule ended.
    assert not _reusable("segmenter", run_config("segmenter", base, "unet", "steps", 0.25,
                                                 steps=600), finished)
    assert not _reusable("segmenter", asked, dict(finished, stopped_by="time"))
    assert not _reusable("segmenter", asked, dict(finished, total_steps=700))
    # Another network, seed or budget: trained.
    assert not _reusable("segmenter", run_config("segmenter", base, "resnet18", "time", 0.25),
                         finished)
    assert not _reusable("segmenter", dataclasses.replace(base, seed=1), finished)
    assert not _reusable("segmenter", run_config("segmenter", base, "unet", "time", 0.25,
                                                 minutes=3.0), finished)
    assert not _reusable("segmenter", base, {"config": {"not": "a config"}})


@pytest.mark.parametrize("fields, message", [
    (dict(minutes=0), "minutes"), (dict(minutes=float("nan")), "minutes"),
    (dict(steps=0), "steps"), (dict(steps=2.5), "steps"),
    (dict(tasks=("detector", "detector")), "tasks"), (dict(tasks=("yolo",)), "tasks"),
    (dict(tasks=()), "tasks"), (dict(detector_width=0), "detector_width"),
    (dict(segmenter_width=-1.0), "segmenter_width"),
])
def test_bad_compare_settings(fields, message):
    with pytest.raises(ValueError, match=message):
        CompareConfig(run="run", **fields)


def test_the_command_refuses_a_directory_without_a_lab_run(tmp_path, capsys):
    assert main(["compare", "--run", str(tmp_path)]) == 2
    assert "holds no lab run" in capsys.readouterr().err
    assert main(["compare", "--run", str(tmp_path), "--steps", "0"]) == 2
    assert "steps must be a positive int" in capsys.readouterr().err
    assert main(["compare", "--run", str(tmp_path), "--markdown"]) == 2
    assert "missing or not a comparison" in capsys.readouterr().err


# ================================================================ reading comparison.json
def _row(task, model, budget, score, parameters, step_ms, inference_ms, steps, seconds,
         reused=False):
    row = {"task": task, "model": model, "budget": budget, "steps": steps, "total_steps": steps,
           "minutes": 10.0 if budget == "time" else None,
           "budget_steps": 1400 if budget == "steps" else None, "train_seconds": seconds,
           "parameters": parameters, "step_ms": step_ms, "inference_ms": inference_ms,
           "inference_unit": "image" if task == "detector" else "batch of 8 crops",
           "reused": reused, "source": "detector" if reused else f"comparison/{task}",
           "label": {"small": "RetinaNet, small backbone", "unet": "U-Net (base 16, depth 3)",
                     "resnet18": f"{task} ResNet-18"}[model]}
    if task == "detector":
        row["test"] = {"map": score, "ap50_per_class": {"car": 0.97, "plate": score + 0.25}}
    else:
        row["test"] = {"mean_iou": score, "read_exact": score - 0.1, "tta": True}
    return row


def _comparison(detector_scores=(0.702, 0.668, 0.702, 0.731), quick=False, complete=True):
    small, big, small_steps, big_steps = detector_scores
    rows = [_row("detector", "small", "time", small, 650_000, 580.0, 25.0, 1400, 600.0, True),
            _row("detector", "resnet18", "time", big, 3_150_000, 1392.0, 63.0, 610, 600.0),
            _row("detector", "small", "steps", small_steps, 650_000, 580.0, 25.0, 1400, 600.0,
                 True),
            _row("detector", "resnet18", "steps", big_steps, 3_150_000, 1392.0, 63.0, 1400,
                 1450.0),
            _row("segmenter", "unet", "time", 0.91, 117_548, 400.0, 40.0, 800, 300.0, True),
            _row("segmenter", "resnet18", "time", 0.93, 889_100, 820.0, 80.0, 390, 300.0)]
    return {"kind": KIND, "format": 1, "complete": complete, "quick": quick,
            "tasks": ["detector", "segmenter"],
            "models": {"detector": {"small": "RetinaNet, small backbone",
                                    "resnet18": "RetinaNet, ResNet-18 x0.5"},
                       "segmenter": {"unet": "U-Net (base 16, depth 3)",
                                     "resnet18": "U-Net, ResNet-18 encoder x0.25"}},
            "rows": rows}


def test_the_summary_is_written_from_the_numbers():
    paragraphs = summarize(_comparison())
    assert len(paragraphs) == 2  # one per stage
    assert paragraphs[0].startswith("Detector,") and paragraphs[1].startswith("Segmenter,")
    text = " ".join(paragraphs)
    assert "the same budget (10.0 min): RetinaNet, ResNet-18 x0.5 reaches test mAP 0.668" in text
    assert "RetinaNet, small backbone 0.702, AP50 car 0.970, plate 0.952 in 1400 steps" in text
    assert "the small backbone higher by 0.034" in text
    assert "With the same 1400 steps: ResNet-18 0.731, the small backbone 0.702 " \
           "(ResNet-18 higher by 0.029); ResNet-18 trained 2.4x as long (24.2 min against " \
           "10.0 min)" in text
    assert "4.8x the parameters (3,150,000 against 650,000)" in text  # 3.15 M / 0.65 M
    assert "a training step 2.4x as long (1392 against 580 ms)" in text
    assert "inference 2.5x as long (63 against 25 ms per image)" in text  # 63 / 25 = 2.52
    assert "the small backbone is the more accurate detector, with 2.5x cheaper inference: " \
           "it stays the lab's detector" in text
    # The segmenter: the ResNet-18 U-Net wins in the same time; no steps rows yet.
    assert "U-Net, ResNet-18 encoder x0.25 reaches test mean IoU 0.930, 83.0% of the plates " \
           "read in 390 steps" in text
    assert "the ResNet-18 U-Net higher by 0.020" in text
    assert "the ResNet-18 U-Net is the more accurate segmenter, at 2.0x the inference cost" \
           in text
    assert text.count("With the same") == 1
    # Other numbers, other words.
    tie = " ".join(summarize(_comparison((0.7, 0.7, 0.7, 0.7))))
    assert "equal to 3 decimals" in tie
    assert "the two are level (test mAP 0.000 apart, under 0.01); the small backbone costs " \
           "2.5x less at inference: it stays the lab's detector" in tie
    level = " ".join(summarize(_comparison((0.700, 0.706, 0.7, 0.7))))
    assert "in the same time the two are level (test mAP 0.006 apart, under 0.01); the " \
           "small backbone costs 2.5x less at inference: it stays the lab's detector" in level
    assert "ResNet-18 is the more accurate detector" not in level
    # Level the other way round, at the same inference cost: no "cheaper", no winner.
    same = _comparison((0.703, 0.702, 0.7, 0.7))
    for row in same["rows"]:
        if row["task"] == "detector" and row["model"] == "resnet18":
            row["inference_ms"] = 25.5  # 1.02x the small backbone's 25 ms
    same_cost = " ".join(summarize(same))
    assert "the two are level (test mAP 0.001 apart, under 0.01), at about the same " \
           "inference cost (one seed" in same_cost
    assert "cheaper" not in same_cost.split("Segmenter,")[0]
    assert "it stays the lab's detector" not in same_cost
    # Level, the ResNet-18 network the cheaper one to run.
    for row in same["rows"]:
        if row["task"] == "detector" and row["model"] == "resnet18":
            row["inference_ms"] = 12.5
    assert "; ResNet-18 costs 2.0x less at inference (one seed" in " ".join(summarize(same))
    smoke = summarize(_comparison(quick=True))
    assert smoke[0].startswith("A smoke comparison") and not any("So, on this machine" in s
                                                                 for s in smoke)


def test_the_markdown_table_has_one_line_per_row():
    table = markdown_table(_comparison()).splitlines()
    assert len(table) == 2 + 6
    assert table[3] == ("| detector | detector ResNet-18 | 10.0 min | 610 | 10.0 | 3,150,000 | "
                        "1392 | 63 / image | mAP 0.668, AP50 car 0.970, plate 0.918 | no |")
    assert table[2].endswith("| detector |")  # reused: from the lab's own detector
    assert "| 1400 steps |" in table[5]
    assert "mean IoU 0.910, read 81.0%" in table[6]


def test_the_report_shows_the_comparison(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "lab.json").write_text(json.dumps({"config": {"out": str(run_dir)},
                                                  "stages": {}}))
    (run_dir / COMPARISON_FILE).write_text(json.dumps(_comparison(complete=False)))
    tex = build_report(run_dir)
    section = tex.split(r"\section{Comparison with a ResNet backbone}")[1].split(r"\section")[0]
    assert "has not been run" not in section and "not finished" in section
    assert ("RetinaNet, small backbone$^*$ & 10.0 min & 1\\,400 & 10.0 min & 650\\,000 & 580 & "
            "25 & 0.702 & 0.970 & 0.952 \\\\") in section
    assert "segmenter ResNet-18 & 10.0 min & 390 & 5.0 min & 889\\,100 & 820 & 80 & 0.930 & " \
           "83.0\\% \\\\" in section
    assert "inference ms / batch of 8 crops" in section
    for sentence in summarize(_comparison()):
        assert sentence.replace("%", "\\%") in section
    if shutil.which("pdflatex"):
        assert write_report(run_dir)["compiled"]


# ===================================================================== the whole command
def _rows(comparison):
    return {(r["task"], r["model"], r["budget"]): r for r in comparison["rows"]}


@pytest.mark.slow
def test_quick_compare_on_a_quick_lab_run(tmp_path_factory, tmp_path, capsys):
    run_dir = copy_of_quick_run(tmp_path_factory, tmp_path / "run")
    capsys.readouterr()
    assert main(["compare", "--run", str(run_dir), "--quick", "--quiet"]) == 0
    printed = capsys.readouterr().out
    comparison = json.loads((run_dir / COMPARISON_FILE).read_text())
    assert comparison["kind"] == KIND and comparison["complete"] and comparison["quick"]
    rows = _rows(comparison)
    assert set(rows) == {(task, model, budget) for task in ("detector", "segmenter")
                         for model in MODELS[task] for budget in ("time", "steps")}
    lab_detector = json.loads((run_dir / "detector" / "metrics.json").read_text())
    lab_segmenter = json.loads((run_dir / "segmenter" / "metrics.json").read_text())

    # The small networks are the lab's own; the ResNet-18 ones trained once each (their
    # time runs ended at the lab's step counts, so they are the step runs too).
    for task, small, lab in (("detector", "small", lab_detector),
                             ("segmenter", "unet", lab_segmenter)):
        for budget in ("time", "steps"):
            assert rows[task, small, budget]["source"] == task
            assert rows[task, small, budget]["reused"]
            assert rows[task, small, budget]["steps"] == lab["steps"]
        assert comparison["settings"]["steps"][task] == lab["steps"]
        trained = rows[task, "resnet18", "time"]
        assert not trained["reused"]
        assert trained["source"] == f"{COMPARISON_DIR}/{task}_resnet18_time"
        assert trained["steps"] == lab["steps"]
        assert rows[task, "resnet18", "steps"]["source"] == trained["source"]
        assert rows[task, "resnet18", "steps"]["reused"]
    assert sorted(os.listdir(run_dir / COMPARISON_DIR)) == [
        "compare.json", "detector_resnet18_time", "segmenter_resnet18_time"]

    # The networks are the ones named, their parameters counted on them.
    assert rows["detector", "small", "time"]["parameters"] == lab_detector["parameters"]
    resnet = RetinaNet(plate_detector_config("resnet18", quick=True, width_multiplier=0.5))
    assert rows["detector", "resnet18", "time"]["parameters"] == _count(resnet)
    detector_metrics = json.loads(
        (run_dir / COMPARISON_DIR / "detector_resnet18_time" / "metrics.json").read_text())
    assert detector_metrics["model_config"]["backbone"] == "resnet18"
    segmenter, config, _ = load_segmenter(
        run_dir / COMPARISON_DIR / "segmenter_resnet18_time" / "best.npz")
    assert isinstance(segmenter, ResNetUNet) and config.encoder_width == 0.25
    assert rows["segmenter", "resnet18", "time"]["parameters"] == _count(segmenter)
    assert rows["segmenter", "unet", "time"]["parameters"] == _count(
        load_segmenter(run_dir / "segmenter" / "best.npz")[0])

    # Accuracy on the test split; timings of each network, the same in both budgets.
    tests = read_image_set(os.path.join(run_dir, "data", "scenes256_at128"), "test")
    for key, row in rows.items():
        if key[0] == "detector":
            assert row["test"]["images"] == len(tests)
            assert set(row["test"]["ap50_per_class"]) == {"car", "plate"}
        else:
            assert row["test"]["plates"] == lab_segmenter["test"]["plates"]
        assert row["step_ms"] > 0 and row["inference_ms"] > 0
        assert row["step_ms"] == rows[key[0], key[1], "time"]["step_ms"]
    assert rows["segmenter", "unet", "time"]["test"]["mean_iou"] == \
        lab_segmenter["test"]["mean_iou"]
    assert comparison["timing"]["detector"]["inference_unit"] == "image"

    # The command printed the table; --markdown prints it again; the report shows it.
    assert markdown_table(comparison) in printed
    assert main(["compare", "--run", str(run_dir), "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == markdown_table(comparison)
    assert main(["report", "--run", str(run_dir), "--no-pdf"]) == 0
    tex = (run_dir / f"{REPORT_NAME}.tex").read_text()
    section = tex.split("Comparison with a ResNet backbone")[1].split(r"\section")[0]
    assert "U-Net, ResNet-18 encoder x0.25 & " in section and "889\\,100" in section
    assert "A smoke comparison" in section and "has not been run" not in section

    # Again: refused without --resume; with it, nothing is trained again.
    assert main(["compare", "--run", str(run_dir), "--quick", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    before = os.path.getmtime(run_dir / COMPARISON_DIR / "detector_resnet18_time" / "best.npz")
    assert main(["compare", "--run", str(run_dir), "--resume", "--quiet"]) == 0
    again = json.loads((run_dir / COMPARISON_FILE).read_text())
    assert again["rows"] == comparison["rows"]
    assert os.path.getmtime(run_dir / COMPARISON_DIR / "detector_resnet18_time" / "best.npz") \
        == before


@pytest.mark.slow
def test_a_steps_budget_of_its_own_trains_both_networks(tmp_path_factory, tmp_path):
    run_dir = copy_of_quick_run(tmp_path_factory, tmp_path / "run")
    assert main(["compare", "--run", str(run_dir), "--quick", "--quiet", "--steps", "3",
                 "--tasks", "segmenter"]) == 0
    comparison = json.loads((run_dir / COMPARISON_FILE).read_text())
    assert comparison["complete"] and comparison["tasks"] == ["segmenter"]
    rows = _rows(comparison)
    assert {key[0] for key in rows} == {"segmenter"}
    for model in ("unet", "resnet18"):
        row = rows["segmenter", model, "steps"]
        assert not row["reused"] and row["steps"] == 3 and row["budget_steps"] == 3
        assert row["source"] == f"{COMPARISON_DIR}/segmenter_{model}_steps"
    assert rows["segmenter", "unet", "time"]["reused"]  # the lab's, as before


@pytest.mark.slow
def test_ctrl_c_in_a_training_then_resume(tmp_path_factory, tmp_path, monkeypatch, capsys,
                                          sigint_raises):
    run_dir = copy_of_quick_run(tmp_path_factory, tmp_path / "run")
    ctrl_c_at(monkeypatch, RetinaNet, 3,  # Ctrl-C during the ResNet-18 detector's third step
              when=lambda model: model.config.backbone == "resnet18")
    command = ["compare", "--run", str(run_dir), "--quick", "--quiet", "--tasks", "detector"]
    assert main(command) == 130
    assert "--resume" in capsys.readouterr().err
    partial = json.loads((run_dir / COMPARISON_FILE).read_text())
    assert not partial["complete"]
    assert [(r["model"], r["budget"]) for r in partial["rows"]] == [("small", "time")]
    folder = run_dir / COMPARISON_DIR / "detector_resnet18_time"
    assert os.path.isfile(folder / "last.npz") and not os.path.exists(folder / "metrics.json")
    monkeypatch.undo()

    assert main(["compare", "--run", str(run_dir), "--resume", "--quiet"]) == 0
    comparison = json.loads((run_dir / COMPARISON_FILE).read_text())
    assert comparison["complete"] and comparison["tasks"] == ["detector"]
    timing = ("step_ms", "inference_ms", "inference_unit")
    assert partial["rows"][0]["step_ms"] is None  # not timed yet
    assert {k: v for k, v in comparison["rows"][0].items() if k not in timing} == \
        {k: v for k, v in partial["rows"][0].items() if k not in timing}
    trained = _rows(comparison)["detector", "resnet18", "time"]
    assert not trained["reused"]
    assert trained["steps"] == trained["total_steps"] == QUICK["detector_steps"]

    # Another stage added to the finished comparison: the detector's rows stay as they were.
    assert main(["compare", "--run", str(run_dir), "--resume", "--quiet", "--tasks",
                 "segmenter"]) == 0
    both = json.loads((run_dir / COMPARISON_FILE).read_text())
    assert both["complete"] and both["tasks"] == ["detector", "segmenter"]
    assert both["rows"][:4] == comparison["rows"] and len(both["rows"]) == 8
