"""Tests of the synthetic plate generator: exact ground truth, determinism, the CLI."""
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from plates.classes import CAR, CHAR, CLASS_TO_ID, DIGIT_IDS, IGNORE_INDEX, PLATE, character_class
from plates.synthetic import (
    MIN_IMAGE_SIZE, generate_plate_dataset, image_rng, render_scene, split_ids,
)
from plates.synthetic import fonts, generate, plates, scene
from plates.synthetic.decorations import DECORATION_IDS
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
    """Slow reference: every pixel, every sub-sample, every character, one at a time.

    Returns plate coverage, frame coverage, premultiplied colour and character coverage.
    """
    x0, y0, x1, y1 = region
    h_inv = np.linalg.inv(homography)
    height, width = plate.alpha.shape
    num = len(plate.chars)
    coverage = np.zeros((y1 - y0, x1 - x0))
    frame = np.zeros((y1 - y0, x1 - x0))
    colour = np.zeros((y1 - y0, x1 - x0, 3))
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
                        frame[row - y0, col - x0] += plate.frame_alpha[rv, cu] / 255
                        weight = (int(plate.alpha[rv, cu]) + int(plate.frame_alpha[rv, cu])) / 255
                        colour[row - y0, col - x0] += plate.rgb[rv, cu] * weight
                        k = plate.char_index[rv, cu]
                        if k:
                            chars[k - 1, row - y0, col - x0] += plate.char_alpha[rv, cu] / 255
    n = supersample ** 2
    return coverage / n, frame / n, colour / n, chars / n


@pytest.mark.parametrize("supersample, mix", [(2, plates.PlateMix.only()),
                                              (3, plates.PlateMix.only("frame_text", "strip"))])
