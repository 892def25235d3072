"""A config's data as its model will see it, before any training: images and boxes per class, box sizes in input
pixels beside the anchor sizes, and per class the ground truths that no anchor reaches at the positive IoU
threshold. Printed by ``tools/show_data.py``.

Dims: G ground truths of the split, K classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from detkit.engine.anchor_check import dense_stages, fit_auto_anchors
from detkit.models.anchor_fit import Coverage, anchor_coverage, stacked
from detkit.models.dense import DenseAnchorStage
from detkit.ops import box_area

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


@dataclass
class BoxStats:
    """A split's ground truth without augmentation: boxes (G, 4) float32 xyxy input pixels (after the resize)
    and labels (G,) int64, with the number of images and of images that have no box."""

    images: int
    images_without_boxes: int
    boxes: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def of(cls, boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> BoxStats:
        """From per image boxes (M, 4) xyxy input pixels and labels (M,)."""
        all_boxes, all_labels = stacked(boxes, labels)
        return cls(images=len(boxes), images_without_boxes=sum(len(b) == 0 for b in boxes),
                   boxes=all_boxes, labels=all_labels)

    def boxes_per_class(self, num_classes: int) -> torch.Tensor:
        """(K,) int64 box counts."""
        return torch.bincount(self.labels, minlength=num_classes)

    def size_quantiles(self) -> dict[str, list[float]]:
        """Width, height, area (px^2) and sqrt(area) (px, comparable with anchor sizes) at ``QUANTILES``;
        nan when the split has no box."""
        area = box_area(self.boxes)
        values = {"width": self.boxes[:, 2] - self.boxes[:, 0], "height": self.boxes[:, 3] - self.boxes[:, 1],
                  "sqrt(area)": area.clamp(min=0).sqrt(), "area (px^2)": area}
        if len(self.boxes) == 0:
            return {name: [math.nan] * len(QUANTILES) for name in values}
        quantiles = torch.tensor(QUANTILES, dtype=torch.float64)
        return {name: v.double().quantile(quantiles).tolist() for name, v in values.items()}

    def class_table(self, class_names: list[str], missed: dict[str, torch.Tensor]) -> str:
        """Boxes and share per class, and for each ``missed`` column (title -> (K,) counts) the count and share
        of the class's boxes."""
        counts = self.boxes_per_class(len(class_names))
        width = max(len(name) for name in [*class_names, "class"])
        columns = {title: max(24, len(title)) for title in missed}  # title -> column width
        lines = [f"{'class':<{width}} {'boxes':>7} {'share':>7}" + "".join(f"  {t:>{w}}" for t, w in columns.items())]
        rows = [(name, int(counts[k]), {t: int(m[k]) for t, m in missed.items()}) for k, name in enumerate(class_names)]
        rows.append(("all", int(counts.sum()), {t: int(m.sum()) for t, m in missed.items()}))
        for name, count, missed_counts in rows:
            cells = "".join(f"  {n:>{columns[t] - 9}} {'(' + _percent(n, count) + ')':>8}"
                            for t, n in missed_counts.items())
            lines.append(f"{name:<{width}} {count:>7} {_percent(count, int(counts.sum())):>7}{cells}")
        return "\n".join(lines)

    def size_table(self) -> str:
        """One row of ``size_quantiles`` per measure, one column per quantile."""
        header = f"{'box size, input px':<20}" + "".join(f"{_quantile_name(q):>9}" for q in QUANTILES)
        rows = [f"{name:<20}" + "".join(f"{v:>9.1f}" for v in values) for name, values in self.size_quantiles().items()]
        return "\n".join([header, *rows])


@dataclass
class DataReport:
    """``BoxStats`` of a split at an input size (data.min_size / max_size) and, per dense-anchor stage (by
    name), its anchors and their ``Coverage``."""

    split: str
    min_size: int
    max_size: int
    stats: BoxStats
    stages: dict[str, DenseAnchorStage]
    coverages: dict[str, Coverage]

    def missed(self, num_classes: int) -> dict[str, torch.Tensor]:
        """Column title -> (K,) per class the ground truths whose best anchor of that stage is below its fg IoU."""
        return {f"{name}: no anchor IoU>={self.stages[name].matcher.high_threshold:g}":
                coverage.missed_per_class(num_classes) for name, coverage in self.coverages.items()}

    def text(self, class_names: list[str]) -> str:
        """The printout: counts, the class table, the size table, then per stage its anchors and coverage table."""
        stats = self.stats
        parts = [f"{self.split} split: {stats.images} images ({stats.images_without_boxes} without boxes), "
                 f"{len(stats.boxes)} boxes; in input pixels: shorter side resized to {self.min_size}, longer at "
                 f"most {self.max_size} (data.min_size / data.max_size), no augmentation",
                 stats.class_table(class_names, self.missed(len(class_names))), stats.size_table()]
        for name, stage in self.stages.items():
            sizes = [[round(size, 1) for size in level] for level in stage.anchor_sizes.tolist()]
            ratios = [round(ratio, 2) for ratio in stage.aspect_ratios.tolist()]
            parts.append(f"anchors of {name}: sizes per level {sizes} px, aspect ratios (h/w) {ratios}; "
                         f"{stage.matcher}\n{self.coverages[name].table(class_names)}")
        return "\n\n".join(parts)


def data_report(datamodule, detector: torch.nn.Module, split: str = "train", max_images: int | None = None,
                fit_images: int = 1000) -> DataReport:
    """The ``DataReport`` of ``datamodule``'s split for ``detector``'s anchors, on at most ``max_images``
    images evenly spread over the split (all by default).

    Anchors a config marks "auto" are first fitted as training fits them (on ``fit_images`` training images).
    """
    stages = dense_stages(detector)
    if any(stage.needs_fit for _, stage in stages):
        fit_auto_anchors(stages, *datamodule.input_boxes(fit_images))
    sizes, boxes, labels = datamodule.input_boxes(max_images, split=split)
    coverages = {name: anchor_coverage(stage, sizes, boxes, labels) for name, stage in stages}
    return DataReport(split=split, min_size=datamodule.min_size, max_size=datamodule.max_size,
                      stats=BoxStats.of(boxes, labels), stages=dict(stages), coverages=coverages)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _quantile_name(q: float) -> str:
    return {0.0: "min", 1.0: "max"}.get(q, f"{100 * q:g}%")
