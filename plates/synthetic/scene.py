"""One street scene with exact ground truth: boxes, a class mask and an instance mask.

The scene is composed back to front by the painter's algorithm: background (road,
backdrop, distractors), vehicle shadows, then each vehicle from the farthest to the
nearest, each followed by its plate and the plate's characters. Every layer brings its
own coverage (fraction of each pixel it covers, from supersampling); a pixel belongs to
a layer where the coverage reaches 0.5, and a later layer overwrites an earlier one.
The instance mask is that "who is on top" map; boxes are then *derived* from it:

    box(i) = (min col, min row, max col + 1, max row + 1) over pixels whose top object is i

so a box is always the tight box of its object's final, visible mask, after every warp.
Objects with no visible pixel are dropped. The class mask is the class of the top
object (``classes.py``): no pixel is marked ignore (255); thin glyph borders count for
the character where its coverage is >= 0.5 and for the plate elsewhere.

Object order (the XML order; instance ids are 1-based positions in it): for each
vehicle, far to near, ``car``, then its ``plate``, then the plate's characters in
reading order (``0``..``9`` or ``char``). Plates are kept whole inside the image and
never hidden by a nearer vehicle, so all their characters are present unless a glyph
is too thin to reach coverage 0.5 anywhere (tiny plates); such characters are absent.

Geometry follows one pinhole camera (``backgrounds.Camera``): an object of width ``w``
metres whose foot is at row ``y`` is ``w * (y - h) / Hc`` pixels wide, so nearer
vehicles are lower and bigger. Plates then get a small rotation, shear and perspective.
"""
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from PIL import Image
from scipy import ndimage

from plates.classes import CAR, PLATE, character_class
from plates.synthetic.backgrounds import Camera, render_background
from plates.synthetic.distractors import draw_distractors
from plates.synthetic.effects import apply_camera_effects
from plates.synthetic.geometry import homography_from_points
from plates.synthetic.plates import PLATE_LAYOUTS, PX_PER_MM, render_plate, warp_plate
from plates.synthetic.vehicles import VEHICLE_KINDS, plan_vehicle, typical_plate_ratio

__all__ = ["MIN_IMAGE_SIZE", "MAX_IMAGE_SIZE", "PLATE_WIDTH_RANGE", "render_scene"]

MIN_IMAGE_SIZE = 64
MAX_IMAGE_SIZE = 2048
# Plate widths at the reference size of 256 px; they scale with the image.
REFERENCE_SIZE = 256
PLATE_WIDTH_RANGE = (30.0, 120.0)
# Largest plate width with 1, 2, 3 vehicles (several vehicles must fit side by side).
_MAX_PLATE_WIDTH = {1: 120.0, 2: 75.0, 3: 55.0}
VEHICLE_COUNT_PROBS = (0.05, 0.4, 0.3, 0.25)
KIND_PROBS = {"car_front": 0.35, "car_rear": 0.35, "moto_rear": 0.2, "car_side": 0.1}
# Real size of one vehicle unit (see vehicles.py), metres: a car's width, a rider's
# shoulders, a side-view car's length.
UNIT_METRES = {"car_front": 1.8, "car_rear": 1.8, "moto_rear": 0.5, "car_side": 4.5}
_PLACEMENT_ATTEMPTS = 12
_X_DRAWS = 8
_PLATE_MARGIN = 2.0   # pixels between a plate and the image border / a nearer vehicle


@dataclass
class _Placed:
    plan: object           # VehiclePlan
    unit: float            # pixels per vehicle unit
    x0: int                # top-left of the layer in the scene
    y0: int
    foot: float            # scene row of the ground contact
    quad: object = None    # plate corners in the scene, ndarray[4, 2]
    plate_box: tuple = None

    @property
    def box(self):
        height, width = self.plan.size(self.unit)
        return (self.x0, self.y0, self.x0 + width, self.y0 + height)


def _overlap(a, b):
    """Area of the intersection of two (x0, y0, x1, y1) rectangles."""
    return max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)


