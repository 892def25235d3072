"""A study's ``plot.png``: one panel per entry of ``Study.panels``, drawn from the outcomes of its finished arms.

Panels: "ap" (AP, AP50, AP75 per arm), "speed" (training and inference images/s), "curve:<metrics.csv column>"
(that logged value over the training images seen), "coverage:<key>" (share of the training objects in that
count of the arm's anchor coverage), "sweep" (AP, AP50, AP75 over the swept value, one colour per group).
Drawn with matplotlib's object-oriented API on the Agg canvas, as the evaluation pictures are.
"""
from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure

from detkit.drawing.evaluation import save_figure

AP_METRICS = (("AP", "-"), ("AP50", "--"), ("AP75", ":"))
CHARACTERS_PER_INCH = 14  # of a 10-point title: where to wrap it
SMOOTHING = 5  # logged points averaged in a loss curve: single batches are noisy


def _empty(axes, what: str) -> None:
    axes.text(0.5, 0.5, f"no finished arm with {what}", ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()


def _bars(axes, labels: list[str], series: list[tuple[str, list[float]]], xlabel: str) -> None:
    """Horizontal grouped bars: a row per label (first on top), a bar per series, values written at the ends."""
    height = 0.8 / len(series)
    rows = np.arange(len(labels))
    for index, (name, values) in enumerate(series):
        bars = axes.barh(rows + (index - (len(series) - 1) / 2) * height, values, height=height, label=name)
        axes.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
    axes.set_yticks(rows, labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    axes.margins(x=0.15)
    axes.set_xlim(left=0)
    if len(series) > 1:
        axes.legend(fontsize=8, loc="best")


def ap_panel(axes, outcomes: list[dict], _: str) -> None:
    if not outcomes:
        return _empty(axes, "AP")
    _bars(axes, [o["label"] for o in outcomes],
          [(name, [max(o["record"]["stats"][name], 0.0) for o in outcomes]) for name, _ in AP_METRICS], "val AP")


def speed_panel(axes, outcomes: list[dict], _: str) -> None:
    trained = [o for o in outcomes if o["record"].get("mode") == "train"]
    if not trained:
        return _empty(axes, "a speed")
    _bars(axes, [o["label"] for o in trained],
          [("training", [o["record"]["train_images_per_second"] for o in trained]),
           ("inference", [o["record"]["inference_images_per_second"] for o in trained])], "images/s")


def curve_panel(axes, outcomes: list[dict], column: str) -> None:
    drawn = [o for o in outcomes if (o["record"].get("curves") or {}).get(column)]
    if not drawn:
        return _empty(axes, column)
    for outcome in drawn:
        steps, values = np.array(outcome["record"]["curves"][column], dtype=float).T
        if column.startswith("train/") and len(values) > SMOOTHING:
            values = np.convolve(values, np.ones(SMOOTHING) / SMOOTHING, mode="valid")
            steps = steps[SMOOTHING - 1:]
        axes.plot(steps * outcome["record"]["batch_size"], values, marker="" if column.startswith("train/") else "o",
                  markersize=3, label=outcome["label"])
    if column.startswith("train/"):
        axes.set_yscale("log")  # losses of different arms differ by orders of magnitude (BCE vs focal)
    axes.set_xlabel("training images seen")
    axes.set_ylabel(column + (f" (mean of {SMOOTHING} logged steps)" if column.startswith("train/") else ""))
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)


def coverage_panel(axes, outcomes: list[dict], key: str) -> None:
    covered = [o for o in outcomes if o["record"].get("coverage")]
    if not covered:
        return _empty(axes, "an anchor coverage")
    shares = []
    for outcome in covered:
        coverage = next(iter(outcome["record"]["coverage"].values()))  # RetinaNet's stage, Faster R-CNN's RPN
        shares.append(100 * coverage[key] / max(coverage["objects"], 1))
    titles = {"no_positive": "training objects with no positive anchor (%)",
              "below_half": "training objects with no anchor at IoU >= 0.5 (%)"}
    _bars(axes, [o["label"] for o in covered], [(key, shares)], titles.get(key, f"{key} (% of training objects)"))


def sweep_panel(axes, outcomes: list[dict], _: str) -> None:
    swept = [o for o in outcomes if o["value"] is not None and o["evaluates"] is not None]
    if not swept:
        return _empty(axes, "a swept value")
    for index, group in enumerate(dict.fromkeys(o["group"] for o in swept)):
        points = sorted((o for o in swept if o["group"] == group), key=lambda o: o["value"])
        colour = f"C{index}"  # matplotlib's default colour cycle
        for name, style in AP_METRICS:
            axes.plot([o["value"] for o in points], [o["record"]["stats"][name] for o in points], style, marker="o",
                      markersize=3, color=colour, label=f"{group} {name}")
    axes.set_xlabel("NMS IoU threshold")
    axes.set_ylabel("val AP")
    axes.legend(fontsize=7, ncol=2)
    axes.grid(alpha=0.3)


PANELS = {"ap": ap_panel, "speed": speed_panel, "curve": curve_panel, "coverage": coverage_panel, "sweep": sweep_panel}


def save_study_plot(study, document: dict, path: str) -> None:
    """Draw ``study.panels`` side by side from ``document`` (the results of ``detkit.experiments.runner``) into the
    PNG at ``path``; failed arms are left out."""
    finished = [o for o in document["arms"] if o["status"] != "failed"]
    figure = Figure(figsize=(6.5 * len(study.panels), 4.8), dpi=100, layout="constrained")
    for axes, panel in zip(figure.subplots(1, len(study.panels), squeeze=False)[0], study.panels):
        kind, _, argument = panel.partition(":")
        PANELS[kind](axes, finished, argument)
    title = f"{document['title']}{' (quick version)' if document['quick'] else ''}: {document['budget']}"
    figure.suptitle(textwrap.fill(title, width=int(CHARACTERS_PER_INCH * figure.get_figwidth())), fontsize=10)
    save_figure(figure, path)
