"""Reading a plate: from the digit segmenter's class map of one crop to its text.

Characters are blobs of the class map (``segmentation.instances.connected_instances``).
Reading order is the order a person reads a plate: rows top to bottom, each row left
to right. Rows are found by splitting the characters sorted by their vertical centre
wherever two consecutive centres are further apart than half a character height —
a one-row plate has no such gap, a motorbike's two-row plate has exactly one.

Fragments. In a 32x96 crop a glyph's strokes are one or two pixels wide; a predicted
(or a resampled ground-truth) mask often breaks a character into pieces: the two
halves of a "5", the dot of an "i". ``read_plate`` therefore merges, within a row,
the blobs whose horizontal extents overlap (by more than ``merge_overlap`` of the
narrower one): characters of a plate stand side by side, so pieces stacked in one
column belong to one character. The merged character's class is the vote of all its
pixels. Rows are found with a character height taken from the larger blobs, so that
small pieces do not make the row gap small.

Joined neighbours. Where the segmenter fails to keep a one-pixel gap between two
characters, their blob is about twice as wide as a character. Plate characters stand
at a steady pitch, so ``read_plate`` cuts a blob wider than ``split_width`` (1.6) times
its row's typical character width at its thinnest columns, where the blob narrows
(``split_wide_blobs``; a wide letter is solid across and stays whole).

Specks. A plate's dots are one or two pixels in a small crop, so no blob is too small
to be a character; but a blob much smaller than a character that stands away from all
of them (a reflection at the crop's edge) is dropped (``isolated_specks``).

Measured on a trained digit segmenter's validation crops (1024-px scenes,
``docs/results.md``): 87.3% of the plates read without the cuts, 92.6% with them (66.7%
-> 73.1% at 512 px); the ground-truth maps read 98.1% either way.

Class ids are the segmenter's (``plates.classes.SEGMENTER_CLASSES``).
"""
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from plates.classes import SEGMENTER_CHAR, SEGMENTER_CLASSES, SEGMENTER_DIGITS
from segmentation.instances import connected_instances, reading_order

__all__ = ["read_plate", "merge_fragments", "split_wide_blobs", "isolated_specks",
           "classes_to_text", "text_to_class_text"]

NUM_SEGMENTER_CLASSES = len(SEGMENTER_CLASSES)


def classes_to_text(labels, rows=None, row_separator=" "):
    """Spell segmenter labels: digits as ``'0'..'9'``, ``SEGMENTER_CHAR`` as ``'#'``.

    Args:
        labels (sequence of int): segmenter labels in reading order.
        rows (sequence of int, optional): row of each label; rows are joined by ``row_separator``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    chars = np.where(labels == SEGMENTER_CHAR, "#", "?").astype(object)
    digits = (labels >= SEGMENTER_DIGITS[0]) & (labels <= SEGMENTER_DIGITS[-1])
    chars[digits] = [str(d) for d in labels[digits] - SEGMENTER_DIGITS[0]]
    if rows is None or len(labels) == 0:
        return "".join(chars)
    rows = np.asarray(rows)
    parts = ["".join(chars[rows == r]) for r in np.unique(rows)]
    return row_separator.join(parts)


def text_to_class_text(text, row_separator=" "):
    """The text a perfect segmenter would read: digits kept, every other character ``'#'``.

    Whitespace and newlines (row breaks in the ground-truth text) become one
    ``row_separator``: ``"29-B1\\n123.45"`` reads ``"29##1 123#45"``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    rows = text.split()
    return row_separator.join(
        "".join(c if (c.isdigit() and c.isascii()) else "#" for c in row) for row in rows
    )


