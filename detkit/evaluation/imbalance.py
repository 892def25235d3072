"""Measure the foreground/background imbalance that a dense (one-stage) detector trains under.

For every image: how many anchors are positive, ignored (the band between the thresholds) and background;
how many ground truths no anchor reaches the positive threshold for (what low-quality matching rescues);
and, for classifier scores all at the initial prior probability, which share of the classification loss
background anchors carry under plain BCE and under focal loss. Uses ``detkit.ops`` only.

Dims: N anchors, M ground truths of one image, K classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from detkit.ops import BACKGROUND, IGNORED, Matcher, box_iou


@dataclass
class ImbalanceStats:
    """Totals over the images passed to ``add_image``; ``rows`` formats them per image."""

    num_classes: int
    prior: float
    focal_alpha: float
    focal_gamma: float
    images: int = 0
    objects: int = 0
    anchors: int = 0
    positive: int = 0
    ignored: int = 0
    background: int = 0
    objects_without_positive: int = 0  # before low-quality matching
    rescued_objects: int = 0  # of those, the ones low-quality matching gives a positive

    def add_image(self, anchors: torch.Tensor, gt_boxes: torch.Tensor, matcher: Matcher) -> torch.Tensor:
        """anchors (N, 4), gt_boxes (M, 4) xyxy pixels; ``matcher``'s thresholds define the bands.

        Returns ``matcher``'s result (N,) int64 (gt index, -1 background, -2 ignored), e.g. for a sampler.
        """
        iou = box_iou(gt_boxes, anchors)  # (M, N)
        strict = Matcher(matcher.high_threshold, matcher.low_threshold, allow_low_quality_matches=False)(iou)  # (N,)
        matched = matcher(iou)  # (N,)
        self.images += 1
        self.objects += len(gt_boxes)
        self.anchors += len(anchors)
        self.positive += int((matched >= 0).sum())
        self.ignored += int((matched == IGNORED).sum())
        self.background += int((matched == BACKGROUND).sum())
        unreached = ~_reached(strict, len(gt_boxes))  # (M,)
        self.objects_without_positive += int(unreached.sum())
        self.rescued_objects += int((unreached & _reached(matched, len(gt_boxes))).sum())
        return matched

    def background_loss_share(self, focal: bool, prior: float | None = None) -> float:
        """Share of the summed classification loss carried by background anchors, every score at ``prior``
        (default: the head's initial prior probability).

        A positive anchor has one positive class and K - 1 negative ones; a background anchor has K negative.
        Ignored anchors carry no loss.
        """
        p = self.prior if prior is None else prior
        loss_positive_class = -math.log(p)  # BCE of a positive target at score p
        loss_negative_class = -math.log(1 - p)
        if focal:
            alpha = self.focal_alpha if self.focal_alpha >= 0 else 0.5
            loss_positive_class *= alpha * (1 - p) ** self.focal_gamma
            loss_negative_class *= (1 - alpha) * p ** self.focal_gamma
        k = self.num_classes
        background = self.background * k * loss_negative_class
        foreground = self.positive * (loss_positive_class + (k - 1) * loss_negative_class)
        return background / (background + foreground) if background + foreground else math.nan

    def rows(self) -> list[tuple[str, str]]:
        """(quantity, value) rows for a printed table."""
        n = max(self.images, 1)
        rows = [
            ("images", f"{self.images}"),
            ("objects per image", f"{self.objects / n:.2f}"),
            ("anchors per image", f"{self.anchors / n:.0f}"),
            ("positive anchors per image",
             f"{self.positive / n:.1f} ({100 * self.positive / max(self.anchors, 1):.2f}%)"),
            ("ignored anchors per image",
             f"{self.ignored / n:.1f} ({100 * self.ignored / max(self.anchors, 1):.2f}%)"),
            ("background anchors per image",
             f"{self.background / n:.0f} ({100 * self.background / max(self.anchors, 1):.2f}%)"),
            ("background : positive", f"{self.background / max(self.positive, 1):.0f} : 1"),
            ("objects with no anchor >= fg threshold", f"{self.objects_without_positive} of {self.objects}"),
            ("  of those given one by low-quality matching", f"{self.rescued_objects}"),
            (f"background share of BCE loss at p={self.prior}", f"{100 * self.background_loss_share(False):.3g}%"),
        ]
        if self.prior != 0.5:
            rows.append(("background share of BCE loss at p=0.5 (bias 0)",
                         f"{100 * self.background_loss_share(False, 0.5):.3g}%"))
        if self.focal_gamma > 0:
            rows.append((f"background share of focal loss at p={self.prior}",
                         f"{100 * self.background_loss_share(True):.3g}%"))
        return rows


def _reached(matched: torch.Tensor, num_gt: int) -> torch.Tensor:
    """(M,) bool: ground truths that some anchor in matched (N,) is assigned to."""
    reached = torch.zeros(num_gt, dtype=torch.bool)
    reached[matched[matched >= 0].unique()] = True
    return reached
