"""COCO JSON: read a detection dataset, write ground truth and predictions, RLE masks.

The COCO format (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014;
the field list is on cocodataset.org/#format-data) keeps a whole split in one JSON
file::

    {"images":      [{"id": int, "file_name": str, "width": int, "height": int}, ...],
     "annotations": [{"id": int, "image_id": int, "category_id": int,
                      "bbox": [x, y, w, h], "area": float, "iscrowd": 0 | 1,
                      "segmentation": RLE | [polygon, ...]}, ...],
     "categories":  [{"id": int, "name": str}, ...]}

Boxes. COCO's ``bbox`` is ``[x, y, w, h]`` in the same continuous pixel coordinates as
detseg's ``xyxy`` (no "+1"): ``x2 = x + w``, ``y2 = y + h``.

Labels. detseg's label *is* the category id: a class of id 2 in the dataset's
``class_names`` is category 2 in COCO as in the model. The category list holds every class name except
a leading ``"background"``.

Image ids. COCO ids are integers; detseg's VOC ids are strings (``"000017"``). The
ground-truth writer numbers images 1..N in order (or keeps integer ``image_id``s of
the targets) and records the string id in ``file_name``; ``write_coco_predictions``
accepts either the integer ids or the string ids plus the ground truth to look them up.

Masks. ``segmentation`` is written as compressed RLE, COCO's run-length encoding
of the column-major (Fortran order) mask: alternating runs of 0s and 1s, starting
with 0s, each count stored as a variable-length string of 5-bit groups, coding
count ``i > 2`` as the difference to count ``i - 2`` (pycocotools' ``maskApi.c``).
``rle_encode``/``rle_decode`` implement it with array operations (no loop over runs);
the pycocotools oracle tests check them byte for byte. Polygons are read (rasterized
with Pillow, which may differ from pycocotools on boundary pixels) but not written.

Files are written atomically (``nn.io.atomic_write_text``), as strict JSON: a box
whose width, height or area is not a finite number is refused, never written as
``Infinity``.

Reading stays inside the dataset: each ``file_name`` must resolve, symlinks followed,
inside ``image_dir``. Category ids must be distinct; without ``contiguous_labels``
they are the labels, so they must be >= 1 (0 is the background) and small enough for
a table of names indexed by label, and with ``return_masks`` at most 254: the class
map is uint8 and 255 marks crowd pixels.
"""
import json
import os
from numbers import Integral

import numpy as np
from PIL import Image, ImageDraw

from nn.io import atomic_write_text
from detection.datasets.voc import VOCDataset, _inside, read_rgb
from nn.data import Dataset

__all__ = [
    "rle_encode", "rle_decode", "polygons_to_mask", "write_coco_ground_truth",
    "write_coco_predictions", "voc_to_coco", "COCODataset",
]

