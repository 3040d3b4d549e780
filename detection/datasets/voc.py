"""Pascal VOC on disk: write examples, read them back as (image, target) pairs.

The layout is the one of the PASCAL VOC challenge (Everingham et al., "The PASCAL
Visual Object Classes (VOC) Challenge", IJCV 2010)::

    root/
      JPEGImages/<id>.jpg | <id>.png      the image, RGB
      Annotations/<id>.xml                filename, size, one <object> per box
      SegmentationClass/<id>.png          palette PNG, pixel = class id, 255 = ignore
      SegmentationObject/<id>.png         pixel = 1-based index of the object in the XML
      ImageSets/Main/<split>.txt          one image id per line
      ImageSets/Segmentation/<split>.txt

Box convention. detseg's boxes are continuous ``xyxy`` (DESIGN.md): a box covering
pixel columns ``0..9`` is ``x1 = 0, x2 = 10``. VOC writes 1-based *inclusive* pixel
indices: the same box is ``xmin = 1, xmax = 10``. So, exactly for pixel-aligned boxes,

    xmin = x1 + 1,   ymin = y1 + 1,   xmax = x2,   ymax = y2      (writing)
    x1 = xmin - 1,   y1 = ymin - 1,   x2 = xmax,   y2 = ymax      (reading)

Real VOC files hold integers; detseg's generator knows sub-pixel boxes, so a
non-integer coordinate is written with up to 2 decimals (``12.5``, ``7.25``), which
other VOC readers parse with ``float()`` as well. Reading then writing is exact for
coordinates that are multiples of 0.01.

Masks. ``SegmentationClass`` is a palette ("P" mode) PNG whose pixel *values* are
class ids and whose palette is VOC's colour map, so image viewers show the familiar
colours while ``np.asarray(Image.open(p))`` gives the ids. ``SegmentationObject``
holds the 1-based index of the object (in XML order) on top at each pixel, 0 where
there is none, and 255 for "void" pixels as in VOC. With more than 254 objects an
index would collide with 255, so such masks are written as 16-bit greyscale PNGs
(uint16, 0 = none, no void value); the reader handles both.

Every file is written atomically (``nn.io.atomic_write_bytes``), and the XML is
written last: an ``Annotations/<id>.xml`` exists only when its image and masks do.
Every argument, including each string's characters (XML 1.0 cannot store control
characters, lone surrogates or U+FFFE/U+FFFF, and turns a carriage return into a line
feed), is checked and the XML encoded before the first file is written, so a refused
call leaves the example on disk as it was.

Reading stays inside the dataset: ids in ``ImageSets`` must be plain file stems (as
the writer requires), and an image named by ``<filename>`` (or any file a record
points to) must resolve, symlinks followed, inside its folder of the dataset.
A box the writer would refuse (outside the image) is refused by the reader as well.
"""
import io
import os
import re
import xml.etree.ElementTree as ET
from numbers import Integral, Real

import numpy as np
from PIL import Image

from nn.io import atomic_write_bytes, atomic_write_text
from nn.data import Dataset

__all__ = [
    "voc_palette", "write_voc_example", "write_image_sets", "read_voc_annotation",
    "read_image_set", "read_rgb", "read_label_map", "VOC_CLASSES", "write_class_names",
    "read_class_names", "VOCDataset",
]