def test_warp_plate_matches_loop_reference(supersample, mix):
    rng = np.random.default_rng(supersample)
    plate = plates.render_plate(rng, "moto", mix=mix, px_per_mm=0.4)
    height, width = plate.alpha.shape
    source = np.array([[0, 0], [width, 0], [width, height], [0, height]], float)
    quad = np.array([[10.3, 12.1], [37.9, 10.4], [39.2, 33.7], [9.1, 35.2]])
    homography = homography_from_points(source, quad)
    warped = plates.warp_plate(plate, homography, 48, 48, supersample)
    assert warped.region == (9, 10, 40, 36)
    coverage, frame, colour, chars = _warp_plate_loop(plate, homography, warped.region,
                                                      supersample)
    np.testing.assert_allclose(warped.coverage, coverage, atol=1e-6)
    np.testing.assert_allclose(warped.frame_coverage, frame, atol=1e-6)
    np.testing.assert_allclose(warped.char_coverage, chars, atol=1e-5)
    # The colour is averaged in 8 bits: within one level.
    assert warped.premultiplied.dtype == np.uint8
    np.testing.assert_allclose(warped.premultiplied, colour, atol=1.0)
    if "frame" in plate.features:
        assert (frame >= 0.5).any()


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
        assert layer.alpha.dtype == np.uint8 and layer.rgb.dtype == np.uint8
        assert layer.alpha.min() == 0 and layer.alpha.max() == 255
        assert np.all(layer.rgb[layer.alpha == 0] == 0)
        if layouts:
            cx, cy = layer.plate_center
            assert layer.alpha[int(cy), int(cx)] >= 128   # the plate sits on the vehicle
        # A window paints that part of the layer: same size and place, same pixels up to
        # a few edges (Pillow's rasterizer is not exactly shift-invariant).
        height, width = plan.size(unit)
        window = (width // 3, height // 4, width - 2, height - 1)
        part = plan.render(unit, window)
        assert part.offset == window[:2]
        crop = layer.alpha[window[1]:window[3], window[0]:window[2]]
        assert part.alpha.shape == crop.shape
        assert np.mean(part.alpha != crop) < 0.01
        # The pixels of the mask outside the window, counted on the whole layer.
        inside = np.count_nonzero(crop >= 128)
        assert plan.off_window_pixels(unit, window) == np.count_nonzero(layer.alpha >= 128) - inside
        assert plan.off_window_pixels(unit, (0, 0, width, height)) == 0


def test_vehicle_colour_composites_like_the_supersampled_drawing():
    """Pasted through its coverage onto black, an unshaded layer gives the box-filtered
    2x drawing: the colour is the mean over the covered samples, not darkened at edges."""
    from plates.synthetic.vehicles import SUPERSAMPLE

    plan = plan_vehicle(np.random.default_rng(4), "car_rear", "one_row")
    plan.shading = (1.0, 1.0, 0.0)
    unit = 61.3
    layer = plan.render(unit)
    height, width = plan.size(unit)
    reference = Image.new("RGB", (width * SUPERSAMPLE, height * SUPERSAMPLE))
    plan._paint(reference, unit, 0, 0, coverage_only=False)
    reference = np.asarray(reference.reduce(SUPERSAMPLE)).astype(int)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(Image.fromarray(layer.rgb), (0, 0), Image.fromarray(layer.alpha))
    difference = np.abs(np.asarray(canvas).astype(int) - reference)
    assert difference.max() <= 2
    edge = (layer.alpha > 0) & (layer.alpha < 255)
    assert edge.sum() > 50 and layer.rgb[edge].max() > 100    # edges keep their colour


# --------------------------------------------------------------------------- camera effects
def test_fixed_point_blur_matches_float_filter():
    """The 16-bit fixed-point filter rounds the float filter with the same weights."""
    from plates.synthetic.effects import _convolve, _fixed_point

    image = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    for offsets, weights in ((np.arange(-3, 4), np.exp(-0.5 * (np.arange(-3, 4) / 1.2) ** 2)),
                             (np.arange(4) - 2, np.ones(4))):
        q = _fixed_point(weights)
        assert q.sum() == 256 and q.dtype.kind == "i"
        for axis in (0, 1):
            ours = _convolve(image, offsets, q, axis).astype(float)
            # out[i] = sum_k q_k / 256 * in[clip(i + offset_k)], one pixel at a time.
            reference = np.zeros(image.shape)
            length = image.shape[axis]
            for i in range(length):
                for offset, weight in zip(offsets, q):
                    source = min(max(i + int(offset), 0), length - 1)
                    taken = image[source] if axis == 0 else image[:, source]
                    if axis == 0:
                        reference[i] += weight / 256 * taken
                    else:
                        reference[:, i] += weight / 256 * taken
            assert np.abs(ours - reference).max() <= 0.5 + 1e-9


def test_sensor_noise_is_seeded_gaussian_and_scaled():
    from plates.synthetic.effects import NOISE_STEPS, noise_pool, sensor_noise

    a = np.asarray(sensor_noise(np.random.default_rng(5), 300, 200)).astype(float) - 128
    b = np.asarray(sensor_noise(np.random.default_rng(5), 300, 200)).astype(float) - 128
    np.testing.assert_array_equal(a, b)
    sigma = np.random.default_rng(5).uniform(0.0, 9.0)       # the first draw
    assert a.shape == (200, 300, 3)
    assert abs(a.mean()) < 0.1 and abs(a.std() / (0.806 * sigma) - 1) < 0.05
    pool = np.asarray(noise_pool()).astype(float) - 128
    # Luma (shared by a pixel's channels) and chroma: channel correlation 0.49 / 0.65.
    correlation = np.corrcoef(pool[:, :, 0].ravel(), pool[:, :, 1].ravel())[0, 1]
    assert abs(correlation - 0.49 / 0.65) < 0.02
    assert abs(pool.std() / NOISE_STEPS - 0.806) < 0.01
    big = sensor_noise(np.random.default_rng(1), 2000, 1700)     # tiles the pool
    assert big.size == (2000, 1700)


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
        _, objects, class_mask, instance_mask, decoration = render_scene(
            image_rng(11, index), SIZE, decorations=True)
        np.testing.assert_array_equal(
            np.asarray(Image.open(root / "SegmentationDecoration" / f"{image_id}.png")),
            decoration)
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
    assert len(reference) == 6 * 5 + 6 + 1  # five files per image, six split lists, labels.txt
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
                            ("SegmentationObject", ".png"), ("SegmentationDecoration", ".png")):
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