def _plate_quad(rng, centre, width, height):
    """Destination corners of a plate: rotation, shear, perspective around its centre."""
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    half = corners * [width / 2, height / 2]
    yaw = rng.uniform(-0.1, 0.1)       # one side nearer: taller (perspective)
    pitch = rng.uniform(-0.06, 0.06)   # top or bottom nearer: wider
    half[:, 1] *= 1 + yaw * np.sign(half[:, 0])
    half[:, 0] *= 1 + pitch * np.sign(half[:, 1])
    half[:, 0] += rng.uniform(-0.12, 0.12) * half[:, 1]               # shear
    angle = np.deg2rad(rng.uniform(-5.0, 5.0))                           # roll
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return half @ rotation.T + centre


def _image_scale(size):
    return size / REFERENCE_SIZE


def _canonical_plate_size(layout):
    width_mm, height_mm = PLATE_LAYOUTS[layout][:2]
    return int(round(width_mm * PX_PER_MM)), int(round(height_mm * PX_PER_MM))


def _place_vehicles(rng, size, count):
    """Choose a camera and place up to ``count`` vehicles consistent with it.

    The first vehicle gets a free size and position and fixes the horizon (the camera
    height is adjusted to keep the horizon in a plausible band). For each later vehicle
    the camera ties size to image row, so its plate width is drawn among those that put
    the plate in the image, and the row follows. A candidate position is rejected when
    its plate leaves the image, when it would hide a farther plate or half of a farther
    vehicle (or be so hidden), or when less than a quarter of it is in the image.
    Vehicles are only planned here; the scene paints the accepted ones.

    Returns:
        tuple: ``(camera, placed)`` with ``placed`` sorted far to near (drawing order).
    """
    scale = _image_scale(size)
    height_m = rng.uniform(1.2, 4.0)
    focal = size * rng.uniform(0.9, 1.6)
    vanish_x = size * rng.uniform(0.2, 0.8)
    horizon = None
    horizon_target = size * rng.uniform(-0.15, 0.55)
    low = PLATE_WIDTH_RANGE[0] * scale
    high = _MAX_PLATE_WIDTH.get(count, PLATE_WIDTH_RANGE[1]) * scale
    kinds = list(KIND_PROBS)
    probs = np.array([KIND_PROBS[k] for k in kinds])
    placed = []
    for _ in range(count):
        kind = kinds[int(rng.choice(len(kinds), p=probs))]
        layouts, layout_probs = VEHICLE_KINDS[kind]
        layout = layouts[int(rng.choice(len(layouts), p=layout_probs))] if layouts else None
        ratio = typical_plate_ratio(kind, layout) * rng.uniform(0.9, 1.1)
        plan = plan_vehicle(rng, kind, layout, ratio if layout else None)
        metres = UNIT_METRES[kind]
        for _attempt in range(_PLACEMENT_ATTEMPTS):
            # 1. Size: free for the first vehicle, else implied by the camera and the row
            #    we aim the plate (or the wheels) at.
            if plan.plate_center is None:
                if horizon is None:
                    unit = size * rng.uniform(0.5, 1.3)
                else:
                    foot = rng.uniform(max(horizon, 0.0) + 0.05 * size, 1.2 * size)
                    unit = (foot - horizon) * metres / height_m
                    if not 0.3 * size <= unit <= 1.5 * size:
                        continue
            else:
                if horizon is None:
                    # Skewed towards small plates: street scenes more often than close-ups.
                    plate_width = low * (high / low) ** (rng.random() ** 1.5)
                else:
                    # The camera ties size to height in the image: a plate whose centre is
                    # at ``row`` is (row - horizon) / rise units wide. Draw the width among
                    # those that put the plate in rows 15%..95% of the image.
                    rise = height_m / metres - plan.plate_center[1]   # (row - horizon) / unit
                    if rise <= 0.05:
                        break   # the camera is below this plate: it cannot be placed
                    lowest = max(low, (0.15 * size - horizon) / rise * plan.plate_width)
                    highest = min(high, (0.95 * size - horizon) / rise * plan.plate_width)
                    if lowest > highest:
                        break
                    plate_width = np.exp(rng.uniform(np.log(lowest), np.log(highest)))
                unit = plate_width / plan.plate_width
            layer_h, layer_w = plan.size(unit)
            ground_y = plan.to_pixels(unit, 0.0, 0.0)[1]

            # 2. Vertical position: the ground row, from the camera.
            if horizon is None:
                if plan.plate_center is not None:
                    plate_y = plan.to_pixels(unit, *plan.plate_center)[1]
                    # Mostly in the lower part of the frame, where a camera at car height
                    # sees the road (a vehicle high up would stand above an empty road).
                    half = plan.plate_width * unit * 0.4
                    row = rng.uniform(max(0.3 * size, half + _PLATE_MARGIN),
                                      max(size - half - _PLATE_MARGIN, 0.3 * size + 1))
                    foot = row + (ground_y - plate_y)
                else:
                    foot = rng.uniform(0.6 * size, 1.15 * size)
                # Keep the horizon plausible: adjust the camera height to the target.
                rise = unit * height_m / metres
                if not -0.3 * size <= foot - rise <= 0.7 * size:
                    height_m = float(np.clip((foot - horizon_target) * metres / unit, 0.6, 8.0))
                    rise = unit * height_m / metres
                candidate_horizon = foot - rise
            else:
                candidate_horizon = horizon
                foot = horizon + unit * height_m / metres
            y0 = int(round(foot - ground_y))

            # 3. Horizontal position (a few draws, cheap), the plate's exact quad, the
            #    occlusion rules.
            if plan.plate_center is not None:
                canon_w, canon_h = _canonical_plate_size(layout)
                px, py = plan.to_pixels(unit, *plan.plate_center)
                width = plan.plate_width * unit
                plate_shape = _plate_quad(rng, np.zeros(2), width, width * canon_h / canon_w)
            candidate = None
            for _draw in range(_X_DRAWS):
                if plan.plate_center is not None:
                    x0 = int(round(rng.uniform(0.05 * size, 0.95 * size) - px))
                else:
                    x0 = int(round(rng.uniform(0, size) - layer_w / 2))
                trial = _Placed(plan=plan, unit=unit, x0=x0, y0=y0, foot=foot)
                if plan.plate_center is not None:
                    quad = plate_shape + [x0 + px, y0 + py]
                    lo, hi = quad.min(axis=0), quad.max(axis=0)
                    if lo.min() < _PLATE_MARGIN or hi.max() > size - _PLATE_MARGIN:
                        continue
                    trial.quad = quad
                    trial.plate_box = (lo[0] - _PLATE_MARGIN, lo[1] - _PLATE_MARGIN,
                                       hi[0] + _PLATE_MARGIN, hi[1] + _PLATE_MARGIN)
                if _overlap(trial.box, (0, 0, size, size)) < 0.25 * layer_h * layer_w:
                    continue
                if all(_compatible(trial, other) for other in placed):
                    candidate = trial
                    break
            if candidate is None:
                continue
            placed.append(candidate)
            horizon = candidate_horizon
            break
    if horizon is None:
        horizon = horizon_target
    placed.sort(key=lambda p: p.foot)
    return Camera(horizon=horizon, height_m=height_m, focal=focal, vanish_x=vanish_x), placed


