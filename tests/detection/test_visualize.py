"""Tests of detection.visualize (matplotlib, no display)."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from detection.metrics import precision_recall_curve  # noqa: E402
from detection.visualize import (  # noqa: E402
    draw_boxes, draw_masks, draw_anchors, plot_pr_curves, plot_precision_recall, save_figure,
    label_color, show_image,
)


def image(height=40, width=60):
    return np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)


def outlines(ax):
    """The (K, 4, 2) corners and (K, 4) RGBA edge colors of the boxes drawn last."""
    collection = ax.collections[-1]
    corners = np.array([path.vertices[:4] for path in collection.get_paths()]).reshape(-1, 4, 2)
    return corners, collection.get_edgecolor()


def test_draw_boxes_on_an_image_makes_a_figure_with_captions(tmp_path):
    boxes = np.array([[2, 3, 20, 30], [10, 5, 50, 35]], np.float32)
    ax = draw_boxes(image(), boxes, labels=np.array([1, 2]), scores=np.array([0.93, 0.5]),
                    class_names=["background", "plate", "digit"])
    corners, edges = outlines(ax)
    assert corners.shape == (2, 4, 2)
    np.testing.assert_array_equal(corners[0], [[2, 3], [20, 3], [20, 30], [2, 30]])
    assert [t.get_text() for t in ax.texts] == ["plate 0.93", "digit 0.50"]
    np.testing.assert_allclose(edges[0], to_rgba(label_color(1)))
    assert ax.get_xlim() == (0, 60) and ax.get_ylim() == (40, 0)     # image view, y down
    path = tmp_path / "sub" / "boxes.png"
    save_figure(ax.figure, path)
    assert path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == ["boxes.png"]   # no temp file left


def test_draw_boxes_on_given_axes_colors_threshold_and_empty():
    ax = Figure().add_subplot()
    boxes = np.array([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], np.float64)
    assert draw_boxes(ax, boxes, scores=np.array([0.9, 0.2, 0.6]), score_threshold=0.5) is ax
    corners, _ = outlines(ax)
    np.testing.assert_array_equal(corners[:, 0], [[0, 0], [2, 2]])
    assert [t.get_text() for t in ax.texts] == ["0.90", "0.60"]
    _, edges = outlines(draw_boxes(Figure().add_subplot(), boxes, colors="red"))
    np.testing.assert_allclose(edges, [to_rgba("red")] * 3)
    _, edges = outlines(draw_boxes(Figure().add_subplot(), boxes, colors=["red", "green", "blue"]))
    np.testing.assert_allclose(edges[2], to_rgba("blue"))
    corners, _ = outlines(draw_boxes(Figure().add_subplot(), np.zeros((0, 4))))
    assert len(corners) == 0
    _, edges = outlines(draw_boxes(Figure().add_subplot(), boxes, labels=np.array([4, 4, 5])))
    assert np.array_equal(edges[0], edges[1]) and not np.array_equal(edges[1], edges[2])
    unnamed = draw_boxes(Figure().add_subplot(), boxes[:1], labels=np.array([7]),
                         class_names={1: "a"})
    assert unnamed.texts[0].get_text() == "7"


def test_draw_boxes_errors():
    ax = Figure().add_subplot()
    with pytest.raises(ValueError, match="labels must have shape"):
        draw_boxes(ax, np.zeros((2, 4)), labels=np.array([1]))
    with pytest.raises(TypeError, match="labels must be integers"):
        draw_boxes(ax, np.zeros((1, 4)), labels=np.array([1.5]))
    with pytest.raises(ValueError, match="scores contains non-finite"):
        draw_boxes(ax, np.zeros((1, 4)), scores=np.array([np.nan]))
    with pytest.raises(ValueError, match="boxes"):
        draw_boxes(ax, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="colors"):
        draw_boxes(ax, np.zeros((2, 4)), colors=["red"])
    with pytest.raises(ValueError, match="score_threshold needs scores"):
        draw_boxes(ax, np.zeros((2, 4)), score_threshold=0.5)
    with pytest.raises(ValueError, match="image must have shape"):
        draw_boxes(np.zeros((2, 3, 4, 5)), np.zeros((0, 4)))
    with pytest.raises(TypeError, match="uint8 or float"):
        draw_boxes(np.zeros((4, 4), np.int32), np.zeros((0, 4)))


def test_float_and_gray_images_are_shown():
    ax = draw_boxes(np.linspace(0, 255, 12 * 16).reshape(12, 16), np.zeros((0, 4)))
    shown = ax.images[0].get_array()
    assert shown.max() <= 1.0 and shown.shape == (12, 16)
    ax = draw_boxes(np.full((5, 6, 1), 0.5, np.float32), np.zeros((0, 4)))
    assert ax.images[0].get_array().shape == (5, 6)


def test_show_image_on_a_panel_fixes_the_view():
    figure = Figure()
    left, right = figure.subplots(1, 2)
    assert show_image(left, image(10, 20)) is left
    draw_boxes(left, np.array([[-50, -50, 100, 100]], np.float32))
    assert left.get_xlim() == (0, 20) and left.get_ylim() == (10, 0)
    assert not left.axison and right.axison


def test_draw_masks_paints_the_mask_pixels():
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 1:4, 1:5] = True
    masks[1, 3:8, 4:10] = True           # overlaps mask 0 at (3, 4): mask 1 is on top
    ax = draw_masks(image(10, 12), masks, labels=np.array([3, 6]), alpha=0.4)
    overlay = np.asarray(ax.images[-1].get_array())
    assert overlay.shape == (10, 12, 4)
    np.testing.assert_allclose(overlay[2, 2], to_rgba(label_color(3), 0.4))
    np.testing.assert_allclose(overlay[3, 4], to_rgba(label_color(6), 0.4))
    assert overlay[9, 0, 3] == 0.0                                # untouched pixel is transparent
    probabilities = masks.astype(np.float32) * 0.8
    ax = draw_masks(Figure().add_subplot(), probabilities, threshold=0.9)
    assert np.asarray(ax.images[-1].get_array())[..., 3].max() == 0.0
    label_map = np.zeros((6, 6), np.int64)
    label_map[1:3, 1:3] = 2
    ax = draw_masks(Figure().add_subplot(), label_map)
    painted = np.asarray(ax.images[-1].get_array())[..., 3] > 0
    np.testing.assert_array_equal(painted, label_map > 0)


def test_draw_masks_errors():
    ax = Figure().add_subplot()
    with pytest.raises(ValueError, match="masks must have shape"):
        draw_masks(ax, np.zeros(5, bool))
    with pytest.raises(TypeError, match="label map"):
        draw_masks(ax, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="alpha"):
        draw_masks(ax, np.zeros((1, 4, 4), bool), alpha=2.0)
    with pytest.raises(ValueError, match="colors"):
        draw_masks(ax, np.zeros((2, 4, 4), bool), colors=["red"])


def test_draw_anchors():
    anchors = np.array([[-8, -8, 8, 8], [-16, -4, 16, 4], [0, 0, 32, 32]], np.float32)
    ax = draw_anchors(image(), anchors, color="yellow")
    corners, _ = outlines(ax)
    np.testing.assert_array_equal(corners[1], [[-16, -4], [16, -4], [16, 4], [-16, 4]])
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[0, 0], [0, 0], [16, 16]])
    assert ax.get_xlim() == (0, 60)                 # anchors past the border do not rescale
    assert len(draw_anchors(Figure().add_subplot(), anchors, show_centers=False).lines) == 0
    with pytest.raises(ValueError, match="anchors"):
        draw_anchors(Figure().add_subplot(), np.zeros((2, 5)))


def test_plot_pr_curves_from_arrays_and_from_metrics():
    ax = plot_pr_curves([np.array([0.0, 0.5, 1.0]), np.array([0.2, 0.4])],
                        [np.array([1.0, 0.8, 0.5]), np.array([1.0, 0.5])], names=["a", "b"])
    assert len(ax.lines) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    single = plot_pr_curves(np.array([0.0, 1.0]), np.array([1.0, 0.5]))
    assert len(single.lines) == 1
    with pytest.raises(ValueError, match="same length"):
        plot_pr_curves([np.array([0.0, 1.0])], [np.array([1.0])])
    with pytest.raises(ValueError, match="names"):
        plot_pr_curves([np.array([0.0])], [np.array([1.0])], names=["a", "b"])

    targets = [{"boxes": np.array([[0, 0, 10, 10]], np.float32), "labels": np.array([1])}]
    predictions = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
                    "scores": np.array([0.9, 0.8], np.float32), "labels": np.array([1, 1])}]
    figure = plot_precision_recall(precision_recall_curve(predictions, targets))
    assert len(figure.axes[0].lines) == 1