def merge_fragments(boxes, rows, overlap=0.3):
    """Group the blobs of each row that stand in one column (pieces of one character).

    Two blobs of the same row are linked when their horizontal extents overlap by more
    than ``overlap`` times the narrower width; groups are the connected components of
    these links (so three stacked pieces form one group).

    Args:
        boxes (ndarray[I, 4]): xyxy blob boxes.
        rows (ndarray[I] int): row of each blob.
        overlap (float): in [0, 1].
    Returns:
        ndarray[I] int64: group id of each blob, ``0 .. G-1``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    rows = np.asarray(rows).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    left, right = boxes[:, 0], boxes[:, 2]
    shared = np.minimum(right[:, None], right[None, :]) - np.maximum(left[:, None], left[None, :])
    narrower = np.minimum((right - left)[:, None], (right - left)[None, :])  # (I, I)
    linked = (shared > overlap * narrower) & (rows[:, None] == rows[None, :])
    _, groups = connected_components(csr_matrix(linked), directed=False)
    return groups.astype(np.int64)


def split_wide_blobs(class_map, masks, boxes, votes, rows, large, ratio=1.6,
                     num_classes=NUM_SEGMENTER_CLASSES, window=0.4, waist=0.8):
    """Cut the blobs much wider than their row's characters into character-wide parts.

    Two neighbours that the segmenter did not keep apart form one blob about twice as
    wide as a character. Plate characters stand in a row at a steady pitch, so a blob
    wider than ``ratio`` times the row's typical character width (the median width of
    its larger blobs) is cut into up to ``k = max(2, round(width / typical))`` parts, each
    cut at the blob's thinnest column (fewest pixels; the nearest to the even split among
    equals) within ``window`` typical widths of where an even split would put it, and
    only where the blob narrows there: that column holds at most ``waist`` times the
    blob's median column height. A wide letter (an "M" beside narrow digits) is solid
    across and stays whole; two joined characters pinch where they meet. The cut
    columns belong to no part. Each part takes the votes of its own pixels.

    Args:
        class_map (ndarray[H, W] int): the class map the blobs come from.
        masks (ndarray[I, H, W] bool), boxes (ndarray[I, 4]), votes (ndarray[I, K] int):
            the blobs (``connected_instances(..., return_masks=True, return_votes=True)``).
        rows (ndarray[I] int): the row of each blob.
        large (ndarray[I] bool): the blobs whose widths set a row's typical width (the
            rest may be dots and pieces); a row with fewer than two of them uses all its
            blobs.
        ratio (float): blobs wider than ``ratio`` x typical are cut (> 1).
        num_classes (int): K.
        window (float): how far from an even split a cut may move, in typical widths.
        waist (float): a cut column holds at most this fraction of the blob's median
            column height (1: cut wherever the width says so).
    Returns:
        tuple: ``(boxes, votes, rows)`` of the blobs after cutting (the uncut ones
        unchanged and in their order, each cut blob's parts left to right in its place).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    widths = boxes[:, 2] - boxes[:, 0]
    out_boxes, out_votes, out_rows = [], [], []
    typical = np.zeros(len(boxes))
    for row in np.unique(rows):
        in_row = rows == row
        reference = in_row & large if (in_row & large).sum() >= 2 else in_row
        typical[in_row] = np.median(widths[reference])
    class_ids = np.asarray(class_map).astype(np.int64)
    for i in range(len(boxes)):
        if widths[i] <= ratio * typical[i]:
            out_boxes.append(boxes[i]), out_votes.append(votes[i]), out_rows.append(rows[i])
            continue
        x0, x1 = int(boxes[i, 0]), int(boxes[i, 2])
        blob = masks[i][:, x0:x1]
        profile = blob.sum(axis=0)
        width = x1 - x0
        parts = int(max(2, round(width / typical[i])))
        cuts = []
        for q in range(1, parts):
            centre = q * width / parts
            lo = max(int(np.floor(centre - window * typical[i])), 1, cuts[-1] + 2 if cuts else 1)
            hi = min(int(np.ceil(centre + window * typical[i])) + 1, width - 1)
            if hi <= lo:
                continue
            columns = np.arange(lo, hi)
            # fewest pixels first, then the column nearest the even split
            cut = int(columns[np.lexsort((np.abs(columns - centre), profile[lo:hi]))[0]])
            if profile[cut] <= waist * np.median(profile[profile > 0]):
                cuts.append(cut)
        edges = [0] + cuts + [width]
        for start, stop in zip(edges[:-1], edges[1:]):
            start = start + 1 if start > 0 else 0  # the cut column itself is left out
            piece = np.zeros_like(masks[i])
            piece[:, x0 + start:x0 + stop] = blob[:, start:stop]
            if not piece.any():
                continue
            ys, xs = np.nonzero(piece)
            out_boxes.append(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32))
            out_votes.append(np.bincount(class_ids[piece], minlength=num_classes)[:num_classes])
            out_rows.append(rows[i])
    if not out_boxes:
        return (np.zeros((0, 4), np.float32), np.zeros((0, num_classes), np.int64),
                np.zeros(0, np.int64))
    return (np.stack(out_boxes).astype(np.float32), np.stack(out_votes).astype(np.int64),
            np.asarray(out_rows, np.int64))


def isolated_specks(boxes, areas, distance=0.5):
    """The blobs that are specks of noise: small and away from every character.

    ``read_plate`` keeps blobs down to a single pixel, because a plate's dots are that
    small in a 40x120 crop; but so are a reflection at the crop's edge or a rivet. The
    difference is where they are: a dot stands next to a character. A blob counts as
    character-sized when its area is at least half the median blob area; a blob is a
    speck when its area is under half the median area of the character-sized ones and
    its box is further than ``distance`` times the character height (the median height
    of the character-sized blobs) from every character-sized box.

    Args:
        boxes (ndarray[I, 4]): xyxy blob boxes; areas (ndarray[I]): their pixel counts.
        distance (float): in character heights (>= 0).
    Returns:
        ndarray[I] bool: True for the specks.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    areas = np.asarray(areas, np.float64).reshape(-1)
    if len(boxes) < 2:
        return np.zeros(len(boxes), bool)
    sized = areas >= 0.5 * np.median(areas)
    height = np.median(boxes[sized, 3] - boxes[sized, 1])
    small = areas < 0.5 * np.median(areas[sized])
    chars = boxes[sized]
    gap_x = np.maximum(0, np.maximum(chars[None, :, 0] - boxes[:, None, 2],
                                     boxes[:, None, 0] - chars[None, :, 2]))  # (I, C)
    gap_y = np.maximum(0, np.maximum(chars[None, :, 1] - boxes[:, None, 3],
                                     boxes[:, None, 1] - chars[None, :, 3]))
    nearest = np.hypot(gap_x, gap_y).min(axis=1)
    return small & (nearest > distance * height)


def _check_optional_number(name, value, bound, strict):
    """ValueError unless ``value`` is None or a number above ``bound`` (``>=`` if not strict)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (value > bound if strict else value >= bound):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be a number {relation} {bound} or None, got {value!r}")


