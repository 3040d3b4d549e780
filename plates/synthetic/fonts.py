"""Fonts for plate characters: Pillow's built-in scalable font plus TrueType files found
on the machine, and single-glyph rendering into its own mask.

Each character of a plate is rendered alone, into its own 8-bit coverage bitmap, so the
generator knows exactly which pixels belong to which glyph (the masks of the dataset are
derived from these bitmaps, never from a rendered string).

Fonts are discovered at run time in the usual directories (``/usr/share/fonts``, ...).
A font is kept only if it draws every plate character with a visible glyph and the
digits with distinct glyphs (a font lacking glyphs draws the same "missing" box for all
of them). When no TrueType font is found, Pillow's built-in font alone is used: since
Pillow 10.1, ``ImageFont.load_default(size=...)`` is a scalable FreeType font.
"""
import functools
import glob
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["PLATE_CHARSET", "BUILTIN_FONT", "FONT_DIRS", "discover_fonts", "available_fonts",
           "load_font", "render_glyph"]

# Every character a plate text may contain (plates.py draws from this set).
PLATE_CHARSET = "0123456789ABCDEFGHKLMNPRSTUVXYZ-."
# Name of Pillow's embedded font in the font list.
BUILTIN_FONT = "<pillow-builtin>"
FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    os.path.expanduser("~/.fonts"),
    os.path.expanduser("~/.local/share/fonts"),
)
# Hairline faces lose their strokes once a plate is 30 px wide: keep them out.
_THIN_STYLES = ("thin", "light", "hairline")
# Font size at which glyphs are rendered for validation and for cap-height calibration.
_PROBE_SIZE = 64


def load_font(name, size):
    """A Pillow font object: ``name`` is a TrueType path or ``BUILTIN_FONT``.

    Args:
        name (str): font file path, or ``BUILTIN_FONT``.
        size (int): font size in pixels (em size), >= 1.
    """
    return _load_font(name, int(size))


@functools.lru_cache(maxsize=256)
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


def discover_fonts(font_dirs=FONT_DIRS):
    """TrueType/OpenType files under ``font_dirs`` that can draw plate characters.

    Args:
        font_dirs (sequence of str): directories searched recursively; missing ones skipped.

    Returns:
        list[str]: sorted font paths (the order is part of the seeded output, so it is
        sorted to be independent of the file system's listing order). Possibly empty.
    """
    paths = set()
    for directory in font_dirs:
        if not os.path.isdir(directory):
            continue
        for pattern in ("**/*.ttf", "**/*.otf", "**/*.TTF", "**/*.OTF"):
            paths.update(glob.glob(os.path.join(directory, pattern), recursive=True))
    usable = []
    for path in sorted(paths):
        style = os.path.basename(path).lower()
        if any(word in style for word in _THIN_STYLES):
            continue
        try:
            font = ImageFont.truetype(path, size=_PROBE_SIZE)
            if _glyph_ok(font):
                usable.append(path)
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


@functools.lru_cache(maxsize=64)
def _cap_height_ratio(name):
    """Height of the digit '0' divided by the font size (for sizing glyphs to a box)."""
    font = _load_font(name, _PROBE_SIZE)
    _, top, _, bottom = font.getbbox("0", anchor="ls")
    return (bottom - top) / _PROBE_SIZE


def font_size_for_cap_height(name, cap_height):
    """The integer font size whose digits are about ``cap_height`` pixels tall."""
    return max(1, int(round(cap_height / _cap_height_ratio(name))))


@functools.lru_cache(maxsize=16384)
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