# Keys an object dict may carry: "text" keeps the exact character of an object named
# "char" ("A", "-", ".") so plate strings can be read back (see crops.PlateCropDataset).
_OBJECT_KEYS = {"name", "bbox", "difficult", "truncated", "text"}
_IMAGE_FORMATS = {"jpg": ("JPEG", ".jpg"), "png": ("PNG", ".png")}
# uint8 instance masks reserve 255 for void (VOC), so at most 254 objects fit.
_MAX_UINT8_OBJECTS = 254
# Characters an XML 1.0 document cannot hold (its "Char" production), plus the carriage
# return, which a parser turns into a line feed (it would not read back as written).
_NOT_XML = re.compile("[^\t\n\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def voc_palette(num_colors=256):
    """The PASCAL VOC colour map: colour ``i`` spreads the bits of ``i`` over R, G, B.

    Bit ``3k`` of the id goes to bit ``7 - k`` of red, bit ``3k + 1`` to green, bit
    ``3k + 2`` to blue, so neighbouring ids get very different colours (0 black,
    1 dark red, 2 dark green, ..., 255 cream, VOC's "void").

    Args:
        num_colors (int): how many colours, 1..256.

    Returns:
        ndarray[num_colors, 3]: uint8 RGB colours.
    """
    if isinstance(num_colors, bool) or not isinstance(num_colors, Integral) \
            or not 1 <= num_colors <= 256:
        raise ValueError(f"num_colors must be an int in 1..256, got {num_colors!r}")
    ids = np.arange(num_colors)
    colors = np.zeros((num_colors, 3), dtype=np.int64)
    for k in range(8):  # 8 groups of 3 bits cover ids up to 2**24; 256 needs only 3
        for channel in range(3):
            bit = (ids >> (3 * k + channel)) & 1
            colors[:, channel] |= bit << (7 - k)
    return colors.astype(np.uint8)


_PALETTE_BYTES = voc_palette(256).tobytes()


# --------------------------------------------------------------------------- writing
def _check_xml_string(value, argument):
    """Raise ValueError unless every character of ``value`` survives an XML round trip."""
    bad = _NOT_XML.search(value)
    if bad:
        raise ValueError(f"{argument} holds {bad.group()!r} at position {bad.start()}, a "
                         f"character XML cannot store (control characters, lone surrogates, "
                         f"U+FFFE/U+FFFF, carriage returns); got {value!r}")


def _is_plain_stem(image_id):
    return image_id not in (".", "..") and not any(c in image_id for c in "/\\")


def _check_image_id(image_id, argument="image_id"):
    if not isinstance(image_id, str) or not image_id:
        raise ValueError(f"{argument} must be a non-empty str, got {image_id!r}")
    if not _is_plain_stem(image_id) or any(c.isspace() for c in image_id):
        raise ValueError(
            f"{argument} must be a plain file stem without slashes or whitespace, "
            f"got {image_id!r}"
        )
    _check_xml_string(image_id, argument)


def _check_flag(value, argument):
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, Integral) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{argument} must be a bool (or 0/1), got {value!r}")


def _check_objects(objects, height, width):
    """Validate the object dicts; return normalized copies (float bbox, bool flags)."""
    if not isinstance(objects, (list, tuple)):
        raise TypeError(f"objects must be a list of dicts, got {type(objects).__name__}")
    checked = []
    for i, obj in enumerate(objects):
        where = f"objects[{i}]"
        if not isinstance(obj, dict):
            raise TypeError(f"{where} must be a dict, got {type(obj).__name__}")
        unknown = set(obj) - _OBJECT_KEYS
        if unknown:
            raise ValueError(
                f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_OBJECT_KEYS)}"
            )
        name = obj.get("name")
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(f"{where}['name'] must be a non-empty str without outer spaces, "
                             f"got {name!r}")
        _check_xml_string(name, f"{where}['name']")
        bbox = obj.get("bbox")
        if bbox is None or np.ndim(bbox) != 1 or len(bbox) != 4 or not all(
                isinstance(v, Real) and not isinstance(v, bool) for v in np.asarray(bbox).tolist()):
            raise ValueError(f"{where}['bbox'] must be 4 numbers (x1, y1, x2, y2), got {bbox!r}")
        x1, y1, x2, y2 = (float(v) for v in bbox)
        if not all(np.isfinite([x1, y1, x2, y2])):
            raise ValueError(f"{where}['bbox'] must be finite, got {bbox!r}")
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise ValueError(
                f"{where}['bbox'] must satisfy 0 <= x1 < x2 <= W={width} and "
                f"0 <= y1 < y2 <= H={height} (continuous xyxy), got {bbox!r}"
            )
        text = obj.get("text")
        if text is not None and (not isinstance(text, str) or not text or "\n" in text):
            raise ValueError(f"{where}['text'] must be a non-empty one-line str, got {text!r}")
        if text is not None:
            _check_xml_string(text, f"{where}['text']")
        checked.append({
            "name": name,
            "bbox": (x1, y1, x2, y2),
            "difficult": _check_flag(obj.get("difficult", False), f"{where}['difficult']"),
            "truncated": _check_flag(obj.get("truncated", False), f"{where}['truncated']"),
            "text": text,
        })
    return checked


