"""Procedural vehicles: cars seen from the front, the back and the side, and motorbikes
with their rider seen from the back, each drawn as one layer with its own coverage.

A vehicle is a stack of flat shapes (tyres, body, cabin, glass, lights, grille,
bumper, plate recess) drawn with Pillow at ``SUPERSAMPLE`` times the final resolution
and box-filtered down, which gives an anti-aliased silhouette whose coverage, thresholded
at 0.5, is the vehicle's mask. Only the part of a vehicle inside the image is painted
(``VehiclePlan.render(unit_px, window)``): a near car can be several times the image.
Shapes are written in *vehicle units* (the body width of a car, the rider's shoulder
width of a motorbike, the length of a side-view car) with
``y`` pointing up from the ground, and recorded (``plan_vehicle``) before being
painted at a given scale (``VehiclePlan.render``): the scene can check where a vehicle
and its plate would land at any size before paying for the drawing.

The whole silhouette is the object ``car``: for a motorbike that includes its rider
(the lab's class map has no person class, and the rider hides most of the bike). The
plate itself is not drawn here: the layer records where it goes (``plate_center``,
``plate_width``) and the scene warps a rendered plate there.
"""
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from plates.synthetic.plates import PLATE_LAYOUTS

__all__ = ["SUPERSAMPLE", "VEHICLE_KINDS", "BODY_COLOURS", "VehicleLayer", "VehiclePlan",
           "typical_plate_ratio", "plan_vehicle", "draw_vehicle"]

SUPERSAMPLE = 2
# kind: (plate layouts it may carry, their probabilities)
VEHICLE_KINDS = {
    "car_front": (("one_row", "two_row", "euro"), (0.6, 0.25, 0.15)),
    "car_rear": (("one_row", "two_row", "euro"), (0.6, 0.25, 0.15)),
    "moto_rear": (("moto",), (1.0,)),
    "car_side": ((), ()),
}
BODY_COLOURS = (
    (235, 235, 232), (182, 184, 188), (112, 114, 118), (28, 28, 31), (165, 26, 28),
    (105, 22, 28), (32, 62, 140), (92, 140, 188), (34, 88, 52), (228, 186, 36),
    (214, 106, 32), (198, 184, 150), (98, 70, 46), (60, 60, 66),
)
_TYRE = (24, 24, 26)
_BLACK_TRIM = (34, 34, 36)
_CAR_STYLES = {
    # clearance, belt line, cabin height, roof width (all in body widths)
    "sedan": (0.08, 0.42, 0.29, 0.64),
    "hatch": (0.08, 0.45, 0.33, 0.70),
    "suv": (0.11, 0.55, 0.35, 0.80),
    "van": (0.09, 0.50, 0.56, 0.88),
}


@dataclass
class VehicleLayer:
    """A vehicle drawn at its final size, or the part of it inside a window.

    Attributes:
        rgb (ndarray[h, w, 3]): uint8 colour (the mean over the covered part of each pixel,
            shaded; 0 where nothing covers it).
        alpha (ndarray[h, w]): uint8 coverage of the silhouette, 255 = fully covered; the
            vehicle's mask is ``alpha >= 128`` (coverage >= 0.5).
        offset (tuple[int, int]): ``(col, row)`` of the window's top-left in the layer.
        kind (str): a key of ``VEHICLE_KINDS``.
        plate_layout (str | None): layout of the plate it carries, None without plate.
        plate_center (tuple[float, float] | None): ``(x, y)`` of the plate centre, layer pixels.
        plate_width (float): plate width in pixels (0 without plate).
        ground_y (float): row of the ground contact, layer pixels.
        shadow_span (tuple[float, float]): ``(x0, x1)`` of the shadow under it, layer pixels.
    """
    rgb: np.ndarray
    alpha: np.ndarray
    offset: tuple
    kind: str
    plate_layout: object
    plate_center: object
    plate_width: float
    ground_y: float
    shadow_span: tuple


