"""Distractors: things that look a little like plates but are not, drawn into the
background (so they are labelled background, class 0).

A detector trained only on plates against roads learns "bright rectangle with dark
marks = plate". Shop signs, posters, street signs, stickers and phone numbers painted on
walls teach it that text and rectangles alone are not enough (hard negatives, as in
Shrivastava et al., "Training region-based object detectors with online hard example
mining", CVPR 2016, but baked into the data).
"""
from PIL import ImageDraw

from plates.synthetic import fonts

__all__ = ["WORDS", "random_sign_text", "draw_distractors"]

WORDS = (
    "CAFE", "PHO", "HOTEL", "SALE", "SHOP", "BANK", "TAXI", "PARKING", "EXIT", "OPEN", "MARKET",
    "PHARMACY", "BAKERY", "STOP", "BUS", "SPA", "NHA THUOC", "TRA SUA", "XE MAY", "BIA HOI",
    "COM TAM", "GARA", "RUA XE", "PHOTO", "MOBILE", "KARAOKE", "NO PARKING", "ONE WAY",
)
_SIGN_COLOURS = (
    (200, 30, 30), (30, 80, 170), (240, 200, 30), (20, 120, 60), (240, 240, 240),
    (30, 30, 30), (230, 120, 30), (120, 40, 140),
)


def random_sign_text(rng):
    """A shop-sign string: a word, a word with a number, or a phone number."""
    kind = rng.random()
    if kind < 0.45:
        return WORDS[int(rng.integers(len(WORDS)))]
    if kind < 0.7:
        number = int(rng.integers(1, 999))
        return f"{WORDS[int(rng.integers(len(WORDS)))]} {number}"
    digits = "".join(str(d) for d in rng.integers(0, 10, size=9))
    return f"0{digits[:3]} {digits[3:6]} {digits[6:]}" if rng.random() < 0.5 \
        else f"0{digits[:3]}.{digits[3:6]}.{digits[6:]}"


def _contrast(colour, rng):
    """A text colour readable on ``colour``."""
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    if luma > 140:
        return tuple(int(v) for v in rng.integers(0, 60, 3))
    return tuple(int(v) for v in rng.integers(200, 256, 3))


def _text_in_box(rng, draw, box, text, colour):
    """Draw ``text`` centred in ``box``, shrunk to fit, with a random font."""
    x0, y0, x1, y1 = box
    available = fonts.available_fonts()
    font_name = available[int(rng.integers(len(available)))]
    size = max(int((y1 - y0) * rng.uniform(0.5, 0.8)), 4)
    font = fonts.load_font(font_name, size)
    left, top, right, bottom = font.getbbox(text)
    if right - left > 0.92 * (x1 - x0):
        size = max(int(size * 0.92 * (x1 - x0) / (right - left)), 4)
        font = fonts.load_font(font_name, size)
        left, top, right, bottom = font.getbbox(text)
    x = (x0 + x1) / 2 - (left + right) / 2
    y = (y0 + y1) / 2 - (top + bottom) / 2
    draw.text((x, y), text, fill=colour, font=font)


def draw_distractors(rng, image, foot, count, nearest=None):
    """Draw ``count`` distractors onto a background.

    Args:
        rng (np.random.Generator): randomness.
        image (PIL.Image.Image): the RGB background, modified in place.
        foot (float): row where walls meet the road (signs hang above it, poles stand below).
        count (int): number of distractors.
        nearest (float | None): ground row of the farthest vehicle: poles stand behind it
            (they are drawn before the vehicles, so they must be farther away).
    """
    size = image.width
    draw = ImageDraw.Draw(image)
    for _ in range(count):
        kind = rng.choice(["shop_sign", "sticker", "street_sign", "wall_text", "poster"],
                          p=(0.35, 0.2, 0.2, 0.15, 0.1))
        if foot < 0.12 * size:
            kind = "street_sign"    # no wall in view: only signs on poles
        if kind == "street_sign":
            # A pole standing on the road with a small sign: round, or a rectangle.
            lowest = 1.05 * size if nearest is None else min(nearest, 1.05 * size)
            base = rng.uniform(min(max(foot, 0.3 * size), lowest), lowest)
            height = rng.uniform(0.25, 0.6) * size
            x = rng.uniform(0, size)
            pole = max(size / 128, 1.0)
            draw.rectangle((x - pole, base - height, x + pole, base), fill=(120, 122, 126))
            radius = rng.uniform(0.03, 0.08) * size
            cy = base - height
            if rng.random() < 0.5:
                draw.ellipse((x - radius, cy - radius, x + radius, cy + radius), fill=(200, 30, 30))
                inner = radius * 0.75
                draw.ellipse((x - inner, cy - inner, x + inner, cy + inner), fill=(240, 240, 240))
                _text_in_box(rng, draw, (x - inner, cy - inner * 0.7, x + inner, cy + inner * 0.7),
                             str(int(rng.choice([20, 30, 40, 50, 60, 80]))), (20, 20, 20))
            else:
                colour = _SIGN_COLOURS[int(rng.integers(len(_SIGN_COLOURS)))]
                box = (x - radius * 1.3, cy - radius, x + radius * 1.3, cy + radius)
                draw.rectangle(box, fill=colour)
                _text_in_box(rng, draw, box, rng.choice(["P", "BUS", "EXIT", "STOP", "1", "2"]),
                             _contrast(colour, rng))
            continue
        width = rng.uniform(0.12, 0.6) * size
        if kind == "sticker":      # a small light rectangle with short text: plate-sized
            width = rng.uniform(0.08, 0.3) * size
            height = width * rng.uniform(0.2, 0.6)
        elif kind == "poster":
            height = width * rng.uniform(1.0, 1.5)
        else:
            height = width * rng.uniform(0.12, 0.3)
        # Hung on the wall, above the road.
        height = min(height, 0.9 * foot)
        y = rng.uniform(-0.2 * height, foot - height)
        x = rng.uniform(-0.2 * width, size - 0.8 * width)
        box = (x, y, x + width, y + height)
        if kind == "wall_text":
            _text_in_box(rng, draw, box, random_sign_text(rng),
                         tuple(int(v) for v in rng.integers(0, 256, 3)))
            continue
        colour = _SIGN_COLOURS[int(rng.integers(len(_SIGN_COLOURS)))]
        if kind == "sticker" and rng.random() < 0.6:
            colour = (236, 236, 230) if rng.random() < 0.6 else (238, 200, 50)
        draw.rectangle(box, fill=colour, outline=_contrast(colour, rng),
                       width=max(int(height * 0.05), 1))
        if kind == "poster":
            for _ in range(int(rng.integers(1, 4))):   # colour blocks standing for pictures
                bx = rng.uniform(x, x + width * 0.7)
                by = rng.uniform(y, y + height * 0.7)
                draw.rectangle((bx, by, bx + width * 0.3, by + height * 0.25),
                               fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            box = (x, y + height * 0.75, x + width, y + height)
        _text_in_box(rng, draw, box, random_sign_text(rng), _contrast(colour, rng))
