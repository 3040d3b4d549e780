"""Tests of the synthetic plate generator: exact ground truth, determinism, the CLI."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from plates.classes import CLASS_TO_ID, IGNORE_INDEX, character_class
from plates.synthetic import (
    MIN_IMAGE_SIZE, generate_plate_dataset, image_rng, render_scene, split_ids,
)
from plates.synthetic import fonts, generate, plates, scene
from plates.synthetic.__main__ import main as cli_main
from plates.synthetic.geometry import (
    apply_homography, homography_from_points, inverse_map,
)
from plates.synthetic.textures import fractal_noise, value_noise
from plates.synthetic.vehicles import VEHICLE_KINDS, plan_vehicle
from detection.datasets.voc import read_image_set, read_voc_annotation
from tests.strategies import float_arrays

SIZE = 128
SEEDS = range(8)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def scenes():
    """A few rendered scenes, shared by the ground-truth tests."""
    return [render_scene(np.random.default_rng(seed), SIZE) for seed in SEEDS]


def _plate_groups(objects):
    """[(plate object, [its characters])] following the documented object order."""
    groups = []
    for obj in objects:
        if obj["name"] == "plate":
            groups.append((obj, []))
        elif obj["name"] != "car":
            groups[-1][1].append(obj)
    return groups


# --------------------------------------------------------------------------- render_scene
def test_scene_types_and_shapes(scenes):
    for image, objects, class_mask, instance_mask in scenes:
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert class_mask.shape == (SIZE, SIZE) and class_mask.dtype == np.uint8
        assert instance_mask.shape == (SIZE, SIZE) and instance_mask.dtype == np.uint8
        assert isinstance(objects, list)
        for obj in objects:
            assert set(obj) <= {"name", "bbox", "difficult", "truncated", "text"}
            assert obj["name"] in CLASS_TO_ID and obj["name"] != "background"
            assert isinstance(obj["difficult"], bool) and isinstance(obj["truncated"], bool)


def test_boxes_are_tight_boxes_of_nonempty_instance_masks(scenes):
    for _, objects, _, instance_mask in scenes:
        assert int(instance_mask.max(initial=0)) == len(objects)
        for index, obj in enumerate(objects, start=1):
            rows, cols = np.nonzero(instance_mask == index)
            assert rows.size > 0, f"object {index} ({obj['name']}) has an empty mask"
            tight = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            assert tuple(obj["bbox"]) == tuple(int(v) for v in tight)


def test_class_mask_is_class_of_object_on_top(scenes):
    for _, objects, class_mask, instance_mask in scenes:
        lut = np.array([0] + [CLASS_TO_ID[obj["name"]] for obj in objects], dtype=np.uint8)
        np.testing.assert_array_equal(class_mask, lut[instance_mask])
        assert not np.any(class_mask == IGNORE_INDEX)


def test_object_order_car_plate_characters(scenes):
    for _, objects, _, _ in scenes:
        previous = None
        for obj in objects:
            if obj["name"] == "plate":
                assert previous is not None, "a plate must follow its vehicle"
            elif obj["name"] != "car":
                assert previous not in (None, "car"), "a character must follow a plate"
            previous = obj["name"]


def test_characters_inside_their_plate_and_classes_match_text(scenes):
    groups = [g for _, objects, _, _ in scenes for g in _plate_groups(objects)]
    assert groups, "the test seeds should produce plates"
    for plate, chars in groups:
        px1, py1, px2, py2 = plate["bbox"]
        for char in chars:
            x1, y1, x2, y2 = char["bbox"]
            assert px1 <= x1 and py1 <= y1 and x2 <= px2 and y2 <= py2
            assert len(char["text"]) == 1
            assert CLASS_TO_ID[char["name"]] == character_class(char["text"])
        # Characters come in reading order; a glyph too thin for any pixel may be absent.
        text = iter(plate["text"].replace(" ", ""))
        assert all(any(c == t for t in text) for c in (ch["text"] for ch in chars))


def test_plates_have_all_their_characters_when_large_enough():
    """With digits >= 8 px tall every character reaches coverage 0.5 somewhere."""
    checked = 0
    for seed in range(12):
        _, objects, _, _ = render_scene(np.random.default_rng(seed), 256)
        for plate, chars in _plate_groups(objects):
            if any(c["difficult"] for c in chars) or plate["bbox"][3] - plate["bbox"][1] < 24:
                continue
            assert "".join(c["text"] for c in chars) == plate["text"].replace(" ", "")
            checked += 1
    assert checked >= 3


def test_render_scene_is_deterministic():
    a = render_scene(np.random.default_rng(7), 96)
    b = render_scene(7, 96)   # an int seed means default_rng(seed)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[3], b[3])


def test_empty_scene_has_empty_annotations(monkeypatch):
    monkeypatch.setattr(scene, "VEHICLE_COUNT_PROBS", (1.0, 0.0, 0.0, 0.0))
    image, objects, class_mask, instance_mask = render_scene(np.random.default_rng(0), 64)
    assert image.shape == (64, 64, 3)
    assert objects == []
    assert not class_mask.any() and not instance_mask.any()


@pytest.mark.parametrize("size, error", [(32, ValueError), (MIN_IMAGE_SIZE - 1, ValueError),
                                         (100000, ValueError), (128.0, TypeError),
                                         (True, TypeError)])
def test_render_scene_bad_image_size(size, error):
    with pytest.raises(error, match="image_size"):
        render_scene(np.random.default_rng(0), size)


def test_render_scene_bad_rng():
    with pytest.raises(TypeError, match="rng"):
        render_scene("seed", 128)


# --------------------------------------------------------------------------- layout statistics
def test_layout_statistics():
    """Over many layouts (no painting): plates without plate >= 3%, 0..3 vehicles, plate
    widths in ~30..120 px at 256, every kind and plate layout used."""
    counts, kinds, layouts, widths = [], set(), set(), []
    without_plate = 0
    trials = 300
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        count = int(rng.choice(len(scene.VEHICLE_COUNT_PROBS), p=scene.VEHICLE_COUNT_PROBS))
        _, placed = scene._place_vehicles(rng, 256, count)
        counts.append(len(placed))
        for p in placed:
            kinds.add(p.plan.kind)
            if p.plan.plate_layout is not None:
                layouts.add(p.plan.plate_layout)
                widths.append(p.plan.plate_width * p.unit)
        without_plate += all(p.quad is None for p in placed)
    assert set(counts) == {0, 1, 2, 3}
    assert kinds == set(VEHICLE_KINDS)
    assert layouts == {"one_row", "two_row", "euro", "moto"}
    assert without_plate / trials >= 0.03
    assert 27 <= min(widths) and max(widths) <= 121
    assert max(widths) > 90 and min(widths) < 35


# --------------------------------------------------------------------------- plates, fonts
@pytest.mark.parametrize("layout", sorted(plates.PLATE_LAYOUTS))
def test_render_plate_one_mask_per_character(layout):
    plate = plates.render_plate(np.random.default_rng(3), layout)
    height, width = plate.alpha.shape
    assert plate.rgb.shape == (height, width, 3)
    assert plate.chars == [c for c in plate.text if c != " "]
    if layout in ("two_row", "moto"):
        assert plate.text.count(" ") == 1      # two rows, joined by a space
    elif layout == "one_row":
        assert " " not in plate.text
    # Every character owns ink pixels, and only there does it have coverage.
    present = set(np.unique(plate.char_index)) - {0}
    assert present == set(range(1, len(plate.chars) + 1))
    assert np.all(plate.char_alpha[plate.char_index == 0] == 0)


@pytest.mark.parametrize("layout, pattern", [("one_row", r"^\d\d[A-Z]{1,2}-\d{3,4}(\.\d\d)?$"),
                                             ("moto", r"^\d\d-?[A-Z][A-Z\d]$")])
def test_plate_text_formats(layout, pattern):
    import re
    rng = np.random.default_rng(0)
    for _ in range(20):
        rows = plates.random_plate_text(rng, layout)
        assert re.match(pattern, rows[0]), rows


def test_plates_without_truetype_fonts(monkeypatch):
    """Pillow's built-in scalable font alone is enough."""
    monkeypatch.setattr(fonts, "available_fonts", lambda: (fonts.BUILTIN_FONT,))
    plate = plates.render_plate(np.random.default_rng(0), "one_row")
    assert set(np.unique(plate.char_index)) - {0} == set(range(1, len(plate.chars) + 1))