class _Recorder:
    """Records drawing operations in vehicle units (y up from the ground).

    Recording first and painting later lets the scene know a vehicle's exact pixel
    geometry (size, plate position) at any scale before paying for the drawing.
    """

    def __init__(self, x_min, x_max, y_top):
        self.x_min, self.x_max, self.y_top = x_min, x_max, y_top
        self.ops = []

    def polygon(self, points, colour):
        self.ops.append(("polygon", tuple(points), _rgb(colour)))

    def rect(self, x0, y0, x1, y1, colour, radius=0.0):
        self.ops.append(("rect", (x0, y0, x1, y1), _rgb(colour), radius))

    def ellipse(self, cx, cy, rx, ry, colour):
        self.ops.append(("ellipse", (cx - rx, cy - ry, cx + rx, cy + ry), _rgb(colour)))

    def line(self, points, colour, width):
        self.ops.append(("line", tuple(points), _rgb(colour), width))


@dataclass
class VehiclePlan:
    """A vehicle's drawing, in vehicle units, ready to be painted at any scale.

    Attributes:
        kind (str): a key of ``VEHICLE_KINDS``.
        plate_layout (str | None): the plate it carries.
        ops (list): recorded drawing operations (``_Recorder``).
        x_min, x_max, y_top (float): drawing extent in units (``y`` up from the ground).
        plate_center (tuple | None): plate centre in units.
        plate_width (float): plate width in units.
        shadow_span (tuple): ground shadow ``(x0, x1)`` in units.
        shading (tuple): ``(top, bottom, side)`` light factors.
    """
    kind: str
    plate_layout: object
    ops: list
    x_min: float
    x_max: float
    y_top: float
    plate_center: object
    plate_width: float
    shadow_span: tuple
    shading: tuple

    def size(self, unit_px):
        """``(height, width)`` in pixels of the layer at ``unit_px`` pixels per unit."""
        return (max(int(np.ceil(self.y_top * unit_px)), 1),
                max(int(np.ceil((self.x_max - self.x_min) * unit_px)), 1))

    def to_pixels(self, unit_px, x, y):
        """Layer pixel coordinates ``(col, row)`` of the point ``(x, y)`` in units."""
        return ((x - self.x_min) * unit_px, (self.y_top - y) * unit_px)

    def _paint(self, image, unit_px, left, top, coverage_only):
        """Replay the recorded operations onto ``image`` (``SUPERSAMPLE``x the layer scale),
        whose pixel (0, 0) is the layer's supersampled pixel ``(left, top)``."""
        draw = ImageDraw.Draw(image)
        scale = unit_px * SUPERSAMPLE

        def point(x, y):
            return ((x - self.x_min) * scale - left, (self.y_top - y) * scale - top)

        for op in self.ops:
            fill = 255 if coverage_only else op[2]
            if op[0] == "polygon":
                draw.polygon([point(x, y) for x, y in op[1]], fill=fill)
            elif op[0] == "rect" or op[0] == "ellipse":
                x0, y0, x1, y1 = op[1]
                box = point(x0, y1) + point(x1, y0)
                if op[0] == "ellipse":
                    draw.ellipse(box, fill=fill)
                elif op[3] > 0:
                    draw.rounded_rectangle(box, radius=op[3] * scale, fill=fill)
                else:
                    draw.rectangle(box, fill=fill)
            else:
                draw.line([point(x, y) for x, y in op[1]], fill=fill,
                          width=max(int(round(op[3] * scale)), 1))

    def render(self, unit_px, window=None):
        """Paint at ``SUPERSAMPLE``x, box-filter down, shade; return the ``VehicleLayer``.

        Colour and coverage are drawn into two images (RGB on black, and L): reducing the
        RGB one averages each colour with the black around the shape, which is the colour
        premultiplied by coverage, and the L one gives that coverage; their ratio is the
        colour, which composites as ``image * (1 - a) + colour * a`` (Pillow's ``paste``
        through the coverage).

        Args:
            unit_px (float): pixels per vehicle unit.
            window (tuple[int, int, int, int] | None): ``(x0, y0, x1, y1)`` layer pixels to
                paint (clipped to the layer); the whole layer when None. The scene paints
                only the part of a vehicle inside the image.
        """
        height, width = self.size(unit_px)
        x0, y0, x1, y1 = (0, 0, width, height) if window is None else window
        x0, y0 = min(max(int(x0), 0), width), min(max(int(y0), 0), height)
        x1, y1 = min(max(int(x1), x0), width), min(max(int(y1), y0), height)
        h, w = y1 - y0, x1 - x0
        s = SUPERSAMPLE
        colour = Image.new("RGB", (max(w, 1) * s, max(h, 1) * s))
        cover = Image.new("L", colour.size)
        if h and w:
            self._paint(colour, unit_px, x0 * s, y0 * s, coverage_only=False)
            self._paint(cover, unit_px, x0 * s, y0 * s, coverage_only=True)
        rgb = np.asarray(colour.reduce(s), dtype=np.float32)[:h, :w]           # (h, w, 3)
        alpha = np.asarray(cover.reduce(s))[:h, :w]                            # (h, w)
        top, bottom, side = self.shading
        rows = np.linspace(top, bottom, height, dtype=np.float32)[y0:y1]
        cols = 1.0 + side * np.linspace(-1, 1, width, dtype=np.float32)[x0:x1]
        # Light from above and one side, and the division by coverage that turns the
        # premultiplied colour into the colour itself: one (h, w) factor, repeated per
        # channel along the rows of the (h, 3w) view.
        factor = rows[:, None] * cols[None, :] * (255.0 / np.maximum(alpha, 1))
        flat = rgb.reshape(h, 3 * w)
        flat *= np.repeat(factor, 3, axis=1)
        np.minimum(flat, 255.0, out=flat)
        flat += 0.5
        plate_center = None
        if self.plate_center is not None:
            plate_center = self.to_pixels(unit_px, *self.plate_center)
        return VehicleLayer(
            rgb=rgb.astype(np.uint8), alpha=np.ascontiguousarray(alpha), offset=(x0, y0),
            kind=self.kind, plate_layout=self.plate_layout,
            plate_center=plate_center, plate_width=self.plate_width * unit_px,
            ground_y=self.to_pixels(unit_px, 0.0, 0.0)[1],
            shadow_span=(self.to_pixels(unit_px, self.shadow_span[0], 0.0)[0],
                         self.to_pixels(unit_px, self.shadow_span[1], 0.0)[0]),
        )

    def off_window_pixels(self, unit_px, window):
        """Pixels of the layer's mask (coverage >= 0.5) outside ``window``: the part of a
        vehicle beyond the image border, for its truncation statistics.

        Drawn in coverage only (one byte per sample), the whole layer at once. Pillow's
        rasterizer is not exactly shift-invariant, so a window drawn alone may differ
        from this drawing by a few edge pixels; only this count comes from it.

        Args:
            unit_px (float): pixels per vehicle unit.
            window (tuple[int, int, int, int]): ``(x0, y0, x1, y1)`` layer pixels.
        """
        height, width = self.size(unit_px)
        cover = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE))
        self._paint(cover, unit_px, 0, 0, coverage_only=True)
        mask = np.asarray(cover.reduce(SUPERSAMPLE)) >= 128
        x0, y0, x1, y1 = window
        return int(np.count_nonzero(mask)) - int(np.count_nonzero(mask[y0:y1, x0:x1]))


