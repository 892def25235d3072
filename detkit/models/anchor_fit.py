"""Anchors that fit the objects: how many ground truths a dense stage's anchors reach, and anchor sizes and
aspect ratios fitted to the training boxes.

A ground truth that no anchor overlaps well is learnt only through a low-quality match (its best anchor made
positive, with a poor box to regress from), or not at all. Fitting first finds one multiple of the stride for
all levels, ``size_l = c * stride_l * scale_j`` (the head is shared by all levels, and the same multiple keeps
its job the same on each), with ``c`` chosen to maximise the share of ground truths whose best anchor reaches
the positive IoU threshold, averaged over the classes as COCO's AP is (a rare class of small objects is not
traded for a frequent one). Then each level's multiple moves within half an octave of ``c`` where that raises
the share for the objects that level serves, the levels kept in order (each base size at least ``LEVEL_GAP``
times the finer one's): the compromise between a scale-equivariant head and anchors that fit each level's
objects. The aspect ratios sit at evenly spaced quantiles of the boxes' h / w.

Dims: G ground truths over all images, M of one image, N anchors of one image, L levels, S sizes per level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from detkit.models.dense import DenseAnchorStage
from detkit.models.settings import Anchors, Matching
from detkit.ops import AnchorGenerator, Matcher, box_area, box_iou

SIZE_BUCKETS = (0, 16, 32, 64, 128, 256, math.inf)  # sqrt(box area) in input pixels
STRIDE_MULTIPLES = tuple(2 ** (k / 4) for k in range(-4, 25))  # c from 0.5 to 64, four steps an octave
LEVEL_STEPS = tuple(2 ** (k / 4) for k in range(-2, 3))  # a level's multiple: within half an octave of the shared one
LEVEL_GAP = 2 ** 0.5  # each level's base size at least this many times the finer level's: levels stay ordered


@dataclass
class Coverage:
    """Per ground truth (G,): its best anchor IoU, whether the matcher gives it a positive anchor (low-quality
    matches included), its label and its size sqrt(w * h) in input pixels."""

    best_iou: torch.Tensor
    matched: torch.Tensor
    labels: torch.Tensor
    sizes: torch.Tensor
    matcher: Matcher

    def share_reaching(self, threshold: float, mask: torch.Tensor | None = None) -> float:
        """Share of the ground truths (in ``mask``) whose best anchor has IoU >= threshold; nan if none."""
        values = self.best_iou if mask is None else self.best_iou[mask]
        return float((values >= threshold).float().mean()) if len(values) else math.nan

    def share_matched(self, mask: torch.Tensor | None = None) -> float:
        values = self.matched if mask is None else self.matched[mask]
        return float(values.float().mean()) if len(values) else math.nan

    def missed_per_class(self, num_classes: int) -> torch.Tensor:
        """(K,) int64: per class, the ground truths whose best anchor is below the positive threshold: learnt
        from a low-quality match only, or not at all."""
        return torch.bincount(self.labels[self.best_iou < self.matcher.high_threshold], minlength=num_classes)

    @property
    def poor_share(self) -> float:
        """Share whose best anchor is below the background threshold: no anchor resembles them."""
        return 1.0 - self.share_reaching(self.matcher.low_threshold)

    def rows(self, class_names: list[str]) -> list[tuple[str, int, float, float, float]]:
        """(group, objects, share with best IoU >= fg, share matched with low-quality matches, mean best IoU),
        for all objects, per class and per size bucket (empty groups left out)."""
        groups = [("all", torch.ones_like(self.matched))]
        groups += [(f"class {name}", self.labels == label) for label, name in enumerate(class_names)]
        groups += [(f"size {low}-{high} px" if math.isfinite(high) else f"size >= {low} px",
                    (self.sizes >= low) & (self.sizes < high)) for low, high in zip(SIZE_BUCKETS, SIZE_BUCKETS[1:])]
        return [(name, int(mask.sum()), self.share_reaching(self.matcher.high_threshold, mask),
                 self.share_matched(mask), float(self.best_iou[mask].mean()))
                for name, mask in groups if mask.any()]

    def table(self, class_names: list[str]) -> str:
        header = f"{'':<20} {'objects':>8} {f'IoU>={self.matcher.high_threshold:g}':>9} {'matched':>8} {'mean IoU':>9}"
        lines = [header] + [f"{name:<20} {count:>8} {100 * strict:>8.1f}% {100 * matched:>7.1f}% {mean:>9.3f}"
                            for name, count, strict, matched, mean in self.rows(class_names)]
        return "\n".join(lines)


def anchor_coverage(stage: DenseAnchorStage, image_sizes: list[tuple[int, int]], boxes: list[torch.Tensor],
                    labels: list[torch.Tensor]) -> Coverage:
    """How the stage's anchors and matcher see the ground truth of each image.

    Args:
        image_sizes: per image the padded input size (h, w); boxes: per image (M, 4) xyxy input pixels;
        labels: per image (M,) int64.
    """
    best, matched = [], []
    for size, image_boxes in zip(image_sizes, boxes):
        image_boxes = image_boxes.to(stage.base_sizes.device)
        if len(image_boxes) == 0:
            continue
        iou = box_iou(image_boxes, stage.image_anchors(size))  # (M, N)
        best.append(iou.amax(dim=1))  # (M,)
        assignment = stage.matcher(iou)  # (N,)
        reached = torch.zeros(len(image_boxes), dtype=torch.bool, device=iou.device)
        reached[assignment[assignment >= 0]] = True
        matched.append(reached)
    all_boxes, all_labels = stacked(boxes, labels)
    return Coverage(best_iou=torch.cat(best).cpu() if best else torch.zeros(0),
                    matched=torch.cat(matched).cpu() if matched else torch.zeros(0, dtype=torch.bool),
                    labels=all_labels, sizes=box_area(all_boxes).clamp(min=0).sqrt(), matcher=stage.matcher)


def stacked(boxes: list[torch.Tensor], labels: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image boxes (M, 4) and labels (M,) -> all boxes (G, 4) float32 and labels (G,) int64 (zero-size if none)."""
    labels = labels if labels is not None else [torch.zeros(len(b), dtype=torch.long) for b in boxes]
    all_boxes = torch.cat([torch.zeros(0, 4), *[b.float().cpu() for b in boxes]])  # (G, 4)
    all_labels = torch.cat([torch.zeros(0, dtype=torch.long), *[label.long().cpu() for label in labels]])  # (G,)
    return all_boxes, all_labels