# A count below 2**63 needs at most 13 groups of 5 bits.
_MAX_GROUPS = 13
IGNORE_INDEX = 255  # class-map value of crowd pixels: counted for no class (VOC's void)
_MAX_MASK_LABEL = 254  # the class map is uint8 with 255 = IGNORE_INDEX
_MAX_CATEGORY_ID = 2 ** 20  # label_names is a table indexed by id: 1M names at most
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------- RLE
def _mask_counts(mask):
    """Run lengths of the column-major mask, starting with a (possibly empty) run of 0s.

    COCO runs go down the columns. Copying the mask to column-major order costs more
    than everything else here, so the run boundaries are found in place: pixel
    ``k = x * H + y`` (column-major index) starts a run where it differs from the pixel
    above it, or, at the top of a column, from the bottom of the previous column.
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    if mask.size == 0:
        return np.zeros(0, dtype=np.int64)
    below = np.flatnonzero(mask[1:, :] != mask[:-1, :])  # (y, x) differs from (y+1, x)
    ys, xs = np.divmod(below, width)
    tops = np.flatnonzero(mask[0, 1:] != mask[-1, :-1]) + 1  # columns starting a new run
    changes = np.sort(np.concatenate([xs * height + ys + 1, tops * height]))
    bounds = np.concatenate([[0], changes, [mask.size]])
    counts = np.diff(bounds)
    if mask[0, 0]:
        counts = np.concatenate([[0], counts])  # the first run counts 0s
    return counts.astype(np.int64)


def _counts_to_string(counts):
    """COCO's compressed counts (``rleToString`` in maskApi.c), vectorized over runs."""
    if counts.size == 0:
        return ""
    deltas = counts.copy()
    deltas[3:] -= counts[1:-2]  # count i > 2 is stored relative to count i - 2
    # The widest delta needs its bits plus a sign bit, 5 bits per group (plus one spare
    # group so the last column never claims "more").
    bits = int(np.abs(deltas).max()).bit_length() + 1
    steps = min(_MAX_GROUPS, -(-bits // 5) + 1)
    # All runs at once, one 5-bit group per step: c = x & 31; x >>= 5 (arithmetic).
    values = deltas[:, None] >> (5 * np.arange(steps))[None, :]  # (R, steps)
    groups = values & 0x1F
    rest = values >> 5  # what is left after this group
    # More groups follow while the rest is not the sign extension of this group.
    more = np.where(groups & 0x10, rest != -1, rest != 0)  # (R, steps)
    lengths = np.argmin(more, axis=1) + 1  # the first group without "more" ends the count
    chars = groups + 48 + 0x20 * more  # 0x20: the continuation bit
    valid = np.arange(steps)[None, :] < lengths[:, None]
    return chars[valid].astype(np.uint8).tobytes().decode("ascii")


def _string_to_counts(text):
    """Inverse of ``_counts_to_string`` (``rleFrString`` in maskApi.c)."""
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    if codes.min() < 0 or codes.max() > 63:
        raise ValueError("RLE counts string holds characters outside COCO's alphabet")
    ends = (codes & 0x20) == 0  # a group without the continuation bit closes a count
    if not ends[-1]:
        raise ValueError("RLE counts string ends in the middle of a count")
    end_index = np.flatnonzero(ends)
    starts = np.concatenate([[0], end_index[:-1] + 1])
    position = np.arange(codes.size) - np.repeat(starts, end_index - starts + 1)
    if position.max() >= _MAX_GROUPS:
        raise ValueError("RLE counts string holds a count too large for 64 bits")
    deltas = np.add.reduceat((codes & 0x1F) << (5 * position), starts)
    lengths = end_index - starts + 1
    negative = (codes[end_index] & 0x10) != 0  # sign bit of the last group
    deltas = deltas - (negative.astype(np.int64) << (5 * lengths))
    # Undo the differences: x[i] = d[i] + x[i - 2] for i > 2, i.e. cumulative sums over
    # the odd indices (from 1) and over the even indices from 2.
    counts = deltas.copy()
    counts[1::2] = np.cumsum(deltas[1::2])
    counts[2::2] = np.cumsum(deltas[2::2])
    return counts


def rle_encode(mask):
    """COCO compressed RLE of a binary mask.

    Args:
        mask (ndarray[H, W]): bool or 0/1.

    Returns:
        dict: ``{"size": [H, W], "counts": str}``, as ``pycocotools.mask.encode`` (with
        ``counts`` decoded to str, ready for JSON).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])],
            "counts": _counts_to_string(_mask_counts(mask))}


def rle_decode(rle):
    """Binary mask of a COCO RLE, compressed (``counts`` str/bytes) or not (list).

    Returns:
        ndarray[H, W]: bool, Fortran-ordered (as ``pycocotools.mask.decode``).
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"rle must be a dict with 'size' and 'counts', got {rle!r:.80}")
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = _string_to_counts(counts)
    else:
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    if (counts < 0).any() or counts.sum() != height * width:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected H*W = {height * width}")
    values = np.arange(counts.size) % 2 == 1  # runs alternate 0s, 1s, 0s, ...
    flat = np.repeat(values, counts)
    # Column-major pixels viewed as (H, W): Fortran-ordered, as pycocotools returns it.
    return flat.reshape(width, height).T


def polygons_to_mask(polygons, height, width):
    """Rasterize COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` (their union) with Pillow."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(points) >= 3:
            draw.polygon([tuple(p) for p in points.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def _segmentation_to_mask(segmentation, height, width, where):
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        mask = rle_decode(segmentation)
        if mask.shape != (height, width):
            raise ValueError(f"{where}: RLE size {list(mask.shape)} differs from its image "
                             f"({height}, {width})")
        return mask
    raise ValueError(f"{where}: segmentation must be an RLE dict or a list of polygons")


# --------------------------------------------------------------------------- writers
def _categories(class_names):
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise ValueError(f"class_names must be a sequence of str, got {class_names!r}")
    start = 1 if len(class_names) and class_names[0] == "background" else 0
    return [{"id": i, "name": class_names[i], "supercategory": "none"}
            for i in range(start, len(class_names))]


def _round(values):
    """Python floats with 4 decimals: a readable file, far below a pixel."""
    return [round(float(v), 4) for v in values]


def _check_target(target, index):
    if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
        raise ValueError(f"targets[{index}] must be a dict with 'boxes' and 'labels'")
    boxes = np.asarray(target["boxes"], dtype=np.float64)
    labels = np.asarray(target["labels"])
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
        raise ValueError(f"targets[{index}]['boxes'] must be finite (G, 4) xyxy, "
                         f"got shape {boxes.shape}")
    if labels.shape != (len(boxes),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"targets[{index}]['labels'] must be ({len(boxes)},) integers, "
                         f"got {labels.dtype} {labels.shape}")
    return boxes, labels.astype(np.int64)


def _targets_and_sizes(dataset, image_sizes, include_masks):
    """(targets, sizes) from a list of targets or from an ``(image, target)`` dataset."""
    if isinstance(dataset, (list, tuple)):
        targets = list(dataset)
        if image_sizes is None or len(image_sizes) != len(targets):
            raise ValueError("image_sizes must give (height, width) for each target when "
                             "targets is a list")
        return targets, [tuple(int(v) for v in s) for s in image_sizes]
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(f"dataset must be a list of targets or a dataset of (image, target), "
                        f"got {type(dataset).__name__}")
    fast = isinstance(dataset, VOCDataset) and dataset.transforms is None and not include_masks
    targets, sizes = [], []
    for i in range(len(dataset)):
        if fast:  # the XML is enough: no image decoding
            targets.append(dataset.load_target(i))
            info = dataset.annotation(i)
            sizes.append((info["height"], info["width"]))
        else:
            image, target = dataset[i]
            targets.append(target)
            sizes.append(tuple(np.shape(image)[:2]))
    return targets, sizes


def write_coco_ground_truth(path, dataset, class_names=None, image_sizes=None, image_ids=None,
                            file_names=None, include_masks=False):
    """Write ground truth as a COCO JSON file (atomically) and return its dict.

    Args:
        path (str | os.PathLike): the JSON file.
        dataset: a list of target dicts (``"boxes"`` (G, 4) xyxy, ``"labels"`` (G,),
            optional ``"iscrowd"`` (G,), ``"instance_masks"`` (G, H, W), ``"image_id"``),
            or a dataset of ``(image, target)`` such as ``VOCDataset`` (read without
            decoding images when no masks are wanted).
        class_names (sequence[str] | None): names by label; None takes the dataset's
            ``label_names``. A leading ``"background"`` is not a category.
        image_sizes (list[tuple[int, int]] | None): (height, width) per target; needed
            when ``dataset`` is a list.
        image_ids (list[int] | None): COCO ids; default: the targets' integer
            ``image_id`` if they all have one, else 1..N.
        file_names (list[str] | None): default: the target's ``image_id`` when it is a
            str (a VOC id), else the COCO id.
        include_masks (bool): write ``segmentation`` (compressed RLE) and mask ``area``
            from ``instance_masks``; otherwise ``area`` is the box area.

    Returns:
        dict: the COCO dict written.
    """
    if class_names is None:
        class_names = getattr(dataset, "label_names", None)
        if class_names is None:
            raise ValueError("class_names is required unless the dataset has label_names")
    categories = _categories(class_names)
    category_ids = {c["id"] for c in categories}
    targets, sizes = _targets_and_sizes(dataset, image_sizes, include_masks)
    count = len(targets)
    if image_ids is None:
        given = [t.get("image_id") if isinstance(t, dict) else None for t in targets]
        if count and all(isinstance(i, Integral) and not isinstance(i, bool) for i in given):
            image_ids = [int(i) for i in given]
        else:
            image_ids = list(range(1, count + 1))
    image_ids = [int(i) for i in image_ids]
    if len(image_ids) != count or len(set(image_ids)) != count:
        raise ValueError(f"image_ids must be {count} distinct ints, got {len(image_ids)} "
                         f"({len(set(image_ids))} distinct)")
    if file_names is not None and len(file_names) != count:
        raise ValueError(f"file_names must have {count} entries, got {len(file_names)}")

    images, annotations = [], []
    for index, (target, (height, width), image_id) in enumerate(zip(targets, sizes, image_ids)):
        boxes, labels = _check_target(target, index)
        unknown = sorted(set(labels.tolist()) - category_ids)
        if unknown:
            raise ValueError(f"targets[{index}] has labels {unknown} that are not categories "
                             f"{sorted(category_ids)}")
        if file_names is not None:
            file_name = file_names[index]
        elif isinstance(target.get("image_id"), str):
            file_name = target["image_id"]
        else:
            file_name = str(image_id)
        images.append({"id": image_id, "file_name": file_name, "width": int(width),
                       "height": int(height)})
        crowd = np.asarray(target.get("iscrowd", np.zeros(len(boxes))), dtype=bool)
        masks = None
        if include_masks:
            masks = target.get("instance_masks")
            if masks is None or np.shape(masks) != (len(boxes), height, width):
                raise ValueError(f"targets[{index}]['instance_masks'] must be "
                                 f"({len(boxes)}, {height}, {width}) with include_masks")
        xywh = _xywh(boxes, f"targets[{index}]")  # (G, 4)
        with np.errstate(over="ignore"):
            areas = xywh[:, 2] * xywh[:, 3]  # (G,)
        if not np.isfinite(areas).all():
            g = int(np.flatnonzero(~np.isfinite(areas))[0])
            raise ValueError(f"targets[{index}]: box {g} has an area beyond float64's range "
                             f"({xywh[g, 2]:g} x {xywh[g, 3]:g}), which JSON cannot store")
        for g in range(len(boxes)):
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(labels[g]),
                "bbox": _round(xywh[g]),
                "area": round(float(areas[g]), 4),
                "iscrowd": int(crowd[g]),
            }
            if masks is not None:
                annotation["segmentation"] = rle_encode(masks[g])
                annotation["area"] = float(np.count_nonzero(masks[g]))
            annotations.append(annotation)
    coco = {"info": {"description": "written by detseg"}, "images": images,
            "annotations": annotations, "categories": categories}
    atomic_write_text(path, json.dumps(coco, allow_nan=False))
    return coco


def _xywh(boxes, where):
    """COCO's ``[x, y, w, h]`` of xyxy boxes ``(G, 4)`` float64; a width or height beyond
    float64's range (boxes near ±1.8e308) is refused, naming ``where`` and the box."""
    with np.errstate(over="ignore"):
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)  # (G, 4)
    if not np.isfinite(xywh).all():
        g = int(np.flatnonzero(~np.isfinite(xywh).all(axis=1))[0])
        raise ValueError(f"{where}: box {g} {boxes[g].tolist()} has a width or height beyond "
                         f"float64's range")
    return xywh


