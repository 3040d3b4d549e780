"""License plates: text formats, colours and features, rendering with one mask per
character, and warping into the scene.

A plate is rendered flat in a canonical frame, at least ``OVERSAMPLING`` times its final
size (one of the ``RESOLUTIONS``, at most ``PX_PER_MM`` pixels per millimetre), with
every character drawn alone (``fonts.render_glyph``) into a character-index map and a
coverage map. A few fixed resolutions, rather than one per plate, keep the glyph cache
small: one font size per layout, font and resolution. It is then placed in the scene by a
homography (``geometry``); the scene pixels' sub-samples are mapped back, so that the
plate colour, the plate mask, the frame mask and every character mask come from the
same samples.

Layouts (sizes of Vietnamese plates, whose formats the texts follow; ``euro`` is a
European-like one-row plate):

    name      size (mm)   rows   example
    one_row   520 x 110   1      29A-123.45
    two_row   330 x 165   2      29A / 123.45     (square car plate)
    moto      190 x 140   2      29-B1 / 123.45   (motorbike)

Colours: dark characters on white or yellow plates, or light characters on dark
(blue, black, green, red) ones. Features, each drawn with its probability in a
``PlateMix`` (``decorations`` draws them): a national strip, stickers, screws,
decorative separators in the gaps of the text, a frame with dealer text, uneven light
(a gradient, a shadow edge), dirt. A separator that is part of the text (the dash of
"29A-123.45") is a character like any other; a decorative one stands in a gap (a
space of the text) and is none.
"""
from dataclasses import dataclass, fields, replace
from numbers import Real

import numpy as np
from PIL import Image, ImageDraw

from plates.synthetic import decorations, fonts
from plates.synthetic.decorations import DECORATION_IDS, Painter
from plates.synthetic.geometry import inverse_map_grid, quad_region
from plates.synthetic.textures import value_noise

__all__ = ["PX_PER_MM", "RESOLUTIONS", "OVERSAMPLING", "GLYPH_CAP_HEIGHT", "canonical_resolution",
           "PLATE_LAYOUTS", "PLATE_FORMATS", "LIGHT_PLATES", "DARK_PLATES",
           "PLATE_FEATURES", "PlateMix", "parse_plate_mix", "CanonicalPlate", "WarpedPlate",
           "random_plate_text", "render_plate", "warp_plate"]

# Canonical resolutions (pixels per millimetre): the finest makes a one-row plate 416 px
# wide, >= 3.5x its largest final size in a 256-pixel scene.
PX_PER_MM = 0.8
RESOLUTIONS = (0.2, 0.4, 0.8)
OVERSAMPLING = 3.0
PLATE_LAYOUTS = {
    # name: (width mm, height mm, centre of each text row as a fraction of the height,
    #        digit height as a fraction of the plate height)
    "one_row": (520, 110, (0.5,), 0.62),
    "euro": (520, 110, (0.5,), 0.62),
    "two_row": (330, 165, (0.29, 0.71), 0.34),
    "moto": (190, 140, (0.28, 0.71), 0.34),
}


def canonical_resolution(layout, final_width):
    """The coarsest of ``RESOLUTIONS`` that draws a plate of ``layout`` at least
    ``OVERSAMPLING`` times its final width (``PX_PER_MM`` for larger plates).

    Args:
        layout (str): a key of ``PLATE_LAYOUTS``.
        final_width (float): the plate's width in the scene, pixels.
    """
    width_mm = PLATE_LAYOUTS[layout][0]
    for px_per_mm in RESOLUTIONS:
        if width_mm * px_per_mm >= OVERSAMPLING * final_width:
            return px_per_mm
    return PX_PER_MM