def fitted_aspect_ratios(boxes: list[torch.Tensor], count: int) -> tuple[float, ...]:
    """``count`` ratios h / w at the quantiles (2i + 1) / (2 count) of the boxes' log ratio, rounded to 0.01."""
    all_boxes, _ = stacked(boxes)
    width = (all_boxes[:, 2] - all_boxes[:, 0]).clamp(min=1e-3)
    height = (all_boxes[:, 3] - all_boxes[:, 1]).clamp(min=1e-3)
    if len(all_boxes) == 0:
        return tuple(2.0 ** (2 * i / (count - 1) - 1) if count > 1 else 1.0 for i in range(count))
    log_ratio = (height / width).log().double()  # (G,)
    quantiles = torch.tensor([(2 * i + 1) / (2 * count) for i in range(count)], dtype=torch.float64)
    return tuple(round(float(r), 2) for r in log_ratio.quantile(quantiles).exp())


def fit_anchors(stage: DenseAnchorStage, image_sizes: list[tuple[int, int]], boxes: list[torch.Tensor],
                labels: list[torch.Tensor], per_level: bool = True) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Base anchor sizes (L,) in pixels and aspect ratios (R,) for ``stage`` fitted to the boxes (per image (M, 4)
    xyxy input pixels, with labels (M,)).

    Only what the stage marks for fitting changes: ratios (``fit_ratios``) first, then sizes (``fit_sizes``): the
    stride multiple c (base size c * stride on every level) maximising the class-averaged share of boxes whose best
    anchor reaches the positive threshold (ties: the higher mean best IoU), then, with ``per_level``, each level's
    multiple within half an octave of c (``refine_per_level``); the stage's scales stay as they are.
    """
    ratios = tuple(stage.aspect_ratios.tolist())
    if stage.fit_ratios:
        ratios = fitted_aspect_ratios(boxes, len(ratios))
    base_sizes = tuple(stage.base_sizes.tolist())
    if stage.fit_sizes:
        _, all_labels = stacked(boxes, labels)
        multiple = max(STRIDE_MULTIPLES, key=lambda c: _score(
            stage, tuple(c * s for s in stage.strides), ratios, image_sizes, boxes, all_labels))
        multiples = [multiple] * len(stage.strides)
        if per_level:
            multiples = refine_per_level(stage, multiple, ratios, image_sizes, boxes, all_labels)
        base_sizes = tuple(round(c * stride, 2) for c, stride in zip(multiples, stage.strides))
    return base_sizes, ratios


def refine_per_level(stage: DenseAnchorStage, multiple: float, ratios: tuple[float, ...],
                     image_sizes: list[tuple[int, int]], boxes: list[torch.Tensor], labels: torch.Tensor,
                     rounds: int = 2) -> list[float]:
    """(L,) stride multiples, one per level, from ``multiple`` for all: coordinate ascent, level by level, over
    ``multiple * LEVEL_STEPS`` on the class-averaged share reaching the positive threshold (ties: mean best IoU;
    a level keeps its multiple unless another scores higher), each level's base size ``LEVEL_GAP`` times its finer
    neighbour's or more. labels: (G,) of the stacked boxes."""
    # best IoU (G,) of each level's anchors for each candidate multiple: the ascent then only takes maxima
    candidates = [multiple * step for step in LEVEL_STEPS]
    best = torch.stack([torch.stack([_level_best_iou(stage, level, c * stride, ratios, image_sizes, boxes)
                                     for c in candidates]) for level, stride in enumerate(stage.strides)])  # (L, C, G)
    if best.shape[-1] == 0:
        return [multiple] * len(stage.strides)
    choice = [LEVEL_STEPS.index(1.0)] * len(stage.strides)
    for _ in range(rounds):
        for level in range(len(stage.strides)):
            others = [best[other, choice[other]] for other in range(len(choice)) if other != level]  # L-1 x (G,)
            rest = torch.stack(others).amax(dim=0) if others else torch.zeros(best.shape[-1])  # (G,)
            allowed = [k for k in range(len(candidates)) if _ordered(stage.strides, candidates, choice, level, k)]
            scores = {k: _coverage_score(torch.maximum(rest, best[level, k]), labels, stage.matcher.high_threshold)
                      for k in allowed}
            if scores and max(scores.values()) > scores.get(choice[level], (-1.0, -1.0)):
                choice[level] = max(scores, key=scores.get)
    return [candidates[k] for k in choice]


