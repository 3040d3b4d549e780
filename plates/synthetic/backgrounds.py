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

Colours are computed in planar float32 arrays ``(3, H, W)`` (one plane per channel):
a colour ``(3,)`` times a field ``(H, W)`` is then a product along contiguous rows,
several times faster than the interleaved ``(H, W, 3)`` layout's length-3 inner loop.
"""
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from plates.synthetic.textures import fractal_noise, value_noise

__all__ = ["Camera", "GROUND_DETAIL", "ground_scale", "render_background"]


# The road is computed on a grid of at most GROUND_DETAIL pixels across, then
# interpolated to the image (its grain excepted, drawn per pixel): a 1024-pixel scene's
# road, stains and markings at half resolution, anti-aliased at that footprint.
GROUND_DETAIL = 512


def ground_scale(size):
    """Image pixels per ground-grid pixel: 1 up to ``GROUND_DETAIL`` px, 2 up to twice
    that, and so on."""
    return max(1, -(-int(size) // GROUND_DETAIL))


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


def _colour(values):
    """A colour as a ``(3, 1, 1)`` float32 array, ready to multiply a ``(H, W)`` field."""
    return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)


def _planes_to_image(planes):
    """Planar float32 ``(3, H, W)`` on the 0..255 scale -> RGB ``PIL.Image`` (rounded;
    Pillow's float-to-8-bit conversion clips and truncates); ``planes`` is overwritten."""
    planes += 0.5
    return Image.merge("RGB", [Image.fromarray(p, mode="F").convert("L") for p in planes])


def _image_to_planes(image):
    return np.stack([np.asarray(band, dtype=np.float32) for band in image.split()])


def _sky(rng, height, width):
    top = np.array(rng.choice([(92, 140, 200), (150, 170, 190), (190, 196, 204)]), np.float32)
    bottom = np.clip(top + rng.uniform(25, 60), 0, 255)
    t = np.linspace(0, 1, height, dtype=np.float32)[None, :, None]
    rows = _colour(top) * (1 - t) + _colour(bottom) * t                     # (3, h, 1)
    clouds = np.clip(fractal_noise(rng, height, width, 48.0, octaves=4) * 1.6, 0, 1)
    # sky * (1 - 0.7 c) + 240 * 0.7 * c
    return rows + clouds[None] * (168.0 - 0.7 * rows)


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
    """Running-bond brickwork, one colour per brick, mortar joints; vectorized.

    Rows and columns are separable: a course index per row, and two column patterns
    (even courses, and odd ones offset by half a brick) looked up by the row's parity.
    """
    brick_h = rng.uniform(5, 10) * width / 256
    brick_w = brick_h * rng.uniform(2.4, 3.2)
    ys = np.arange(height, dtype=np.float32)
    xs = np.arange(width, dtype=np.float32)
    course = np.floor(ys / brick_h).astype(np.int64)                          # (h,)
    parity = course % 2
    shifted = xs[None, :] + np.array([[0.0], [brick_w / 2]], np.float32)      # (2, w)
    columns = np.floor(shifted / brick_w).astype(np.int64) % 64               # (2, w)
    tint = np.random.default_rng(int(rng.integers(2**32))).uniform(
        0.78, 1.15, size=(64, 64)).astype(np.float32)
    brick = tint[(course % 64)[:, None], columns[parity]]                     # (h, w)
    mortar = ((ys % brick_h) < 1.2)[:, None] | ((shifted % brick_w) < 1.2)[parity]
    base = np.array(rng.choice([(150, 70, 50), (170, 100, 70), (120, 60, 45), (180, 150, 120)]),
                    np.float32)
    return np.where(mortar[None], np.float32(190), _colour(base) * brick[None])


def _foliage(rng, height, width):
    """Leafy texture: thresholded fractal noise mixing light and dark greens."""
    blobs = fractal_noise(rng, height, width, rng.uniform(10, 30), octaves=4)
    light = np.array(rng.choice([(84, 128, 52), (110, 140, 60), (70, 110, 60)]), np.float32)
    dark = light * rng.uniform(0.3, 0.5)
    t = np.clip(blobs * 2.5 + 0.5, 0, 1)[None]
    return _colour(dark) + t * _colour(light - dark)


def _wrap(values, period):
    """Signed distance to the nearest multiple of ``period`` (in ``[-period/2, period/2)``)."""
    turns = values / period + 0.5
    return (turns - np.floor(turns) - 0.5) * period


def _ground(rng, size, camera, start_row, scale=1):
    """Road surface below ``start_row``: asphalt, paving or a parking lot, in (X, Z).

    The surface is described by a few fields over the pixels: ``side`` (the pavement
    beyond a kerb), ``shade`` (paving joints, the kerb's edge), ``cover`` (paint), a grey
    ``texture`` (stains) and the haze of each row; each channel plane is then
    ``((base | stone) * shade * (1 - cover) + paint * cover + texture) * clear + 170 * haze``.
    It is computed on a grid ``scale`` times coarser than the image (pixel centres,
    footprints and noise cells scaled alike); the per-pixel grain is added by the caller
    at full resolution.

    Returns:
        tuple: ``(planes, grain)``: ``planes`` ndarray[3, ceil(n / scale), ceil(size /
        scale)] float32 (``n = size - start_row``), ``grain`` the grain's amplitude (grey
        levels, peak to peak).
    """
    # float32 throughout: the camera's numbers may be NumPy float64 scalars, which would
    # turn every (n, W) array below into float64.
    horizon, height_m = float(camera.horizon), float(camera.height_m)
    n, w = -(-(size - start_row) // scale), -(-size // scale)
    rows = start_row + (np.arange(n, dtype=np.float32) + 0.5) * scale
    dy = (rows - horizon)[:, None]                               # (n, 1), > 0 below the horizon
    cols = (np.arange(w, dtype=np.float32)[None, :] + 0.5) * scale
    X = (cols - float(camera.vanish_x)) * (height_m / dy)        # (n, w) metres across
    Z = float(camera.focal) * height_m / dy                      # (n, 1) metres ahead
    # Metres covered by one grid pixel: across (X) and along the road (Z = F Hc / dy =>
    # dZ = Z / dy per image row).
    foot_x, foot_z = scale * height_m / dy, scale * Z / dy

    def band(distance, half_width, footprint):
        # Anti-aliased coverage of |distance| < half_width at the pixel footprint.
        return np.clip((half_width - np.abs(distance)) / footprint + 0.5, 0, 1)

    def period_fade(period, footprint):
        # Patterns finer than ~3 pixels alias into moire: fade them out.
        return np.clip(period / (3 * footprint) - 1, 0, 1)

    kind = rng.choice(["asphalt", "asphalt", "asphalt", "paving", "parking"])
    # Stains: a brightness offset, grey; the grain comes later, per image pixel.
    grain = rng.uniform(8, 20)
    texture = fractal_noise(rng, n, w, 40.0 / scale, octaves=3) * np.float32(rng.uniform(8, 22))
    side = shade = cover = None
    paint = stone = None
    if kind == "paving":
        base = np.array(rng.choice([(150, 140, 130), (120, 110, 105), (170, 160, 150)]), np.float32)
        tile = rng.uniform(0.3, 0.8)
        joints = np.maximum(band(_wrap(X, tile), 0.02, foot_x) * period_fade(tile, foot_x),
                            band(_wrap(Z, tile), 0.02, foot_z) * period_fade(tile, foot_z))
        shade = 1 - 0.35 * joints
    else:
        grey = rng.uniform(55, 125)
        base = np.array([grey, grey, grey * rng.uniform(0.98, 1.06)], np.float32)
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
                marks = marks * np.where(k == 0, np.float32(1.0), dashes)
            if rng.random() < 0.5:                       # a kerb and a pavement on one side
                kerb = offset + float(rng.choice([-1, 1])) * lane * rng.uniform(1.2, 2.5)
                side = (X < kerb) if kerb < 0 else (X > kerb)
                stone = np.array((170, 168, 160), np.float32) * np.float32(rng.uniform(0.8, 1.1))
                shade = 1 - 0.3 * band(X - kerb, 0.12, foot_x)
                marks = marks * ~side
        else:                                            # parking bays
            bay = rng.uniform(2.4, 2.8)
            offset = rng.uniform(0, bay)
            in_bay = (Z % 12.0) < 5.0                     # 5 m deep bays, 7 m aisles
            marks = band(_wrap(X - offset, bay), 0.06, foot_x) * period_fade(bay, foot_x) * in_bay
            aisle = band(_wrap(Z, 12.0), 0.08, foot_z) * period_fade(12.0, foot_z)
            marks = np.maximum(marks, aisle)
        wear = np.clip(0.75 + 0.5 * value_noise(rng, n, w, 12.0 / scale), 0, 1)
        cover = (marks * wear).astype(np.float32)
    # Aerial perspective: the far road fades into a hazy grey.
    haze = (np.clip(1.0 - dy / (0.5 * size), 0, 1) * rng.uniform(0.1, 0.5)).astype(np.float32)
    clear = 1 - haze                                                            # (n, 1)
    texture *= clear
    out = np.empty((3, n, w), np.float32)
    for channel, plane in enumerate(out):
        if side is None and shade is None:
            # A uniform surface: per row, out = base * clear + 170 haze + cover * (paint -
            # base) * clear + texture (the common case, three passes).
            if cover is not None:
                np.multiply(cover, (paint[channel] - base[channel]) * clear, out=plane)
                plane += texture
            else:
                plane[...] = texture
            plane += base[channel] * clear + 170.0 * haze
            continue
        if side is None:
            plane[...] = base[channel]
        else:
            np.multiply(side, stone[channel] - base[channel], out=plane)
            plane += base[channel]
        if shade is not None:
            plane *= shade
        if cover is not None:
            plane += cover * (paint[channel] - plane)
        plane *= clear
        plane += texture
        plane += 170.0 * haze
    return out, grain


def render_background(rng, size, camera):
    """A street background for ``camera``: backdrop, then road.

    Args:
        rng (np.random.Generator): randomness.
        size (int): image side, pixels.
        camera (Camera): the scene's camera.

    Returns:
        tuple: ``(image, foot)``: ``image`` an RGB ``PIL.Image`` of ``size x size``,
        ``foot`` the row where the backdrop meets the road (the road fills the rows below
        it; ``foot >= size`` means there is no road).
    """
    wall_depth = rng.uniform(8.0, 60.0)
    foot = camera.horizon + camera.focal * camera.height_m / wall_depth
    foot_row = int(np.clip(np.ceil(foot), 0, size))

    kind = rng.choice(["facade", "facade", "bricks", "foliage", "skyline"])
    canvas = Image.new("RGB", (size, size))
    if foot_row > 0:
        # Only the rows above the road are drawn (buildings may be taller than that).
        backdrop = _sky(rng, foot_row, size)
        if kind in ("facade", "skyline"):
            facades = _planes_to_image(backdrop)
            _facades(rng, ImageDraw.Draw(facades), size,
                     foot_row if kind == "facade" else int(camera.horizon) + 2)
            backdrop = _image_to_planes(facades)
        if kind == "bricks":
            top = max(int(foot_row - rng.uniform(0.3, 1.2) * size), 0)
            backdrop[:, top:] = _bricks(rng, foot_row - top, size)
        elif kind == "foliage":
            top = int(foot_row - rng.uniform(0.2, 1.0) * size)
            leaves = _foliage(rng, foot_row, size)
            # Ragged crown: the top edge wobbles with low-frequency noise.
            edge = top + 0.15 * size * value_noise(rng, 1, size, size / 4)[0]
            crown = np.arange(foot_row, dtype=np.float32)[:, None] >= edge[None, :]
            np.copyto(backdrop, leaves, where=crown[None])
        elif kind == "skyline":
            # Trees and hedges in front of distant buildings.
            leaves = _foliage(rng, foot_row, size)
            edge = foot_row - rng.uniform(0.05, 0.3) * size \
                + 0.08 * size * value_noise(rng, 1, size, size / 6)[0]
            hedge = np.arange(foot_row, dtype=np.float32)[:, None] >= edge[None, :]
            np.copyto(backdrop, leaves, where=hedge[None])
        backdrop *= 1 + 0.08 * fractal_noise(rng, foot_row, size, 24.0, octaves=4)[None]
        canvas.paste(_planes_to_image(backdrop), (0, 0))
    if foot_row < size:
        rows = size - foot_row
        scale = ground_scale(size)
        planes, grain = _ground(rng, size, camera, foot_row, scale)
        ground = _planes_to_image(planes)
        if scale > 1:
            ground = ground.resize((size, rows), Image.BILINEAR,
                                   box=(0, 0, size / scale, rows / scale))
        # Grain: one uniform random grey offset per image pixel, in [-grain/2, grain/2].
        table = np.rint((np.arange(256) - 127.5) / 255 * grain + 128).astype(int).tolist()
        noise = Image.frombytes("L", (size, rows), rng.bytes(size * rows)).point(table)
        canvas.paste(ImageChops.add(ground, Image.merge("RGB", (noise,) * 3), 1.0, -128),
                     (0, foot_row))
    return canvas, foot
