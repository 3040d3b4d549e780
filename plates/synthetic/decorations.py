"""What a plate carries besides its characters: national strips, stickers, screws,
decorative separators, frames with dealer text, uneven light and dirt.

None of these is a character. The ones drawn as shapes (strip, sticker, screw,
separator, frame, frame text) are recorded in a decoration map of the canonical
plate (``DECORATIONS``: one id per kind), so the tests can check that no character
mask ever covers them. They are placed only where no character ink is: the strip and a
sticker get room reserved in the text layout, separators sit in the gaps of the text,
screws are tried at a few symmetric places and kept only where nothing else is. On the
plate they belong to the plate object (scene class ``plate``); the frame around it is
part of the vehicle (``car``); the segmenter reads both as background.

Light and dirt fall on everything, characters included: they change colours, never
the geometry, so the labels stay exact.

Shapes are drawn with Pillow at the canonical resolution (``plates.PX_PER_MM``, several
times the final size), colour and decoration id at once (``Painter``).
"""
import numpy as np
from PIL import Image, ImageChops, ImageDraw

from plates.synthetic import fonts
from plates.synthetic.textures import value_noise

__all__ = ["DECORATIONS", "DECORATION_IDS", "COUNTRY_CODES", "DEALER_TEXTS", "SEPARATOR_KINDS",
           "STICKER_KINDS", "Painter", "contrast_colour", "draw_strip", "draw_separator",
           "draw_sticker", "draw_screw", "plan_frame", "draw_frame", "apply_light", "apply_dirt"]

# Decoration kinds, id = position + 1 in the canonical decoration map (0: none).
DECORATIONS = ("strip", "sticker", "screw", "separator", "frame", "frame_text")
DECORATION_IDS = {name: i + 1 for i, name in enumerate(DECORATIONS)}
COUNTRY_CODES = ("D", "F", "I", "NL", "B", "PL", "CZ", "A", "E", "P", "S", "H", "SK", "LT",
                 "RO", "VN", "GB", "DK", "FIN", "IRL")
# Dealer and frame texts: words, numbers and phone numbers (digits that are no plate character).
DEALER_TEXTS = ("AUTOHAUS", "TOYOTA", "HONDA", "AUTO 24", "MOTORS", "CAR CITY", "VINFAST",
                "HYUNDAI", "FORD", "KIA MOTORS", "MAZDA", "AUTO CENTER", "SINCE 1987",
                "PREMIUM CARS", "DEALER", "GARAGE 2000", "AUTO SERVICE")
# A decorative dash is not among them: drawn in a gap it is the same mark as the hyphen
# of a text such as "LL-DDD-LL" (a character) once the plate is a few dozen pixels
# tall, so no reader could tell which of the two a dash is. A separator dot sits at
# mid-height, a full stop on the baseline: the height tells them apart.
SEPARATOR_KINDS = ("dot", "emblem")
STICKER_KINDS = ("round", "square")
_STRIP_BLUE = (0, 51, 153)
_STAR_YELLOW = (255, 204, 0)
_STICKER_COLOURS = ((40, 160, 70), (230, 120, 30), (40, 110, 200), (220, 60, 120),
                    (240, 210, 40), (200, 40, 40), (150, 80, 180), (235, 235, 235))
_FRAME_COLOURS = (((22, 22, 24), 0.5), ((176, 180, 186), 0.2), ((228, 228, 225), 0.15),
                  ((70, 70, 74), 0.15))


def contrast_colour(colour, rng):
    """A colour readable on ``colour``: dark on light, light on dark."""
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    if luma > 130:
        return tuple(int(v) for v in rng.integers(10, 50, 3))
    return tuple(int(v) for v in rng.integers(205, 256, 3))