def _format_coordinate(value):
    """``12`` for integers, else up to 2 decimals without trailing zeros (``12.5``)."""
    value = round(float(value), 2)
    if value == int(value):
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _annotation_xml(image_id, filename, height, width, objects, segmented):
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "detseg"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "1" if segmented else "0"
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj["name"]
        if obj["text"] is not None:
            ET.SubElement(node, "text").text = obj["text"]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "1" if obj["truncated"] else "0"
        ET.SubElement(node, "difficult").text = "1" if obj["difficult"] else "0"
        box = ET.SubElement(node, "bndbox")
        x1, y1, x2, y2 = obj["bbox"]
        # continuous xyxy -> VOC 1-based inclusive (module docstring)
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = _format_coordinate(value)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def _png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _palette_png(mask):
    """A uint8 (H, W) map as a palette PNG: pixel values stay the ids, colours are VOC's."""
    height, width = mask.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(mask).tobytes())
    image.putpalette(_PALETTE_BYTES)
    return _png_bytes(image)


def write_voc_example(root, image_id, image, objects, class_mask=None, instance_mask=None,
                      image_format="jpg", jpeg_quality=90):
    """Write one example in the Pascal VOC layout (module docstring), atomically.

    Everything is validated before the first byte is written; the annotation XML is
    written last, so a complete XML means a complete example.

    Args:
        root (str | os.PathLike): dataset root; subdirectories are created as needed.
        image_id (str): file stem, e.g. ``"000017"`` (no slashes or whitespace).
        image (ndarray[H, W, 3]): uint8 RGB image.
        objects (list[dict]): one dict per object, in XML order:
            ``{"name": str, "bbox": (x1, y1, x2, y2)}`` in continuous xyxy pixels
            inside the image, optional ``"difficult": bool``, ``"truncated": bool``
            and ``"text": str`` (the exact character(s) of an object named ``"char"``,
            written as a ``<text>`` element; ignored by other VOC readers).
        class_mask (ndarray[H, W] | None): uint8 class ids (255 = ignore) →
            ``SegmentationClass/<id>.png`` with the VOC palette.
        instance_mask (ndarray[H, W] | None): integer, 1-based index into ``objects``
            (0 = none; 255 = void allowed when there are at most 254 objects) →
            ``SegmentationObject/<id>.png``: a uint8 palette PNG with at most 254
            objects, else a 16-bit greyscale PNG.
        image_format (str): ``"jpg"`` or ``"png"`` (lossless; use it for exact pixels).
        jpeg_quality (int): 1..100, JPEG only.

    Returns:
        dict[str, str]: the paths written, keys ``"image"``, ``"annotation"`` and, when
        given, ``"class_mask"``, ``"instance_mask"``.

    Raises:
        ValueError / TypeError: naming the bad argument, before anything is written.
    """
    root = os.fspath(root)
    _check_image_id(image_id)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        raise ValueError(
            "image must be a uint8 ndarray of shape (H, W, 3), got "
            + (f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray)
               else type(image).__name__)
        )
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"image must not be empty, got shape {image.shape}")
    if image_format not in _IMAGE_FORMATS:
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, Integral) \
            or not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be an int in 1..100, got {jpeg_quality!r}")
    checked = _check_objects(objects, height, width)

    if class_mask is not None:
        if not isinstance(class_mask, np.ndarray) or class_mask.dtype != np.uint8 \
                or class_mask.shape != (height, width):
            raise ValueError(
                f"class_mask must be a uint8 ndarray of shape (H, W) = ({height}, {width}), got "
                + (f"{class_mask.dtype} {class_mask.shape}" if isinstance(class_mask, np.ndarray)
                   else type(class_mask).__name__)
            )
    if instance_mask is not None:
        if not isinstance(instance_mask, np.ndarray) \
                or not np.issubdtype(instance_mask.dtype, np.integer) \
                or instance_mask.shape != (height, width):
            raise ValueError(
                f"instance_mask must be an integer ndarray of shape (H, W) = ({height}, {width}), "
                "got " + (f"{instance_mask.dtype} {instance_mask.shape}"
                          if isinstance(instance_mask, np.ndarray)
                          else type(instance_mask).__name__)
            )
        wide = len(checked) > _MAX_UINT8_OBJECTS
        values = instance_mask[instance_mask != 255] if not wide else instance_mask
        if values.size and (values.min() < 0 or values.max() > len(checked)):
            raise ValueError(
                f"instance_mask values must be 0 (none), 1..{len(checked)} (object index)"
                + ("" if wide else " or 255 (void)")
                + f", got range [{int(instance_mask.min())}, {int(instance_mask.max())}]"
            )

    # Encode everything in memory first: a failing encoder leaves nothing on disk.
    pil_format, extension = _IMAGE_FORMATS[image_format]
    buffer = io.BytesIO()
    if pil_format == "JPEG":
        Image.fromarray(image).save(buffer, format="JPEG", quality=int(jpeg_quality))
    else:
        Image.fromarray(image).save(buffer, format="PNG")
    files = [("image", "JPEGImages", image_id + extension, buffer.getvalue())]
    if class_mask is not None:
        files.append(("class_mask", "SegmentationClass", image_id + ".png",
                      _palette_png(class_mask)))
    if instance_mask is not None:
        if len(checked) > _MAX_UINT8_OBJECTS:
            png = _png_bytes(Image.fromarray(instance_mask.astype(np.uint16)))
        else:
            png = _palette_png(instance_mask.astype(np.uint8))
        files.append(("instance_mask", "SegmentationObject", image_id + ".png", png))
    xml = _annotation_xml(image_id, image_id + extension, height, width, checked,
                          segmented=class_mask is not None or instance_mask is not None)
    xml = xml.encode("utf-8")  # every string was checked: this cannot fail

    written = {}
    for key, folder, name, data in files:
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        path = os.path.join(root, folder, name)
        atomic_write_bytes(path, data)
        written[key] = path
    # A stale image of the other format would make the example ambiguous for readers.
    other = ".png" if extension == ".jpg" else ".jpg"
    stale = os.path.join(root, "JPEGImages", image_id + other)
    if os.path.exists(stale):
        os.unlink(stale)
    os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
    written["annotation"] = os.path.join(root, "Annotations", image_id + ".xml")
    atomic_write_bytes(written["annotation"], xml)
    return written


