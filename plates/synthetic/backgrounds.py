"""Procedural street backgrounds seen by a pinhole camera: road, pavement, walls,
buildings, foliage and sky.

The camera looks horizontally from height ``Hc`` metres with focal length ``F``
pixels; the horizon is the image row ``h`` and the vanishing point ``(vx, h)``. A
ground pixel ``(x, y)`` below the horizon sees the road point at depth ``Z`` and lateral
offset ``X`` (metres) given by the flat-ground projection (Hartley & Zisserman, ch. 6):

    Z = F * Hc / (y - h),        X = (x - vx) * Hc / (y - h)

so road markings, kerbs and paving joints are drawn as functions of ``(X, Z)`` over all
pixels at once and recede correctly. One pixel spans ``Hc / (y - h)`` metres across;
markings are anti-aliased with that footprint and finer patterns fade out when they
would alias. The same camera sizes the vehicles (``scene.py``): an object of width
``w`` metres standing at row ``y`` is ``w * (y - h) / Hc`` pixels wide.

Behind the road a vertical backdrop (a facade, a brick wall, hedges and trees, or a
skyline) stands at depth ``Z_wall``; its foot is at row ``h + F * Hc / Z_wall``.
"""
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from plates.synthetic.textures import fractal_noise, value_noise

__all__ = ["Camera", "render_background"]


@dataclass
class Camera:
    """Pinhole camera over a flat road (module docstring).

    Attributes:
        horizon (float): image row of the horizon (may be above the image, < 0).
        height_m (float): camera height above the road, metres.
        focal (float): focal length, pixels.
        vanish_x (float): image column of the vanishing point of the road.
    """
    horizon: float
    height_m: float
    focal: float
    vanish_x: float

    def pixels_per_metre(self, row):
        """Scale (pixels per metre) of an object standing on the ground at ``row``."""
        return (row - self.horizon) / self.height_m


def _sky(rng, height, width):
    top = np.array(rng.choice([(92, 140, 200), (150, 170, 190), (190, 196, 204)]), np.float32)
    bottom = np.clip(top + rng.uniform(25, 60), 0, 255)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = top * (1 - t) + bottom * t + np.zeros((1, width, 1), np.float32)
    clouds = np.clip(fractal_noise(rng, height, width, 48.0, octaves=4) * 1.6, 0, 1)
    return sky * (1 - clouds[:, :, None] * 0.7) + 240 * 0.7 * clouds[:, :, None]