def test_discover_fonts(tmp_path):
    assert fonts.discover_fonts([str(tmp_path / "missing")]) == []
    (tmp_path / "broken.ttf").write_bytes(b"not a font")
    assert fonts.discover_fonts([str(tmp_path)]) == []
    found = fonts.available_fonts()
    assert found[0] == fonts.BUILTIN_FONT and list(found[1:]) == sorted(found[1:])


def test_render_glyph_rejects_strings():
    with pytest.raises(ValueError, match="char"):
        fonts.render_glyph(fonts.BUILTIN_FONT, 20, "AB")


def _warp_plate_loop(plate, homography, region, supersample):
    """Slow reference: every pixel, every sub-sample, every character, one at a time."""
    x0, y0, x1, y1 = region
    h_inv = np.linalg.inv(homography)
    height, width = plate.alpha.shape
    num = len(plate.chars)
    coverage = np.zeros((y1 - y0, x1 - x0))
    chars = np.zeros((num, y1 - y0, x1 - x0))
    for row in range(y0, y1):
        for col in range(x0, x1):
            for i in range(supersample):
                for j in range(supersample):
                    x = col + (j + 0.5) / supersample
                    y = row + (i + 0.5) / supersample
                    # The same arithmetic as inverse_map, so samples on a pixel edge agree.
                    den = h_inv[2, 0] * x + h_inv[2, 1] * y + h_inv[2, 2]
                    u = (h_inv[0, 0] * x + h_inv[0, 1] * y + h_inv[0, 2]) / den
                    v = (h_inv[1, 0] * x + h_inv[1, 1] * y + h_inv[1, 2]) / den
                    cu, rv = int(np.floor(u)), int(np.floor(v))
                    if 0 <= cu < width and 0 <= rv < height:
                        coverage[row - y0, col - x0] += plate.alpha[rv, cu] / 255
                        k = plate.char_index[rv, cu]
                        if k:
                            chars[k - 1, row - y0, col - x0] += plate.char_alpha[rv, cu] / 255
    return coverage / supersample ** 2, chars / supersample ** 2