def _load_json(path_or_dict, what):
    if isinstance(path_or_dict, dict):
        return path_or_dict
    path = os.fspath(path_or_dict)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed COCO JSON {path}: {exc}") from None
        except RecursionError:
            raise ValueError(f"malformed COCO JSON {path}: nested too deeply") from None
        except MemoryError:
            raise MemoryError(f"not enough memory to read {what} {path}") from None


def write_coco_predictions(path, predictions, image_ids, ground_truth=None, include_masks=False,
                           mask_threshold=0.5):
    """Write detections as a COCO results file (a JSON list), atomically.

    Args:
        path (str | os.PathLike): the JSON file.
        predictions (list[dict]): one per image: ``"boxes"`` (K, 4) xyxy, ``"scores"`` (K,),
            ``"labels"`` (K,) (= category ids), optional ``"masks"`` (K, H, W) bool or
            probabilities.
        image_ids (list[int | str]): the COCO id of each image, or its string id
            (``file_name`` in ``ground_truth``, with or without extension).
        ground_truth (dict | str | None): the ground-truth dict or file, to resolve
            string ids.
        include_masks (bool): write ``segmentation`` RLEs of ``masks > mask_threshold``
            (``>=`` for bool masks).

    Returns:
        list[dict]: the results written: ``image_id``, ``category_id``, ``bbox`` xywh,
        ``score`` (and ``segmentation``).
    """
    if not isinstance(predictions, (list, tuple)):
        raise TypeError(f"predictions must be a list of dicts, got {type(predictions).__name__}")
    if len(image_ids) != len(predictions):
        raise ValueError(f"image_ids has {len(image_ids)} entries for {len(predictions)} "
                         "predictions")
    lookup = None
    if any(isinstance(i, str) for i in image_ids):
        if ground_truth is None:
            raise ValueError("string image_ids need ground_truth to find their COCO ids")
        coco = _load_json(ground_truth, "COCO ground truth")
        lookup = {}
        for image in coco.get("images", []):
            lookup[image["file_name"]] = image["id"]
            lookup.setdefault(os.path.splitext(image["file_name"])[0], image["id"])
    results = []
    for index, (prediction, image_id) in enumerate(zip(predictions, image_ids)):
        if isinstance(image_id, str):
            if image_id not in lookup:
                raise ValueError(f"image_ids[{index}] = {image_id!r} is not a file_name of the "
                                 "ground truth")
            image_id = lookup[image_id]
        elif isinstance(image_id, bool) or not isinstance(image_id, Integral):
            raise TypeError(f"image_ids[{index}] must be an int or str, got {image_id!r}")
        if not isinstance(prediction, dict) or not {"boxes", "scores", "labels"} <= set(prediction):
            raise ValueError(f"predictions[{index}] must be a dict with boxes, scores, labels")
        boxes, labels = _check_target(prediction, index)
        scores = np.asarray(prediction["scores"], dtype=np.float64)
        if scores.shape != (len(boxes),) or not np.isfinite(scores).all():
            raise ValueError(f"predictions[{index}]['scores'] must be finite ({len(boxes)},)")
        masks = None
        if include_masks:
            masks = np.asarray(prediction.get("masks"))
            if masks.ndim != 3 or len(masks) != len(boxes):
                raise ValueError(f"predictions[{index}]['masks'] must be ({len(boxes)}, H, W) "
                                 "with include_masks")
            masks = masks if masks.dtype == bool else masks > mask_threshold
        xywh = _xywh(boxes, f"predictions[{index}]")
        for k in range(len(boxes)):
            result = {"image_id": int(image_id), "category_id": int(labels[k]),
                      "bbox": _round(xywh[k]), "score": round(float(scores[k]), 6)}
            if masks is not None:
                result["segmentation"] = rle_encode(masks[k])
            results.append(result)
    atomic_write_text(path, json.dumps(results, allow_nan=False))
    return results


