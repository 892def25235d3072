"""The evaluation pictures drawn with matplotlib: PR curves, confusion matrix, gallery of the worst images.

Figures are drawn with matplotlib's object-oriented API on the Agg canvas: no pyplot, no window, no change
of the process-wide backend. Imported only when pictures are asked for, so ``import detkit`` stays light.
Every PNG is written to a temporary file and renamed, so a crash never leaves half a picture.
"""
from __future__ import annotations

import contextlib
import math
import os
import textwrap
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from detkit.drawing.boxes import class_colour

if TYPE_CHECKING:
    from detkit.evaluation.matching import ImageMatch

GT_COLOUR = "#39ff14"  # ground truth: dashed in this one colour; predictions: solid in their class colour
DPI = 100


def plot_pr_curves(recall: np.ndarray, precision: np.ndarray, iou_thresholds: Sequence[float],
                   class_names: Sequence[str], path: str) -> None:
    """One panel per class: precision (y) over recall (x), one line per IoU threshold, AP in the legend.

    Args:
        recall: (R,) recall points; precision: (T, K, R) with nan for a class without ground truth
            (``pr_curve_data``); iou_thresholds: the T thresholds; class_names: K names.
    """
    num_classes = len(class_names)
    columns = min(num_classes, max(3, math.ceil(math.sqrt(num_classes))))
    rows = math.ceil(num_classes / columns)
    figure = Figure(figsize=(3.2 * columns, 2.6 * rows + 0.5), dpi=DPI, layout="constrained")
    figure.suptitle("Precision-recall per class (COCOeval's interpolated precision, area all)")
    for k, name in enumerate(class_names):
        axes = figure.add_subplot(rows, columns, k + 1)
        axes.set(title=name, xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        if np.isnan(precision[:, k]).all():
            axes.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=axes.transAxes)
            continue
        for t, iou in enumerate(iou_thresholds):
            axes.plot(recall, precision[t, k], label=f"IoU {iou:.2f}: AP {np.mean(precision[t, k]):.3f}")
        axes.legend(loc="best", fontsize="small")
        axes.grid(alpha=0.3)
    save_figure(figure, path)


def plot_confusion_matrix(counts: np.ndarray, class_names: Sequence[str], rule: str, path: str) -> None:
    """Heat map of ``confusion_counts``: rows ground truth, columns prediction, last of each = background.

    Colour is each row's share (a row's cells sum to 1), the numbers are counts; ``rule`` (the matching
    convention) is printed under the title.
    """
    names = list(class_names) + ["background"]
    size = len(names)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = min(3.0 + 0.55 * size, 30.0)
    figure = Figure(figsize=(side + 1.0, side), dpi=DPI, layout="constrained")
    figure.suptitle("Confusion matrix (numbers: counts; colour: share of the row)\n" + textwrap.fill(
        f"{rule}; background row: false detections; background column: missed objects", 70), fontsize="medium")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(range(size), names, rotation=45, ha="right")
    axes.set_yticks(range(size), names)
    axes.set(xlabel="predicted class", ylabel="ground-truth class")
    if size <= 30:  # beyond that the numbers no longer fit their cells
        for (row, column), count in np.ndenumerate(counts):
            axes.text(column, row, str(count), ha="center", va="center", fontsize="small",
                      color="white" if shares[row, column] > 0.5 else "black")
    save_figure(figure, path)


def plot_worst_images(matches: Sequence[ImageMatch], load_image: Callable[[int], np.ndarray],
                      class_names: Sequence[str], rule: str, path: str, columns: int = 4) -> None:
    """A gallery of ``matches`` (``worst_images``): each image with its ground truth dashed in green (tagged
    "missed" where no detection of its class found it) and its counted detections solid in their class colour
    with "name score" (prefixed "false" where they match no ground truth of their class).

    ``load_image(image_id)`` returns the original image (H, W, 3) uint8, the pixels the boxes are in.
    """
    columns = max(1, min(columns, len(matches)))
    rows = max(1, math.ceil(len(matches) / columns))
    figure = Figure(figsize=(3.4 * columns, 3.6 * rows + 0.6), dpi=DPI, layout="constrained")
    figure.suptitle("Images with the most missed + false boxes: ground truth dashed green, predictions solid in "
                    "class colours\n" + textwrap.fill(f"{rule}; missed: no detection of its class found it; "
                                                      "false: no object of its class", 110), fontsize="medium")
    if not matches:
        figure.text(0.5, 0.5, "no image has a missed or false box", ha="center", va="center")
    for index, match in enumerate(matches):
        axes = figure.add_subplot(rows, columns, index + 1)
        _draw_match(axes, match, load_image(match.image_id), class_names)
    save_figure(figure, path)


def _draw_match(axes, match: ImageMatch, image: np.ndarray, class_names: Sequence[str]) -> None:
    found, correct = match.found, match.correct
    axes.imshow(image)
    axes.set_axis_off()
    axes.set_title(f"image {match.image_id}: {int((~found).sum())} missed, {int((~correct).sum())} false",
                   fontsize="small")
    for box, label, was_found in zip(match.gt_boxes, match.gt_labels, found):
        _box(axes, box, GT_COLOUR, "--")
        if not was_found:
            _tag(axes, box[0], box[3], f"missed {class_names[label]}", GT_COLOUR, va="top")
    for box, score, label, is_correct in zip(match.det_boxes, match.det_scores, match.det_labels, correct):
        colour = tuple(c / 255 for c in class_colour(int(label)))
        _box(axes, box, colour, "-")
        _tag(axes, box[0], box[1], f"{'' if is_correct else 'false '}{class_names[label]} {score:.2f}", colour,
             va="bottom")


def _box(axes, box: np.ndarray, colour, linestyle: str) -> None:
    """Outline one xyxy pixel box on an ``imshow`` axes."""
    x1, y1, x2, y2 = (float(v) for v in box)
    axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linestyle=linestyle,
                             linewidth=1.5))


def _tag(axes, x: float, y: float, text: str, colour, va: str) -> None:
    """Black text on a patch of ``colour`` at pixel (x, y): readable on any image and for any class colour."""
    axes.text(x, y, text, color="black", fontsize=6, va=va, clip_on=True,
              bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0})


def save_figure(figure: Figure, path: str) -> None:
    """Render ``figure`` on the Agg canvas as a PNG at ``path`` via a temporary file and a rename."""
    FigureCanvasAgg(figure)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        figure.savefig(temporary, format="png")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