class Painter:
    """Draws shapes onto the plate's colour image and, with the same geometry, their
    decoration id onto the decoration map.

    Args:
        face (PIL.Image.Image): RGB canvas.
        decoration (PIL.Image.Image): L canvas of the same size, decoration ids.
    """

    def __init__(self, face, decoration):
        self.face, self.decoration = face, decoration
        self._face = ImageDraw.Draw(face)
        self._decoration = ImageDraw.Draw(decoration)

    def ellipse(self, box, colour, kind):
        self._face.ellipse(box, fill=colour)
        self._decoration.ellipse(box, fill=DECORATION_IDS[kind])

    def rect(self, box, colour, kind, radius=0.0):
        if radius > 0:
            self._face.rounded_rectangle(box, radius=radius, fill=colour)
            self._decoration.rounded_rectangle(box, radius=radius, fill=DECORATION_IDS[kind])
        else:
            self._face.rectangle(box, fill=colour)
            self._decoration.rectangle(box, fill=DECORATION_IDS[kind])

    def polygon(self, points, colour, kind):
        self._face.polygon(points, fill=colour)
        self._decoration.polygon(points, fill=DECORATION_IDS[kind])

    def line(self, points, colour, width, kind):
        self._face.line(points, fill=colour, width=max(int(round(width)), 1))
        self._decoration.line(points, fill=DECORATION_IDS[kind], width=max(int(round(width)), 1))

    def text(self, centre, text, font, colour, kind):
        """Anti-aliased text centred on ``centre``; every inked pixel gets the id ``kind``.

        Returns:
            tuple[int, int, int, int]: the ink box ``(x0, y0, x1, y1)``.
        """
        left, top, right, bottom = font.getbbox(text, anchor="mm")
        x0 = int(np.floor(centre[0] + left)) - 1
        y0 = int(np.floor(centre[1] + top)) - 1
        mask = Image.new("L", (int(right - left) + 3, int(bottom - top) + 3), 0)
        ImageDraw.Draw(mask).text((centre[0] - x0, centre[1] - y0), text, fill=255, font=font,
                                  anchor="mm")
        self.face.paste(colour, (x0, y0), mask)
        ink = mask.point(lambda v: DECORATION_IDS[kind] if v else 0)
        self.decoration.paste(ink, (x0, y0), mask.point(lambda v: 255 if v else 0))
        return x0, y0, x0 + mask.width, y0 + mask.height


def _star(cx, cy, radius, angle=-np.pi / 2):
    """The 10 corners of a five-pointed star (inner radius 0.38 of the outer)."""
    k = np.arange(10)
    r = np.where(k % 2 == 0, radius, 0.38 * radius)
    a = angle + k * np.pi / 5
    return [(float(x), float(y)) for x, y in zip(cx + r * np.cos(a), cy + r * np.sin(a))]


def draw_strip(painter, rng, box, font_name):
    """A national strip: a blue band with a ring of 12 yellow stars above a white country
    code (the European plates' strip).

    Args:
        painter (Painter): the plate's painter.
        rng (np.random.Generator): randomness (shade, code).
        box (tuple[float, float, float, float]): ``(x0, y0, x1, y1)`` of the band.
        font_name (str): font of the country code.
    """
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    blue = tuple(int(v) for v in np.clip(np.array(_STRIP_BLUE) + rng.normal(0, 10, 3), 0, 255))
    painter.rect(box, blue, "strip")
    cx = (x0 + x1) / 2
    ring = 0.3 * width
    cy = y0 + min(0.12 * height + ring + 0.1 * width, 0.45 * height)
    star = max(0.065 * width, 1.0)
    for k in range(12):
        a = 2 * np.pi * k / 12
        painter.polygon(_star(cx + ring * np.cos(a), cy + ring * np.sin(a), star), _STAR_YELLOW,
                        "strip")
    code = COUNTRY_CODES[int(rng.integers(len(COUNTRY_CODES)))]
    size = fonts.font_size_for_cap_height(font_name, min(0.22 * height, 0.5 * width))
    font = fonts.load_font(font_name, size)
    right = font.getbbox(code, anchor="mm")[2] - font.getbbox(code, anchor="mm")[0]
    if right > 0.9 * width:      # long codes get a smaller font
        font = fonts.load_font(font_name, max(int(size * 0.9 * width / right), 4))
    painter.text((cx, y0 + 0.78 * height), code, font, (245, 245, 245), "strip")


def draw_separator(painter, rng, kind, cell, centre_y, digit_height, ink, plate_colour):
    """A decorative separator in a gap of the text (no character: the text has a space).

    Dots sit at mid-height (a full stop sits on the baseline) and are smaller than a
    full stop; an emblem is a small coloured seal with a ring.

    Args:
        painter (Painter): the plate's painter.
        rng (np.random.Generator): randomness.
        kind (str): one of ``SEPARATOR_KINDS``.
        cell (tuple[float, float]): ``(left, right)`` of the gap.
        centre_y (float): vertical centre of the text row.
        digit_height (float): height of the row's digits.
        ink (tuple): character colour.
        plate_colour (tuple): plate colour.
    """
    if kind not in SEPARATOR_KINDS:
        raise ValueError(f"kind must be one of {SEPARATOR_KINDS}, got {kind!r}")
    left, right = cell
    cx, width = (left + right) / 2, right - left
    if kind == "dot":
        r = min(0.07 * digit_height, 0.3 * width)
        painter.ellipse((cx - r, centre_y - r, cx + r, centre_y + r), ink, "separator")
    else:
        r = min(0.28 * digit_height, 0.45 * width)
        outer = _STICKER_COLOURS[int(rng.integers(len(_STICKER_COLOURS)))]
        painter.ellipse((cx - r, centre_y - r, cx + r, centre_y + r), ink, "separator")
        inner = 0.8 * r
        painter.ellipse((cx - inner, centre_y - inner, cx + inner, centre_y + inner), outer,
                        "separator")
        core = 0.4 * r
        painter.ellipse((cx - core, centre_y - core, cx + core, centre_y + core), plate_colour,
                        "separator")


