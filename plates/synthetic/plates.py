"""License plates: text formats, colour styles, rendering with one mask per character,
and warping into the scene.

A plate is rendered flat in a canonical frame at ``PX_PER_MM`` pixels per millimetre,
far above its final size, with every character drawn alone (``fonts.render_glyph``)
into a character-index map and a coverage map. It is then placed in the scene by a
homography (``geometry``); the scene pixels' sub-samples are mapped back, so that the
plate colour, the plate mask and every character mask come from the same samples.

Layouts (sizes of Vietnamese plates, whose formats the texts follow; ``euro`` is a
European-like one-row plate):

    name      size (mm)   rows   example
    one_row   520 x 110   1      29A-123.45
    two_row   330 x 165   2      29A / 123.45     (square car plate)
    moto      190 x 140   2      29-B1 / 123.45   (motorbike)

Colour styles: white, yellow or blue plates with dark or light characters.
"""
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from plates.synthetic import fonts
from plates.synthetic.geometry import inverse_map, quad_region
from plates.synthetic.textures import value_noise

__all__ = ["PX_PER_MM", "PLATE_LAYOUTS", "PLATE_FORMATS", "PLATE_STYLES", "CanonicalPlate",
           "WarpedPlate", "random_plate_text", "render_plate", "warp_plate"]

# Canonical resolution: a one-row plate is 416 px wide, >= 3.5x its largest final size.
PX_PER_MM = 0.8
PLATE_LAYOUTS = {
    # name: (width mm, height mm, centre of each text row as a fraction of the height,
    #        digit height as a fraction of the plate height)
    "one_row": (520, 110, (0.5,), 0.62),
    "euro": (520, 110, (0.5,), 0.62),
    "two_row": (330, 165, (0.29, 0.71), 0.34),
    "moto": (190, 140, (0.28, 0.71), 0.34),
}
# 'D' a digit, 'L' a letter, anything else literal; '/' separates rows.
PLATE_FORMATS = {
    "one_row": ("DDL-DDD.DD", "DDL-DDDD", "DDLL-DDD.DD", "DDL-DDD.DD"),
    "euro": ("LL-DDD-LL", "LLL DDDD", "LL DDDD LL", "DDD-LLL"),
    "two_row": ("DDL/DDD.DD", "DDL/DDDD", "DDLD/DDD.DD"),
    "moto": ("DD-LD/DDD.DD", "DD-LD/DDDD", "DD-LL/DDD.DD", "DDLD/DDDDD"),
}
_LETTERS = "ABCDEFGHKLMNPRSTUVXYZ"
_DIGITS = "0123456789"
# (plate colour, character colour, probability): white, yellow, blue plates.
PLATE_STYLES = (
    ((236, 236, 230), (20, 20, 24), 0.50),     # white, black characters
    ((238, 196, 40), (18, 18, 18), 0.18),      # yellow, black characters
    ((28, 62, 160), (240, 240, 240), 0.14),    # blue, white characters
    ((232, 232, 226), (24, 48, 140), 0.08),    # white, dark blue characters
    ((245, 215, 60), (30, 50, 140), 0.04),     # yellow, dark blue characters
    ((40, 90, 190), (250, 230, 90), 0.06),     # blue, light yellow characters
)


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
    """A flat plate in its canonical frame (``PX_PER_MM`` px per mm).

    Attributes:
        rgb (ndarray[h, w, 3]): uint8 plate colours, characters included.
        alpha (ndarray[h, w]): uint8 coverage of the plate itself (rounded corners).
        char_index (ndarray[h, w]): uint8, ``k + 1`` where character ``k`` has ink, else 0.
        char_alpha (ndarray[h, w]): uint8 ink coverage of that character (anti-aliased).
        chars (list[str]): the characters in reading order (spaces excluded); ``k`` indexes it.
        text (str): the rows joined by a space, e.g. ``"29-B1 123.45"``.
        digit_height (float): height of a digit in canonical pixels.
    """
    rgb: np.ndarray
    alpha: np.ndarray
    char_index: np.ndarray
    char_alpha: np.ndarray
    chars: list
    text: str
    digit_height: float


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