def voc_to_coco(voc_root, split, out_json, class_names=None, classes=None,
                include_masks=False, keep_difficult=True):
    """Convert a VOC split to COCO ground truth (``file_name`` = the JPEGImages file name).

    ``COCODataset(out_json, os.path.join(voc_root, "JPEGImages"))`` then reads the
    same boxes, labels (and instance masks) as ``VOCDataset(voc_root, split, ...)``;
    ``class_names`` None reads them from the dataset (``read_class_names``).

    Returns:
        dict: the COCO dict written.
    """
    dataset = VOCDataset(voc_root, split, class_names=class_names, classes=classes,
                         return_instance_masks=include_masks, keep_difficult=keep_difficult)
    file_names = [os.path.basename(r["image_path"]) for r in dataset._records]
    return write_coco_ground_truth(out_json, dataset, dataset.label_names,
                                   file_names=file_names, include_masks=include_masks)


# --------------------------------------------------------------------------- dataset
def _check_category_ids(category_ids, contiguous_labels, where):
    """Distinct ids; without ``contiguous_labels`` (ids are labels) in 1.._MAX_CATEGORY_ID."""
    seen = set()
    for category in category_ids:
        if category in seen:
            raise ValueError(f"malformed COCO JSON {where}: duplicate category id {category}")
        seen.add(category)
        if contiguous_labels:
            continue
        if category < 1:
            raise ValueError(f"{where}: category id {category} cannot be a label (labels start "
                             f"at 1, 0 is the background): pass contiguous_labels=True")
        if category > _MAX_CATEGORY_ID:
            raise ValueError(f"{where}: category id {category} is too large for label_names, a "
                             f"table indexed by label (at most {_MAX_CATEGORY_ID}): pass "
                             f"contiguous_labels=True")