# --------------------------------------------------------------------------- plate features
FEATURE_DECORATIONS = {"strip": "strip", "sticker": "sticker", "screws": "screw",
                       "separator": "separator", "frame": "frame", "frame_text": "frame_text"}
NOT_CHARACTERS = ("strip", "sticker", "screw", "separator", "frame_text")


def _luma(colour):
    return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]


def test_plate_mix_checks_and_parses():
    with pytest.raises(ValueError, match="PlateMix.strip"):
        plates.PlateMix(strip=1.5)
    with pytest.raises(ValueError, match="PlateMix.dirt"):
        plates.PlateMix(dirt=True)
    with pytest.raises(ValueError, match="features"):
        plates.PlateMix.only("glitter")
    assert plates.PlateMix.only("frame_text").frame == 1.0
    assert plates.PlateMix.only().probabilities().sum() == 0
    mix = plates.parse_plate_mix(["strip=0.5", "dirt=0"])
    assert (mix.strip, mix.dirt, mix.frame) == (0.5, 0.0, plates.PlateMix().frame)
    for bad in (["strip"], ["glitter=1"], ["dirt=lots"], ["dark=-0.1"]):
        with pytest.raises(ValueError):
            plates.parse_plate_mix(bad)
    with pytest.raises(TypeError, match="mix"):
        plates.render_plate(np.random.default_rng(0), "moto", mix={"strip": 1})
    with pytest.raises(ValueError, match="px_per_mm"):
        plates.render_plate(np.random.default_rng(0), "moto", px_per_mm=0)


@pytest.mark.parametrize("feature", sorted(FEATURE_DECORATIONS))
def test_forced_decoration_is_drawn_where_no_character_is(feature):
    """Each decoration, forced, is drawn (on every layout that allows it) and never
    where a character has ink."""
    kind = DECORATION_IDS[FEATURE_DECORATIONS[feature]]
    drawn = 0
    for seed in range(12):
        layout = sorted(plates.PLATE_LAYOUTS)[seed % 4]
        if feature == "separator":
            layout = "euro"                 # the only formats with gaps in the text
        plate = plates.render_plate(np.random.default_rng(seed), layout,
                                    mix=plates.PlateMix.only(feature), px_per_mm=0.4)
        allowed = not (feature == "strip" and layout == "moto") and \
            not (feature == "separator" and " " not in plate.text)
        assert (feature in plate.features) == allowed or feature == "screws"
        if feature in plate.features:
            assert np.any(plate.decoration == kind), (feature, layout, seed)
            drawn += 1
        # Decorations (the frame aside, which lies outside the plate) never touch ink.
        assert not np.any((plate.char_index > 0) & (plate.decoration > 0))
        assert set(np.unique(plate.char_index)) - {0} == set(range(1, len(plate.chars) + 1))
    assert drawn >= 8