def read_plate(class_map, num_classes=NUM_SEGMENTER_CLASSES, min_area=1, row_gap=0.5,
               merge_overlap=0.3, split_width=1.6, speck_distance=0.5):
    """Read a plate crop's predicted class map as text.

    Blobs (8-connected, at least ``min_area`` pixels, specks away from the characters
    dropped: ``isolated_specks``) are put in rows, blobs much wider
    than their row's characters are cut apart (``split_wide_blobs``: neighbours the
    segmenter joined), pieces of one character are merged (``merge_fragments``), each
    character takes the majority class of its pixels, and the characters are spelt in
    reading order.

    Args:
        class_map (ndarray[H, W] int): the segmenter's per-pixel classes of one plate crop.
        num_classes (int): K.
        min_area (int): smaller blobs are noise (1 keeps every blob: a dot of a plate can
            be a single pixel in a crop).
        row_gap (float): see ``reading_order``; the character height is the median
            height of the larger half of the blobs (pieces are short).
        merge_overlap (float or None): see ``merge_fragments``; None keeps every blob a
            character.
        split_width (float or None): blobs wider than ``split_width`` times their row's
            typical character width are cut where they narrow (``split_wide_blobs``);
            None cuts nothing.
        speck_distance (float or None): small blobs further than this many character
            heights from every character are dropped (``isolated_specks``); None keeps them.
    Returns:
        dict: ``text`` (str, rows separated by a space, other characters as ``'#'``),
        and the characters in reading order: ``labels``, ``boxes`` (the union of their
        pieces), ``scores`` (fraction of pixels voting for the label), ``rows``.
    """
    _check_optional_number("split_width", split_width, 1, strict=True)
    _check_optional_number("speck_distance", speck_distance, 0, strict=False)
    inst = connected_instances(class_map, num_classes=num_classes, min_area=min_area,
                               return_votes=True, return_masks=split_width is not None)
    if speck_distance is not None:
        keep = ~isolated_specks(inst["boxes"], inst["areas"], speck_distance)
        inst = {key: value[keep] for key, value in inst.items()}
    boxes, votes = inst["boxes"], inst["votes"]
    if len(boxes):
        large = inst["areas"] >= np.median(inst["areas"])
        height = float(np.median(boxes[large, 3] - boxes[large, 1]))
        order, rows = reading_order(boxes, row_gap=row_gap, height=height)
        row_of = np.empty(len(boxes), np.int64)
        row_of[order] = rows
        if split_width is not None:
            boxes, votes, row_of = split_wide_blobs(class_map, inst["masks"], boxes, votes,
                                                    row_of, large, split_width, num_classes)
        if merge_overlap is not None:
            groups = merge_fragments(boxes, row_of, merge_overlap)
            count = int(groups.max()) + 1
            member = np.zeros((count, len(boxes)), np.int64)
            member[groups, np.arange(len(boxes))] = 1  # (G, I): one group per blob
            votes = member @ votes  # (G, K) pixels per class of each character
            by_group = np.argsort(groups, kind="stable")
            starts = np.searchsorted(groups[by_group], np.arange(count))
            sorted_boxes = boxes[by_group]
            boxes = np.stack([np.minimum.reduceat(sorted_boxes[:, 0], starts),
                              np.minimum.reduceat(sorted_boxes[:, 1], starts),
                              np.maximum.reduceat(sorted_boxes[:, 2], starts),
                              np.maximum.reduceat(sorted_boxes[:, 3], starts)], axis=1)
            row_of = row_of[by_group][starts]  # every piece of a group has the group's row
        centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
        order = np.lexsort((centre_x, row_of))  # rows top to bottom, then left to right
        rows = row_of[order]
    else:
        order, rows = np.zeros(0, np.int64), np.zeros(0, np.int64)
    labels = votes.argmax(axis=1).astype(np.int64) if len(votes) else np.zeros(0, np.int64)
    totals = np.maximum(votes.sum(axis=1), 1)
    scores = (votes.max(axis=1, initial=0) / totals).astype(np.float32)
    return {
        "text": classes_to_text(labels[order], rows),
        "labels": labels[order],
        "boxes": boxes[order].astype(np.float32),
        "scores": scores[order],
        "rows": rows.astype(np.int64),
    }
