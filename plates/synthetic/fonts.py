"""Fonts for plate characters: Pillow's built-in scalable font plus TrueType files found
on the machine and in matplotlib (which ships DejaVu Sans, Serif and Mono, STIX and
Computer Modern), and single-glyph rendering into its own mask.

Each character of a plate is rendered alone, into its own 8-bit coverage bitmap, so the
generator knows exactly which pixels belong to which glyph (the masks of the dataset are
derived from these bitmaps, never from a rendered string).

Fonts are discovered at run time in the usual directories (``/usr/share/fonts``, ...)
and matplotlib's ``mpl-data/fonts/ttf``; a file name found twice is kept once. A font is
kept only if it draws every plate character with a visible glyph, the digits with
distinct glyphs (a font lacking glyphs draws the same "missing" box for all of them),
and every letter and digit with the shape of that letter or digit: symbol, dingbat and
math-extension fonts map the ASCII codes to other signs, which would be labelled with
the wrong character. The shape test compares blurred 8 x 12 thumbnails of the glyphs
(normalized correlation) with those of reference fonts, and rejects a font if any of
its characters resembles its reference by less than ``SHAPE_THRESHOLD``. When no
TrueType font is found, Pillow's built-in font alone is used: since
Pillow 10.1, ``ImageFont.load_default(size=...)`` is a scalable FreeType font.
"""
import functools
import glob
import importlib.util
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = ["PLATE_CHARSET", "BUILTIN_FONT", "FONT_DIRS", "SHAPE_THRESHOLD", "matplotlib_font_dir",
           "discover_fonts", "available_fonts", "load_font", "text_metrics",
           "font_size_for_cap_height", "render_glyph"]

# Every character a plate text may contain (plates.py draws from this set).
PLATE_CHARSET = "0123456789ABCDEFGHKLMNPRSTUVXYZ-."
# Name of Pillow's embedded font in the font list.
BUILTIN_FONT = "<pillow-builtin>"