def _rgb(colour):
    return tuple(min(max(int(c), 0), 255) for c in colour)


def _scaled(colour, factor):
    return tuple(float(np.clip(c * factor, 0, 255)) for c in colour)


def _mix(a, b, t):
    return tuple((1 - t) * x + t * y for x, y in zip(a, b))


def _body_colour(rng):
    base = np.array(BODY_COLOURS[int(rng.integers(len(BODY_COLOURS)))], dtype=np.float64)
    return tuple(np.clip(base + rng.normal(0, 9, 3), 0, 255))


def _plate_units(layout, ratio):
    """Plate (width, height) in vehicle units for a width ratio ``ratio``."""
    width_mm, height_mm = PLATE_LAYOUTS[layout][:2]
    return ratio, ratio * height_mm / width_mm


def typical_plate_ratio(kind, plate_layout):
    """Plate width in vehicle units: a 520 mm plate on a 1.8 m wide car is ~0.3 of it,
    a 330 mm square plate ~0.19, a 190 mm motorbike plate ~0.38 of a 0.5 m rider.

    Returns:
        float: 0 for a vehicle without a visible plate (``car_side``).
    """
    if kind == "moto_rear":
        return 0.38
    if kind == "car_side":
        return 0.0
    return 0.19 if plate_layout == "two_row" else 0.3