def draw_sticker(painter, rng, kind, centre, size):
    """A registration or inspection sticker: a coloured disc or square with a ring and
    tiny digits (a month, a year: digits that are no plate character).

    Args:
        painter (Painter): the plate's painter.
        rng (np.random.Generator): randomness.
        kind (str): one of ``STICKER_KINDS``.
        centre (tuple[float, float]): its centre.
        size (float): its diameter (side of the square).
    """
    cx, cy = centre
    half = size / 2
    colour = _STICKER_COLOURS[int(rng.integers(len(_STICKER_COLOURS)))]
    ring = (250, 250, 250) if sum(colour) < 600 else (40, 40, 40)
    box = (cx - half, cy - half, cx + half, cy + half)
    inner = (cx - 0.82 * half, cy - 0.82 * half, cx + 0.82 * half, cy + 0.82 * half)
    if kind == "round":
        painter.ellipse(box, ring, "sticker")
        painter.ellipse(inner, colour, "sticker")
    else:
        painter.rect(box, ring, "sticker", radius=0.12 * size)
        painter.rect(inner, colour, "sticker", radius=0.1 * size)
    if rng.random() < 0.5:
        text = f"{int(rng.integers(1, 13)):02d}"       # a month
    else:
        text = f"{int(rng.integers(0, 100)):02d}"      # a year
    font = fonts.load_font(fonts.BUILTIN_FONT, max(int(0.38 * size), 4))
    painter.text((cx, cy), text, font, contrast_colour(colour, rng), "sticker")


def draw_screw(painter, rng, centre, size, plate_colour):
    """A screw (metal head with a slot or a cross) or a cap the plate's colour."""
    cx, cy = centre
    r = size / 2
    style = rng.random()
    metal = tuple(int(v) for v in np.full(3, rng.uniform(140, 215)) + rng.normal(0, 4, 3))
    if style < 0.25:             # a plastic cap the colour of the plate, with a dark rim
        painter.ellipse((cx - r, cy - r, cx + r, cy + r), (60, 60, 62), "screw")
        inner = 0.75 * r
        painter.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), plate_colour, "screw")
        return
    painter.ellipse((cx - r, cy - r, cx + r, cy + r), metal, "screw")
    dark = tuple(int(v * 0.45) for v in metal)
    a = rng.uniform(0, np.pi)
    dx, dy = 0.7 * r * np.cos(a), 0.7 * r * np.sin(a)
    width = max(0.22 * r, 1.0)
    painter.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], dark, width, "screw")
    if style > 0.6:              # a cross head
        painter.line([(cx + dy, cy - dx), (cx - dy, cy + dx)], dark, width, "screw")


def plan_frame(rng, plate_height, with_text):
    """Margins of a plate frame, in canonical pixels, and where its text band is.

    Returns:
        dict: ``margins`` ``(left, top, right, bottom)``, ``text_side`` (``"top"``,
        ``"bottom"`` or None), ``colour``.
    """
    side = int(round(rng.uniform(0.05, 0.09) * plate_height))
    band = int(round(rng.uniform(0.2, 0.28) * plate_height))
    text_side = None
    if with_text:
        text_side = "bottom" if rng.random() < 0.75 else "top"
    top = band if text_side == "top" else side
    bottom = band if text_side == "bottom" else side
    colours = [c for c, _ in _FRAME_COLOURS]
    probs = np.array([p for _, p in _FRAME_COLOURS])
    base = np.array(colours[int(rng.choice(len(colours), p=probs / probs.sum()))], np.float64)
    colour = tuple(int(v) for v in np.clip(base + rng.normal(0, 5, 3), 0, 255))
    return {"margins": (side, top, side, bottom), "text_side": text_side, "colour": colour}