# 'D' a digit, 'L' a letter, anything else literal; '/' separates rows; a space is a gap.
PLATE_FORMATS = {
    "one_row": ("DDL-DDD.DD", "DDL-DDDD", "DDLL-DDD.DD", "DDL-DDD.DD"),
    "euro": ("LL-DDD-LL", "LLL DDDD", "LL DDDD LL", "DDD-LLL", "LL LL DDDD", "L LL DDDD"),
    "two_row": ("DDL/DDD.DD", "DDL/DDDD", "DDLD/DDD.DD"),
    "moto": ("DD-LD/DDD.DD", "DD-LD/DDDD", "DD-LL/DDD.DD", "DDLD/DDDDD"),
}
_LETTERS = "ABCDEFGHKLMNPRSTUVXYZ"
_DIGITS = "0123456789"
# (plate colour, character colour, weight).
LIGHT_PLATES = (                                # dark characters on a light plate
    ((236, 236, 230), (20, 20, 24), 0.55),      # white, black characters
    ((238, 196, 40), (18, 18, 18), 0.25),       # yellow, black characters
    ((232, 232, 226), (24, 48, 140), 0.12),     # white, dark blue characters
    ((245, 215, 60), (30, 50, 140), 0.08),      # yellow, dark blue characters
)
DARK_PLATES = (                                 # light characters on a dark plate
    ((28, 62, 160), (240, 240, 240), 0.30),     # blue, white characters
    ((40, 90, 190), (250, 230, 90), 0.10),      # blue, light yellow characters
    ((22, 22, 24), (235, 235, 235), 0.25),      # black, white characters
    ((26, 26, 28), (198, 198, 204), 0.10),      # black, silver characters
    ((22, 80, 45), (240, 240, 240), 0.10),      # green, white characters
    ((120, 22, 28), (240, 240, 240), 0.08),     # red, white characters
    ((40, 40, 44), (240, 200, 40), 0.07),       # dark grey, yellow characters
)
# Glyphs are rendered once per font with letters and digits this tall (pixels), then
# resized to the plate: one cached bitmap per font and character, whatever the layout
# and the resolution.
GLYPH_CAP_HEIGHT = 64
# The features a plate may have, in the order their coin is tossed.
PLATE_FEATURES = ("dark", "strip", "sticker", "screws", "separator", "frame", "frame_text",
                  "gradient", "shadow", "dirt")


@dataclass(frozen=True)
class PlateMix:
    """Probabilities of the plate features; each is drawn independently per plate.

    Attributes:
        dark (float): light characters on a dark plate (else dark on light).
        strip (float): a national strip on the left (car plates; a motorbike plate is too
            narrow).
        sticker (float): a sticker at one end of a text row.
        screws (float): two screws or rivets where nothing else is drawn.
        separator (float): a decorative dot or emblem in each gap of the text
            (only texts with a space have gaps).
        frame (float): a frame around the plate (part of the vehicle).
        frame_text (float): dealer text on the frame, given a frame.
        gradient (float): a light gradient across the plate.
        shadow (float): a shadow edge across the plate.
        dirt (float): spots and a smear of dirt.
        builtin_font (float): Pillow's built-in font rather than one of the TrueType fonts.
    """
    dark: float = 0.25
    strip: float = 0.3
    sticker: float = 0.2
    screws: float = 0.4
    separator: float = 0.6
    frame: float = 0.3
    frame_text: float = 0.7
    gradient: float = 0.4
    shadow: float = 0.15
    dirt: float = 0.3
    builtin_font: float = 0.25

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
                raise ValueError(f"PlateMix.{field.name} must be a probability in [0, 1], "
                                 f"got {value!r}")

    @classmethod
    def only(cls, *features, **probabilities):
        """A mix that draws exactly the named features on every plate, no other.

        ``PlateMix.only("sticker")``: every plate has a sticker and nothing else;
        ``PlateMix.only()``: plain dark-on-light plates. ``frame_text`` implies ``frame``.
        Keyword arguments set other probabilities (e.g. ``builtin_font=0``).
        """
        unknown = [f for f in features if f not in PLATE_FEATURES]
        if unknown:
            raise ValueError(f"features must be among {PLATE_FEATURES}, got {unknown}")
        chosen = set(features) | ({"frame"} if "frame_text" in features else set())
        values = {name: float(name in chosen) for name in PLATE_FEATURES}
        values.update(probabilities)
        return cls(**values)

    def probabilities(self):
        """ndarray[len(PLATE_FEATURES)]: the features' probabilities, in that order."""
        return np.array([getattr(self, name) for name in PLATE_FEATURES])