def matplotlib_font_dir():
    """matplotlib's own TrueType fonts (``mpl-data/fonts/ttf``), found without importing
    it; None if matplotlib is not installed."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "mpl-data", "fonts", "ttf")


FONT_DIRS = tuple(d for d in (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    os.path.expanduser("~/.fonts"),
    os.path.expanduser("~/.local/share/fonts"),
    matplotlib_font_dir(),
) if d is not None)
# Hairline faces lose their strokes once a plate is 30 px wide: keep them out.
_THIN_STYLES = ("thin", "light", "hairline")
# Font size at which glyphs are rendered for validation and for cap-height calibration.
_PROBE_SIZE = 64
# Least resemblance (normalized correlation of blurred thumbnails, 1 = same) of each
# letter and digit to the same character of a reference font. Measured on this machine's
# fonts: text fonts score >= 0.33 on their worst character (a script font 0.16), the
# symbol, dingbat and math fonts (StandardSymbolsPS, D050000L, cmsy10, cmex10) <= -0.06.
SHAPE_THRESHOLD = 0.05
_REFERENCE_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf")


def load_font(name, size):
    """A Pillow font object: ``name`` is a TrueType path or ``BUILTIN_FONT``.

    Args:
        name (str): font file path, or ``BUILTIN_FONT``.
        size (int): font size in pixels (em size), >= 1.
    """
    return _load_font(name, int(size))


@functools.lru_cache(maxsize=4096)
def _load_font(name, size):
    if name == BUILTIN_FONT:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(name, size=size)


def _glyph_ok(font):
    """True if ``font`` draws every plate character, with distinct digits."""
    digit_bitmaps = set()
    for char in PLATE_CHARSET:
        left, top, right, bottom = font.getbbox(char, anchor="ls")
        if right <= left or bottom <= top:
            return False
        if char.isdigit():
            image = Image.new("L", (right - left, bottom - top), 0)
            ImageDraw.Draw(image).text((-left, -top), char, fill=255, font=font, anchor="ls")
            digit_bitmaps.add(image.tobytes())
    return len(digit_bitmaps) == 10


def _ink(font, char):
    """The glyph of ``char`` drawn at its ink box, as a uint8 ``PIL.Image``."""
    left, top, right, bottom = font.getbbox(char, anchor="ls")
    image = Image.new("L", (max(right - left, 1), max(bottom - top, 1)), 0)
    ImageDraw.Draw(image).text((-left, -top), char, fill=255, font=font, anchor="ls")
    return image


def _thumbnails(font):
    """Blurred 8 x 12 thumbnails of the letters and digits, normalized: ``(C, 96)``."""
    rows = []
    for char in PLATE_CHARSET:
        if not char.isalnum():
            continue
        small = _ink(font, char).resize((32, 48), Image.BILINEAR)
        small = small.filter(ImageFilter.GaussianBlur(3)).resize((8, 12), Image.BILINEAR)
        v = np.asarray(small, dtype=np.float64).ravel()
        v -= v.mean()
        rows.append(v / (np.linalg.norm(v) + 1e-9))
    return np.stack(rows)


@functools.lru_cache(maxsize=1)
def _reference_thumbnails():
    references = [_thumbnails(ImageFont.load_default(size=_PROBE_SIZE))]
    directory = matplotlib_font_dir()
    for name in _REFERENCE_FONTS:
        path = os.path.join(directory, name) if directory else None
        if path and os.path.isfile(path):
            references.append(_thumbnails(ImageFont.truetype(path, size=_PROBE_SIZE)))
    return np.stack(references)                                   # (R, C, 96)


def _shape_ok(font):
    """True if every letter and digit looks like that letter or digit (module docstring)."""
    similarity = np.einsum("cf,rcf->rc", _thumbnails(font), _reference_thumbnails())
    return float(similarity.max(axis=0).min()) >= SHAPE_THRESHOLD


def discover_fonts(font_dirs=FONT_DIRS):
    """TrueType/OpenType files under ``font_dirs`` that can draw plate characters.

    Args:
        font_dirs (sequence of str): directories searched recursively; missing ones skipped.

    Returns:
        list[str]: sorted font paths, one per file name (the first in sorted order); the
        order is part of the seeded output, so it does not depend on the file system's
        listing order. Possibly empty.
    """
    paths = set()
    for directory in font_dirs:
        if not os.path.isdir(directory):
            continue
        for pattern in ("**/*.ttf", "**/*.otf", "**/*.TTF", "**/*.OTF"):
            paths.update(glob.glob(os.path.join(directory, pattern), recursive=True))
    usable, names = [], set()
    for path in sorted(paths):
        name = os.path.basename(path).lower()
        if name in names or any(word in name for word in _THIN_STYLES):
            continue
        try:
            font = ImageFont.truetype(path, size=_PROBE_SIZE)
            if _glyph_ok(font) and _shape_ok(font):
                usable.append(path)
                names.add(name)
        except (OSError, ValueError):  # unreadable or unsupported font file
            continue
    return usable


@functools.lru_cache(maxsize=1)
def available_fonts():
    """The built-in font followed by the discovered TrueType fonts (computed once).

    Returns:
        tuple[str, ...]: ``(BUILTIN_FONT, path, ...)``.
    """
    return (BUILTIN_FONT,) + tuple(discover_fonts())


@functools.lru_cache(maxsize=1024)
def text_metrics(name):
    """The ink span of the font's letters and digits, relative to its size.

    Over the letters and digits of ``PLATE_CHARSET``: from the highest ink row above the
    baseline to the lowest below it. For most fonts that is the height of a capital or a
    digit; fonts with old-style figures (Computer Modern's math italic) have digits
    that reach below the baseline or stop at the x-height, and their span covers them.

    Returns:
        tuple[float, float]: ``(height, ascent)``: the span divided by the font size,
        and the fraction of the span above the baseline.
    """
    tops, bottoms = [], []
    for char in PLATE_CHARSET:
        if char.isalnum():
            bitmap, top = _glyph(name, _PROBE_SIZE, char)
            tops.append(top)
            bottoms.append(top + bitmap.shape[0])
    ascent, descent = -min(tops), max(max(bottoms), 0)
    return (ascent + descent) / _PROBE_SIZE, ascent / (ascent + descent)


def font_size_for_cap_height(name, cap_height):
    """The integer font size whose letters and digits span about ``cap_height`` pixels
    (``text_metrics``: a capital's height for most fonts)."""
    return max(1, int(round(cap_height / text_metrics(name)[0])))


@functools.lru_cache(maxsize=65536)
def _glyph(name, size, char):
    font = _load_font(name, size)
    left, top, right, bottom = font.getbbox(char, anchor="ls")
    image = Image.new("L", (max(right - left, 1), max(bottom - top, 1)), 0)
    ImageDraw.Draw(image).text((-left, -top), char, fill=255, font=font, anchor="ls")
    bitmap = np.asarray(image)
    # getbbox may pad the ink box (the built-in font does): crop to the inked pixels.
    rows = np.flatnonzero(bitmap.any(axis=1))
    cols = np.flatnonzero(bitmap.any(axis=0))
    if rows.size:
        bitmap = bitmap[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        top += int(rows[0])
    bitmap = np.ascontiguousarray(bitmap)
    bitmap.setflags(write=False)  # shared through the cache
    return bitmap, top


def render_glyph(name, size, char):
    """Render one character alone into its own coverage bitmap.

    Args:
        name (str): font path or ``BUILTIN_FONT``.
        size (int): font size in pixels.
        char (str): one character.

    Returns:
        tuple: ``(bitmap, top)`` with ``bitmap`` a read-only ``ndarray[h, w]`` uint8 coverage
        (255 = fully inside the glyph) cropped to the ink box, and ``top`` the ink box's
        offset from the baseline in pixels (negative above it): a dot has ``top`` near 0,
        a digit near ``-h``.
    """
    if not isinstance(char, str) or len(char) != 1:
        raise ValueError(f"char must be a one-character string, got {char!r}")
    return _glyph(name, int(size), char)
