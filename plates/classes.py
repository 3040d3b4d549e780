"""The fixed class map of the license-plate lab.

One id space serves both stages: the detector sees ``car`` and ``plate``; the digit
segmenter sees ``background``, the ten digits and ``char`` (letters, dash, dot).
Pixels labelled ``IGNORE_INDEX`` count for no class (object borders, unlabeled regions).

    id   name        stage
    0    background  both (segmentation only)
    1    car         detection (cars and motorbikes)
    2    plate       detection
    3..12 '0'..'9'   segmentation (digit d has id 3 + d)
    13   char        segmentation (any other character)
    255  ignore
"""

__all__ = [
    "PLATE_CLASSES", "CLASS_TO_ID", "IGNORE_INDEX", "BACKGROUND", "CAR", "PLATE", "CHAR",
    "DIGIT_IDS", "digit_id", "character_class",
]

PLATE_CLASSES = ("background", "car", "plate") + tuple(str(d) for d in range(10)) + ("char",)
CLASS_TO_ID = {name: i for i, name in enumerate(PLATE_CLASSES)}
IGNORE_INDEX = 255
BACKGROUND, CAR, PLATE, CHAR = 0, 1, 2, 13
DIGIT_IDS = tuple(range(3, 13))


def digit_id(digit):
    """Class id of a digit 0..9 (``3 + digit``)."""
    if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an int in 0..9, got {digit!r}")
    return 3 + digit


def character_class(char):
    """Class id of one plate character: a digit's id, or ``CHAR`` for anything else.

    Args:
        char (str): a single character, e.g. ``"7"``, ``"A"``, ``"-"``.
    """
    if not isinstance(char, str) or len(char) != 1:
        raise ValueError(f"char must be a one-character string, got {char!r}")
    if char.isdigit() and char.isascii():
        return 3 + int(char)
    return CHAR
