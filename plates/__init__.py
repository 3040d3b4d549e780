"""The license-plate lab: find the plates of a photo, segment their characters, read them.

Two stages trained from scratch on synthetic street scenes (``plates.synthetic``):
a RetinaNet finds cars and plates (``plates.train_detector``), a U-Net labels the
pixels of each plate crop as background, digit or other character
(``plates.train_segmenter``), and the characters are read in order
(``plates.reading``). ``plates.classes`` holds the class maps and the mapping between
the scenes' ids and each stage's labels.
"""

__all__ = ["PlateReader"]


def __getattr__(name):
    """``plates.PlateReader`` (``plates.reader``), imported on first use: the reader loads
    both networks' trainers, which ``import plates.classes`` alone should not pay for."""
    if name == "PlateReader":
        from plates.reader import PlateReader

        return PlateReader
    raise AttributeError(f"module 'plates' has no attribute {name!r}")