def _layout_row(row, font, size, condense, stretch, available_width):
    """Glyph bitmaps and x offsets of one row, scaled to fit ``available_width``.

    Plates use a fixed pitch: every letter or digit gets a cell as wide as the widest
    one; dashes and dots get their own narrow cells; a space is a half cell.
    """
    raw = [_plate_glyph(font, size, c)[0] if c != " " else None for c in row]
    pitch = max(b.shape[1] for c, b in zip(row, raw) if b is not None and c.isalnum())
    gap = 0.12 * pitch
    widths = []
    for char, bitmap in zip(row, raw):
        if char == " ":
            widths.append(0.5 * pitch)
        elif char.isalnum():
            widths.append(pitch + gap)
        else:
            widths.append(bitmap.shape[1] + 2 * gap)
    total = sum(widths)
    scale_x = min(condense, available_width / total)
    # Below half width, glyphs turn into bars: shrink their height as well.
    scale_y = stretch * (1.0 if scale_x >= 0.5 else scale_x / 0.5)
    cells = np.cumsum([0.0] + widths)[:-1] * scale_x
    glyphs = []
    for char, cell, width in zip(row, cells, widths):
        if char == " ":
            continue
        bitmap, top = _resized_glyph(font, size, char, scale_x, scale_y)
        left = cell + (width * scale_x - bitmap.shape[1]) / 2  # centred in its cell
        glyphs.append((char, bitmap, left, top))
    return glyphs, total * scale_x, scale_y


def render_plate(rng, layout, font=None):
    """Render a random plate of ``layout`` flat, with one ink mask per character.

    Args:
        rng (np.random.Generator): randomness (text, style, font, wear).
        layout (str): a key of ``PLATE_LAYOUTS``.
        font (str | None): font path or ``fonts.BUILTIN_FONT``; random when None.

    Returns:
        CanonicalPlate: the plate, ``(h, w) = (height_mm, width_mm) * PX_PER_MM``.
    """
    width_mm, height_mm, row_centres, digit_frac = PLATE_LAYOUTS[layout]
    width = int(round(width_mm * PX_PER_MM))
    height = int(round(height_mm * PX_PER_MM))
    rows = random_plate_text(rng, layout)
    if font is None:
        available = fonts.available_fonts()
        # Pillow's font in a quarter of the plates, the TrueType fonts share the rest.
        if len(available) == 1 or rng.random() < 0.25:
            font = available[0]
        else:
            font = available[1 + int(rng.integers(len(available) - 1))]
    styles = np.array([p for _, _, p in PLATE_STYLES])
    style = int(rng.choice(len(PLATE_STYLES), p=styles / styles.sum()))
    plate_colour, ink_colour, _ = PLATE_STYLES[style]
    plate_colour = np.clip(np.array(plate_colour) + rng.normal(0, 8, 3), 0, 255)
    ink_colour = np.clip(np.array(ink_colour) + rng.normal(0, 6, 3), 0, 255)

    # One font size per layout and font (glyphs are cached); the height varies by resizing.
    size = fonts.font_size_for_cap_height(font, digit_frac * height)
    stretch = rng.uniform(0.9, 1.05)
    digit_height = digit_frac * height * stretch
    condense = rng.uniform(0.72, 1.0)    # plate fonts are narrower than book fonts
    border = max(int(round(0.035 * height)), 2)
    margin_x = 0.06 * height + border
    char_index = np.zeros((height, width), dtype=np.uint8)
    char_alpha = np.zeros((height, width), dtype=np.uint8)
    chars = []
    for row, centre in zip(rows, row_centres):
        glyphs, row_width, scale_y = _layout_row(row, font, size, condense, stretch,
                                                 width - 2 * margin_x)
        start = (width - row_width) / 2
        baseline = centre * height + digit_height * scale_y / stretch / 2
        for char, bitmap, left, top in glyphs:
            x0 = int(round(start + left))
            y0 = int(round(baseline + top))
            # Keep the glyph on the plate (it always fits; this guards rounding).
            x0 = min(max(x0, 0), width - bitmap.shape[1])
            y0 = min(max(y0, 0), height - bitmap.shape[0])
            gh, gw = bitmap.shape
            # Cells do not overlap, so a pixel belongs to at most one character.
            ink = bitmap > 0
            region = (slice(y0, y0 + gh), slice(x0, x0 + gw))
            char_index[region][ink] = len(chars) + 1
            char_alpha[region][ink] = bitmap[ink]
            chars.append(char)

    # The plate: rounded rectangle, a thin border in the ink colour, some dirt.
    radius = 0.08 * height
    shape = Image.new("L", (width, height), 0)
    ImageDraw.Draw(shape).rounded_rectangle((0, 0, width - 1, height - 1), radius=radius, fill=255)
    face = Image.new("RGB", (width, height), tuple(int(v) for v in plate_colour))
    if rng.random() < 0.8:
        inset = max(int(round(0.03 * height)), 1)
        ImageDraw.Draw(face).rounded_rectangle(
            (inset, inset, width - 1 - inset, height - 1 - inset), radius=radius * 0.8,
            outline=tuple(int(v) for v in ink_colour), width=border)
    rgb = np.asarray(face, dtype=np.float32)
    shading = 1.0 + rng.uniform(0.03, 0.12) * value_noise(rng, height, width, 0.5 * height)
    shading -= rng.uniform(0.0, 0.08) * np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    rgb = rgb * shading[:, :, None]
    a = char_alpha.astype(np.float32)[:, :, None] / 255.0
    rgb = rgb * (1.0 - a) + ink_colour.astype(np.float32) * a
    return CanonicalPlate(
        rgb=np.clip(rgb, 0, 255).astype(np.uint8), alpha=np.asarray(shape),
        char_index=char_index, char_alpha=char_alpha, chars=chars, text=" ".join(rows),
        digit_height=digit_height,
    )