def _compatible(a, b):
    """Whether two placed vehicles may share the scene: the nearer one hides no plate
    of the farther one and at most half of its body."""
    near, far = (a, b) if a.foot >= b.foot else (b, a)
    if far.plate_box is not None and _overlap(near.box, far.plate_box) > 0:
        return False
    far_area = (far.box[2] - far.box[0]) * (far.box[3] - far.box[1])
    return _overlap(near.box, far.box) < 0.5 * far_area


def _draw_shadows(rng, image, placed):
    """Soft dark ellipses on the ground under the vehicles (before drawing them)."""
    size = image.shape[0]
    for p in placed:
        left, right = (p.plan.to_pixels(p.unit, x, 0.0)[0] for x in p.plan.shadow_span)
        cx = p.x0 + (left + right) / 2
        rx = (right - left) / 2 * 1.05
        ry = max(0.1 * rx, 1.5)
        x0, x1 = max(int(cx - rx) - 1, 0), min(int(cx + rx) + 2, size)
        y0, y1 = max(int(p.foot - 2 * ry) - 1, 0), min(int(p.foot + 2 * ry) + 2, size)
        if x1 <= x0 or y1 <= y0:
            continue
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - p.foot)[:, None] / ry
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :] / rx
        shade = np.clip(1.3 - (xs ** 2 + ys ** 2), 0, 1) * rng.uniform(0.45, 0.75)
        image[y0:y1, x0:x1] *= (1 - shade)[:, :, None]