@pytest.mark.parametrize("supersample", [2, 3])
def test_warp_plate_matches_loop_reference(supersample):
    rng = np.random.default_rng(supersample)
    plate = plates.render_plate(rng, "moto")
    height, width = plate.alpha.shape
    source = np.array([[0, 0], [width, 0], [width, height], [0, height]], float)
    quad = np.array([[10.3, 12.1], [37.9, 10.4], [39.2, 33.7], [9.1, 35.2]])
    homography = homography_from_points(source, quad)
    warped = plates.warp_plate(plate, homography, 48, 48, supersample)
    assert warped.region == (9, 10, 40, 36)
    coverage, chars = _warp_plate_loop(plate, homography, warped.region, supersample)
    np.testing.assert_allclose(warped.coverage, coverage, atol=1e-5)
    np.testing.assert_allclose(warped.char_coverage, chars, atol=1e-5)
    assert warped.premultiplied.shape == coverage.shape + (3,)


def test_warp_plate_outside_image_is_empty():
    plate = plates.render_plate(np.random.default_rng(0), "moto")
    height, width = plate.alpha.shape
    source = np.array([[0, 0], [width, 0], [width, height], [0, height]], float)
    homography = homography_from_points(source, source + 500)
    warped = plates.warp_plate(plate, homography, 64, 64, 2)
    assert warped.coverage.shape == (0, 0)
    assert warped.char_coverage.shape == (len(plate.chars), 0, 0)


# --------------------------------------------------------------------------- geometry, noise
@settings(deadline=None, max_examples=25)
@given(jitter=float_arrays((4, 2), low=-6.0, high=6.0), seed=st.integers(0, 2**16))
def test_homography_maps_the_four_points(jitter, seed):
    src = np.array([[0, 0], [40, 0], [40, 20], [0, 20]], float)
    dst = np.array([[50, 50], [90, 52], [92, 70], [48, 71]], float) + jitter
    h = homography_from_points(src, dst)
    np.testing.assert_allclose(apply_homography(h, src), dst, atol=1e-8)
    # ... and its inverse maps them back.
    points = np.random.default_rng(seed).uniform(0, 40, size=(5, 2))
    np.testing.assert_allclose(apply_homography(np.linalg.inv(h), apply_homography(h, points)),
                               points, atol=1e-8)