def test_separator_dots_float_at_mid_height_and_dashes_are_text():
    """A decorative dot sits at the middle of its row's digits (a full stop sits on the
    baseline); no decorative dash exists (it would be the text's hyphen)."""
    from plates.synthetic import decorations

    assert "dash" not in decorations.SEPARATOR_KINDS
    with pytest.raises(ValueError, match="kind"):
        decorations.draw_separator(None, None, "dash", (0, 4), 5, 10, (0, 0, 0), (255,) * 3)
    checked = 0
    for seed in range(40):
        plate = plates.render_plate(np.random.default_rng(seed), "euro",
                                    mix=plates.PlateMix.only("separator"), px_per_mm=0.8)
        separator = plate.decoration == DECORATION_IDS["separator"]
        if "separator" not in plate.features:
            continue                                   # no gap in the text
        chars = ndimage.find_objects(plate.char_index)   # one slice pair per character
        middle = np.median([(rows.start + rows.stop - 1) / 2 for rows, _ in chars])
        height = np.median([rows.stop - rows.start for rows, _ in chars])
        blobs, count = ndimage.label(separator)
        for rows, cols in ndimage.find_objects(blobs):
            assert abs((rows.start + rows.stop - 1) / 2 - middle) < 0.1 * height, seed
            if rows.stop - rows.start < 0.3 * height:  # a dot (an emblem is larger)
                assert rows.stop - rows.start < 0.2 * height, seed
                checked += 1
    assert checked >= 5


def test_frame_lies_outside_the_plate_and_carries_text():
    for seed in range(4):
        plate = plates.render_plate(np.random.default_rng(seed), "one_row",
                                    mix=plates.PlateMix.only("frame_text"), px_per_mm=0.4)
        x0, y0, x1, y1 = plate.plate_box
        assert plate.alpha.shape[1] > x1 - x0 and plate.alpha.shape[0] > y1 - y0
        assert not np.any((plate.alpha > 0) & (plate.frame_alpha > 0))
        text = plate.decoration == DECORATION_IDS["frame_text"]
        assert text.any() and not np.any(text & (plate.alpha > 0))
        assert np.all(plate.frame_alpha[text] == 255)
        assert not plate.alpha[:y0].any() and not plate.alpha[y1:].any()


def test_dark_plates_have_light_characters():
    for seed in range(6):
        plate = plates.render_plate(np.random.default_rng(seed), "one_row",
                                    mix=plates.PlateMix.only("dark"), px_per_mm=0.4)
        ink = plate.rgb[plate.char_alpha == 255].astype(float).mean(axis=0)
        face = plate.rgb[(plate.alpha == 255) & (plate.char_index == 0)].astype(float)
        assert _luma(ink) > _luma(np.median(face, axis=0)) + 60


@pytest.mark.parametrize("feature", ["gradient", "shadow", "dirt"])
def test_light_and_dirt_change_colours_not_labels(feature):
    """The same draws with and without the feature: same masks, other colours."""
    for seed in range(3):
        plain = plates.render_plate(np.random.default_rng(seed), "two_row",
                                    mix=plates.PlateMix.only(), px_per_mm=0.4)
        marked = plates.render_plate(np.random.default_rng(seed), "two_row",
                                     mix=plates.PlateMix.only(feature), px_per_mm=0.4)
        assert feature in marked.features and feature not in plain.features
        for name in ("alpha", "frame_alpha", "char_index", "char_alpha", "decoration"):
            np.testing.assert_array_equal(getattr(marked, name), getattr(plain, name))
        assert marked.text == plain.text
        changed = np.abs(marked.rgb.astype(int) - plain.rgb.astype(int)).max(axis=2) > 8
        assert changed[plain.alpha > 0].mean() > 0.02


def test_canonical_resolution_levels():
    assert plates.canonical_resolution("one_row", 30.0) == 0.2
    assert plates.canonical_resolution("one_row", 60.0) == 0.4
    assert plates.canonical_resolution("one_row", 100.0) == 0.8
    assert plates.canonical_resolution("one_row", 400.0) == plates.PX_PER_MM
    for width in (10.0, 40.0, 120.0):
        px = plates.canonical_resolution("moto", width)
        assert px == plates.PX_PER_MM or 190 * px >= plates.OVERSAMPLING * width


@pytest.fixture(scope="module")
def decorated_scenes():
    """Scenes whose plates carry every feature, with their decoration masks."""
    mix = plates.PlateMix.only(*plates.PLATE_FEATURES)
    return [render_scene(np.random.default_rng(seed), 192, plate_mix=mix, decorations=True)
            for seed in range(10)]