def parse_plate_mix(items, base=None):
    """A ``PlateMix`` from ``NAME=P`` strings (the command line's ``--plate-mix``).

    Args:
        items (sequence[str]): e.g. ``["strip=0.5", "dirt=0"]``.
        base (PlateMix | None): the mix to change (default: the default mix).

    Raises:
        ValueError: naming the bad item.
    """
    names = {f.name for f in fields(PlateMix)}
    changes = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        if not sep or name not in names:
            raise ValueError(f"plate mix items must be NAME=P with NAME in {sorted(names)}, "
                             f"got {item!r}")
        try:
            changes[name] = float(value)
        except ValueError:
            raise ValueError(f"plate mix item {item!r}: {value!r} is not a number") from None
    return replace(base if base is not None else PlateMix(), **changes)


def random_plate_text(rng, layout):
    """A random plate string for ``layout``, as a list of rows.

    Args:
        rng (np.random.Generator): randomness.
        layout (str): a key of ``PLATE_LAYOUTS``.

    Returns:
        list[str]: one string per row, e.g. ``["29-B1", "123.45"]``; spaces are gaps.
    """
    if layout not in PLATE_FORMATS:
        raise ValueError(f"layout must be one of {sorted(PLATE_FORMATS)}, got {layout!r}")
    formats = PLATE_FORMATS[layout]
    pattern = formats[int(rng.integers(len(formats)))]
    chars = []
    for symbol in pattern:
        if symbol == "D":
            chars.append(_DIGITS[int(rng.integers(10))])
        elif symbol == "L":
            chars.append(_LETTERS[int(rng.integers(len(_LETTERS)))])
        else:
            chars.append(symbol)
    return "".join(chars).split("/")


@dataclass
class CanonicalPlate:
    """A flat plate in its canonical frame (``px_per_mm`` pixels per mm), on a canvas
    that also holds its frame when it has one.

    Attributes:
        rgb (ndarray[h, w, 3]): uint8 colours of plate and frame, characters included.
        alpha (ndarray[h, w]): uint8 coverage of the plate itself (rounded corners).
        frame_alpha (ndarray[h, w]): uint8 coverage of the frame (0 on the plate).
        char_index (ndarray[h, w]): uint8, ``k + 1`` where character ``k`` has ink, else 0.
        char_alpha (ndarray[h, w]): uint8 ink coverage of that character (anti-aliased).
        decoration (ndarray[h, w]): uint8 ``decorations.DECORATION_IDS`` of what is drawn
            there besides characters (strip, sticker, screw, separator, frame, frame
            text), 0 elsewhere; never nonzero where ``char_index`` is (but for the frame,
            which holds no character either).
        plate_box (tuple[int, int, int, int]): ``(x0, y0, x1, y1)`` of the plate in the canvas.
        chars (list[str]): the characters in reading order (spaces excluded); ``k`` indexes it.
        text (str): the rows joined by a space, e.g. ``"29-B1 123.45"``.
        digit_height (float): height of a digit in canonical pixels.
        features (tuple[str]): the ``PLATE_FEATURES`` drawn on this plate.
    """
    rgb: np.ndarray
    alpha: np.ndarray
    frame_alpha: np.ndarray
    char_index: np.ndarray
    char_alpha: np.ndarray
    decoration: np.ndarray
    plate_box: tuple
    chars: list
    text: str
    digit_height: float
    features: tuple = ()


# Plate dashes and dots are bold; many fonts draw them as hairlines that vanish once the
# plate is small. Minimum thickness, as a fraction of the digit height.
_MIN_PUNCTUATION = {"-": 0.14, ".": 0.2}


def _plate_glyph(font, size, char):
    """A glyph bitmap and its top offset from the baseline, punctuation made bold."""
    bitmap, top = fonts.render_glyph(font, size, char)
    if char not in "-.":
        return bitmap, top
    digit_height = fonts.render_glyph(font, size, "0")[0].shape[0]
    thickness = int(np.ceil(_MIN_PUNCTUATION[char] * digit_height))
    height, width = bitmap.shape
    if height >= thickness:
        return bitmap, top
    new_w = max(width, thickness) if char == "." else width
    bold = np.asarray(Image.fromarray(bitmap).resize((new_w, thickness), Image.BILINEAR))
    if char == ".":
        return bold, top + height - thickness            # keep it sitting on the baseline
    return bold, top - (thickness - height) / 2          # keep the dash centred