def write_image_sets(root, splits, segmentation=True):
    """Write ``ImageSets/Main/<split>.txt`` (and ``ImageSets/Segmentation/<split>.txt``).

    Args:
        root (str | os.PathLike): dataset root.
        splits (dict[str, list[str]]): split name (``"train"``, ``"val"``, ``"test"``, ...)
            to image ids, one line each, in the given order.
        segmentation (bool): also write the same lists under ``ImageSets/Segmentation``.

    Returns:
        list[str]: the paths written.
    """
    root = os.fspath(root)
    if not isinstance(splits, dict):
        raise TypeError(f"splits must be a dict of split name -> list of ids, "
                        f"got {type(splits).__name__}")
    for split, ids in splits.items():
        _check_image_id(split, argument="split name")
        if isinstance(ids, str) or not isinstance(ids, (list, tuple)):
            raise TypeError(f"splits[{split!r}] must be a list of image ids, "
                            f"got {type(ids).__name__}")
        for i, image_id in enumerate(ids):
            _check_image_id(image_id, argument=f"splits[{split!r}][{i}]")
    folders = ["Main"] + (["Segmentation"] if segmentation else [])
    written = []
    for folder in folders:
        directory = os.path.join(root, "ImageSets", folder)
        os.makedirs(directory, exist_ok=True)
        for split, ids in splits.items():
            path = os.path.join(directory, split + ".txt")
            atomic_write_text(path, "".join(image_id + "\n" for image_id in ids))
            written.append(path)
    return written


# --------------------------------------------------------------------------- reading
def _xml_text(node, tag, path, required=True):
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise ValueError(f"malformed VOC annotation {path}: missing <{tag}>")
        return None
    return child.text.strip()


def _xml_number(node, tag, path):
    text = _xml_text(node, tag, path)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"malformed VOC annotation {path}: <{tag}> is not a number: "
                         f"{text!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"malformed VOC annotation {path}: <{tag}> is not finite: {text!r}")
    return value