def test_decorated_scenes_labels_stay_exact(decorated_scenes):
    kinds_seen = set()
    for image, objects, class_mask, instance_mask, decoration in decorated_scenes:
        assert decoration.shape == class_mask.shape and decoration.dtype == np.uint8
        # Boxes are the tight boxes of the masks; classes those of the objects on top.
        lut = np.array([0] + [CLASS_TO_ID[o["name"]] for o in objects], dtype=np.uint8)
        np.testing.assert_array_equal(class_mask, lut[instance_mask])
        for index, obj in enumerate(objects, start=1):
            rows, cols = np.nonzero(instance_mask == index)
            assert tuple(obj["bbox"]) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        is_char = np.isin(class_mask, list(DIGIT_IDS) + [CHAR])
        for name in NOT_CHARACTERS:
            where = decoration == DECORATION_IDS[name]
            kinds_seen.add(name) if where.any() else None
            # No character id (and no character object) where a decoration is drawn.
            assert not np.any(is_char & where), name
        # Frames and their text belong to the vehicle; strips, stickers, screws and
        # separators to the plate.
        for name, class_id in (("frame", CAR), ("frame_text", CAR), ("strip", PLATE),
                               ("sticker", PLATE), ("screw", PLATE), ("separator", PLATE)):
            where = decoration == DECORATION_IDS[name]
            assert np.all(class_mask[where] == class_id), name
        for plate, chars in _plate_groups(objects):
            px1, py1, px2, py2 = plate["bbox"]
            for char in chars:
                x1, y1, x2, y2 = char["bbox"]
                assert px1 <= x1 and py1 <= y1 and x2 <= px2 and y2 <= py2
    assert {"strip", "sticker", "frame_text"} <= kinds_seen


def test_render_scene_decorations_off_by_default():
    scene_parts = render_scene(np.random.default_rng(3), 96)
    assert len(scene_parts) == 4
    with pytest.raises(TypeError, match="plate_mix"):
        render_scene(np.random.default_rng(3), 96, plate_mix={"strip": 1.0})


def test_plain_mix_draws_no_decoration():
    for seed in range(4):
        _, objects, _, _, decoration = render_scene(
            np.random.default_rng(seed), 128, plate_mix=plates.PlateMix.only(), decorations=True)
        assert not decoration.any()


def test_fonts_exclude_symbol_fonts():
    directory = fonts.matplotlib_font_dir()
    if directory is None or not os.path.isdir(directory):
        pytest.skip("matplotlib's fonts are not installed")
    found = {os.path.basename(p) for p in fonts.discover_fonts([directory])}
    assert {"DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "cmr10.ttf",
            "cmtt10.ttf", "cmss10.ttf", "STIXGeneral.ttf"} <= found
    # Computer Modern's symbol and extension fonts map ASCII codes to other signs.
    assert not found & {"cmsy10.ttf", "cmex10.ttf"}
    names = [os.path.basename(p).lower() for p in fonts.available_fonts()[1:]]
    assert len(names) == len(set(names))          # one file per name


def test_plate_gallery_is_small(tmp_path):
    from plates.synthetic.gallery import GALLERY_ROWS, save_plate_gallery
    path = tmp_path / "styles.png"
    size = save_plate_gallery(path, seed=1)
    assert path.stat().st_size == size < 300_000
    image = Image.open(path)
    assert image.format == "PNG" and image.height > 40 * len(GALLERY_ROWS)