class COCODataset(Dataset):
    """A COCO JSON file and its images as ``(image, target)`` pairs (like ``VOCDataset``).

    Target: ``"boxes"`` float32 (G, 4) xyxy, ``"labels"`` int64 (G,) (the category
    ids, or ``1..n`` in category order with ``contiguous_labels``), ``"iscrowd"`` bool
    (G,), ``"area"`` float32 (G,), ``"image_id"`` int; on request ``"instance_masks"``
    bool (G, H, W) from ``segmentation`` and ``"masks"`` uint8 (H, W), the class map
    painted in annotation order (crowd regions 255 = ignore). Annotations whose box has
    no area (``w <= 0`` or ``h <= 0``, present in real COCO files) are skipped.

    Args:
        annotation_file (str | os.PathLike): the COCO JSON.
        image_dir (str | os.PathLike): directory of the ``file_name``s.
        transforms (callable | None): ``transforms(image, target) -> (image, target)``.
        return_masks, return_instance_masks (bool): add the masks above.
        contiguous_labels (bool): renumber categories ``1..n``; ``label_names[label]``
            names a label either way.

    Raises (at construction, naming the file): FileNotFoundError for the JSON or an
    image; ValueError for malformed JSON, an annotation of an unknown image or
    category, a ``file_name`` resolving outside ``image_dir``, duplicate category ids,
    ids that cannot be labels (< 1, or > 2**20, without ``contiguous_labels``) or labels
    above 254 with ``return_masks``; MemoryError naming a JSON too large to read. An
    image whose size differs from the JSON, or that cannot be decoded (a decompression
    bomb), raises at ``__getitem__``.
    """

    def __init__(self, annotation_file, image_dir, transforms=None, return_masks=False,
                 return_instance_masks=False, contiguous_labels=False):
        self.annotation_file = os.fspath(annotation_file)
        self.image_dir = os.fspath(image_dir)
        coco = _load_json(self.annotation_file, "COCO annotation file")
        where = self.annotation_file
        if not isinstance(coco, dict) or not all(
                isinstance(coco.get(k), list) for k in ("images", "annotations", "categories")):
            raise ValueError(f"malformed COCO JSON {where}: need lists 'images', "
                             "'annotations' and 'categories'")
        if transforms is not None and not callable(transforms):
            raise TypeError(f"transforms must be callable, got {type(transforms).__name__}")
        self.transforms = transforms
        self.return_masks = bool(return_masks)
        self.return_instance_masks = bool(return_instance_masks)
        try:
            categories = [(int(c["id"]), str(c["name"])) for c in coco["categories"]]
            self.images = [{"id": int(i["id"]), "file_name": str(i["file_name"]),
                            "width": int(i["width"]), "height": int(i["height"])}
                           for i in coco["images"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed COCO JSON {where}: bad image or category "
                             f"({exc})") from None
        self.category_ids = [c for c, _ in categories]
        _check_category_ids(self.category_ids, contiguous_labels, where)
        if contiguous_labels:
            self._label_of = {c: i + 1 for i, c in enumerate(self.category_ids)}
            self.label_names = ("background",) + tuple(n for _, n in categories)
        else:
            self._label_of = {c: c for c in self.category_ids}
            names = ["background"] + [""] * max(self.category_ids, default=0)
            for c, n in categories:
                names[c] = n
            self.label_names = tuple(names)
        self.num_classes = len(categories)
        if self.return_masks:
            for category, label in self._label_of.items():
                if label > _MAX_MASK_LABEL:
                    raise ValueError(
                        f"{where}: category id {category} (label {label}) does not fit the uint8 "
                        f"class map of return_masks (labels 1..{_MAX_MASK_LABEL}; "
                        f"{IGNORE_INDEX} marks crowd pixels): pass contiguous_labels=True "
                        f"(labels 1..n) or return_masks=False")
        index_of = {image["id"]: i for i, image in enumerate(self.images)}
        if len(index_of) != len(self.images):
            raise ValueError(f"malformed COCO JSON {where}: duplicate image ids")
        self._annotations = [[] for _ in self.images]
        for n, ann in enumerate(coco["annotations"]):
            try:
                image_id, category = int(ann["image_id"]), int(ann["category_id"])
                x, y, w, h = (float(v) for v in ann["bbox"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"malformed COCO JSON {where}: annotation {n} ({exc})") from None
            if image_id not in index_of:
                raise ValueError(f"malformed COCO JSON {where}: annotation {n} refers to "
                                 f"unknown image id {image_id}")
            if category not in self._label_of:
                raise ValueError(f"malformed COCO JSON {where}: annotation {n} has unknown "
                                 f"category id {category}")
            if not np.isfinite([x, y, w, h]).all() or max(
                    abs(x), abs(y), abs(x + w), abs(y + h)) > _FLOAT32_MAX:
                raise ValueError(f"malformed COCO JSON {where}: annotation {n} has a bbox "
                                 f"that is not finite in float32: {[x, y, w, h]}")
            if w <= 0 or h <= 0:
                continue
            self._annotations[index_of[image_id]].append(ann)
        for image in self.images:
            path = _inside(self.image_dir, image["file_name"], where,
                           f"image {image['id']} file_name")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"COCO image not found: {path} (listed in {where})")
            image["path"] = path

    def __len__(self):
        return len(self.images)

    def load_target(self, index):
        """The boxes, labels, iscrowd, area and image id of item ``index`` (no pixels)."""
        annotations = self._annotations[index]
        xywh = np.asarray([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # (G, 4)
        return {
            "boxes": boxes.astype(np.float32),
            "labels": np.asarray([self._label_of[int(a["category_id"])] for a in annotations],
                                 dtype=np.int64),
            "iscrowd": np.asarray([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool),
            "area": np.asarray([float(a.get("area", w * h)) for a, (_, _, w, h)
                                in zip(annotations, xywh)], dtype=np.float32),
            "image_id": self.images[index]["id"],
        }

    def __getitem__(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index = int(index) % len(self)
        info = self.images[index]
        image = read_rgb(info["path"])
        if image.shape[:2] != (info["height"], info["width"]):
            raise ValueError(f"image {info['path']} is {image.shape[1]}x{image.shape[0]} but "
                             f"{self.annotation_file} says {info['width']}x{info['height']}")
        target = self.load_target(index)
        if self.return_masks or self.return_instance_masks:
            height, width = image.shape[:2]
            masks = np.zeros((len(target["labels"]), height, width), dtype=bool)
            for g, ann in enumerate(self._annotations[index]):  # one decode per object
                if "segmentation" not in ann:
                    raise ValueError(f"{self.annotation_file}: annotation {ann.get('id')} has "
                                     "no segmentation, but masks were requested")
                masks[g] = _segmentation_to_mask(ann["segmentation"], height, width,
                                                 f"{self.annotation_file}: annotation "
                                                 f"{ann.get('id')}")
            if self.return_instance_masks:
                target["instance_masks"] = masks
            if self.return_masks:
                # Later annotations on top: the class of the last mask covering a pixel.
                values = np.where(target["iscrowd"], IGNORE_INDEX, target["labels"])
                values = np.concatenate([[0], values]).astype(np.uint8)  # 0: no object
                # (G+1, H, W) with a background layer first; argmax of the reversed stack
                # finds the last object covering each pixel (or the background layer).
                layers = np.concatenate([np.ones((1, height, width), bool), masks])
                top = len(layers) - 1 - np.argmax(layers[::-1], axis=0)  # (H, W)
                target["masks"] = values[top]
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self):
        return f"COCODataset({self.annotation_file!r}, {len(self)} images)"