def draw_frame(painter, rng, frame, canvas_size, plate_box):
    """Paint the frame (the whole canvas, under the plate) and its dealer text.

    Args:
        painter (Painter): the plate's painter.
        rng (np.random.Generator): randomness (text, font).
        frame (dict): ``plan_frame``'s result.
        canvas_size (tuple[int, int]): ``(width, height)`` of the canvas.
        plate_box (tuple[int, int, int, int]): the plate's rectangle in the canvas.
    """
    width, height = canvas_size
    px0, py0, px1, py1 = plate_box
    radius = 0.1 * (py1 - py0)
    painter.rect((0, 0, width - 1, height - 1), frame["colour"], "frame", radius=radius)
    if frame["text_side"] is None:
        return
    if frame["text_side"] == "bottom":
        band = (py1, height)
    else:
        band = (0, py0)
    band_h = band[1] - band[0]
    if rng.random() < 0.3:
        digits = "".join(str(d) for d in rng.integers(0, 10, size=9))
        text = f"0{digits[:3]} {digits[3:6]} {digits[6:]}"
    else:
        text = DEALER_TEXTS[int(rng.integers(len(DEALER_TEXTS)))]
    available = fonts.available_fonts()
    name = available[int(rng.integers(len(available)))]
    size = fonts.font_size_for_cap_height(name, 0.55 * band_h)
    font = fonts.load_font(name, size)
    left, _, right, _ = font.getbbox(text, anchor="mm")
    if right - left > 0.8 * width:
        font = fonts.load_font(name, max(int(size * 0.8 * width / (right - left)), 4))
    painter.text((width / 2, (band[0] + band[1]) / 2), text, font,
                 contrast_colour(frame["colour"], rng), "frame_text")


def apply_light(rng, light, gradient, shadow):
    """Uneven light on a plate: a linear gradient and/or a straight shadow edge.

    ``light *= (1 + a * t) * (1 - d * s)``: ``t`` in [-1, 1] along a random direction,
    ``a`` up to 0.3; ``s`` a soft step across a random line, ``d`` 0.3..0.6 (the shadow
    of a bumper, a bracket, a wall).

    Args:
        rng (np.random.Generator): randomness.
        light (ndarray[h, w]): float32 light factor of each pixel, modified in place.
        gradient (bool): add the gradient.
        shadow (bool): add the shadow.
    """
    if not (gradient or shadow):
        return light
    height, width = light.shape
    ys = (np.arange(height, dtype=np.float32) - height / 2)[:, None]
    xs = (np.arange(width, dtype=np.float32) - width / 2)[None, :]
    if gradient:
        a = rng.uniform(0, 2 * np.pi)
        along = xs * np.float32(np.cos(a)) + ys * np.float32(np.sin(a))
        extent = abs(np.cos(a)) * width / 2 + abs(np.sin(a)) * height / 2
        light *= 1 + np.float32(rng.uniform(0.1, 0.3) / extent) * along
    if shadow:
        a = rng.uniform(0, 2 * np.pi)
        offset = rng.uniform(-0.3, 0.3) * min(height, width)
        softness = rng.uniform(0.01, 0.08) * height + 0.5
        distance = (xs * np.float32(np.cos(a)) + ys * np.float32(np.sin(a))
                    - np.float32(offset)) / np.float32(softness)
        step = 1 / (1 + np.exp(-np.clip(distance, -30, 30)))
        light *= 1 - np.float32(rng.uniform(0.3, 0.6)) * step
    return light


def apply_dirt(rng, face):
    """Dirt: a few spots (small dark blots) and, often, a smear (a large faint stain).

    The dirt colour is pasted through its coverage: ``face = face * (1 - a) + dirt * a``
    with ``a`` at most 0.7 for a spot, 0.45 for the smear, so characters under dirt stay
    readable (and stay characters).

    Args:
        rng (np.random.Generator): randomness.
        face (PIL.Image.Image): the plate's RGB canvas, modified in place.
    """
    width, height = face.size
    colour = (int(rng.uniform(70, 130)), int(rng.uniform(60, 105)), int(rng.uniform(40, 80)))
    spots = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(spots)
    for _ in range(int(rng.integers(2, 16))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx = rng.uniform(0.004, 0.03) * width
        ry = rx * rng.uniform(0.5, 1.5)
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=int(rng.uniform(60, 180)))
    if rng.random() < 0.6:
        smear = value_noise(rng, height, width, rng.uniform(0.2, 0.6) * height)
        level = rng.uniform(0.1, 0.5)
        alpha = np.clip((smear - level) * 2.0, 0, 0.45)
        smear = Image.fromarray(np.rint(alpha * 255).astype(np.uint8))
        spots = ImageChops.lighter(spots, smear)      # the larger coverage of the two
    face.paste(colour, None, spots)
    return face
