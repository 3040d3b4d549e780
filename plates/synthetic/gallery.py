"""A gallery of the plate styles: one row per feature of the plate mix, each plate next
to its labels, written as a small PNG (``docs/figures/plate_styles.png``).

Labels are drawn as the segmenter sees them: digits green, other characters orange,
everything else background (the plate grey, the frame dark); the decorations (strip,
sticker, screw, separator, frame text) are outlined in magenta to show that they are
no character.

    python -m plates.synthetic gallery --out docs/figures/plate_styles.png
"""
import io
import os

import numpy as np
from PIL import Image, ImageDraw

from plates.classes import CHAR, character_class
from plates.synthetic import fonts
from plates.synthetic.plates import PLATE_FEATURES, PLATE_LAYOUTS, PX_PER_MM, PlateMix, render_plate

__all__ = ["GALLERY_ROWS", "plate_gallery", "save_plate_gallery"]

# (title, mix) of each row.
GALLERY_ROWS = ((("plain", PlateMix.only()),)
                + tuple((name, PlateMix.only(name)) for name in PLATE_FEATURES)
                + (("all features", PlateMix.only(*PLATE_FEATURES)),
                   ("default mix", PlateMix()), ("default mix", PlateMix())))
_SCALE = 0.5                    # of the canonical plates (PX_PER_MM)
_TRIES = 20
_GAP = 6
_TITLE_WIDTH = 110
_BACKDROP = (96, 98, 104)
_LABEL_COLOURS = {"background": (40, 40, 44), "plate": (150, 150, 150), "digit": (60, 200, 80),
                  "char": (240, 150, 40), "decoration": (230, 40, 230)}


def _labels(plate):
    """An RGB picture of the plate's labels (see the module docstring)."""
    height, width = plate.alpha.shape
    picture = np.zeros((height, width, 3), np.uint8)
    picture[:] = _BACKDROP
    picture[plate.frame_alpha > 0] = _LABEL_COLOURS["background"]
    picture[plate.alpha > 0] = _LABEL_COLOURS["plate"]
    classes = np.array([0] + [character_class(c) for c in plate.chars])
    ink = plate.char_alpha >= 128
    is_char = classes[plate.char_index] == CHAR
    picture[ink & ~is_char] = _LABEL_COLOURS["digit"]
    picture[ink & is_char] = _LABEL_COLOURS["char"]
    decorated = (plate.decoration > 0) & (plate.decoration != 5)     # all but the bare frame
    edge = decorated & ~(np.roll(decorated, 1, 0) & np.roll(decorated, -1, 0)
                         & np.roll(decorated, 1, 1) & np.roll(decorated, -1, 1))
    picture[edge] = _LABEL_COLOURS["decoration"]
    return Image.fromarray(picture)


def plate_gallery(seed=0):
    """The gallery as an RGB ``PIL.Image``: rows ``GALLERY_ROWS``, columns the layouts,
    each plate followed by its labels.

    Args:
        seed (int): randomness of the plates (same seed, same picture).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for title, mix in GALLERY_ROWS:
        cells = []
        for layout in PLATE_LAYOUTS:
            # A row named after a feature shows it wherever the layout allows it (a
            # separator needs a gap in the text, a strip a car plate): a few draws.
            for _ in range(_TRIES):
                plate = render_plate(rng, layout, mix=mix, px_per_mm=PX_PER_MM)
                if title not in PLATE_FEATURES or title in plate.features:
                    break
            height, width = plate.alpha.shape
            size = (max(int(width * _SCALE), 1), max(int(height * _SCALE), 1))
            image = Image.fromarray(plate.rgb)
            # Outside plate and frame, the backdrop.
            canvas = Image.new("RGB", image.size, _BACKDROP)
            canvas.paste(image, (0, 0), Image.fromarray(
                np.maximum(plate.alpha, plate.frame_alpha)))
            cells.append(canvas.resize(size, Image.LANCZOS))
            cells.append(_labels(plate).resize(size, Image.NEAREST))
        rows.append((title, cells))
    width = _TITLE_WIDTH + max(sum(c.width + _GAP for c in cells) for _, cells in rows)
    heights = [max(c.height for c in cells) + _GAP for _, cells in rows]
    figure = Image.new("RGB", (width, sum(heights) + _GAP), _BACKDROP)
    draw = ImageDraw.Draw(figure)
    font = fonts.load_font(fonts.BUILTIN_FONT, 14)
    y = _GAP
    for (title, cells), row_height in zip(rows, heights):
        draw.text((6, y + row_height / 2), title, fill=(240, 240, 240), font=font, anchor="lm")
        x = _TITLE_WIDTH
        for cell in cells:
            figure.paste(cell, (x, y))
            x += cell.width + _GAP
        y += row_height
    return figure


def save_plate_gallery(path, seed=0):
    """Write ``plate_gallery(seed)`` to ``path`` as a 256-colour PNG, atomically.

    Returns:
        int: the file's size in bytes.
    """
    from nn.io import atomic_write_bytes

    figure = plate_gallery(seed).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    figure.save(buffer, format="PNG", optimize=True)
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(directory, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return len(buffer.getvalue())
