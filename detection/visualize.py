"""Drawing detections with matplotlib: boxes with labels and scores, masks, anchors, PR curves.

Every function draws on a matplotlib ``Axes`` and returns it, or, given an image
``(H, W)`` / ``(H, W, C)`` (channels-last, uint8 or float in [0, 1]), first makes a new
figure showing the image. Figures are built with ``matplotlib.figure.Figure``, not
``pyplot``: nothing is displayed and no global state is touched, so this works on a
server; write a figure with ``save_figure(ax.figure, "out/boxes.png")`` (atomic).

Coordinates are image pixels, xyxy, the same as ``detection.boxes``: the pixel (i, j)
covers ``[j, j + 1] x [i, i + 1]``, which is how ``imshow`` places it with
``extent=(0, W, H, 0)``.
"""
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import is_color_like, to_rgba
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from nn.tensor import as_array
from detection.boxes import as_boxes
from detection.metrics.plot import plot_precision_recall, save_figure

__all__ = [
    "show_image", "draw_boxes", "draw_masks", "draw_anchors", "plot_pr_curves",
    "plot_precision_recall", "save_figure", "label_color",
]

_PALETTE = colormaps["tab10"]


def label_color(label):
    """A fixed RGBA color for an integer label (the same label, the same color everywhere)."""
    return _PALETTE(int(label) % 10)


def _image_array(image):
    image = as_array(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(
            f"image must have shape (H, W) or (H, W, 3|4) (channels-last), got {image.shape}"
        )
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError("image contains non-finite values")
        if image.size and image.max() > 1.0:       # a float image in [0, 255]
            image = image / 255.0
        image = np.clip(image, 0.0, 1.0)
    elif image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 or float, got dtype {image.dtype}")
    return image


def show_image(ax, image):
    """Show an image on ``ax`` in pixel coordinates, y down, axes hidden.

    Args:
        ax (matplotlib.axes.Axes): where to draw (e.g. one panel of a multi-panel figure).
        image (ndarray[H, W] or ndarray[H, W, 3|4]): uint8, or float in [0, 1] (or [0, 255]).
    Returns:
        matplotlib.axes.Axes: ``ax``, its view fixed to the image.
    """
    image = _image_array(image)
    height, width = image.shape[:2]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, extent=(0, width, height, 0),
              interpolation="nearest")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_autoscale_on(False)      # boxes reaching past the border do not rescale the view
    ax.set_axis_off()
    return ax


def _axes(target):
    """``target`` if it is an Axes, else a new figure's Axes showing the image ``target``."""
    if hasattr(target, "add_patch") and hasattr(target, "figure"):
        return target
    image = _image_array(target)
    height, width = image.shape[:2]
    scale = 6.0 / max(height, width, 1)
    figure = Figure(figsize=(max(width * scale, 2.0), max(height * scale, 2.0)))
    return show_image(figure.add_axes((0, 0, 1, 1)), image)


def _per_box(values, count, name, kind):
    if values is None:
        return None
    array = as_array(values)
    if array.shape != (count,):
        raise ValueError(f"{name} must have shape ({count},) to match boxes, got {array.shape}")
    if kind == "int" and not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise TypeError(f"{name} must be integers, got dtype {array.dtype}")
    if kind == "float" and not np.isfinite(array.astype(np.float64)).all():
        raise ValueError(f"{name} contains non-finite values")
    return array


def _outlines(boxes, colors, linewidth, alpha=None, linestyle="solid"):
    """All box outlines as one PolyCollection (one artist: 10,000 boxes draw in 0.1 s)."""
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1),
                        np.stack([x2, y2], 1), np.stack([x1, y2], 1)], axis=1)   # (N, 4, 2)
    return PolyCollection(corners, facecolors="none", edgecolors=colors, linewidths=linewidth,
                          alpha=alpha, linestyles=linestyle)


def _name_of(label, class_names):
    if class_names is None:
        return str(int(label))
    try:
        return str(class_names[int(label)])
    except (KeyError, IndexError):
        return str(int(label))