def plan_vehicle(rng, kind, plate_layout=None, plate_ratio=None):
    """Choose a vehicle's style, colours and details; record its drawing in units.

    Args:
        rng (np.random.Generator): randomness (style, colours, details).
        kind (str): a key of ``VEHICLE_KINDS``.
        plate_layout (str | None): the plate to leave room for (None for ``car_side``).
        plate_ratio (float | None): plate width in vehicle units (default: typical).

    Returns:
        VehiclePlan: paint it with ``plan.render(unit_px)``.
    """
    if kind not in VEHICLE_KINDS:
        raise ValueError(f"kind must be one of {sorted(VEHICLE_KINDS)}, got {kind!r}")
    layouts = VEHICLE_KINDS[kind][0]
    if layouts and plate_layout not in layouts:
        raise ValueError(f"plate_layout of a {kind} must be one of {layouts}, got {plate_layout!r}")
    if plate_ratio is None:
        plate_ratio = typical_plate_ratio(kind, plate_layout)
    if kind == "moto_rear":
        return _motorbike_rear(rng, plate_ratio)
    if kind == "car_side":
        return _car_side(rng)
    return _car_front_rear(rng, kind, plate_layout, plate_ratio)


def draw_vehicle(rng, kind, unit_px, plate_layout=None, plate_ratio=None):
    """Plan and paint one vehicle at ``unit_px`` pixels per vehicle unit.

    Returns:
        VehicleLayer
    """
    return plan_vehicle(rng, kind, plate_layout, plate_ratio).render(unit_px)


def _shading(rng, top, bottom):
    return (top, bottom, rng.uniform(-0.06, 0.06))


def _plan(recorder, kind, plate_layout, plate_center, plate_width, shadow_span, shading):
    return VehiclePlan(
        kind=kind, plate_layout=plate_layout, ops=recorder.ops, x_min=recorder.x_min,
        x_max=recorder.x_max, y_top=recorder.y_top, plate_center=plate_center,
        plate_width=plate_width, shadow_span=shadow_span, shading=shading,
    )


