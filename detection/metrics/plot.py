"""Plot precision-recall curves with matplotlib (no pyplot state, no display needed).

The curves come from :func:`detection.metrics.precision_recall_curve`: COCO's
interpolated precision at 101 recall points, one curve per class, whose mean is
the class's AP (the area under the step curve).
"""
import os

import numpy as np
from matplotlib.figure import Figure

from nn.io import atomic_write

__all__ = ["plot_precision_recall", "save_figure"]


def save_figure(figure, path, dpi=100):
    """Write a matplotlib figure atomically (temporary file in the same folder + rename).

    Args:
        figure (matplotlib.figure.Figure): the figure.
        path (str | os.PathLike): destination; its extension picks the format (png, pdf, svg).
        dpi (int): resolution of raster formats.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    os.makedirs(folder, exist_ok=True)
    atomic_write(path, lambda handle: figure.savefig(handle, format=fmt, dpi=dpi))


def plot_precision_recall(curves, class_names=None, ax=None, path=None, title=None):
    """Draw the precision-recall curve of every class that has ground truth.

    Args:
        curves (dict): from :func:`detection.metrics.precision_recall_curve`
            (``labels`` (K,), ``recall`` (R,), ``precision`` (K, R), ``ap`` (K,),
            ``iou_threshold``).
        class_names (dict[int, str] | sequence[str] | None): display name of each
            label (a sequence is indexed by label); default the label number.
        ax (matplotlib.axes.Axes | None): axes to draw on; default a new figure.
        path (str | None): if given, the figure is written there (atomically).
        title (str | None): default "Precision-recall at IoU t".
    Returns:
        matplotlib.figure.Figure: the figure holding the axes.
    """
    for key in ("labels", "recall", "precision", "ap"):
        if key not in curves:
            raise ValueError(
                f"curves is missing key {key!r}; pass the output of precision_recall_curve"
            )
    labels = np.asarray(curves["labels"])
    recall = np.asarray(curves["recall"], np.float64)
    precision = np.asarray(curves["precision"], np.float64)
    if precision.shape != (len(labels), len(recall)):
        raise ValueError(
            f"curves['precision'] must have shape (K, R) = ({len(labels)}, {len(recall)}), "
            f"got {precision.shape}"
        )
    if ax is None:
        figure = Figure(figsize=(5.5, 4.5))
        ax = figure.add_subplot()
    else:
        figure = ax.figure
    for k, label in enumerate(labels.tolist()):
        if curves["ap"][k] < 0:  # no ground truth: no curve
            continue
        name = class_names[label] if class_names is not None else str(label)
        ax.step(recall, precision[k], where="pre", label=f"{name} (AP {curves['ap'][k]:.3f})")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated)")
    thr = curves.get("iou_threshold")
    if title is None:
        title = "Precision-recall" if thr is None else f"Precision-recall at IoU {thr:.2f}"
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize="small")
    if path is not None:
        save_figure(figure, path)
    return figure