def draw_boxes(target, boxes, labels=None, scores=None, class_names=None, colors=None,
               linewidth=2.0, fontsize=8, score_threshold=None):
    """Draw xyxy boxes, each captioned with its class name and score.

    Args:
        target (Axes or ndarray[H, W(, C)]): where to draw, or an image to show first.
        boxes (ndarray[N, 4]): xyxy boxes in pixels.
        labels (ndarray[N] int, optional): class of each box; sets the color
            (``label_color``) and the caption.
        scores (ndarray[N], optional): shown as ``0.93`` after the name.
        class_names (sequence or dict, optional): label -> name.
        colors (color or sequence of N colors, optional): overrides the label colors.
        linewidth (float): edge width in points.
        fontsize (float): caption size.
        score_threshold (float, optional): draw only boxes with ``score >= threshold``.
    Returns:
        matplotlib.axes.Axes: the axes drawn on; the outlines are one ``PolyCollection``
        (``ax.collections[-1]``), the captions ``ax.texts``.
    """
    boxes = as_boxes(boxes)
    count = len(boxes)
    labels = _per_box(labels, count, "labels", "int")
    scores = _per_box(scores, count, "scores", "float")
    if score_threshold is not None and scores is None:
        raise ValueError("score_threshold needs scores")
    single_color = colors is not None and is_color_like(colors)
    if colors is not None and not single_color and len(colors) != count:
        raise ValueError(f"colors must be one color or {count} colors, got {len(colors)}")
    if colors is None:
        colors = [label_color(v) for v in labels] if labels is not None else ["C0"] * count
    elif single_color:
        colors = [colors] * count
    shown = np.flatnonzero(scores >= score_threshold) if score_threshold is not None \
        else np.arange(count)
    colors = [to_rgba(colors[i]) for i in shown]
    ax = _axes(target)
    ax.add_collection(_outlines(boxes[shown], colors, linewidth))
    bottom, top = ax.get_ylim()  # an image's y axis points down: top is the smaller
    top = min(bottom, top)
    caption_room = 0.06 * abs(ax.get_ylim()[0] - ax.get_ylim()[1])
    for i, color in zip(shown, colors):             # one caption per box shown
        caption = []
        if labels is not None:
            caption.append(_name_of(labels[i], class_names))
        if scores is not None:
            caption.append(f"{float(scores[i]):.2f}")
        if caption:
            # Above the box, or inside it where the box touches the image's top edge
            # (a caption above would be cut off).
            inside = float(boxes[i, 1]) - top < caption_room
            ax.text(float(boxes[i, 0]), float(boxes[i, 1]), " ".join(caption), fontsize=fontsize,
                    color="black" if _luminance(color) > 0.6 else "white",
                    verticalalignment="top" if inside else "bottom",
                    clip_on=True,
                    bbox={"facecolor": color, "edgecolor": "none", "pad": 1.0, "alpha": 0.8})
    return ax