def _car_front_rear(rng, kind, plate_layout, plate_ratio):
    style = ("sedan", "hatch", "suv", "van")[int(rng.choice(4, p=(0.4, 0.25, 0.25, 0.1)))]
    clearance, belt, cabin, roof = _CAR_STYLES[style]
    belt *= rng.uniform(0.95, 1.05)
    cabin *= rng.uniform(0.92, 1.08)
    roof *= rng.uniform(0.95, 1.03)
    top = belt + cabin
    front = kind == "car_front"
    body = _body_colour(rng)
    dark_trim = rng.random() < 0.5
    p = _Recorder(-0.08, 1.08, top + 0.01)

    # Tyres peek out below the body.
    for x0 in (0.04, 0.8):
        p.rect(x0, 0.0, x0 + 0.16, clearance + 0.1, _TYRE, radius=0.025)
    # Lower body with chamfered corners, then the cabin (greenhouse) on top.
    p.polygon([(0.0, clearance + 0.04), (0.03, clearance), (0.97, clearance),
               (1.0, clearance + 0.04),
               (1.0, belt - 0.07), (0.95, belt), (0.05, belt), (0.0, belt - 0.07)], body)
    p.polygon([(0.06, belt), (0.94, belt), (0.5 + roof / 2, top), (0.5 - roof / 2, top)], body)
    # Glass: inset by the pillars, with a lighter diagonal reflection of the sky.
    glass = _mix((30, 38, 48), (rng.uniform(40, 120),) * 3, rng.uniform(0.0, 0.4))
    pillar = 0.045
    g_bottom, g_top = belt + 0.02, top - 0.035
    low_half = 0.44 - pillar
    top_half = roof / 2 - pillar * 0.9
    p.polygon([(0.5 - low_half, g_bottom), (0.5 + low_half, g_bottom),
               (0.5 + top_half, g_top), (0.5 - top_half, g_top)], glass)
    shine = rng.uniform(0.1, 0.7)
    sweep = rng.uniform(0.0, 0.5)
    p.polygon([(0.5 - low_half + sweep, g_bottom), (0.5 - low_half + sweep + 0.12, g_bottom),
               (0.5 - top_half + sweep + 0.22, g_top), (0.5 - top_half + sweep + 0.12, g_top)],
              _mix(glass, (215, 225, 235), shine * 0.5))
    if front:
        p.rect(0.47, g_top - 0.06, 0.53, g_top - 0.03, _BLACK_TRIM)   # rear-view mirror
        p.line([(0.2, g_bottom + 0.01), (0.46, g_bottom + 0.04)], _BLACK_TRIM, 0.008)
        p.line([(0.54, g_bottom + 0.01), (0.8, g_bottom + 0.04)], _BLACK_TRIM, 0.008)
    else:
        p.rect(0.42, g_top - 0.025, 0.58, g_top - 0.01, (200, 30, 30))   # third brake light
    # Side mirrors stick out of the silhouette.
    mirror = _BLACK_TRIM if dark_trim else body
    p.polygon([(-0.07, belt + 0.02), (0.04, belt), (0.04, belt + 0.07), (-0.06, belt + 0.09)],
              mirror)
    p.polygon([(1.07, belt + 0.02), (0.96, belt), (0.96, belt + 0.07), (1.06, belt + 0.09)], mirror)

    # Lights: white headlights in front, red tail lights behind.
    light_y0, light_y1 = belt - 0.15, belt - 0.04
    for sign in (-1, 1):
        outer, inner = 0.5 + sign * 0.46, 0.5 + sign * 0.22
        if front:
            p.polygon([(outer, light_y1), (inner, light_y1 - 0.01), (inner, light_y0 + 0.02),
                       (outer, light_y0 + 0.04)], (190, 196, 204))
            cx = 0.5 + sign * 0.36
            p.ellipse(cx, (light_y0 + light_y1) / 2 + 0.01, 0.045, 0.03, (250, 250, 240))
        else:
            p.polygon([(outer, light_y1), (inner, light_y1 - 0.01), (inner, light_y0 + 0.03),
                       (outer, light_y0 + 0.01)], (165, 22, 28))
            p.rect(min(outer, inner) + 0.02, light_y0 + 0.04, max(outer, inner) - 0.02,
                   light_y0 + 0.065, (230, 120, 40))
    if front:
        grille = _scaled(_BLACK_TRIM, rng.uniform(0.8, 1.4))
        p.rect(0.3, belt - 0.17, 0.7, belt - 0.05, grille, radius=0.02)
        for k in range(1, 4):
            y = belt - 0.17 + 0.03 * k
            p.line([(0.32, y), (0.68, y)], _scaled(grille, 1.8), 0.006)
        p.ellipse(0.5, belt - 0.11, 0.035, 0.022, (196, 198, 202))
    else:
        p.line([(0.22, belt - 0.02), (0.78, belt - 0.02)], _scaled(body, 0.7), 0.006)
        p.ellipse(0.5, belt - 0.06, 0.03, 0.018, (196, 198, 202))
    # Bumper: body colour or black plastic, with an air intake or reflectors.
    bumper = _BLACK_TRIM if dark_trim else _scaled(body, 0.9)
    p.rect(0.01, clearance, 0.99, clearance + 0.14, bumper, radius=0.03)
    if front:
        p.rect(0.28, clearance + 0.015, 0.72, clearance + 0.05, (20, 20, 22), radius=0.01)
        for sign in (-1, 1):
            p.ellipse(0.5 + sign * 0.38, clearance + 0.05, 0.025, 0.018, (230, 230, 220))
    else:
        for sign in (-1, 1):
            p.rect(0.5 + sign * 0.43 - 0.04, clearance + 0.04, 0.5 + sign * 0.43 + 0.04,
                   clearance + 0.06, (150, 20, 24))

    # The plate: on the bumper, or (behind, half of the time) on the boot lid.
    plate_w, plate_h = _plate_units(plate_layout, plate_ratio)
    plate_x = 0.5 + (rng.uniform(-0.08, 0.08) if rng.random() < 0.15 else 0.0)
    if front or rng.random() < 0.5 or plate_h > belt - clearance - 0.24:
        plate_y = clearance + 0.09 + plate_h / 2
    else:
        plate_y = belt - 0.09 - plate_h / 2
    p.rect(plate_x - plate_w / 2 - 0.015, plate_y - plate_h / 2 - 0.012,
           plate_x + plate_w / 2 + 0.015,
           plate_y + plate_h / 2 + 0.012, (26, 26, 28), radius=0.01)
    return _plan(p, kind, plate_layout, (plate_x, plate_y), plate_w, (-0.04, 1.04),
                 _shading(rng, 1.12, 0.82))