def _ordered(strides: list[int], candidates: list[float], choice: list[int], level: int, k: int) -> bool:
    """Whether candidate k for ``level`` keeps its base size LEVEL_GAP times its neighbours' apart."""
    size = candidates[k] * strides[level]
    finer = candidates[choice[level - 1]] * strides[level - 1] if level > 0 else 0.0
    coarser = candidates[choice[level + 1]] * strides[level + 1] if level + 1 < len(strides) else float("inf")
    return size >= LEVEL_GAP * finer - 1e-6 and size * LEVEL_GAP <= coarser + 1e-6


def _level_best_iou(stage: DenseAnchorStage, level: int, base_size: float, ratios: tuple[float, ...],
                    image_sizes: list[tuple[int, int]], boxes: list[torch.Tensor]) -> torch.Tensor:
    """(G,) per box (images with boxes, in order) the best IoU with level ``level``'s anchors of ``base_size``."""
    stride = stage.strides[level]
    sizes = tuple(base_size * s for s in stage.scales.tolist())
    generator = AnchorGenerator((sizes,), (ratios,))
    best = [box_iou(b, generator([stage.level_shapes(size)[level]], [stride], torch.device("cpu"))[0]).amax(dim=1)
            for size, b in zip(image_sizes, boxes) if len(b)]
    return torch.cat(best) if best else torch.zeros(0)


def _coverage_score(best: torch.Tensor, labels: torch.Tensor, threshold: float) -> tuple[float, float]:
    """(class-averaged share of best IoUs (G,) >= threshold, mean best IoU)."""
    reached = (best >= threshold).float()  # (G,)
    per_class = [reached[labels == label].mean() for label in labels.unique()]
    return float(torch.stack(per_class).mean()), float(best.mean())


def _score(stage, base_sizes, ratios, image_sizes, boxes, labels) -> tuple[float, float]:
    """(class-averaged share of boxes whose best anchor reaches the fg threshold, mean best IoU) of trial anchors."""
    matcher = stage.matcher
    trial = DenseAnchorStage(strides=stage.strides,
                             anchors=Anchors(sizes=base_sizes, scales=tuple(stage.scales.tolist()),
                                             aspect_ratios=ratios),
                             matching=Matching(matcher.high_threshold, matcher.low_threshold, False),
                             box_loss=stage.box_loss)
    best = [box_iou(b, trial.image_anchors(size)).amax(dim=1) for size, b in zip(image_sizes, boxes) if len(b)]
    if not best:
        return 0.0, 0.0
    return _coverage_score(torch.cat(best), labels, matcher.high_threshold)
