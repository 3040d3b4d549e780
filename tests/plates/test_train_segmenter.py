"""The digit-segmenter trainer: data, augmentation, a falling loss, exact resume, the
read-exactly evaluation and the command end to end."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import nn
from detection.datasets.voc import VOCDataset
from nn.engine import ResumeError, TrainingInterrupted
from plates.synthetic import generate_plate_dataset
from plates.reading import text_to_class_text
from plates.segmenter import CHARACTER_CLASSES, NUM_CLASSES, evaluate, predict
from plates.crops import crop_windows, plate_texts
from plates.segmenter_data import (MARK_DECORATIONS, TrainPatches, augment_colors,
                                   decoration_path, load_crops, preprocess, read_marks)
from plates.synthetic.decorations import DECORATION_IDS
from plates.targets import crop_coverage
from plates.train_segmenter import (
    BatchStream, TrainConfig, load_segmenter, main, quick_config, train_digit_segmenter,
)
from segmentation.losses import segmentation_loss
from segmentation.unet import UNet
from tests.commands import (ROOT, assert_same_run, assert_same_weights, ctrl_c_at,
                            interrupt_command, resume_arguments, run_command)


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    """A dozen small scenes with plates in every split (rendered once per module)."""
    root = tmp_path_factory.mktemp("plates") / "voc"
    generate_plate_dataset(root, 12, seed=3, image_size=256, splits=(0.5, 0.25, 0.25),
                           progress=False)
    return str(root)


def _tiny_config(plates, out, **overrides):
    values = dict(data=plates, out=str(out), base_channels=4, depth=2, steps=6, batch_size=4,
                  warmup_steps=2, eval_every=2, minutes=None, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


# ------------------------------------------------------------------------------------ data
def test_unjittered_training_crops_are_the_test_time_crops(plates):
    patches = TrainPatches(plates, "train")
    standard = load_crops(plates, "train")
    assert len(patches) == len(standard["texts"]) > 0
    assert patches.texts == standard["texts"]
    crops, masks = patches.sample(np.arange(len(patches)), np.random.default_rng(0), shift=0,
                                  scale=0)
    # Same windows, resampled from a patch instead of the image: equal up to float rounding.
    assert np.abs(crops.astype(int) - standard["crops"]).max() <= 1
    assert np.mean(masks == standard["masks"]) > 0.999
    assert set(np.unique(masks)) <= {0, 255} | set(CHARACTER_CLASSES)
    # Jittered windows move the glyphs but keep the classes.
    moved, moved_masks = patches.sample(np.arange(len(patches)), np.random.default_rng(1))
    assert moved.shape == crops.shape and moved.dtype == np.uint8
    assert not np.array_equal(moved, crops)
    assert set(np.unique(moved_masks)) <= {0, 255} | set(CHARACTER_CLASSES)


def test_stretch_moves_the_window_of_boxes_taller_than_the_crop(plates):
    """``stretch`` scales the box's height alone. The crop window keeps the crop's aspect
    ratio (``crop_windows``): the window of a box narrower than the crop follows its
    height and zooms, glyphs as much in width as in height; a wide box's window does
    not change. ``stretch=0`` draws what a sampler without it draws."""
    patches = TrainPatches(plates, "train")
    everyone = np.arange(len(patches))
    _, still = patches.sample(everyone, np.random.default_rng(0), shift=0, scale=0)
    _, moved = patches.sample(everyone, np.random.default_rng(0), shift=0, scale=0,
                              stretch=0.3)
    _, same = patches.sample(everyone, np.random.default_rng(0), shift=0, scale=0, stretch=0.0)
    np.testing.assert_array_equal(same, still)

    def extent(masks, axis):  # rows (axis 2) or columns (axis 1) holding a character
        return ((masks > 0) & (masks != 255)).any(axis=axis).sum(axis=1).astype(float)

    # The height factor of each plate: the fourth draw of the sampler.
    factor = 1.3 ** np.random.default_rng(0).uniform(-1, 1, size=(len(patches), 4))[:, 3]
    boxes = np.asarray(patches.boxes, float)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    crop_aspect = patches.size[1] / patches.size[0]
    # The window follows the height when it or the stretched height sets it (margin 5%).
    follows = crop_aspect * height * np.maximum(factor, 1) > 1.05 * width
    fixed = crop_aspect * height * np.maximum(factor, 1) < 0.95 * width
    assert follows.any() and fixed.any()
    changed = (moved != still).any(axis=(1, 2))
    assert changed[follows].all() and not changed[fixed].any()
    zoom_x = extent(moved, 1)[changed] / extent(still, 1)[changed]
    zoom_y = extent(moved, 2)[changed] / extent(still, 2)[changed]
    np.testing.assert_allclose(zoom_x, zoom_y, atol=0.15)  # a zoom, not a distortion
    assert np.abs(zoom_x - 1).max() > 0.05
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="stretch"):
            patches.sample(everyone, np.random.default_rng(0), stretch=bad)
    with pytest.raises(ValueError, match="stretch"):
        _tiny_config(plates, "unused", stretch=-1)


def test_marks_follow_the_training_crops(plates, tmp_path):
    """``return_marks`` adds the share of each crop pixel under a plate's marks (the
    scene's decoration mask cut with the crop's window) and changes no other draw."""
    patches = TrainPatches(plates, "train")
    assert patches.has_marks
    everyone = np.arange(len(patches))
    crops, masks = patches.sample(everyone, np.random.default_rng(4))
    same_crops, same_masks, marks = patches.sample(everyone, np.random.default_rng(4),
                                                   return_marks=True)
    np.testing.assert_array_equal(same_crops, crops)
    np.testing.assert_array_equal(same_masks, masks)
    assert marks.shape == masks.shape and marks.dtype == np.float32
    assert marks.min() >= 0 and marks.max() <= 1 and (marks > 0).any()
    # Marks are drawn where no character is; only a crop pixel on the edge of a
    # character's region (area-voted) can be partly under one.
    on_characters = marks[(masks > 0) & (masks != 255)].sum()
    assert on_characters < 0.1 * marks.sum(), (on_characters, marks.sum())
    # Unjittered, the marks are the scene's, cut with the test-time window. Patch 0 is
    # the first plate of the first scene with plates.
    voc = VOCDataset(plates, "train", return_instance_masks=True)
    first = next(i for i in range(len(voc)) if plate_texts(voc.annotation(i)["objects"]))
    record, objects = voc._records[first], voc.annotation(first)["objects"]
    scene_marks = read_marks(record["instance_mask_path"], (record["height"], record["width"]))
    decoration = np.asarray(Image.open(decoration_path(record["instance_mask_path"])))
    np.testing.assert_array_equal(
        scene_marks, np.isin(decoration, [DECORATION_IDS[n] for n in MARK_DECORATIONS]))
    box = np.asarray([objects[plate_texts(objects)[0][0]]["bbox"]], np.float64)
    expected = crop_coverage(scene_marks, crop_windows(box, patches.size, patches.padding),
                             patches.size, 4)
    _, _, still = patches.sample([0], np.random.default_rng(0), shift=0, scale=0,
                                 return_marks=True)
    assert np.abs(still - expected).mean() < 0.01
    # A dataset without decoration masks: no marks, and training says the weight is idle.
    bare = tmp_path / "bare"
    shutil.copytree(plates, bare)
    shutil.rmtree(bare / "SegmentationDecoration")
    assert read_marks(decoration_path(bare / "SegmentationObject" / "x.png"), (2, 2)) is None
    unmarked = TrainPatches(str(bare), "train")
    assert not unmarked.has_marks
    assert not unmarked.sample(everyone, np.random.default_rng(4), return_marks=True)[2].any()
    with pytest.warns(UserWarning, match="decoration masks"):
        train_digit_segmenter(_tiny_config(str(bare), tmp_path / "run", steps=1,
                                           decoration_weight=5))
    with pytest.raises(ValueError, match="shape"):
        read_marks(record["instance_mask_path"], (3, 3))


def test_decoration_weight_weighs_the_background_under_the_marks(plates):
    config = _tiny_config(plates, "unused", gap_weight=1.0, decoration_weight=6.0,
                          batch_size=len(TrainPatches(plates, "train")))
    patches = TrainPatches(plates, "train", config.crop_size, config.crop_padding)
    stream = BatchStream(patches, config, np.random.default_rng(2), prefetch=False)
    _, masks, weights = next(stream)
    plain = BatchStream(patches, _tiny_config(plates, "unused", gap_weight=1.0,
                                              decoration_weight=0.0,
                                              batch_size=config.batch_size),
                        np.random.default_rng(2), prefetch=False)
    _, plain_masks, plain_weights = next(plain)
    np.testing.assert_array_equal(masks, plain_masks)  # the same batch
    assert plain_weights is None
    share = (weights - 1) / 6  # the marks' share: multiples of 1/16 (4x4 sub-pixels)
    np.testing.assert_allclose(share * 16, np.round(share * 16), atol=1e-4)
    assert share.min() >= 0 and share.max() <= 1 and (share > 0).any()
    assert (weights[masks != 0] == 1).all()


def test_reading_in_worker_processes_gives_the_same_plates(plates, capsys):
    one = load_crops(plates, "val")
    two = load_crops(plates, "val", workers=2, progress=True)
    assert one["texts"] == two["texts"] and len(one["texts"]) > 0
    np.testing.assert_array_equal(one["crops"], two["crops"])
    np.testing.assert_array_equal(one["masks"], two["masks"])
    assert "val plates" in capsys.readouterr().err  # the progress bar
    serial, parallel = TrainPatches(plates, "train"), TrainPatches(plates, "train", workers=3)
    assert serial.texts == parallel.texts and len(serial) > 0
    for name in ("patches", "patch_regions", "boxes", "class_of"):
        for a, b in zip(getattr(serial, name), getattr(parallel, name)):
            np.testing.assert_array_equal(a, b)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            load_crops(plates, "val", workers=bad)
    with pytest.raises(ValueError, match="targets"):
        TrainPatches(plates, "train", targets="outline")


def test_color_augmentation_is_seeded_and_stays_in_range():
    crops = np.random.default_rng(0).integers(0, 256, (5, 8, 12, 3), dtype=np.uint8)
    a = augment_colors(crops, np.random.default_rng(7))
    b = augment_colors(crops, np.random.default_rng(7))
    assert a.dtype == np.float32 and a.shape == crops.shape
    assert np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    plain = augment_colors(crops, np.random.default_rng(7), 0, 0, 0, 0, 0)
    assert np.allclose(plain, crops / 255.0, atol=1e-6)  # all strengths 0: the identity


def test_preprocess_standardizes_each_crop():
    crops = np.random.default_rng(1).integers(0, 256, (3, 4, 8, 3), dtype=np.uint8)
    x = preprocess(crops)
    assert x.dtype == np.float32
    assert np.allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    assert np.allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-4)
    assert np.all(np.isfinite(preprocess(np.zeros((1, 4, 8, 3), np.uint8))))  # flat crop
    with pytest.raises(ValueError, match="crops"):
        preprocess(np.zeros((4, 8, 3)))


# -------------------------------------------------------------------------------- training
def test_tiny_training_run_loss_falls(plates):
    patches = TrainPatches(plates, "train")
    crops, masks = patches.sample(np.arange(min(4, len(patches))), np.random.default_rng(0))
    x = nn.Tensor(preprocess(crops))
    target = masks.astype(np.int64)
    nn.manual_seed(0)
    model = UNet(3, NUM_CLASSES, base_channels=4, depth=2)
    optimizer = nn.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(20):
        loss = segmentation_loss(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.6 * losses[0]


def _weights(path):
    checkpoint = nn.load(path)
    return checkpoint["model"], checkpoint["optimizer"]["state"], checkpoint


def test_resume_after_ctrl_c_equals_the_uninterrupted_run(plates, tmp_path, monkeypatch,
                                                          sigint_raises):
    import plates.train_segmenter as train_module

    full = train_digit_segmenter(_tiny_config(plates, tmp_path / "full"))
    assert full["stopped_by"] == "steps" and full["steps"] == 6
    # Ctrl-C during step 5: the step ends, last.npz is saved at step 5.
    ctrl_c_at(monkeypatch, train_module, 5, "segmentation_loss")
    with pytest.raises(TrainingInterrupted) as stop:
        train_digit_segmenter(_tiny_config(plates, tmp_path / "cut"))
    assert stop.value.step == 5 and stop.value.saved
    assert nn.load(tmp_path / "cut" / "last.npz")["engine"]["step"] == 5
    assert not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.undo()
    resumed = train_digit_segmenter(_tiny_config(plates, tmp_path / "cut"), resume=True)
    assert resumed["steps"] == 6

    assert_same_run(tmp_path / "full" / "last.npz", tmp_path / "cut" / "last.npz")
    np.testing.assert_equal(full["test"], resumed["test"])  # NaN (absent class) equals NaN
    assert full["best_step"] == resumed["best_step"]


def test_prefetching_changes_no_number(plates, tmp_path):
    on = train_digit_segmenter(_tiny_config(plates, tmp_path / "on"))
    off = train_digit_segmenter(_tiny_config(plates, tmp_path / "off", prefetch=False))
    model_a, _, ckpt_a = _weights(tmp_path / "on" / "last.npz")
    model_b, _, ckpt_b = _weights(tmp_path / "off" / "last.npz")
    for key in model_a:
        assert np.array_equal(model_a[key], model_b[key]), key
    assert np.array_equal(ckpt_a["history"]["losses"]["loss"], ckpt_b["history"]["losses"]["loss"])
    for key in ("epoch", "position", "order", "rng"):
        np.testing.assert_equal(ckpt_a["batches"][key], ckpt_b["batches"][key], err_msg=key)
    np.testing.assert_equal(on["test"], off["test"])


def test_a_batch_stream_checkpoints_the_cursor_before_its_prefetched_batch(plates):
    config = _tiny_config(plates, "unused", decoration_weight=0.0)
    patches = TrainPatches(plates, "train", config.crop_size, config.crop_padding)
    stream = BatchStream(patches, config, np.random.default_rng(5))
    try:
        for _ in range(3):  # crosses an epoch: a few plates, batches of 4
            next(stream)
        cursor = stream.state_dict()  # the fourth batch is being drawn meanwhile
        fourth = next(stream)
    finally:
        stream.close()
    assert cursor["epoch"] >= 1
    # A stream given the saved cursor (as --resume does) draws that batch again.
    again = BatchStream(patches, config, np.random.default_rng(123), prefetch=False)
    again.load_state_dict(cursor)
    replay = next(again)
    for got, want in zip(replay, fourth):
        assert np.array_equal(got, want)
    inputs, masks, weights = replay
    assert inputs.shape == (4, *config.crop_size, 3) and inputs.dtype == np.float32
    assert masks.shape == (4, *config.crop_size) and masks.dtype == np.int64
    assert weights.shape == masks.shape
    assert set(np.unique(weights).tolist()) <= {1.0, config.gap_weight}


def test_a_batch_stream_refuses_a_bad_cursor(plates):
    config = _tiny_config(plates, "unused")
    patches = TrainPatches(plates, "train", config.crop_size, config.crop_padding)
    stream = BatchStream(patches, config, np.random.default_rng(5), prefetch=False)
    good = stream.state_dict()
    bad = [({**good, "position": 1_000_000_000}, "position"),
           ({**good, "epoch": -1}, "epoch"),
           ({**good, "order": good["order"][::2]}, "permutation"),
           ({**good, "order": np.zeros(len(patches), np.int64)}, "permutation"),
           ({**good, "rng": {"bit_generator": "PCG64"}}, "generator"),
           ({k: v for k, v in good.items() if k != "rng"}, "rng")]
    for state, message in bad:
        with pytest.raises(ValueError, match=message):
            stream.load_state_dict(state)
    np.testing.assert_equal(stream.state_dict(), good)  # unchanged


def test_a_seed_fixes_the_run_and_another_seed_changes_it(plates, tmp_path):
    runs = [train_digit_segmenter(_tiny_config(plates, tmp_path / name, steps=2, seed=seed))
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    weights = [nn.load(tmp_path / name / "last.npz")["model"] for name in "abc"]
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(np.array_equal(weights[0][k], weights[2][k]) for k in weights[0])
    np.testing.assert_equal(runs[0]["test"], runs[1]["test"])


def test_outputs_of_a_run(plates, tmp_path):
    result = train_digit_segmenter(_tiny_config(plates, tmp_path, steps=2, eval_every=1))
    names = sorted(os.listdir(tmp_path))
    assert names == ["best.npz", "history.json", "last.npz", "loss_curve.png", "metrics.json",
                     "predictions.png"]
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["steps"] == 2 and metrics["config"]["steps"] == 2
    assert [e["step"] for e in metrics["evaluations"]] == [1, 2]
    assert 0 <= metrics["test"]["mean_iou"] <= 1
    assert 0 <= metrics["test"]["read_exact"] <= 1
    assert metrics["test"]["plates"] == len(load_crops(plates, "test")["texts"])
    assert len(metrics["test"]["iou_per_class"]) == NUM_CLASSES
    assert result["train_seconds"] > 0
    # The test split with test-time shifts (the default) and in one pass.
    crops = load_crops(plates, "test")
    model, config, _ = load_segmenter(tmp_path / "best.npz")
    for key, tta in (("test", True), ("test_single", False)):
        again = evaluate(model, crops["crops"], crops["masks"], crops["texts"],
                         min_area=config.read_min_area, tta=tta)
        assert metrics[key]["mean_iou"] == pytest.approx(again["mean_iou"])
        assert metrics[key]["read_exact"] == pytest.approx(again["read_exact"])
    model, config, checkpoint = load_segmenter(tmp_path / "best.npz")
    assert config.steps == 2 and not model.training
    assert checkpoint["engine"]["best_step"] == result["best_step"]


def test_resume_without_a_checkpoint_and_bad_configs(tmp_path):
    with pytest.raises(ResumeError, match="last.npz"):
        train_digit_segmenter(TrainConfig(data=str(tmp_path), out=str(tmp_path)), resume=True)
    with pytest.raises(ValueError, match="divisible by 4"):
        TrainConfig(crop_size=(30, 96), depth=3)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="dice_weight"):
        TrainConfig(dice_weight=-1)
    with pytest.raises(ValueError, match="gap_weight"):
        TrainConfig(gap_weight=-1)
    with pytest.raises(ValueError, match="small_weight"):
        TrainConfig(small_weight=0.5)
    with pytest.raises(ValueError, match="targets"):
        TrainConfig(targets="glyphs")
    with pytest.raises(TypeError, match="prefetch"):
        TrainConfig(prefetch="yes")
    with pytest.raises(TypeError, match="TrainConfig"):
        train_digit_segmenter({"steps": 3})
    with pytest.raises(ValueError, match="needs minutes"):
        TrainConfig(steps=None, minutes=None)
    assert TrainConfig().steps is None and quick_config().steps == 30


@pytest.mark.parametrize("overrides, message", [
    (dict(crop_size=(32,)), "crop_size"), (dict(crop_size=(0, 96)), "crop_size"),
    (dict(batch_size=2.0), "batch_size"), (dict(seed=-1), "seed"),
    (dict(encoder="vgg"), "encoder"), (dict(encoder_width=0), "encoder_width"),
    (dict(lr=0), "lr"), (dict(noise=float("nan")), "noise"),
    (dict(final_lr_fraction=0), "final_lr_fraction"),
    (dict(final_lr_fraction=1.5), "final_lr_fraction"), (dict(minutes=-1), "minutes"),
    (dict(hard_weight=-1), "hard_weight"), (dict(decoration_weight=-2), "decoration_weight"),
])
def test_bad_config_fields_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


def test_crop_size_is_a_pair_of_ints_and_an_int_a_square():
    assert TrainConfig(crop_size=[32, 96]).crop_size == (32, 96)
    assert TrainConfig(crop_size=np.array([32, 96])).crop_size == (32, 96)
    assert TrainConfig(crop_size=32).crop_size == (32, 32)


def test_steps_fitted_to_the_time_budget(plates, tmp_path):
    config = _tiny_config(plates, tmp_path, steps=None, minutes=0.1, warmup_steps=3,
                          eval_every=1000)
    result = train_digit_segmenter(config)
    chosen = result["total_steps"]
    assert isinstance(chosen, int) and chosen >= 5  # timed warm-up steps, then fitted
    assert result["steps"] == chosen or result["stopped_by"] == "time"
    assert result["config"]["steps"] is None
    saved = nn.load(tmp_path / "last.npz")["engine"]
    assert saved["total_steps"] == chosen and saved["fitted"]


# ---------------------------------------------------------------------- read-exactly metric
class _Oracle(nn.Module):
    """Returns one-hot logits of stored class maps, batch after batch (a stand-in model)."""

    def __init__(self, maps):
        super().__init__()
        self.maps, self.next = maps, 0

    def forward(self, x):
        maps = self.maps[self.next:self.next + x.shape[0]]
        self.next += x.shape[0]
        return nn.Tensor(10.0 * np.eye(NUM_CLASSES, dtype=np.float32)[maps])


def _plate_map(text, height=16, width=64):
    """A class map with one 5x3 blob per character of a one-row plate."""
    class_map = np.zeros((height, width), np.int64)
    for i, char in enumerate(text):
        class_map[5:10, 2 + 5 * i:5 + 5 * i] = 1 + int(char) if char.isdigit() else 11
    return class_map


def test_read_exactly_counts_whole_plates():
    texts = ["12-345", "907", "A11"]
    maps = np.stack([_plate_map(t) for t in texts])
    crops = np.zeros(maps.shape + (3,), np.uint8)
    perfect = evaluate(_Oracle(maps), crops, maps.astype(np.uint8), texts, batch_size=2)
    assert perfect["reads"] == [text_to_class_text(t) for t in texts] == ["12#345", "907", "#11"]
    assert perfect["read_exact"] == 1.0 and perfect["mean_iou"] == 1.0
    # One wrong character class, and two characters merged into one blob: two plates misread.
    wrong = maps.copy()
    wrong[0][wrong[0] == 1 + 5] = 1 + 6        # "5" read as "6"
    wrong[1][5:10, 5:7] = 1 + 9                # the gap between "9" and "0" filled
    result = evaluate(_Oracle(wrong), crops, maps.astype(np.uint8), texts)
    assert result["reads"][0] == "12#346" and result["reads"][2] == "#11"
    assert len(result["reads"][1]) == 2
    assert result["read_exact"] == pytest.approx(1 / 3)
    assert result["mean_iou"] < 1.0
    assert result["plates"] == 3


# --------------------------------------------------------------------------------- command
@pytest.mark.slow
def test_command_quick_end_to_end(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    command = ["-m", "plates.train_segmenter", "--data", str(data), "--out", str(out), "--quick",
               "--quiet", "--steps", "12"]
    assert "test: mean IoU (characters)" in run_command(command, timeout=600)
    assert os.path.isfile(data / "ImageSets" / "Main" / "test.txt")  # rendered first
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["data_generated"] is True and metrics["data_seconds"] > 0
    assert metrics["steps"] == 12
    assert sorted(os.listdir(out)) == ["best.npz", "history.json", "last.npz", "loss_curve.png",
                                       "metrics.json", "predictions.png"]
    # --resume on a finished run: nothing left to train, the same test metrics.
    run_command(command + ["--resume"], timeout=600)
    with open(out / "metrics.json") as f:
        assert json.load(f)["test"] == metrics["test"]  # NaN written as null: comparable


def test_command_rejects_bad_arguments(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "plates.train_segmenter", "--data", str(tmp_path / "d"), "--out",
         str(tmp_path / "r"), "--steps", "0"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2
    assert "--steps: must be an int >= 1" in result.stderr
    assert not os.path.exists(tmp_path / "d")  # nothing rendered before the check


def test_a_run_stopped_by_the_clock_keeps_its_last_steps(plates, tmp_path):
    config = _tiny_config(plates, tmp_path, steps=10_000, minutes=0.03, eval_every=10_000)
    result = train_digit_segmenter(config)
    assert result["stopped_by"] == "time" and 0 < result["steps"] < 10_000
    last = nn.load(tmp_path / "last.npz")
    assert last["engine"]["step"] == result["steps"]  # validated and saved at the stop
    assert result["best_step"] == result["steps"]


@pytest.mark.slow
def test_ctrl_c_in_the_command_then_resume(plates, tmp_path):
    """A real SIGINT to ``python -m plates.train_segmenter``: exit 130, last.npz, the
    printed command continues the run to the weights of an uninterrupted one."""
    args = ["-m", "plates.train_segmenter", "--data", plates, "--quick", "--steps", "20",
            "--seed", "3", "--no-tta"]
    status, stderr = interrupt_command([*args, "--out", str(tmp_path / "cut")],
                                       rb"digit-segmenter:.* ([4-9]|1\d)/20")  # step 4+
    assert status == 130, stderr
    stopped = nn.load(tmp_path / "cut" / "last.npz")["engine"]["step"]
    assert 4 <= stopped < 20
    resumed = run_command(resume_arguments(stderr, "plates.train_segmenter"))
    assert "trained 20 steps" in resumed
    run_command([*args, "--out", str(tmp_path / "whole"), "--quiet"])
    whole, cut = tmp_path / "whole" / "last.npz", tmp_path / "cut" / "last.npz"
    assert_same_weights(whole, cut)
    np.testing.assert_array_equal(nn.load(whole)["history"]["losses"]["loss"],
                                  nn.load(cut)["history"]["losses"]["loss"])


def test_command_refuses_a_foreign_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    os.makedirs(out)
    nn.save({"engine": {"kind": "retinanet"}}, out / "last.npz")
    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(tmp_path / "d"), "--out", str(out), "--resume"])
    assert exit_.value.code == 2
    assert "a checkpoint of a 'retinanet' run, not of 'digit-segmenter'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "d")  # nothing rendered before the check


def test_test_time_shifts_average_five_shifted_passes():
    nn.manual_seed(0)
    model = UNet(3, NUM_CLASSES, base_channels=4, depth=2)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 8, 12, 3), dtype=np.uint8)
    model.eval()
    with nn.no_grad():
        def probabilities(images):
            logits = model(nn.Tensor(preprocess(images))).data.astype(np.float64)
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        total = np.zeros(crops.shape[:3] + (NUM_CLASSES,))
        for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
            # Move the content by (dy, dx), clamping at the border, pixel by pixel ...
            moved = np.empty_like(crops)
            for y in range(8):
                for x in range(12):
                    moved[:, y, x] = crops[:, min(max(y - dy, 0), 7), min(max(x - dx, 0), 11)]
            shifted = probabilities(moved)
            # ... and each prediction back to where its pixel came from.
            for y in range(8):
                for x in range(12):
                    total[:, y, x] += shifted[:, min(max(y + dy, 0), 7), min(max(x + dx, 0), 11)]
        expected = total.argmax(axis=-1)
    model.train()
    np.testing.assert_array_equal(predict(model, crops, batch_size=2, tta=True), expected)
    assert model.training  # the mode is restored
    plain = predict(model, crops)
    with nn.no_grad():
        model.eval()
        np.testing.assert_array_equal(plain, probabilities(crops).argmax(axis=-1))
    with pytest.raises(TypeError, match="tta"):
        predict(model, crops, tta="yes")


def test_a_failing_step_stops_the_prefetch_thread(plates, tmp_path, monkeypatch):
    import threading
    import plates.train_segmenter as train_module

    calls = []

    def failing_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("step 3 fails")
        return segmentation_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "segmentation_loss", failing_loss)
    with pytest.raises(RuntimeError, match="step 3 fails"):
        train_digit_segmenter(_tiny_config(plates, tmp_path, prefetch=True))
    assert not [t for t in threading.enumerate() if t.name.startswith("detseg-batches")]


def test_command_no_tta_evaluates_in_one_pass(plates, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--data", plates, "--out", str(out), "--quick", "--quiet", "--steps", "3",
                 "--no-tta"]) == 0
    assert "test-time shifts" not in capsys.readouterr().out
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["config"]["tta"] is False and metrics["test"] == metrics["test_single"]
    model, config, _ = load_segmenter(out / "best.npz")
    crops = load_crops(plates, "test", config.crop_size, config.crop_padding)
    single = evaluate(model, crops["crops"], crops["masks"], crops["texts"],
                      min_area=config.read_min_area)
    assert metrics["test"]["read_exact"] == pytest.approx(single["read_exact"])


def test_hard_pixel_weights_change_the_gradient_of_a_training_step(plates, tmp_path):
    """With ``hard_weight`` the first step's loss differs (the weights enter the loss)."""
    runs = []
    for strength in (0.0, 20.0):
        config = quick_config(data=plates, out=str(tmp_path / f"h{strength:g}"), steps=1,
                              hard_weight=strength, progress=False)
        runs.append(train_digit_segmenter(config)["final_train_loss"])
    assert runs[0] != pytest.approx(runs[1], rel=1e-3)
