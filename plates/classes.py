"""The class maps of the license-plate lab, and the mapping between them.

The scenes (``plates.synthetic``) are written with one id space for every object they
hold (``PLATE_CLASSES``, the dataset's ``labels.txt``): the class map of a scene says
what each pixel is. Each stage of the lab then has a label space of its own, holding
only the classes that stage predicts:

    scene id  name        detector label   segmenter label
    0         background  -                0  background
    1         car         1                -
    2         plate       2                -
    3..12     '0'..'9'    -                1..10 (digit d is 1 + d)
    13        char        -                11 (any other character)
    255       ignore      -                255

The detector's labels are ``VOCDataset(..., classes=("car", "plate"))``'s renumbering;
the segmenter's are ``SEGMENTER_CLASSES``, mapped from the scene's names with
``segmenter_label`` (``to_segmenter_labels`` for a whole class map). Pixels labelled
``IGNORE_INDEX`` count for no class (crop parts outside the image).
"""
import numpy as np

__all__ = [
    "PLATE_CLASSES", "CLASS_TO_ID", "IGNORE_INDEX", "BACKGROUND", "CAR", "PLATE", "CHAR",
    "DIGIT_IDS", "digit_id", "character_class",
    "SEGMENTER_CLASSES", "SEGMENTER_DIGITS", "SEGMENTER_CHAR", "SEGMENTER_CHARACTERS",
    "segmenter_label", "to_segmenter_labels", "segmenter_label_text",
]

# ------------------------------------------------------------------------ the scenes
PLATE_CLASSES = ("background", "car", "plate") + tuple(str(d) for d in range(10)) + ("char",)
CLASS_TO_ID = {name: i for i, name in enumerate(PLATE_CLASSES)}
IGNORE_INDEX = 255
BACKGROUND, CAR, PLATE, CHAR = 0, 1, 2, 13
DIGIT_IDS = tuple(range(3, 13))


def digit_id(digit):
    """Scene class id of a digit 0..9 (``3 + digit``)."""
    if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an int in 0..9, got {digit!r}")
    return 3 + digit


def character_class(char):
    """Scene class id of one plate character: a digit's id, or ``CHAR`` for anything else.

    Args:
        char (str): a single character, e.g. ``"7"``, ``"A"``, ``"-"``.
    """
    if not isinstance(char, str) or len(char) != 1:
        raise ValueError(f"char must be a one-character string, got {char!r}")
    if char.isdigit() and char.isascii():
        return 3 + int(char)
    return CHAR


# --------------------------------------------------------------------- the segmenter
SEGMENTER_CLASSES = ("background",) + tuple(str(d) for d in range(10)) + ("char",)
SEGMENTER_DIGITS = tuple(range(1, 11))  # digit d is 1 + d
SEGMENTER_CHAR = 11
SEGMENTER_CHARACTERS = SEGMENTER_DIGITS + (SEGMENTER_CHAR,)  # ids 1..11

# scene id -> segmenter label: characters kept, every other object background.
_SCENE_TO_SEGMENTER = np.zeros(256, np.uint8)
_SCENE_TO_SEGMENTER[list(DIGIT_IDS)] = SEGMENTER_DIGITS
_SCENE_TO_SEGMENTER[CHAR] = SEGMENTER_CHAR
_SCENE_TO_SEGMENTER[IGNORE_INDEX] = IGNORE_INDEX


def segmenter_label(name):
    """The segmenter's label of a scene object's class name (0 for what is no character).

    Args:
        name (str): a name of ``PLATE_CLASSES`` (``"7"``, ``"char"``, ``"plate"``...).
    """
    if name not in CLASS_TO_ID:
        raise ValueError(f"name must be one of {list(PLATE_CLASSES)}, got {name!r}")
    return int(_SCENE_TO_SEGMENTER[CLASS_TO_ID[name]])


def to_segmenter_labels(class_map):
    """A scene class map (ids of ``PLATE_CLASSES``, 255 ignore) in the segmenter's labels.

    Args:
        class_map (ndarray[..., H, W] uint8 | int): scene class ids.
    Returns:
        ndarray[..., H, W] uint8: segmenter labels (0 background, 1..10 digits, 11 other
        character, 255 ignore).
    """
    class_map = np.asarray(class_map)
    if not np.issubdtype(class_map.dtype, np.integer):
        raise TypeError(f"class_map must hold integer class ids, got dtype {class_map.dtype}")
    if class_map.size and (class_map.min() < 0 or class_map.max() > 255):
        raise ValueError("class_map ids must lie in 0..255")
    return _SCENE_TO_SEGMENTER[class_map]


def segmenter_label_text(label):
    """How a segmenter label is spelt in a plate's text: ``'0'..'9'`` or ``'#'``."""
    if label == SEGMENTER_CHAR:
        return "#"
    if label in SEGMENTER_DIGITS:
        return str(label - 1)
    raise ValueError(f"label must be a character label 1..11, got {label!r}")