def test_homography_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        homography_from_points(np.zeros((3, 2)), np.zeros((4, 2)))


def test_inverse_map_identity_subsamples():
    rows, cols = inverse_map(np.eye(3), (2, 3, 5, 5), 2)
    assert rows.shape == cols.shape == (2, 3, 4)
    # With the identity, sub-samples of pixel (r, c) stay in pixel (r, c).
    np.testing.assert_array_equal(rows, np.broadcast_to(np.arange(3, 5)[:, None, None], (2, 3, 4)))
    np.testing.assert_array_equal(cols, np.broadcast_to(np.arange(2, 5)[None, :, None], (2, 3, 4)))


def test_noise_shapes_and_range():
    rng = np.random.default_rng(0)
    noise = value_noise(rng, 30, 50, 7.0)
    assert noise.shape == (30, 50) and noise.dtype == np.float32
    assert np.abs(noise).max() <= 1.5
    assert fractal_noise(rng, 17, 9, 8.0).shape == (17, 9)


@pytest.mark.parametrize("kind", sorted(VEHICLE_KINDS))
def test_vehicle_plan_renders_at_any_scale(kind):
    layouts = VEHICLE_KINDS[kind][0]
    plan = plan_vehicle(np.random.default_rng(1), kind, layouts[0] if layouts else None)
    for unit in (20.0, 75.5):
        layer = plan.render(unit)
        assert layer.alpha.shape == plan.size(unit) and layer.rgb.shape == plan.size(unit) + (3,)
        assert 0 <= layer.alpha.min() and layer.alpha.max() <= 1 and (layer.alpha >= 0.5).any()
        assert np.all(layer.rgb <= 255 * layer.alpha[:, :, None] + 1e-3)   # premultiplied
        if layouts:
            cx, cy = layer.plate_center
            assert layer.alpha[int(cy), int(cx)] >= 0.5   # the plate sits on the vehicle


# --------------------------------------------------------------------------- the dataset on disk
def _tree(root):
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("plates") / "a"
    summary = generate_plate_dataset(root, 6, seed=11, image_size=SIZE, progress=False)
    return root, summary


def test_dataset_layout_and_round_trip(dataset):
    root, summary = dataset
    assert summary["num_images"] == 6 and summary["splits"] == {"train": 4, "val": 1, "test": 1}
    ids = [f"{i:06d}" for i in range(6)]
    listed = sorted(sum((read_image_set(root, s) for s in ("train", "val", "test")), []))
    assert listed == ids
    assert read_image_set(root, "train", folder="Segmentation") == read_image_set(root, "train")
    for index, image_id in enumerate(ids):
        _, objects, class_mask, instance_mask = render_scene(image_rng(11, index), SIZE)
        annotation = read_voc_annotation(root / "Annotations" / f"{image_id}.xml")
        assert [o["name"] for o in annotation["objects"]] == [o["name"] for o in objects]
        assert [o["bbox"] for o in annotation["objects"]] == [
            tuple(float(v) for v in o["bbox"]) for o in objects]
        assert [o["text"] for o in annotation["objects"]] == [o.get("text") for o in objects]
        np.testing.assert_array_equal(
            np.asarray(Image.open(root / "SegmentationClass" / f"{image_id}.png")), class_mask)
        np.testing.assert_array_equal(
            np.asarray(Image.open(root / "SegmentationObject" / f"{image_id}.png")), instance_mask)
        assert Image.open(root / "JPEGImages" / f"{image_id}.jpg").size == (SIZE, SIZE)
    assert summary["plates"] == sum(
        1 for i in ids for o in read_voc_annotation(root / "Annotations" / f"{i}.xml")["objects"]
        if o["name"] == "plate")


def test_same_seed_same_bytes_any_worker_count(dataset, tmp_path):
    root, _ = dataset
    generate_plate_dataset(tmp_path / "b", 6, seed=11, image_size=SIZE, progress=False)
    generate_plate_dataset(tmp_path / "c", 6, seed=11, image_size=SIZE, workers=2, progress=False)
    reference = _tree(root)
    assert len(reference) == 6 * 4 + 6 + 1  # four files per image, six split lists, labels.txt
    assert _tree(tmp_path / "b") == reference
    assert _tree(tmp_path / "c") == reference
    generate_plate_dataset(tmp_path / "d", 6, seed=12, image_size=SIZE, progress=False)
    assert _tree(tmp_path / "d") != reference