def _facades(rng, draw, size, foot):
    """Buildings in a row: a wall colour each, window grids, doors, shop fronts."""
    x = -int(rng.integers(0, size // 4 + 1))
    while x < size:
        width = int(rng.uniform(0.35, 1.0) * size)
        top = foot - int(rng.uniform(0.35, 1.4) * size)
        wall = tuple(int(v) for v in rng.choice(
            [(196, 180, 150), (170, 160, 150), (220, 214, 196), (150, 110, 90), (120, 128, 136),
             (200, 200, 200), (214, 190, 120), (160, 176, 160)]) + rng.normal(0, 10, 3))
        draw.rectangle((x, top, x + width, foot), fill=wall)
        cell_w = int(rng.uniform(0.09, 0.18) * size)
        cell_h = int(cell_w * rng.uniform(0.9, 1.5))
        glass = tuple(int(v) for v in rng.choice([(60, 72, 86), (40, 46, 52), (110, 130, 150)]))
        frame = tuple(int(v) for v in np.clip(np.array(wall) * rng.uniform(0.5, 1.2), 0, 255))
        win_w, win_h = int(cell_w * rng.uniform(0.45, 0.7)), int(cell_h * rng.uniform(0.4, 0.65))
        for row_top in range(top + cell_h // 3, foot - cell_h, cell_h):
            for col_left in range(x + cell_w // 4, x + width - win_w, cell_w):
                draw.rectangle((col_left - 1, row_top - 1,
                                col_left + win_w + 1, row_top + win_h + 1), fill=frame)
                shade = rng.uniform(0.7, 1.3)
                draw.rectangle((col_left, row_top, col_left + win_w, row_top + win_h),
                               fill=tuple(int(min(v * shade, 255)) for v in glass))
        # Ground floor: a door or a dark shop front.
        door_w = int(width * rng.uniform(0.15, 0.5))
        door_x = x + int(rng.uniform(0.05, 0.5) * width)
        door_h = int(cell_h * rng.uniform(0.8, 1.3))
        draw.rectangle((door_x, foot - door_h, door_x + door_w, foot), fill=(48, 46, 44))
        x += width


def _bricks(rng, height, width):
    """Running-bond brickwork, one colour per brick, mortar joints; vectorized."""
    brick_h = rng.uniform(5, 10) * width / 256
    brick_w = brick_h * rng.uniform(2.4, 3.2)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    row = np.floor(ys / brick_h)
    shifted = xs + (row % 2) * brick_w / 2             # every other course offset by half
    col = np.floor(shifted / brick_w)
    tint = np.random.default_rng(int(rng.integers(2**32))).uniform(0.78, 1.15, size=(64, 64))
    brick = tint[row.astype(np.int64) % 64, col.astype(np.int64) % 64]
    mortar = ((ys % brick_h) < 1.2) | ((shifted % brick_w) < 1.2)
    base = np.array(rng.choice([(150, 70, 50), (170, 100, 70), (120, 60, 45), (180, 150, 120)]),
                    np.float32)
    colour = base * brick[:, :, None]
    return np.where(mortar[:, :, None], np.float32(190), colour)


def _foliage(rng, height, width):
    """Leafy texture: thresholded fractal noise mixing light and dark greens."""
    blobs = fractal_noise(rng, height, width, rng.uniform(10, 30), octaves=4)
    light = np.array(rng.choice([(84, 128, 52), (110, 140, 60), (70, 110, 60)]), np.float32)
    dark = light * rng.uniform(0.3, 0.5)
    t = np.clip(blobs * 2.5 + 0.5, 0, 1)[:, :, None]
    return dark * (1 - t) + light * t


def _wrap(values, period):
    """Signed distance to the nearest multiple of ``period`` (in ``[-period/2, period/2)``)."""
    return (values + period / 2) % period - period / 2


def _ground(rng, size, camera, start_row):
    """Road surface below ``start_row``: asphalt, paving or a parking lot, in (X, Z)."""
    rows = np.arange(start_row, size, dtype=np.float32) + 0.5
    dy = (rows - camera.horizon)[:, None]                        # (n, 1), > 0 below the horizon
    cols = np.arange(size, dtype=np.float32)[None, :] + 0.5
    X = (cols - camera.vanish_x) * (camera.height_m / dy)        # (n, W) metres across
    Z = camera.focal * camera.height_m / dy                      # (n, 1) metres ahead
    # Metres covered by one pixel: across (X) and along the road (Z = F Hc / dy => dZ = Z / dy).
    foot_x, foot_z = camera.height_m / dy, Z / dy

    def band(distance, half_width, footprint):
        # Anti-aliased coverage of |distance| < half_width at the pixel footprint.
        return np.clip((half_width - np.abs(distance)) / footprint + 0.5, 0, 1)

    def period_fade(period, footprint):
        # Patterns finer than ~3 pixels alias into moire: fade them out.
        return np.clip(period / (3 * footprint) - 1, 0, 1)

    n = len(rows)
    kind = rng.choice(["asphalt", "asphalt", "asphalt", "paving", "parking"])
    grain = (rng.random((n, size), dtype=np.float32) - 0.5) * rng.uniform(8, 20)
    stains = fractal_noise(rng, n, size, 40.0, octaves=3) * rng.uniform(8, 22)
    if kind == "paving":
        base = np.array(rng.choice([(150, 140, 130), (120, 110, 105), (170, 160, 150)]), np.float32)
        tile = rng.uniform(0.3, 0.8)
        joints = np.maximum(band(_wrap(X, tile), 0.02, foot_x) * period_fade(tile, foot_x),
                            band(_wrap(Z, tile), 0.02, foot_z) * period_fade(tile, foot_z))
        surface = base * (1 - 0.35 * joints[:, :, None])
    else:
        grey = rng.uniform(55, 125)
        base = np.array([grey, grey, grey * rng.uniform(0.98, 1.06)], np.float32)
        surface = base + np.zeros((n, size, 1), np.float32)
        paint = np.array((235, 235, 228) if rng.random() < 0.75 else (230, 190, 40), np.float32)
        if kind == "asphalt":
            lane = rng.uniform(3.0, 3.8)
            offset = rng.uniform(-lane, lane)
            # Lines at X = offset + k * lane for |k| <= 3; each pixel sees its nearest one.
            k = np.round((X - offset) / lane)
            marks = band(X - offset - k * lane, 0.07, foot_x) * (np.abs(k) <= 3)
            if rng.random() < 0.7:
                # 3 m dashes every 9 m (not the centre line); where they would alias, their mean.
                fade = period_fade(9.0, foot_z)
                dashes = (((Z + offset) % 9.0) < 3.0) * fade + (1 - fade) / 3     # (n, 1)
                marks = marks * np.where(k == 0, 1.0, dashes)
            if rng.random() < 0.5:                       # a kerb and a pavement on one side
                kerb = offset + rng.choice([-1, 1]) * lane * rng.uniform(1.2, 2.5)
                side = (X < kerb) if kerb < 0 else (X > kerb)
                stone = np.array((170, 168, 160), np.float32)
                surface = np.where(side[:, :, None], stone * rng.uniform(0.8, 1.1), surface)
                surface = surface * (1 - 0.3 * band(X - kerb, 0.12, foot_x)[:, :, None])
                marks = marks * ~side
        else:                                            # parking bays
            bay = rng.uniform(2.4, 2.8)
            offset = rng.uniform(0, bay)
            in_bay = (Z % 12.0) < 5.0                     # 5 m deep bays, 7 m aisles
            marks = band(_wrap(X - offset, bay), 0.06, foot_x) * period_fade(bay, foot_x) * in_bay
            aisle = band(_wrap(Z, 12.0), 0.08, foot_z) * period_fade(12.0, foot_z)
            marks = np.maximum(marks, aisle)
        wear = np.clip(0.75 + 0.5 * value_noise(rng, n, size, 12.0), 0, 1)
        paint_cover = (marks * wear)[:, :, None]
        surface = surface * (1 - paint_cover) + paint * paint_cover
    surface = surface + (grain + stains)[:, :, None]
    # Aerial perspective: the far road fades into a hazy grey.
    haze = np.clip(1.0 - dy / (0.5 * size), 0, 1)[:, :, None] * rng.uniform(0.1, 0.5)
    return surface * (1 - haze) + 170.0 * haze


def render_background(rng, size, camera):
    """A street background for ``camera``: backdrop, then road.

    Args:
        rng (np.random.Generator): randomness.
        size (int): image side, pixels.
        camera (Camera): the scene's camera.

    Returns:
        tuple: ``(image, foot)``: ``image`` float32 ``ndarray[size, size, 3]`` on the 0..255
        scale, ``foot`` the row where the backdrop meets the road (the road fills the rows
        below it; ``foot >= size`` means there is no road).
    """
    wall_depth = rng.uniform(8.0, 60.0)
    foot = camera.horizon + camera.focal * camera.height_m / wall_depth
    foot_row = int(np.clip(np.ceil(foot), 0, size))

    kind = rng.choice(["facade", "facade", "bricks", "foliage", "skyline"])
    image = np.zeros((size, size, 3), np.float32)
    if foot_row > 0:
        # Only the rows above the road are drawn (buildings may be taller than that).
        backdrop = Image.fromarray(np.clip(_sky(rng, foot_row, size), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(backdrop)
        if kind in ("facade", "skyline"):
            _facades(rng, draw, size, foot_row if kind == "facade" else int(camera.horizon) + 2)
        backdrop = np.asarray(backdrop, dtype=np.float32)
        if kind == "bricks":
            top = int(foot_row - rng.uniform(0.3, 1.2) * size)
            walls = _bricks(rng, foot_row, size)
            backdrop[max(top, 0):] = walls[max(top, 0):]
        elif kind == "foliage":
            top = int(foot_row - rng.uniform(0.2, 1.0) * size)
            leaves = _foliage(rng, foot_row, size)
            # Ragged crown: the top edge wobbles with low-frequency noise.
            edge = top + 0.15 * size * value_noise(rng, 1, size, size / 4)[0]
            crown = np.arange(foot_row, dtype=np.float32)[:, None] >= edge[None, :]
            backdrop = np.where(crown[:, :, None], leaves, backdrop)
        elif kind == "skyline":
            # Trees and hedges in front of distant buildings.
            leaves = _foliage(rng, foot_row, size)
            edge = foot_row - rng.uniform(0.05, 0.3) * size \
                + 0.08 * size * value_noise(rng, 1, size, size / 6)[0]
            hedge = np.arange(foot_row, dtype=np.float32)[:, None] >= edge[None, :]
            backdrop = np.where(hedge[:, :, None], leaves, backdrop)
        texture = 1 + 0.08 * fractal_noise(rng, foot_row, size, 24.0, octaves=4)
        image[:foot_row] = backdrop * texture[:, :, None]
    if foot_row < size:
        image[foot_row:] = _ground(rng, size, camera, foot_row)
    return np.clip(image, 0, 255), foot