def read_voc_annotation(path):
    """Parse one VOC annotation XML.

    Boxes are checked as ``write_voc_example`` checks them: non-empty and inside the
    image (``0 <= x1 < x2 <= width``, ``0 <= y1 < y2 <= height`` after the conversion to
    continuous xyxy, i.e. ``1 <= xmin``, ``xmax <= width``).

    Args:
        path (str | os.PathLike): the ``Annotations/<id>.xml`` file.

    Returns:
        dict: ``"filename"`` str, ``"width"``, ``"height"`` int and ``"objects"``, a list
        of dicts ``{"name", "bbox" (x1, y1, x2, y2) continuous xyxy floats,
        "difficult", "truncated" bools, "text" str or None}`` in file order.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: naming the file, when the XML is malformed or a box is invalid.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VOC annotation not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"malformed VOC annotation {path}: {exc}") from None
    if root.tag != "annotation":
        raise ValueError(f"malformed VOC annotation {path}: root element is <{root.tag}>, "
                         "expected <annotation>")
    size = root.find("size")
    if size is None:
        raise ValueError(f"malformed VOC annotation {path}: missing <size>")
    width, height = _xml_number(size, "width", path), _xml_number(size, "height", path)
    if width != int(width) or height != int(height) or width <= 0 or height <= 0:
        raise ValueError(f"malformed VOC annotation {path}: <size> must be positive integers, "
                         f"got width={width}, height={height}")
    objects = []
    for i, node in enumerate(root.findall("object")):
        name = _xml_text(node, "name", path)
        box = node.find("bndbox")
        if box is None:
            raise ValueError(f"malformed VOC annotation {path}: object {i} has no <bndbox>")
        xmin, ymin, xmax, ymax = (_xml_number(box, tag, path)
                                  for tag in ("xmin", "ymin", "xmax", "ymax"))
        # VOC 1-based inclusive -> continuous xyxy (module docstring)
        bbox = (xmin - 1.0, ymin - 1.0, xmax, ymax)
        if not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
            raise ValueError(f"malformed VOC annotation {path}: object {i} ({name!r}) has an "
                             f"empty box xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, "
                             f"ymax={ymax:g}")
        if not (0 <= bbox[0] and bbox[2] <= width and 0 <= bbox[1] and bbox[3] <= height):
            raise ValueError(f"malformed VOC annotation {path}: object {i} ({name!r}) has a box "
                             f"outside the {int(width)}x{int(height)} image: xmin={xmin:g}, "
                             f"ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g} (VOC boxes are "
                             f"1-based: 1 <= xmin, xmax <= width)")
        flags = {}
        for tag in ("difficult", "truncated"):
            text = _xml_text(node, tag, path, required=False)
            if text not in (None, "0", "1"):
                raise ValueError(f"malformed VOC annotation {path}: object {i} <{tag}> must be "
                                 f"0 or 1, got {text!r}")
            flags[tag] = text == "1"
        text_node = node.find("text")
        objects.append({
            "name": name,
            "bbox": bbox,
            "difficult": flags["difficult"],
            "truncated": flags["truncated"],
            "text": text_node.text if text_node is not None and text_node.text else None,
        })
    filename = _xml_text(root, "filename", path, required=False)
    return {"filename": filename, "width": int(width), "height": int(height), "objects": objects}


def read_image_set(root, split, folder="Main"):
    """The image ids of ``ImageSets/<folder>/<split>.txt`` (blank lines skipped).

    Raises:
        FileNotFoundError: naming the missing split file.
        ValueError: an id that is not a plain file stem (a slash, ``.`` or ``..``:
            it could name a file outside the dataset), naming the file and the line.
    """
    path = os.path.join(os.fspath(root), "ImageSets", folder, f"{split}.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VOC image set not found: {path}")
    ids = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            image_id = line.split()[0]  # per-class files carry "<id> <flag>"
            if not _is_plain_stem(image_id):
                raise ValueError(f"{path}, line {number}: image id {image_id!r} must be a plain "
                                 f"file stem (no slashes, not '.' or '..'), as its files must "
                                 f"stay inside the dataset")
            ids.append(image_id)
    return ids


def _inside(folder, name, source, what):
    """``folder/name``, refused when it resolves (symlinks followed) outside ``folder``.

    Args:
        folder (str): a folder of the dataset, e.g. ``root/JPEGImages``.
        name (str): a relative path read from the dataset (an absolute one is refused).
        source (str): the file ``name`` was read from, for the message.
        what (str): what ``name`` is, for the message (``"<filename>"``, ``"image id"``).
    Raises:
        ValueError: naming ``source``, the entry and where it leads.
    """
    path = os.path.join(folder, name)
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(path)
    if os.path.commonpath([real_folder, real]) != real_folder:
        raise ValueError(f"{source}: {what} {name!r} resolves to {real}, outside the dataset "
                         f"folder {real_folder}")
    return path


def _decode_error(path, what, exc):
    """The error to raise for a file PIL could not decode: the path named, the type kept
    for a MemoryError, a ValueError otherwise."""
    if isinstance(exc, MemoryError):
        return MemoryError(f"not enough memory to decode {what} {path}")
    if isinstance(exc, Image.DecompressionBombError):
        return ValueError(f"cannot read {what} {path}: refused as a possible decompression "
                          f"bomb ({exc}); raise PIL.Image.MAX_IMAGE_PIXELS to read it")
    return ValueError(f"cannot read {what} {path}: {exc}")


# --------------------------------------------------------------------------- dataset
def read_label_map(path):
    """A class or instance map PNG as an integer (H, W) array of ids.

    Palette and greyscale PNGs store the ids directly (VOC, detseg). An RGB PNG (some
    tools save VOC masks in colour) is mapped back through the VOC palette.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VOC mask not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "L", "I;16", "I"):
                return np.asarray(image)
            if image.mode not in ("RGB", "RGBA"):
                raise ValueError(f"VOC mask {path} has unsupported mode {image.mode!r}")
            rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    except (OSError, SyntaxError, MemoryError, Image.DecompressionBombError) as exc:
        raise _decode_error(path, "VOC mask", exc) from None
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # (H, W) packed colours
    palette = voc_palette().astype(np.int64)
    palette_codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    order = np.argsort(palette_codes)
    position = np.searchsorted(palette_codes[order], codes).clip(0, 255)
    ids = order[position]
    if not np.array_equal(palette_codes[ids], codes):
        raise ValueError(f"VOC mask {path} is RGB with colours outside the VOC palette")
    return ids.astype(np.uint8)