def _motorbike_rear(rng, plate_ratio):
    body = _body_colour(rng)
    jacket = _body_colour(rng)
    trousers = ((30, 32, 40), (52, 60, 86), (80, 74, 60), (40, 40, 42))[int(rng.integers(4))]
    helmet = _body_colour(rng)
    skin = _mix((224, 172, 132), (120, 80, 50), rng.uniform(0, 1))
    p = _Recorder(-0.2, 1.2, 2.02)

    p.rect(0.42, 0.0, 0.58, 0.52, _TYRE, radius=0.06)                        # rear tyre
    for x0, x1, sign in ((0.14, 0.36, -1), (0.64, 0.86, 1)):                 # legs
        p.polygon([(x0 + 0.04, 0.22), (x1, 0.22), (x1 + sign * 0.02, 1.0), (x0 - sign * 0.02, 1.0)],
                  trousers)
        p.rect(x0 + 0.02, 0.14, x1 + 0.02, 0.25, (20, 20, 20), radius=0.03)  # shoes
    p.rect(0.66, 0.28, 0.82, 0.4, (176, 178, 182), radius=0.05)               # exhaust
    p.polygon([(0.3, 0.6), (0.7, 0.6), (0.66, 0.95), (0.34, 0.95)], body)     # side covers
    p.polygon([(0.36, 0.44), (0.64, 0.44), (0.6, 0.64), (0.4, 0.64)], _BLACK_TRIM)  # fender
    p.rect(0.38, 0.8, 0.62, 0.88, (170, 24, 30), radius=0.02)                  # tail light
    p.rect(0.3, 0.88, 0.7, 0.99, (22, 22, 24), radius=0.04)                    # seat
    # Handlebar and mirrors first: from behind, the rider hides their middle.
    p.line([(-0.16, 1.2), (1.16, 1.2)], _BLACK_TRIM, 0.035)
    for sign in (-1, 1):
        x = 0.5 + sign * 0.64
        p.line([(x, 1.2), (x + sign * 0.02, 1.42)], _BLACK_TRIM, 0.02)           # mirror stalks
        p.ellipse(x + sign * 0.03, 1.46, 0.06, 0.045, _BLACK_TRIM)
    p.polygon([(0.12, 0.95), (0.88, 0.95), (1.0, 1.52), (0.0, 1.52)], jacket)  # torso
    p.ellipse(0.12, 1.5, 0.12, 0.07, jacket)                                   # shoulders
    p.ellipse(0.88, 1.5, 0.12, 0.07, jacket)
    arm = _scaled(jacket, 0.85)
    p.polygon([(0.0, 1.52), (0.14, 1.48), (0.05, 1.16), (-0.1, 1.18)], arm)
    p.polygon([(1.0, 1.52), (0.86, 1.48), (0.95, 1.16), (1.1, 1.18)], arm)
    p.rect(0.42, 1.5, 0.58, 1.62, skin)                                         # neck
    p.ellipse(0.5, 1.78, 0.2, 0.235, helmet)                                    # helmet
    if rng.random() < 0.5:
        p.rect(0.32, 1.62, 0.68, 1.67, _scaled(helmet, 0.6), radius=0.02)        # helmet rim

    plate_w, plate_h = _plate_units("moto", plate_ratio)
    plate_y = 0.58
    p.rect(0.5 - plate_w / 2 - 0.02, plate_y - plate_h / 2 - 0.015, 0.5 + plate_w / 2 + 0.02,
           plate_y + plate_h / 2 + 0.015, _BLACK_TRIM, radius=0.015)             # plate bracket
    return _plan(p, "moto_rear", "moto", (0.5, plate_y), plate_w, (0.1, 0.9),
                 _shading(rng, 1.08, 0.85))