def _composite_layer(image, instance, rgb, alpha, x0, y0, object_id):
    """Paint a premultiplied layer at ``(x0, y0)``; claim the pixels with coverage >= 0.5.

    Returns:
        tuple[int, int]: pixels of the layer's mask in total and inside the image.
    """
    size_h, size_w = instance.shape
    height, width = alpha.shape
    mask = alpha >= 0.5
    total = int(np.count_nonzero(mask))
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + width, size_w), min(y0 + height, size_h)
    if ix1 <= ix0 or iy1 <= iy0:
        return total, 0
    lx0, ly0 = ix0 - x0, iy0 - y0
    local = (slice(ly0, ly0 + iy1 - iy0), slice(lx0, lx0 + ix1 - ix0))
    scene = (slice(iy0, iy1), slice(ix0, ix1))
    a = alpha[local][:, :, None]
    image[scene] = image[scene] * (1 - a) + rgb[local]
    instance[scene][mask[local]] = object_id
    return total, int(np.count_nonzero(mask[local]))


def _check_rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, Integral) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a np.random.Generator or a non-negative int seed, got {rng!r}")


def check_image_size(image_size):
    """Validate ``image_size`` (an int in ``MIN_IMAGE_SIZE..MAX_IMAGE_SIZE``)."""
    if isinstance(image_size, bool) or not isinstance(image_size, Integral):
        raise TypeError(f"image_size must be an int, got {type(image_size).__name__}")
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size must be in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels "
                         f"(plates would be unreadably small below {MIN_IMAGE_SIZE}), "
                         f"got {image_size}")
    return int(image_size)


def render_scene(rng, image_size=256):
    """Render one street scene with 0..3 vehicles and exact annotations.

    Args:
        rng (np.random.Generator | int): randomness, or a seed for a new generator.
        image_size (int): side of the square image, ``MIN_IMAGE_SIZE..MAX_IMAGE_SIZE``.

    Returns:
        tuple: ``(image, objects, class_mask, instance_mask)``:

        - image (ndarray[H, W, 3]): uint8 RGB, ``H = W = image_size``.
        - objects (list[dict]): in drawing order (module docstring), each
          ``{"name": "car" | "plate" | "0".."9" | "char", "bbox": (x1, y1, x2, y2)``
          (continuous xyxy ints, the tight box of the object's mask),
          ``"difficult": bool, "truncated": bool}``, plus ``"text"`` for plates (the rows
          joined by a space, e.g. ``"29-B1 123.45"``) and characters (the character).
        - class_mask (ndarray[H, W]): uint8 class ids of ``classes.py`` (0 background,
          1 car, 2 plate, 3..12 digits, 13 other characters); no 255.
        - instance_mask (ndarray[H, W]): uint8, 1-based index into ``objects`` of the
          object on top, 0 for background.

    Raises:
        TypeError / ValueError: bad ``rng`` or ``image_size``.
    """
    rng = _check_rng(rng)
    size = check_image_size(image_size)
    count = int(rng.choice(len(VEHICLE_COUNT_PROBS), p=VEHICLE_COUNT_PROBS))
    camera, placed = _place_vehicles(rng, size, count)

    background, foot = render_background(rng, size, camera)
    canvas = Image.fromarray(np.rint(background).astype(np.uint8))
    draw_distractors(rng, canvas, foot, int(rng.integers(0, 5)),
                     nearest=min((p.foot for p in placed), default=None))
    image = np.asarray(canvas, dtype=np.float32).copy()
    _draw_shadows(rng, image, placed)

    instance = np.zeros((size, size), dtype=np.uint8)
    # Provisional records; ids are positions + 1, compacted at the end.
    records = []
    for p in placed:
        layer = p.plan.render(p.unit)
        first = len(records)
        total, inside = _composite_layer(image, instance, layer.rgb, layer.alpha, p.x0, p.y0,
                                         first + 1)
        records.append({"name": "car", "class": CAR, "pixels": total, "cut": inside < total})
        if p.quad is not None:
            _draw_plate(rng, image, instance, records, layer, p.quad)
        # Pixels each object of this vehicle owns before nearer vehicles are drawn: the
        # reference for "how much of it is hidden" (the car also owns its off-image part).
        owned = np.bincount(instance.ravel(), minlength=len(records) + 1)
        for index in range(first, len(records)):
            records[index]["pixels"] = int(owned[index + 1])
        records[first]["pixels"] += total - inside

    photo = apply_camera_effects(rng, image)
    return (photo,) + _finalize(records, instance)