def _resized_glyph(font, size, char, scale_x, scale_y):
    bitmap, top = _plate_glyph(font, size, char)
    height, width = bitmap.shape
    new_w = max(int(round(width * scale_x)), 1)
    new_h = max(int(round(height * scale_y)), 1)
    if (new_w, new_h) != (width, height):
        bitmap = np.asarray(Image.fromarray(bitmap).resize((new_w, new_h), Image.BILINEAR))
    return bitmap, top * scale_y


def _layout_row(row, font, size, zoom, condense, stretch, available_width, space=0.5):
    """Glyph bitmaps and x offsets of one row, scaled to fit ``available_width``.

    Plates use a fixed pitch: every letter or digit gets a cell as wide as the widest
    one; dashes and dots get their own narrow cells; a space is a gap of ``space`` cells.
    Glyphs are rendered at font size ``size`` and resized by ``zoom`` (times the
    condensing and stretching).

    Returns:
        tuple: ``(glyphs, width, scale_y, gaps)``: ``glyphs`` a list of
        ``(char, bitmap, left, top)``, ``width`` the row's width, ``scale_y`` the height
        of its glyphs relative to ``zoom``, ``gaps`` the ``(left, right)`` of each space;
        positions relative to the row's left end.
    """
    raw = [_plate_glyph(font, size, c)[0] if c != " " else None for c in row]
    pitch = max(b.shape[1] for c, b in zip(row, raw) if b is not None and c.isalnum())
    gap = 0.12 * pitch
    widths = []
    for char, bitmap in zip(row, raw):
        if char == " ":
            widths.append(space * pitch)
        elif char.isalnum():
            widths.append(pitch + gap)
        else:
            widths.append(bitmap.shape[1] + 2 * gap)
    total = sum(widths)
    squeeze = min(condense, available_width / (total * zoom))
    # Below half width, glyphs turn into bars: shrink their height as well.
    scale_y = stretch * (1.0 if squeeze >= 0.5 else squeeze / 0.5)
    scale_x = squeeze * zoom
    cells = np.cumsum([0.0] + widths)[:-1] * scale_x
    glyphs, gaps = [], []
    for char, cell, width in zip(row, cells, widths):
        if char == " ":
            gaps.append((cell, cell + width * scale_x))
            continue
        bitmap, top = _resized_glyph(font, size, char, scale_x, scale_y * zoom)
        left = cell + (width * scale_x - bitmap.shape[1]) / 2  # centred in its cell
        glyphs.append((char, bitmap, left, top))
    return glyphs, total * scale_x, scale_y, gaps


def _choose_font(rng, mix):
    available = fonts.available_fonts()
    # Pillow's font in a share of the plates, the TrueType fonts share the rest.
    if len(available) == 1 or rng.random() < mix.builtin_font:
        return available[0]
    return available[1 + int(rng.integers(len(available) - 1))]


def _choose_colours(rng, dark):
    palette = DARK_PLATES if dark else LIGHT_PLATES
    weights = np.array([w for _, _, w in palette])
    plate_colour, ink_colour, _ = palette[int(rng.choice(len(palette), p=weights / weights.sum()))]
    plate_colour = np.clip(np.array(plate_colour) + rng.normal(0, 8, 3), 0, 255)
    ink_colour = np.clip(np.array(ink_colour) + rng.normal(0, 6, 3), 0, 255)
    return plate_colour, ink_colour


def _free(box, occupied, margin):
    """Whether ``box`` keeps ``margin`` pixels from every rectangle of ``occupied``."""
    x0, y0, x1, y1 = box
    return all(x1 + margin <= a0 or a1 + margin <= x0 or y1 + margin <= b0 or b1 + margin <= y0
               for a0, b0, a1, b1 in occupied)