def test_split_ids():
    ids = [str(i) for i in range(10)]
    parts = split_ids(ids, 0, (0.8, 0.1, 0.1))
    assert [len(parts[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    assert sorted(sum(parts.values(), []), key=int) == ids
    assert split_ids(ids, 0, (0.8, 0.1, 0.1)) == parts
    assert split_ids([], 0, (0.8, 0.1, 0.1)) == {"train": [], "val": [], "test": []}


def test_zero_images_writes_empty_splits(tmp_path):
    summary = generate_plate_dataset(tmp_path, 0, seed=0, progress=False)
    assert summary["num_images"] == 0
    assert read_image_set(tmp_path, "train") == []


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_images": -1}, ValueError, "num_images"),
    ({"num_images": 2.5}, ValueError, "num_images"),
    ({"seed": -3}, ValueError, "seed"),
    ({"image_size": 16}, ValueError, "image_size"),
    ({"workers": 0}, ValueError, "workers"),
    ({"splits": (0.5, 0.5, 0.5)}, ValueError, "splits"),
    ({"splits": (1.0, 0.0)}, ValueError, "splits"),
    ({"image_format": "gif"}, ValueError, "image_format"),
    ({"jpeg_quality": 0}, ValueError, "jpeg_quality"),
])
def test_generate_bad_arguments_write_nothing(tmp_path, kwargs, error, match):
    arguments = {"out_dir": tmp_path / "out", "num_images": 2, "seed": 0, "progress": False}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        generate_plate_dataset(**arguments)
    assert not (tmp_path / "out").exists()


def test_interrupted_run_leaves_no_partial_files(tmp_path, monkeypatch):
    real_write = generate.write_voc_example
    calls = []

    def flaky_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(generate, "write_voc_example", flaky_write)
    with pytest.raises(KeyboardInterrupt):
        generate_plate_dataset(tmp_path, 5, seed=0, image_size=64, progress=False)
    assert not (tmp_path / "ImageSets").exists()       # the lists are written last
    files = _tree(tmp_path)
    assert not [name for name in files if name.endswith(".tmp")]
    annotations = sorted(n for n in files if n.startswith("Annotations"))
    assert len(annotations) == 2
    for name in annotations:                          # a complete XML means a complete example
        stem = os.path.splitext(os.path.basename(name))[0]
        for folder, ext in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png"),
                            ("SegmentationObject", ".png")):
            assert os.path.join(folder, stem + ext) in files


# --------------------------------------------------------------------------- command line
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "plates.synthetic", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_writes_a_dataset(tmp_path):
    out = tmp_path / "cli"
    result = _cli("plates", "--out", str(out), "--num-images", "3", "--seed", "5",
                  "--image-size", "64")
    assert result.returncode == 0, result.stderr
    assert "wrote 3 images" in result.stdout
    assert len(os.listdir(out / "Annotations")) == 3
    _, objects, _, _ = render_scene(image_rng(5, 2), 64)
    assert [o["name"] for o in read_voc_annotation(out / "Annotations" / "000002.xml")["objects"]] \
        == [o["name"] for o in objects]


def test_cli_bad_count_fails_in_a_subprocess(tmp_path):
    result = _cli("plates", "--out", str(tmp_path / "X"), "--num-images", "-4")
    assert result.returncode == 2
    assert "--num-images" in result.stderr and "non-negative" in result.stderr
    assert not (tmp_path / "X").exists()


@pytest.mark.parametrize("args, message", [
    (["plates", "--out", "X", "--num-images", "-4"], "--num-images"),
    (["plates", "--out", "X", "--num-images", "three"], "--num-images"),
    (["plates", "--out", "X", "--num-images", "3", "--image-size", "20"], "image_size"),
    (["plates", "--out", "X", "--num-images", "3", "--workers", "0"], "--workers"),
    (["plates", "--out", "X", "--num-images", "3", "--splits", "0.5", "0.5", "0.5"], "splits"),
    (["plates", "--num-images", "3"], "--out"),
    (["cars", "--out", "X", "--num-images", "3"], "invalid choice"),
    ([], "COMMAND"),
])
def test_cli_bad_arguments(tmp_path, capsys, args, message):
    args = [str(tmp_path / "X") if a == "X" else a for a in args]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "X").exists()