def _draw_plate(rng, image, instance, records, layer, quad):
    """Render a plate, warp it onto ``quad``, paint it and its characters, add records."""
    plate = render_plate(rng, layer.plate_layout)
    canon_h, canon_w = plate.alpha.shape
    source = np.array([[0, 0], [canon_w, 0], [canon_w, canon_h], [0, canon_h]], np.float64)
    homography = homography_from_points(source, quad)
    # Enough sub-samples that they fall at most ~1.5 canonical pixels apart.
    supersample = int(np.clip(np.ceil(canon_w / layer.plate_width / 1.5), 2, 10))
    warped = warp_plate(plate, homography, *instance.shape, supersample)
    x0, y0, x1, y1 = warped.region
    scene = (slice(y0, y1), slice(x0, x1))
    image[scene] = image[scene] * (1 - warped.coverage[:, :, None]) + warped.premultiplied
    plate_mask = warped.coverage >= 0.5
    instance[scene][plate_mask] = len(records) + 1
    records.append({"name": "plate", "class": PLATE, "cut": False, "text": plate.text})
    glyph_height = plate.digit_height * layer.plate_width / canon_w
    for char, coverage in zip(plate.chars, warped.char_coverage):
        char_mask = coverage >= 0.5
        instance[scene][char_mask] = len(records) + 1
        class_id = character_class(char)
        records.append({"name": str(class_id - 3) if class_id < 13 else "char",
                        "class": class_id, "cut": False, "text": char,
                        "small": glyph_height < 5.0})


def _finalize(records, instance):
    """Drop objects left without visible pixels, renumber, derive boxes and classes."""
    visible = np.bincount(instance.ravel(), minlength=len(records) + 1)[1:]
    keep = np.flatnonzero(visible > 0)
    remap = np.zeros(len(records) + 1, dtype=np.uint8)
    remap[keep + 1] = np.arange(1, keep.size + 1)
    instance = remap[instance]
    classes = np.zeros(keep.size + 1, dtype=np.uint8)
    classes[1:] = [records[i]["class"] for i in keep]
    class_mask = classes[instance]
    # find_objects gives, for label i, the bounding slices of instance == i in one pass.
    slices = ndimage.find_objects(instance, max_label=keep.size)
    objects = []
    for new_index, (old_index, (rows, cols)) in enumerate(zip(keep, slices)):
        record = records[old_index]
        fraction = visible[old_index] / max(record["pixels"], 1)
        obj = {
            "name": record["name"],
            "bbox": (cols.start, rows.start, cols.stop, rows.stop),
            # Mostly hidden vehicles and characters of tiny plates are "difficult" (VOC).
            "difficult": bool(fraction < 0.25 or record.get("small", False)),
            "truncated": bool(record["cut"] or fraction < 0.85),
        }
        if "text" in record:
            obj["text"] = record["text"]
        objects.append(obj)
    return objects, class_mask, instance