def render_plate(rng, layout, font=None, mix=None, px_per_mm=PX_PER_MM):
    """Render a random plate of ``layout`` flat, with one ink mask per character.

    Args:
        rng (np.random.Generator): randomness (text, colours, font, features, wear).
        layout (str): a key of ``PLATE_LAYOUTS``.
        font (str | None): font path or ``fonts.BUILTIN_FONT``; random when None.
        mix (PlateMix | None): feature probabilities (default ``PlateMix()``).
        px_per_mm (float): canonical resolution, pixels per millimetre (> 0).

    Returns:
        CanonicalPlate: the plate is ``(height_mm, width_mm) * px_per_mm`` pixels, at
        ``plate_box`` in a canvas that adds the frame's margins when there is a frame.
    """
    if layout not in PLATE_LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(PLATE_LAYOUTS)}, got {layout!r}")
    mix = PlateMix() if mix is None else mix
    if not isinstance(mix, PlateMix):
        raise TypeError(f"mix must be a PlateMix or None, got {type(mix).__name__}")
    width_mm, height_mm, row_centres, digit_frac = PLATE_LAYOUTS[layout]
    if isinstance(px_per_mm, bool) or not isinstance(px_per_mm, Real) or not px_per_mm > 0:
        raise ValueError(f"px_per_mm must be a positive number, got {px_per_mm!r}")
    width = int(round(width_mm * px_per_mm))
    height = int(round(height_mm * px_per_mm))
    rows = random_plate_text(rng, layout)
    if font is None:
        font = _choose_font(rng, mix)
    fired = dict(zip(PLATE_FEATURES, rng.random(len(PLATE_FEATURES)) < mix.probabilities()))
    fired["strip"] &= layout != "moto"
    fired["frame_text"] &= fired["frame"]
    fired["separator"] &= any(" " in row for row in rows)
    plate_colour, ink_colour = _choose_colours(rng, fired["dark"])
    plate_rgb = tuple(int(v) for v in plate_colour)
    ink_rgb = tuple(int(v) for v in ink_colour)

    # The canvas: the plate, inside its frame's margins when it has a frame.
    frame = decorations.plan_frame(rng, height, fired["frame_text"]) if fired["frame"] else None
    left_m, top_m, right_m, bottom_m = frame["margins"] if frame else (0, 0, 0, 0)
    canvas_w, canvas_h = width + left_m + right_m, height + top_m + bottom_m
    plate_box = (left_m, top_m, left_m + width, top_m + height)
    face = Image.new("RGB", (canvas_w, canvas_h), 0)
    decoration = Image.new("L", (canvas_w, canvas_h), 0)
    painter = Painter(face, decoration)
    if frame:
        decorations.draw_frame(painter, rng, frame, (canvas_w, canvas_h), plate_box)

    # The plate: rounded rectangle, a thin border in the ink colour (most of the time).
    radius = 0.08 * height
    plate_shape = (left_m, top_m, left_m + width - 1, top_m + height - 1)
    shape = Image.new("L", (canvas_w, canvas_h), 0)
    ImageDraw.Draw(shape).rounded_rectangle(plate_shape, radius=radius, fill=255)
    face.paste(plate_rgb, None, shape)
    decoration.paste(0, None, shape)           # the plate covers the frame
    border = max(int(round(0.035 * height)), 2)
    inset = max(int(round(0.03 * height)), 1)
    if rng.random() < 0.8:
        ImageDraw.Draw(face).rounded_rectangle(
            (left_m + inset, top_m + inset, left_m + width - 1 - inset,
             top_m + height - 1 - inset), radius=radius * 0.8, outline=ink_rgb, width=border)

    # Text layout: glyphs of one size per font (cached), resized to the plate.
    size = fonts.font_size_for_cap_height(font, GLYPH_CAP_HEIGHT)
    span, ascent = fonts.text_metrics(font)
    zoom = digit_frac * height / (size * span)
    stretch = rng.uniform(0.9, 1.05)
    digit_height = digit_frac * height * stretch
    condense = rng.uniform(0.72, 1.0)    # plate fonts are narrower than book fonts
    margin_x = 0.06 * height + border
    text_left, text_right = margin_x, width - margin_x
    occupied = []                        # rectangles, plate coordinates, of what is drawn
    if fired["strip"]:
        strip_w = (0.11 if layout == "two_row" else rng.uniform(0.075, 0.09)) * width
        strip = (inset, inset, inset + strip_w, height - 1 - inset)
        text_left = strip[2] + 0.04 * height
        occupied.append(strip)
    sticker_row = int(np.argmin([len(r) for r in rows]))
    sticker_size = 0.72 * digit_height
    sticker_side = "left" if rng.random() < 0.5 else "right"
    kinds = decorations.SEPARATOR_KINDS
    separator_kind = kinds[int(rng.integers(len(kinds)))]
    space = 0.9 if fired["separator"] and separator_kind == "emblem" else 0.5
    char_index = np.zeros((canvas_h, canvas_w), dtype=np.uint8)
    char_alpha = np.zeros((canvas_h, canvas_w), dtype=np.uint8)
    chars, separators, sticker_at = [], [], None
    for row_number, (row, centre) in enumerate(zip(rows, row_centres)):
        lo, hi = text_left, text_right
        if fired["sticker"] and row_number == sticker_row:
            room = sticker_size * 1.2
            if sticker_side == "left":
                lo += room
                sticker_at = (lo - room / 2, centre * height)
            else:
                hi -= room
                sticker_at = (hi + room / 2, centre * height)
        glyphs, row_width, scale_y, gaps = _layout_row(row, font, size, zoom, condense, stretch,
                                                       hi - lo, space)
        start = lo + (hi - lo - row_width) / 2
        row_height = digit_height * scale_y / stretch
        baseline = centre * height + row_height * (ascent - 0.5)     # the span centred
        middles = []                     # vertical centres of the row's letters and digits
        for char, bitmap, left, top in glyphs:
            gh, gw = bitmap.shape
            # Keep the glyph on the plate (it always fits; this guards rounding).
            x0 = max(min(int(round(start + left)), width - gw), 0)
            y0 = max(min(int(round(baseline + top)), height - gh), 0)
            # Cells do not overlap, so a pixel belongs to at most one character.
            ink = bitmap > 0
            region = (slice(top_m + y0, top_m + y0 + gh), slice(left_m + x0, left_m + x0 + gw))
            char_index[region][ink] = len(chars) + 1
            char_alpha[region][ink] = bitmap[ink]
            chars.append(char)
            occupied.append((x0, y0, x0 + gw, y0 + gh))
            if char.isalnum():
                middles.append(y0 + gh / 2)
        # Separators float at the middle of the letters and digits (a full stop sits low).
        middle = float(np.median(middles)) if middles else centre * height
        separators += [(start + a, start + b, middle, row_height) for a, b in gaps]

    def shifted(box):
        return (box[0] + left_m, box[1] + top_m, box[2] + left_m, box[3] + top_m)

    if fired["strip"]:
        decorations.draw_strip(painter, rng, shifted(strip), font)
    if fired["separator"]:
        for a, b, centre_y, row_digit_height in separators:
            decorations.draw_separator(painter, rng, separator_kind, (a + left_m, b + left_m),
                                       centre_y + top_m, row_digit_height, ink_rgb, plate_rgb)
            occupied.append((a, centre_y - row_digit_height / 2, b,
                             centre_y + row_digit_height / 2))
    if sticker_at is not None:
        kind = decorations.STICKER_KINDS[int(rng.integers(2))]
        decorations.draw_sticker(painter, rng, kind,
                                 (sticker_at[0] + left_m, sticker_at[1] + top_m), sticker_size)
        half = sticker_size / 2
        occupied.append((sticker_at[0] - half, sticker_at[1] - half,
                         sticker_at[0] + half, sticker_at[1] + half))
    if fired["screws"]:
        fired["screws"] = _draw_screws(painter, rng, width, height, row_centres, occupied,
                                       (left_m, top_m), plate_rgb)

    # Colours: the ink, dirt, then the light (wear, gradient, shadow) on everything.
    face.paste(ink_rgb, None, Image.fromarray(char_alpha))
    if fired["dirt"]:
        decorations.apply_dirt(rng, face)
    light = 1.0 + rng.uniform(0.03, 0.12) * value_noise(rng, canvas_h, canvas_w, 0.5 * height)
    light -= rng.uniform(0.0, 0.08) * np.linspace(0.0, 1.0, canvas_h, dtype=np.float32)[:, None]
    decorations.apply_light(rng, light, fired["gradient"], fired["shadow"])
    alpha = np.asarray(shape)
    frame_alpha = np.zeros_like(alpha)
    if frame:
        outline = Image.new("L", (canvas_w, canvas_h), 0)
        ImageDraw.Draw(outline).rounded_rectangle((0, 0, canvas_w - 1, canvas_h - 1),
                                                  radius=0.1 * height, fill=255)
        frame_alpha = np.where(alpha > 0, 0, np.asarray(outline)).astype(np.uint8)
    light *= (alpha > 0) | (frame_alpha > 0)          # no colour outside plate and frame
    # (h, 3w) view of the colours: the (h, w) light repeated per channel multiplies rows.
    rgb = np.asarray(face, dtype=np.float32).reshape(canvas_h, 3 * canvas_w)
    rgb *= np.repeat(light, 3, axis=1)
    np.clip(rgb, 0, 255, out=rgb)
    rgb += 0.5
    return CanonicalPlate(
        rgb=rgb.astype(np.uint8).reshape(canvas_h, canvas_w, 3), alpha=alpha,
        frame_alpha=frame_alpha,
        char_index=char_index, char_alpha=char_alpha, decoration=np.asarray(decoration),
        plate_box=plate_box, chars=chars, text=" ".join(rows), digit_height=digit_height,
        features=tuple(name for name in PLATE_FEATURES if fired[name]),
    )


