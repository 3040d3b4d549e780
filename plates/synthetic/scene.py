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

A plate's frame (when it has one) belongs to its vehicle: its pixels are the car's.
Strips, stickers, screws and decorative separators on the plate are the plate's, and
frame text the car's: none is a character (``decorations``).

Geometry follows one pinhole camera (``backgrounds.Camera``): an object of width ``w``
metres whose foot is at row ``y`` is ``w * (y - h) / Hc`` pixels wide, so nearer
vehicles are lower and bigger. Plates then get a small rotation, shear and perspective.

The scene is composed on an 8-bit RGB ``PIL.Image`` (the background is computed in
float and converted once): each vehicle is painted only over the part of it inside the
image, and every layer is blended in its own window by Pillow's ``paste`` (through the
layer's coverage).
"""
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from PIL import Image, ImageChops
from scipy import ndimage

from plates.classes import CAR, PLATE, character_class
from plates.synthetic.backgrounds import Camera, render_background
from plates.synthetic.distractors import draw_distractors
from plates.synthetic.effects import apply_camera_effects
from plates.synthetic.geometry import homography_from_points
from plates.synthetic.decorations import DECORATIONS
from plates.synthetic.plates import (PLATE_LAYOUTS, PX_PER_MM, PlateMix, canonical_resolution,
                                     render_plate, warp_plate)
from plates.synthetic.vehicles import VEHICLE_KINDS, plan_vehicle, typical_plate_ratio

__all__ = ["MIN_IMAGE_SIZE", "MAX_IMAGE_SIZE", "PLATE_WIDTH_RANGE", "DECORATIONS",
           "check_image_size", "render_scene"]

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


def _draw_shadows(rng, canvas, placed):
    """Soft dark ellipses on the ground under the vehicles (before drawing them)."""
    size = canvas.height
    for p in placed:
        left, right = (p.plan.to_pixels(p.unit, x, 0.0)[0] for x in p.plan.shadow_span)
        cx = p.x0 + (left + right) / 2
        rx = (right - left) / 2 * 1.05
        ry = max(0.1 * rx, 1.5)
        x0, x1 = max(int(cx - rx) - 1, 0), min(int(cx + rx) + 2, size)
        y0, y1 = max(int(p.foot - 2 * ry) - 1, 0), min(int(p.foot + 2 * ry) + 2, size)
        if x1 <= x0 or y1 <= y0:
            continue
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - float(p.foot))[:, None] / float(ry)
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - float(cx))[None, :] / float(rx)
        shade = np.clip(1.3 - (xs ** 2 + ys ** 2), 0, 1) * rng.uniform(0.45, 0.75)
        # Pasting black through the shade: canvas * (1 - shade).
        canvas.paste((0, 0, 0), (x0, y0, x1, y1),
                     Image.fromarray(np.rint(shade * 255).astype(np.uint8)))


def _blend(canvas, x0, y0, premultiplied, coverage):
    """``canvas = canvas * (1 - coverage) + premultiplied`` over the window at ``(x0, y0)``.

    Args:
        canvas (PIL.Image.Image): RGB scene, modified in place.
        x0, y0 (int): top-left of the window (inside the canvas).
        premultiplied (ndarray[h, w, 3]): uint8 colour x coverage.
        coverage (ndarray[h, w]): uint8 coverage, 255 = opaque.
    """
    height, width = coverage.shape
    if height == 0 or width == 0:
        return
    box = (x0, y0, x0 + width, y0 + height)
    canvas.paste((0, 0, 0), box, Image.fromarray(coverage))
    canvas.paste(ImageChops.add(canvas.crop(box), Image.fromarray(premultiplied)), box)


def _draw_vehicle(canvas, instance, placed, object_id):
    """Paint the part of a vehicle inside the image; claim the pixels with coverage >= 0.5.

    Returns:
        tuple: ``(layer, total, inside)``: the ``VehicleLayer`` and the pixels of the
        vehicle's mask in total (off-image parts included) and inside the image.
    """
    size_h, size_w = instance.shape
    height, width = placed.plan.size(placed.unit)
    window = (max(-placed.x0, 0), max(-placed.y0, 0),
              min(width, size_w - placed.x0), min(height, size_h - placed.y0))
    layer = placed.plan.render(placed.unit, window)
    mask = layer.alpha >= 128
    inside = int(np.count_nonzero(mask))
    total = inside
    if window != (0, 0, width, height):
        total += placed.plan.off_window_pixels(placed.unit, window)
    h, w = mask.shape
    if h and w:
        x0, y0 = placed.x0 + layer.offset[0], placed.y0 + layer.offset[1]
        canvas.paste(Image.fromarray(layer.rgb), (x0, y0), Image.fromarray(layer.alpha))
        instance[y0:y0 + h, x0:x0 + w][mask] = object_id
    return layer, total, inside


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


def render_scene(rng, image_size=256, *, plate_mix=None, decorations=False):
    """Render one street scene with 0..3 vehicles and exact annotations.

    Args:
        rng (np.random.Generator | int): randomness, or a seed for a new generator.
        image_size (int): side of the square image, ``MIN_IMAGE_SIZE..MAX_IMAGE_SIZE``.
        plate_mix (PlateMix | None): probabilities of the plate features (strips,
            stickers, screws, frames, dirt...); ``plates.PlateMix()`` when None.
        decorations (bool): also return where the plates' decorations landed.

    Returns:
        tuple: ``(image, objects, class_mask, instance_mask)``, plus ``decoration_mask``
        when ``decorations`` is true:

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
        - decoration_mask (ndarray[H, W]): uint8 id (``decorations.DECORATION_IDS``) of
          the decoration covering more than half of each pixel, 0 elsewhere; where a
          nearer vehicle hides a plate, 0.

    Raises:
        TypeError / ValueError: bad ``rng``, ``image_size`` or ``plate_mix``.
    """
    rng = _check_rng(rng)
    size = check_image_size(image_size)
    if plate_mix is None:
        plate_mix = PlateMix()
    elif not isinstance(plate_mix, PlateMix):
        raise TypeError(f"plate_mix must be a PlateMix or None, got {type(plate_mix).__name__}")
    count = int(rng.choice(len(VEHICLE_COUNT_PROBS), p=VEHICLE_COUNT_PROBS))
    camera, placed = _place_vehicles(rng, size, count)

    canvas, foot = render_background(rng, size, camera)
    draw_distractors(rng, canvas, foot, int(rng.integers(0, 5)),
                     nearest=min((p.foot for p in placed), default=None))
    _draw_shadows(rng, canvas, placed)

    instance = np.zeros((size, size), dtype=np.uint8)
    decoration = np.zeros((size, size), dtype=np.uint8) if decorations else None
    # Provisional records; ids are positions + 1, compacted at the end.
    records = []
    for p in placed:
        first = len(records)
        layer, total, inside = _draw_vehicle(canvas, instance, p, first + 1)
        records.append({"name": "car", "class": CAR, "pixels": total, "cut": inside < total})
        if decoration is not None:
            decoration[instance == first + 1] = 0     # hidden by this (nearer) vehicle
        if p.quad is not None:
            _draw_plate(rng, canvas, instance, records, layer, p.quad, plate_mix, decoration)
        # Pixels each object of this vehicle owns before nearer vehicles are drawn: the
        # reference for "how much of it is hidden" (the car also owns its off-image part).
        owned = _pixel_counts(instance)
        for index in range(first, len(records)):
            records[index]["pixels"] = int(owned[index + 1])
        records[first]["pixels"] += total - inside

    photo = apply_camera_effects(rng, canvas)
    objects, class_mask, instance = _finalize(records, instance)
    if decorations:
        return photo, objects, class_mask, instance, decoration
    return photo, objects, class_mask, instance


def _draw_plate(rng, canvas, instance, records, layer, quad, mix, decoration):
    """Render a plate, warp it onto ``quad``, paint it, its frame and its characters,
    add their records (the frame's pixels go to the vehicle, the last record)."""
    plate = render_plate(rng, layer.plate_layout, mix=mix,
                         px_per_mm=canonical_resolution(layer.plate_layout, layer.plate_width))
    px0, py0, px1, py1 = plate.plate_box
    source = np.array([[px0, py0], [px1, py0], [px1, py1], [px0, py1]], np.float64)
    homography = homography_from_points(source, quad)
    # Enough sub-samples that they fall at most ~1.5 canonical pixels apart.
    supersample = int(np.clip(np.ceil((px1 - px0) / layer.plate_width / 1.5), 2, 10))
    warped = warp_plate(plate, homography, *instance.shape, supersample,
                        decorations=decoration is not None)
    x0, y0, x1, y1 = warped.region
    painted = np.rint(np.minimum(warped.coverage + warped.frame_coverage, 1) * 255)
    _blend(canvas, x0, y0, warped.premultiplied, painted.astype(np.uint8))
    scene = instance[y0:y1, x0:x1]
    vehicle_id = len(records)                  # the vehicle is the last record
    scene[warped.frame_coverage >= 0.5] = vehicle_id
    scene[warped.coverage >= 0.5] = vehicle_id + 1
    records.append({"name": "plate", "class": PLATE, "cut": False, "text": plate.text})
    glyph_height = plate.digit_height * layer.plate_width / (px1 - px0)
    for char, coverage in zip(plate.chars, warped.char_coverage):
        scene[coverage >= 0.5] = len(records) + 1
        class_id = character_class(char)
        records.append({"name": str(class_id - 3) if class_id < 13 else "char",
                        "class": class_id, "cut": False, "text": char,
                        "small": glyph_height < 5.0})
    if decoration is not None:
        window = decoration[y0:y1, x0:x1]
        for kind, coverage in enumerate(warped.decoration_coverage, start=1):
            window[coverage > 0.5] = kind


def _pixel_counts(instance):
    """ndarray[256]: pixels of each id of a uint8 instance map (Pillow's C histogram)."""
    return np.array(Image.fromarray(instance).histogram(), dtype=np.int64)


def _lookup(table, instance):
    """``table[instance]`` for a uint8 map and a 256-entry uint8 table (Pillow's C lookup)."""
    return np.array(Image.fromarray(instance).point(table.tolist()))


def _finalize(records, instance):
    """Drop objects left without visible pixels, renumber, derive boxes and classes."""
    visible = _pixel_counts(instance)[1:len(records) + 1]
    keep = np.flatnonzero(visible > 0)
    if keep.size < len(records):
        remap = np.zeros(256, dtype=np.uint8)
        remap[keep + 1] = np.arange(1, keep.size + 1)
        instance = _lookup(remap, instance)
    classes = np.zeros(256, dtype=np.uint8)
    classes[1:keep.size + 1] = [records[i]["class"] for i in keep]
    class_mask = _lookup(classes, instance)
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