def _luminance(color):
    """Relative luminance of an RGBA colour (0 black, 1 white): dark or light caption text."""
    r, g, b = color[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def draw_masks(target, masks, labels=None, colors=None, alpha=0.5, threshold=0.5):
    """Overlay instance masks (or a label map) in translucent colors.

    Args:
        target (Axes or ndarray[H, W(, C)]): where to draw, or an image to show first.
        masks (ndarray[K, H, W] or ndarray[H, W]): K instance masks (bool, or
            probabilities cut at ``threshold``), or one integer map whose value v > 0
            paints color v (0 is background).
        labels (ndarray[K] int, optional): class of each instance mask, for its color.
        colors (sequence of K colors, optional): overrides the colors.
        alpha (float): opacity of the painted pixels, in [0, 1].
        threshold (float): probability above which a float mask pixel is on.
    Returns:
        matplotlib.axes.Axes: the axes drawn on.
    """
    masks = as_array(masks)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if masks.ndim == 2:
        if not np.issubdtype(masks.dtype, np.integer):
            raise TypeError(
                f"a 2-D masks array must be an integer label map, got dtype {masks.dtype}"
            )
        values = np.unique(masks[masks > 0])
        stack = masks[None, :, :] == values[:, None, None]               # (K, H, W)
        mask_colors = [label_color(v) for v in values]
    elif masks.ndim == 3:
        stack = masks > threshold if np.issubdtype(masks.dtype, np.floating) else masks.astype(bool)
        count = len(stack)
        labels = _per_box(labels, count, "labels", "int")
        if colors is not None:
            if len(colors) != count:
                raise ValueError(f"colors must have {count} entries, got {len(colors)}")
            mask_colors = list(colors)
        elif labels is not None:
            mask_colors = [label_color(v) for v in labels]
        else:
            mask_colors = [label_color(k) for k in range(count)]
    else:
        raise ValueError(f"masks must have shape (K, H, W) or (H, W), got {masks.shape}")
    ax = _axes(target)
    height, width = stack.shape[1:]
    # Where masks overlap the later one is on top: owner = 1 + index of the last mask on.
    numbered = stack * np.arange(1, len(stack) + 1)[:, None, None]      # (K, H, W)
    owner = numbered.max(axis=0, initial=0)                             # (H, W), 0 = none
    table = np.array([(0.0, 0.0, 0.0, 0.0)] + [to_rgba(c, alpha) for c in mask_colors])  # (K+1, 4)
    ax.imshow(table[owner], extent=(0, width, height, 0), interpolation="nearest")
    return ax


def draw_anchors(target, anchors, color="C1", linewidth=1.0, alpha=0.8, show_centers=True):
    """Draw anchor boxes and, optionally, their centers as dots.

    Args:
        target (Axes or ndarray[H, W(, C)]): where to draw, or an image to show first.
        anchors (ndarray[N, 4]): xyxy anchors (e.g. the A anchors of one location per
            pyramid level, picked from ``AnchorGenerator``'s output).
        color: edge color.
        linewidth (float): edge width in points.
        alpha (float): edge opacity.
        show_centers (bool): mark the anchor centers.
    Returns:
        matplotlib.axes.Axes: the axes drawn on (the outlines are one ``PolyCollection``).
    """
    anchors = as_boxes(anchors, "anchors")
    ax = _axes(target)
    ax.add_collection(_outlines(anchors, color, linewidth, alpha=alpha, linestyle="--"))
    if show_centers and len(anchors):
        centers = (anchors[:, :2] + anchors[:, 2:]) / 2
        ax.plot(centers[:, 0], centers[:, 1], ".", color=color, markersize=4)
    return ax


def plot_pr_curves(recalls, precisions, names=None, ax=None, title="Precision-recall"):
    """Precision-recall curves from plain arrays (e.g. VOC curves of any length).

    For COCO's interpolated curves use ``plot_precision_recall`` (re-exported from
    ``detection.metrics``), which takes the dict of ``precision_recall_curve``.

    Args:
        recalls (sequence of ndarray[R_k]): recall of each curve, increasing.
        precisions (sequence of ndarray[R_k]): precision of each curve.
        names (sequence of str, optional): legend entries.
        ax (Axes, optional): axes to draw on; default a new figure's.
        title (str): axes title.
    Returns:
        matplotlib.axes.Axes: the axes drawn on.
    """
    if isinstance(recalls, np.ndarray) and recalls.ndim == 1:
        recalls, precisions = [recalls], [precisions]
    if len(recalls) != len(precisions):
        raise ValueError(f"got {len(recalls)} recall arrays but {len(precisions)} precision arrays")
    if names is not None and len(names) != len(recalls):
        raise ValueError(f"names must have {len(recalls)} entries, got {len(names)}")
    if ax is None:
        ax = Figure(figsize=(5.5, 4.5)).add_subplot()
    for k, (recall, precision) in enumerate(zip(recalls, precisions)):
        recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
        if recall.ndim != 1 or recall.shape != precision.shape:
            raise ValueError(
                f"curve {k}: recall and precision must be 1-D of the same length, got "
                f"{recall.shape} and {precision.shape}"
            )
        ax.step(recall, precision, where="post", label=None if names is None else names[k])
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if names is not None:
        ax.legend(loc="lower left", fontsize="small")
    return ax