def read_rgb(path):
    """An image file as ndarray[H, W, 3] uint8 (read-only).

    An RGB file is decoded once and handed over as it is: ``convert("RGB")`` on a
    not-yet-loaded image costs 3x the decode (1024-px JPEG: 15.9 ms instead of 5.6).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VOC image not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (OSError, SyntaxError, MemoryError, Image.DecompressionBombError) as exc:
        raise _decode_error(path, "VOC image", exc) from None


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
"""The 21 class names of Pascal VOC 2007-2012, indexed by class id (0 background)."""

CLASS_NAMES_FILE = "labels.txt"


def write_class_names(root, class_names):
    """Write ``root/labels.txt``: one class name per line, line ``i`` naming class id ``i``.

    A dataset whose class ids differ from Pascal VOC's 21 carries its own list, which
    ``VOCDataset`` and ``voc_to_coco`` read when no ``class_names`` are given.

    Args:
        root (str | os.PathLike): dataset root (created if missing).
        class_names (sequence[str]): distinct names without line breaks, id 0 first.
    """
    names = _check_class_names(class_names)
    for name in names:
        if not name.strip() or any(c in name for c in "\r\n") or name != name.strip():
            raise ValueError(f"class_names must be non-empty names without line breaks or "
                             f"surrounding spaces, got {name!r}")
    os.makedirs(root, exist_ok=True)
    atomic_write_text(os.path.join(root, CLASS_NAMES_FILE), "\n".join(names) + "\n")


def read_class_names(root):
    """The class names of the dataset at ``root``: ``labels.txt`` if present, else ``VOC_CLASSES``.

    Returns:
        tuple[str]: names indexed by class id.
    """
    path = os.path.join(os.fspath(root), CLASS_NAMES_FILE)
    if not os.path.isfile(path):
        return VOC_CLASSES
    with open(path, encoding="utf-8") as handle:
        names = [line.strip() for line in handle if line.strip()]
    try:
        return _check_class_names(names)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _check_class_names(class_names):
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names) \
            or len(set(class_names)) != len(class_names) or not class_names:
        raise ValueError(f"class_names must be a sequence of distinct str, got {class_names!r}")
    return tuple(class_names)


class VOCDataset(Dataset):
    """A Pascal VOC dataset as ``(image, target)`` pairs.

    Labels. Each XML object name is looked up in ``class_names``, the names indexed by
    class id. By default they come from the dataset itself: its ``labels.txt``
    (``write_class_names``; the generated plate scenes carry one), or Pascal VOC's 21
    names (``VOC_CLASSES``) when there is none. An object whose name is not in
    ``class_names`` is an error naming the file.

    Class subsets for a detector. ``classes=("car", "plate")`` keeps only those
    objects and renumbers them ``1..n`` in the given order (0 stays background);
    ``dataset.label_names[label]`` names a label and ``dataset.num_classes == n``.
    A RetinaNet with ``num_classes=n`` sigmoid outputs then uses output column
    ``label - 1`` for a box labelled ``label``: no further mapping in the trainer.
    With ``classes`` the class map (``"masks"``) is renumbered the same way (pixels of
    dropped classes become 0, ignore stays 255) and ``"instance_masks"`` keeps the
    rows of the kept objects.

    Args:
        root (str | os.PathLike): dataset root (module docstring layout).
        split (str): the image set, ``ImageSets/Main/<split>.txt``.
        class_names (sequence[str] | None): names indexed by class id (the id space of
            the XML names and of ``SegmentationClass``); None reads them from the dataset
            (``read_class_names``).
        transforms (callable | None): ``transforms(image, target) -> (image, target)``,
            e.g. ``detection.datasets.transforms.Compose([...])``.
        return_masks (bool): add ``target["masks"]``, the class map.
        return_instance_masks (bool): add ``target["instance_masks"]``.
        keep_difficult (bool): keep objects marked ``<difficult>1``.
        classes (sequence[str] | None): optional subset, renumbered ``1..n`` (above).

    Items (``dataset[i]``):
        image (ndarray[H, W, 3]): uint8 RGB (or what ``transforms`` returns).
        target (dict): ``"boxes"`` float32 (G, 4) continuous xyxy, ``"labels"`` int64 (G,),
        ``"difficult"`` bool (G,), ``"image_id"`` str; on request ``"masks"`` uint8 (H, W)
        class ids (255 ignore) and ``"instance_masks"`` bool (G, H, W), object ``i`` being
        the pixels of value ``i + 1`` in ``SegmentationObject`` (XML order).

    Raises (at construction, naming the file): FileNotFoundError for a missing split
    file, annotation, image or requested mask; ValueError for malformed XML or an
    unknown class name. A mask whose size differs from its image raises ValueError
    naming the mask when the item is read.
    """

    def __init__(self, root, split="train", class_names=None, transforms=None,
                 return_masks=False, return_instance_masks=False, keep_difficult=True,
                 classes=None):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"VOC root directory not found: {self.root}")
        if class_names is None:
            class_names = read_class_names(self.root)
        self.class_names = _check_class_names(class_names)
        if classes is not None:
            if isinstance(classes, str) or not classes:
                raise ValueError(f"classes must be a non-empty sequence of names, got {classes!r}")
            missing = [c for c in classes if c not in self.class_names]
            if missing or len(set(classes)) != len(classes):
                raise ValueError(f"classes must be distinct names from class_names, got {classes!r}"
                                 + (f" (unknown: {missing})" if missing else ""))
            self.classes = tuple(classes)
            self.label_names = ("background",) + self.classes
        else:
            self.classes = None
            self.label_names = self.class_names
        self.num_classes = len(self.classes) if self.classes is not None else len(self.class_names)
        # class id -> output label; -1 drops the object, 255 stays ignore in the class map.
        lookup = np.full(256, -1, dtype=np.int64)
        if self.classes is None:
            lookup[:len(self.class_names)] = np.arange(len(self.class_names))
        else:
            for label, name in enumerate(self.classes, start=1):
                lookup[self.class_names.index(name)] = label
        self._label_of_id = lookup
        mask_lookup = np.where(lookup >= 0, lookup, 0)
        mask_lookup[255] = 255
        self._mask_lookup = mask_lookup.astype(np.uint8)

        if transforms is not None and not callable(transforms):
            raise TypeError(f"transforms must be callable, got {type(transforms).__name__}")
        self.split = split
        self.transforms = transforms
        self.return_masks = bool(return_masks)
        self.return_instance_masks = bool(return_instance_masks)
        self.keep_difficult = bool(keep_difficult)
        self.ids = read_image_set(self.root, split)
        self._records = [self._load_record(image_id) for image_id in self.ids]

    def _load_record(self, image_id):
        """Parse one annotation and resolve its files, so bad data fails at construction."""
        split_file = os.path.join(self.root, "ImageSets", "Main", f"{self.split}.txt")
        path = _inside(os.path.join(self.root, "Annotations"), image_id + ".xml", split_file,
                       "image id")
        annotation = read_voc_annotation(path)
        class_ids, keep = [], []
        for i, obj in enumerate(annotation["objects"]):
            if obj["name"] not in self.class_names:
                raise ValueError(
                    f"unknown class name {obj['name']!r} (object {i}) in {path}; "
                    f"class_names are {list(self.class_names)}"
                )
            class_id = self.class_names.index(obj["name"])
            class_ids.append(class_id)
            keep.append((self.keep_difficult or not obj["difficult"])
                        and self._label_of_id[class_id] >= 0)
        image_path = None
        images = os.path.join(self.root, "JPEGImages")
        candidates = ([annotation["filename"]] if annotation["filename"] else []) \
            + [image_id + ".jpg", image_id + ".png"]
        for name in candidates:
            candidate = _inside(images, name, path, "<filename>")
            if os.path.isfile(candidate):
                image_path = candidate
                break
        if image_path is None:
            raise FileNotFoundError(
                f"VOC image not found for {path}: tried "
                + ", ".join(os.path.join(self.root, "JPEGImages", n) for n in candidates)
            )
        record = {
            "image_id": image_id,
            "annotation_path": path,
            "image_path": image_path,
            "width": annotation["width"],
            "height": annotation["height"],
            "objects": annotation["objects"],
            "class_ids": np.asarray(class_ids, dtype=np.int64),
            "keep": np.asarray(keep, dtype=bool),
        }
        for key, folder, wanted in (("class_mask_path", "SegmentationClass", self.return_masks),
                                    ("instance_mask_path", "SegmentationObject",
                                     self.return_instance_masks)):
            mask_path = _inside(os.path.join(self.root, folder), image_id + ".png", split_file,
                                "image id")
            if wanted and not os.path.isfile(mask_path):
                raise FileNotFoundError(f"VOC mask not found: {mask_path}")
            record[key] = mask_path
        return record

    def __len__(self):
        return len(self._records)

    def annotation(self, index):
        """The parsed XML of item ``index`` (see ``read_voc_annotation``), all objects."""
        record = self._records[index]
        return {"image_id": record["image_id"], "width": record["width"],
                "height": record["height"], "objects": list(record["objects"])}

    def load_target(self, index):
        """The target of item ``index`` without reading the image or masks (no transforms)."""
        record = self._records[index]
        keep = record["keep"]
        boxes = np.asarray([o["bbox"] for o in record["objects"]], dtype=np.float32)
        boxes = boxes.reshape(-1, 4)[keep]  # (G, 4)
        difficult = np.asarray([o["difficult"] for o in record["objects"]], dtype=bool)
        return {
            "boxes": boxes,
            "labels": self._label_of_id[record["class_ids"][keep]].astype(np.int64),
            "difficult": difficult.reshape(-1)[keep],
            "image_id": record["image_id"],
        }

    def __getitem__(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        record = self._records[int(index)]
        image = read_rgb(record["image_path"])
        height, width = image.shape[:2]
        if (height, width) != (record["height"], record["width"]):
            raise ValueError(
                f"image {record['image_path']} is {width}x{height} but "
                f"{record['annotation_path']} says {record['width']}x{record['height']}"
            )
        target = self.load_target(int(index))
        if self.return_masks:
            class_map = read_label_map(record["class_mask_path"])
            self._check_mask_size(class_map, record["class_mask_path"], record["image_path"], image)
            if class_map.dtype != np.uint8 or (class_map.size and class_map.max() > 255):
                raise ValueError(f"class mask {record['class_mask_path']} must hold ids 0..255")
            target["masks"] = self._mask_lookup[class_map]  # renumbered for `classes`
        if self.return_instance_masks:
            instance_map = read_label_map(record["instance_mask_path"])
            self._check_mask_size(instance_map, record["instance_mask_path"],
                                  record["image_path"], image)
            object_values = np.flatnonzero(record["keep"]) + 1  # (G,) 1-based pixel values
            # (1, H, W) == (G, 1, 1) -> (G, H, W): one comparison for all objects
            target["instance_masks"] = instance_map[None] == object_values[:, None, None]
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    @staticmethod
    def _check_mask_size(mask, mask_path, image_path, image):
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]}"
            )

    def __repr__(self):
        return (f"VOCDataset(root={self.root!r}, split={self.split!r}, {len(self)} images, "
                f"labels={list(self.label_names)})")