def _draw_screws(painter, rng, width, height, row_centres, occupied, offset, plate_colour):
    """Two screws at the first free pair of symmetric places (top, bottom, the ends of the
    first row, corners), tried in random order; none if every place is taken.

    Returns:
        bool: whether a pair was drawn.
    """
    size = 0.09 * height
    margin = 0.02 * height
    top_y, bottom_y, row_y = 0.1 * height, 0.9 * height, row_centres[0] * height
    pairs = [((0.3 * width, top_y), (0.7 * width, top_y)),
             ((0.3 * width, bottom_y), (0.7 * width, bottom_y)),
             ((0.06 * width, row_y), (0.94 * width, row_y)),
             ((0.1 * width, top_y), (0.9 * width, top_y)),
             ((0.5 * width, top_y), (0.5 * width, bottom_y))]
    for index in rng.permutation(len(pairs)):
        boxes = [(x - size / 2, y - size / 2, x + size / 2, y + size / 2) for x, y in pairs[index]]
        if all(_free(box, occupied, margin) for box in boxes):
            for x, y in pairs[index]:
                decorations.draw_screw(painter, rng, (x + offset[0], y + offset[1]), size,
                                       plate_colour)
            occupied.extend(boxes)
            return True
    return False


@dataclass
class WarpedPlate:
    """A plate (and its frame) mapped into the scene, over the pixel rectangle ``region``.

    Attributes:
        region (tuple[int, int, int, int]): ``(x0, y0, x1, y1)`` scene pixel bounds.
        coverage (ndarray[h, w]): float32 fraction of each pixel covered by the plate.
        frame_coverage (ndarray[h, w]): float32 fraction covered by the frame.
        premultiplied (ndarray[h, w, 3]): uint8 colour x (plate + frame) coverage.
        char_coverage (ndarray[K, h, w]): float32 fraction covered by each character's ink.
        decoration_coverage (ndarray[D, h, w] | None): float32 fraction covered by each
            kind of ``decorations.DECORATIONS`` (when asked for), else None.
    """
    region: tuple
    coverage: np.ndarray
    frame_coverage: np.ndarray
    premultiplied: np.ndarray
    char_coverage: np.ndarray
    decoration_coverage: object = None