def _car_side(rng):
    body = _body_colour(rng)
    roof_h = rng.uniform(0.36, 0.44)
    belt = rng.uniform(0.25, 0.29)
    facing_right = rng.random() < 0.5

    def fx(x):  # draw facing left, mirror for facing right
        return 1.0 - x if facing_right else x

    p = _Recorder(-0.01, 1.01, roof_h + 0.01)
    p.polygon([(fx(0.0), 0.1), (fx(1.0), 0.1), (fx(1.0), belt - 0.04), (fx(0.96), belt),
               (fx(0.03), belt - 0.02), (fx(0.0), belt - 0.06)], body)
    p.polygon([(fx(0.24), belt), (fx(0.36), roof_h), (fx(0.72), roof_h), (fx(0.86), belt)], body)
    glass = (40, 48, 58)
    p.polygon([(fx(0.28), belt + 0.01), (fx(0.37), roof_h - 0.03), (fx(0.53), roof_h - 0.03),
               (fx(0.53), belt + 0.01)], glass)
    p.polygon([(fx(0.56), belt + 0.01), (fx(0.56), roof_h - 0.03), (fx(0.7), roof_h - 0.03),
               (fx(0.81), belt + 0.01)], glass)
    p.line([(fx(0.545), 0.12), (fx(0.545), belt)], _scaled(body, 0.6), 0.006)   # door gap
    p.rect(min(fx(0.44), fx(0.48)), belt - 0.03, max(fx(0.44), fx(0.48)), belt - 0.02,
           _scaled(body, 0.6))
    p.rect(min(fx(0.0), fx(0.04)), belt - 0.08, max(fx(0.0), fx(0.04)), belt - 0.04,
           (245, 240, 220))
    p.rect(min(fx(0.97), fx(1.0)), belt - 0.08, max(fx(0.97), fx(1.0)), belt - 0.03, (170, 24, 28))
    for cx in (0.19, 0.81):
        p.ellipse(fx(cx), 0.1, 0.1, 0.1, _TYRE)
        p.ellipse(fx(cx), 0.1, 0.055, 0.055, (150, 152, 158))
    return _plan(p, "car_side", None, None, 0.0, (0.02, 0.98), _shading(rng, 1.12, 0.82))