@dataclass
class WarpedPlate:
    """A plate mapped into the scene, over the pixel rectangle ``region``.

    Attributes:
        region (tuple[int, int, int, int]): ``(x0, y0, x1, y1)`` scene pixel bounds.
        coverage (ndarray[h, w]): float32 fraction of each pixel covered by the plate.
        premultiplied (ndarray[h, w, 3]): float32 colour x coverage, 0..255 scale.
        char_coverage (ndarray[K, h, w]): float32 fraction covered by each character's ink.
    """
    region: tuple
    coverage: np.ndarray
    premultiplied: np.ndarray
    char_coverage: np.ndarray


def warp_plate(plate, homography, image_height, image_width, supersample):
    """Map a canonical plate into the scene with ``supersample**2`` samples per pixel.

    Coverage of pixel ``p`` by a layer ``L`` with canonical coverage ``a_L``:

        cov_L(p) = (1 / s^2) * sum over sub-samples q of p of a_L(H^-1 q)

    (nearest canonical pixel; the canonical frame is several times finer than the
    scene, so this is an area average). The colour is premultiplied by the plate
    coverage so it composites as ``image * (1 - cov) + premultiplied``.

    Args:
        plate (CanonicalPlate): the flat plate.
        homography (ndarray[3, 3]): canonical frame -> scene.
        image_height (int): scene height.
        image_width (int): scene width.
        supersample (int): sub-samples per pixel along each axis.

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
    if x1 <= x0 or y1 <= y0:
        empty = np.zeros((0, 0), dtype=np.float32)
        return WarpedPlate(region, empty, np.zeros((0, 0, 3), np.float32),
                           np.zeros((num_chars, 0, 0), np.float32))
    rows, cols = inverse_map(np.linalg.inv(homography), region, supersample)   # (h, w, s·s)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    rows = np.clip(rows, 0, height - 1)
    cols = np.clip(cols, 0, width - 1)
    samples = supersample * supersample
    alpha = plate.alpha[rows, cols] * inside / 255.0                           # (h, w, s·s)
    coverage = alpha.mean(axis=2)
    colours = plate.rgb[rows, cols].astype(np.float32)                          # (h, w, s·s, 3)
    premultiplied = np.einsum("hwsc,hws->hwc", colours, alpha.astype(np.float32)) / samples
    # Per-character coverage in one pass: bin every sub-sample's ink weight by
    # (pixel, character index); index 0 collects the samples without ink.
    index = plate.char_index[rows, cols].astype(np.int64) * inside               # (h, w, s·s)
    ink = plate.char_alpha[rows, cols] * inside / 255.0
    out_h, out_w = y1 - y0, x1 - x0
    pixel = np.arange(out_h * out_w).reshape(out_h, out_w, 1)
    bins = np.bincount((pixel * (num_chars + 1) + index).ravel(), weights=ink.ravel(),
                       minlength=out_h * out_w * (num_chars + 1))
    char_coverage = bins.reshape(out_h, out_w, num_chars + 1)[:, :, 1:] / samples  # (h, w, K)
    return WarpedPlate(region, coverage.astype(np.float32), premultiplied.astype(np.float32),
                       np.ascontiguousarray(char_coverage.transpose(2, 0, 1), dtype=np.float32))