def _packed(plate):
    """The plate's per-pixel bytes as two ``ndarray[h * w + 1]`` uint32: ``(r, g, b,
    plate alpha)`` and ``(frame alpha, character index, ink, decoration)``. The extra
    last element (all zero) stands for every sample outside the canvas."""
    height, width = plate.alpha.shape
    first = np.zeros((height * width + 1, 4), dtype=np.uint8)
    second = np.zeros((height * width + 1, 4), dtype=np.uint8)
    first[:-1, :3] = plate.rgb.reshape(-1, 3)
    first[:-1, 3] = plate.alpha.ravel()
    for channel, array in enumerate((plate.frame_alpha, plate.char_index, plate.char_alpha,
                                     plate.decoration)):
        second[:-1, channel] = array.ravel()
    return first.view(np.uint32).ravel(), second.view(np.uint32).ravel()


def warp_plate(plate, homography, image_height, image_width, supersample, decorations=False):
    """Map a canonical plate into the scene with ``supersample**2`` samples per pixel.

    Coverage of pixel ``p`` by a layer ``L`` with canonical coverage ``a_L``:

        cov_L(p) = (1 / s^2) * sum over sub-samples q of p of a_L(H^-1 q)

    (nearest canonical pixel; the canonical frame is several times finer than the
    scene, so this is an area average). The canonical colours are zero outside plate
    and frame, whose coverages are 0 or 255, so the average of the sampled colours is
    the colour premultiplied by coverage: it composites as
    ``image * (1 - cov) + premultiplied``. Each sub-sample costs two gathers (all maps
    packed into 8 bytes); the colours are averaged by Pillow's ``reduce`` (8 bits, within
    a level), plate and frame coverage are exact sample counts and the characters'
    anti-aliased ink is summed by ``bincount``.

    Args:
        plate (CanonicalPlate): the flat plate.
        homography (ndarray[3, 3]): canonical frame -> scene.
        image_height (int): scene height.
        image_width (int): scene width.
        supersample (int): sub-samples per pixel along each axis.
        decorations (bool): also compute ``decoration_coverage``.

    Returns:
        WarpedPlate: empty arrays (region of zero size) when the plate misses the image.
    """
    height, width = plate.alpha.shape
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    mapped = corners @ homography[:, :2].T + homography[:, 2]
    quad = mapped[:, :2] / mapped[:, 2:3]
    region = quad_region(quad, image_height, image_width)
    x0, y0, x1, y1 = region
    num_chars = len(plate.chars)
    num_kinds = len(DECORATION_IDS)
    if x1 <= x0 or y1 <= y0:
        empty = np.zeros((0, 0), dtype=np.float32)
        return WarpedPlate(region, empty, empty, np.zeros((0, 0, 3), np.uint8),
                           np.zeros((num_chars, 0, 0), np.float32),
                           np.zeros((num_kinds, 0, 0), np.float32) if decorations else None)
    s = supersample
    out_h, out_w = y1 - y0, x1 - x0
    rows, cols = inverse_map_grid(np.linalg.inv(homography), region, s)       # (h·s, w·s)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    flat = np.where(inside, rows * width + cols, height * width)
    first, second = _packed(plate)
    # (r, g, b, plate) of every sub-sample; the colour averaged over each s x s block.
    samples = first[flat]                                                     # (h·s, w·s)
    colour = Image.frombuffer("CMYK", (out_w * s, out_h * s), samples, "raw", "CMYK", 0, 1)
    premultiplied = np.ascontiguousarray(np.asarray(colour.reduce(s))[:, :, :3])
    extra = second[flat].view(np.uint8).reshape(out_h * s, out_w * s, 4)
    # Plate and frame coverage: exact counts of the samples in each (the two are disjoint,
    # their canonical coverage 0 or 255), binned by (pixel, layer) in one pass.
    pixel = (np.arange(out_h * s) // s)[:, None] * out_w + (np.arange(out_w * s) // s)[None, :]
    layer = (samples.view(np.uint8).reshape(out_h * s, out_w * s, 4)[:, :, 3] > 0) \
        + 2 * (extra[:, :, 0] > 0)                                           # 0, 1 plate, 2 frame
    layers = np.bincount((pixel * 3 + layer).ravel(), minlength=out_h * out_w * 3)
    layers = layers.reshape(out_h, out_w, 3).astype(np.float32) / (s * s)
    # Per-character coverage in one pass: bin every sub-sample's ink weight by
    # (pixel, character index); index 0 collects the samples without ink.
    index = extra[:, :, 1].astype(np.int64)
    bins = np.bincount((pixel * (num_chars + 1) + index).ravel(),
                       weights=extra[:, :, 2].ravel(),
                       minlength=out_h * out_w * (num_chars + 1))
    char_coverage = bins.reshape(out_h, out_w, num_chars + 1)[:, :, 1:] / (255.0 * s * s)
    decoration_coverage = None
    if decorations:
        kind = extra[:, :, 3].astype(np.int64)
        counts = np.bincount((pixel * (num_kinds + 1) + kind).ravel(),
                             minlength=out_h * out_w * (num_kinds + 1))
        decoration_coverage = np.ascontiguousarray(
            counts.reshape(out_h, out_w, num_kinds + 1)[:, :, 1:].transpose(2, 0, 1),
            dtype=np.float32) / (s * s)
    return WarpedPlate(region, np.ascontiguousarray(layers[:, :, 1]),
                       np.ascontiguousarray(layers[:, :, 2]), premultiplied,
                       np.ascontiguousarray(char_coverage.transpose(2, 0, 1), dtype=np.float32),
                       decoration_coverage)