# --------------------------------------------------------------------------- CLI hardening
def test_cli_refuses_huge_image_counts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["plates", "--out", str(tmp_path / "X"), "--num-images",
                  "99999999999999999999"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--num-images" in err and "at most 10000000" in err
    assert not (tmp_path / "X").exists()
    with pytest.raises(ValueError, match="num_images must be at most"):
        generate_plate_dataset(tmp_path / "Y", generate.MAX_IMAGES + 1, seed=0, progress=False)
    assert not (tmp_path / "Y").exists()


def test_generation_takes_ids_lazily(tmp_path, monkeypatch):
    """A run of MAX_IMAGES images starts rendering at once: no list of 10 million ids."""
    import time
    import tracemalloc

    def stop(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "_generate_one", stop)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        generate_plate_dataset(tmp_path, generate.MAX_IMAGES, seed=0, progress=False)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20_000_000 and seconds < 5.0, (peak, seconds)


def _blocked_outputs(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "JPEGImages").write_text("a file where a folder must go")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return [("/proc/x", "/proc/x"), (str(blocker), "JPEGImages"),
            (str(a_file / "sub"), "Not a directory"), ("/sys/x", "/sys/x")]


@pytest.mark.parametrize("case", range(4))
def test_cli_unwritable_out_exits_2_with_a_message(tmp_path, capsys, case):
    if not os.path.isdir("/proc"):
        pytest.skip("needs Linux's /proc")
    out, expected = _blocked_outputs(tmp_path)[case]
    if out == "/sys/x" and not os.path.isdir("/sys/kernel"):
        pytest.skip("needs Linux's sysfs (where no one may create a folder)")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["plates", "--out", out, "--num-images", "2", "--image-size", "64", "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out" in err and expected in err and "Traceback" not in err


def test_cli_read_only_dir_exits_2(tmp_path, capsys, monkeypatch):
    """A folder where no file may be created (permission denied) is a usage error, exit 2.

    The denial is simulated at ``os.open`` so that the test means the same for every user
    (root may write into a chmod-0555 folder)."""
    import errno

    from plates.synthetic import generate

    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_open = generate.os.open

    def denying_open(path, *args, **kwargs):
        if os.fspath(path).startswith(os.fspath(read_only)):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(generate.os, "open", denying_open)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["plates", "--out", str(read_only / "data"), "--num-images", "2", "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Permission denied" in err and str(read_only / "data") in err
    assert "Traceback" not in err


def test_cli_unwritable_out_in_a_subprocess(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "JPEGImages").write_text("x")
    for out in ("/proc/x", str(blocker)):
        result = _cli("plates", "--out", out, "--num-images", "2", "--quiet")
        assert result.returncode == 2, (out, result.stderr)
        assert "argument --out" in result.stderr and "Traceback" not in result.stderr


def test_prepare_output_dir_errors_name_the_folder(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "Annotations").write_text("x")
    with pytest.raises(generate.OutputDirectoryError, match="Annotations"):
        generate.prepare_output_dir(blocker)
    generate.prepare_output_dir(tmp_path / "fine")
    assert sorted(os.listdir(tmp_path / "fine")) == ["Annotations", "JPEGImages",
                                                     "SegmentationClass",
                                                     "SegmentationDecoration",
                                                     "SegmentationObject"]
    (tmp_path / "fine" / "ImageSets").write_text("x")
    with pytest.raises(generate.OutputDirectoryError, match="ImageSets"):
        generate.prepare_output_dir(tmp_path / "fine")


def test_cli_plate_mix(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["plates", "--out", str(tmp_path / "X"), "--num-images", "2",
                  "--plate-mix", "strip=2"])
    assert exit_info.value.code == 2
    assert "--plate-mix" in capsys.readouterr().err
    assert not (tmp_path / "X").exists()
    out = tmp_path / "mixed"
    assert cli_main(["plates", "--out", str(out), "--num-images", "2", "--image-size", "64",
                     "--plate-mix", "strip=1", "sticker=1", "--quiet"]) == 0
    _, objects, _, _ = render_scene(image_rng(0, 1), 64,
                                    plate_mix=plates.PlateMix(strip=1, sticker=1))
    assert [o["name"] for o in read_voc_annotation(out / "Annotations" / "000001.xml")["objects"]] \
        == [o["name"] for o in objects]
