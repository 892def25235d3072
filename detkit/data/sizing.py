"""Input size and pyramid levels from the training boxes: every pixel costs CPU time, so images are made as small
as the smaller objects allow, and the pyramid keeps the levels the objects use.

The rules, all on object sizes ``sqrt(w * h)`` weighed so that every class counts alike (COCO's AP is a mean
over classes, so a rare class of small objects must not be traded for a frequent class of large ones):

- input size: the smallest shorter side that puts the median object at ``median_object_px`` input pixels (3
  strides of the finest level, its smallest anchors) and the ``small_quantile`` object at ``small_object_px``
  (1.5 strides), within [``smallest``, ``largest``] and never enlarging the photos (their median shorter side);
  the longer side follows the photos' median shape. Under a CPU budget images seen weigh more than pixels: a
  128 px run that sees 6.5x the images beat a 320 px one on photos of small fish, both from random init;
- levels: an object of ``s`` input pixels is served best by the level whose anchors are ``s`` (base anchor
  4 x stride), ``round(log2(s / 4))``; the pyramid runs from the level of the ``low_quantile`` object to the level
  of the ``high_quantile`` one, within the levels the trunk and its extra levels can give.

Dims: G boxes, I images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detkit.data.coco import read_coco_json

ANCHOR_PER_STRIDE = 4  # base anchor = 4 x stride (32 px on P3), the COCO recipes' ratio
COARSEST_BACKBONE_LEVEL = 5


@dataclass(frozen=True)
class BoxStatistics:
    """The training boxes and images in original pixels, read from a COCO JSON.

    Attributes: sides (G,) sqrt(w * h); labels (G,) category ids; box_image (G,) the index of each box's image;
    heights, widths (I,) of every image (with or without boxes).
    """

    sides: np.ndarray
    labels: np.ndarray
    box_image: np.ndarray
    heights: np.ndarray
    widths: np.ndarray

    @classmethod
    def from_coco(cls, annotation_file: str) -> BoxStatistics:
        """From a COCO instances JSON (crowd and zero-size boxes left out)."""
        data = read_coco_json(annotation_file)
        index = {image["id"]: i for i, image in enumerate(data["images"])}
        kept = [a for a in data["annotations"] if not a.get("iscrowd") and a["image_id"] in index
                and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        return cls(sides=np.array([math.sqrt(a["bbox"][2] * a["bbox"][3]) for a in kept], dtype=np.float64),
                   labels=np.array([a["category_id"] for a in kept], dtype=np.int64),
                   box_image=np.array([index[a["image_id"]] for a in kept], dtype=np.int64),
                   heights=np.array([image["height"] for image in data["images"]], dtype=np.float64),
                   widths=np.array([image["width"] for image in data["images"]], dtype=np.float64))

    def input_sides(self, min_size: int, max_size: int) -> np.ndarray:
        """(G,) box sides in input pixels after the aspect-preserving resize to (min_size, max_size)."""
        shorter, longer = np.minimum(self.heights, self.widths), np.maximum(self.heights, self.widths)
        scale = np.minimum(min_size / shorter, max_size / longer)  # (I,)
        return self.sides * scale[self.box_image]

    def relative_sides(self) -> np.ndarray:
        """(G,) box sides over their image's shorter side."""
        return self.sides / np.minimum(self.heights, self.widths)[self.box_image]


def class_balanced_quantile(values: np.ndarray, labels: np.ndarray, q: float) -> float:
    """The q-quantile of ``values`` (G,) when each of the G values weighs 1 / (boxes of its class): every class
    counts alike. nan for no values."""
    if len(values) == 0:
        return math.nan
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]  # (G,)
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order]) / weights.sum()  # (G,) rising to 1
    return float(values[order][min(int(np.searchsorted(cumulative, q - 1e-12)), len(values) - 1)])


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple - 1e-9) * multiple)


@dataclass(frozen=True)
class InputSizeRule:
    """How ``choose_input_size`` picks the shorter and longer side (see the module docstring)."""

    small_object_px: float = 12.0
    small_quantile: float = 0.1
    median_object_px: float = 24.0
    smallest: int = 192
    largest: int = 384
    multiple: int = 32


def choose_input_size(stats: BoxStatistics, rule: InputSizeRule = InputSizeRule()) -> tuple[int, int]:
    """(min_size, max_size): the smallest shorter side, rounded up to ``rule.multiple``, at which the
    class-balanced ``small_quantile`` box is ``small_object_px`` and the median box ``median_object_px`` input
    pixels, within [smallest, largest], then capped at the photos' median shorter side (no enlarging); the longer
    side at the photos' median shape (longer / shorter), rounded up."""
    shorter, longer = np.minimum(stats.heights, stats.widths), np.maximum(stats.heights, stats.widths)
    wanted = float(rule.largest)
    if len(stats.sides):
        relative = stats.relative_sides()
        small = class_balanced_quantile(relative, stats.labels, rule.small_quantile)
        median = class_balanced_quantile(relative, stats.labels, 0.5)
        wanted = max(rule.small_object_px / small, rule.median_object_px / median)
    min_size = min(max(_round_up(wanted, rule.multiple), rule.smallest), rule.largest)
    if len(shorter):
        min_size = min(min_size, int(np.median(shorter)))
    shape = float(np.median(longer / shorter)) if len(shorter) else 1.0
    return min_size, max(min_size, _round_up(min_size * shape, rule.multiple))


@dataclass(frozen=True)
class LevelRule:
    """How ``choose_levels`` picks the pyramid (see the module docstring)."""

    low_quantile: float = 0.02
    high_quantile: float = 0.98
    finest: int = 3
    coarsest_first: int = 4  # the pyramid keeps at least two backbone levels
    coarsest: int = 7


def level_of(side_px: float) -> int:
    """The pyramid level whose base anchors (4 x stride) are nearest an object of ``side_px`` pixels, in log scale."""
    return int(math.floor(math.log2(max(side_px, 1e-6) / ANCHOR_PER_STRIDE) + 0.5))


def choose_levels(stats: BoxStatistics, min_size: int, max_size: int, rule: LevelRule = LevelRule()
                  ) -> tuple[int, int]:
    """(min_level, extra_levels) of the pyramid for the boxes at this input size: levels from the one of the
    class-balanced ``low_quantile`` box to the one of the ``high_quantile`` box, the finest within [finest,
    coarsest_first], the coarsest at least the backbone's (5) and at most ``coarsest``."""
    sides = stats.input_sides(min_size, max_size)
    if len(sides) == 0:
        return rule.finest, 1
    low = level_of(class_balanced_quantile(sides, stats.labels, rule.low_quantile))
    high = level_of(class_balanced_quantile(sides, stats.labels, rule.high_quantile))
    min_level = min(max(low, rule.finest), rule.coarsest_first)
    max_level = min(max(high, COARSEST_BACKBONE_LEVEL), rule.coarsest)
    return min_level, max_level - COARSEST_BACKBONE_LEVEL
