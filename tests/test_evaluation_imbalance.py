"""ImbalanceStats: anchor counts per band, objects rescued by low-quality matching, loss shares, by hand."""
import math

import pytest
import torch

from detkit.evaluation.imbalance import ImbalanceStats
from detkit.ops import Matcher

ANCHORS = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],  # IoU 1 with gt 0: positive
    [0.0, 0.0, 10.0, 20.0],  # IoU 0.5 with gt 0: positive
    [0.0, 0.0, 10.0, 22.0],  # IoU 100/220 = 0.45 with gt 0: ignored
    [100.0, 100.0, 110.0, 110.0],  # IoU 40/100 = 0.4 with gt 1: ignored, gt 1's best anchor
    [50.0, 50.0, 60.0, 60.0],  # background
])
GT = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 104.0, 110.0]])


def stats_of(allow_low_quality: bool) -> ImbalanceStats:
    stats = ImbalanceStats(num_classes=3, prior=0.01, focal_alpha=0.25, focal_gamma=2.0)
    matched = stats.add_image(ANCHORS, GT, Matcher(0.5, 0.4, allow_low_quality_matches=allow_low_quality))
    assert matched.tolist() == ([0, 0, -2, 1, -1] if allow_low_quality else [0, 0, -2, -2, -1])
    stats.add_image(ANCHORS, torch.zeros(0, 4), Matcher(0.5, 0.4, allow_low_quality_matches=allow_low_quality))
    return stats


def test_counts_per_band_and_rescued_objects():
    strict = stats_of(False)
    assert (strict.images, strict.objects, strict.anchors) == (2, 2, 10)
    # image 1: 2 positive, 2 ignored, 1 background; image 2 (no objects): 5 background
    assert (strict.positive, strict.ignored, strict.background) == (2, 2, 6)
    assert (strict.objects_without_positive, strict.rescued_objects) == (1, 0)
    lenient = stats_of(True)
    assert (lenient.positive, lenient.ignored, lenient.background) == (3, 1, 6)
    assert (lenient.objects_without_positive, lenient.rescued_objects) == (1, 1)


def test_background_loss_share_by_hand():
    stats = stats_of(False)  # 2 positive, 6 background anchors, K = 3
    p = 0.01
    bce_bg, bce_fg = -math.log(1 - p), -math.log(p)
    background, foreground = 6 * 3 * bce_bg, 2 * (bce_fg + 2 * bce_bg)
    assert stats.background_loss_share(False) == pytest.approx(background / (background + foreground))
    focal_bg, focal_fg = 0.75 * p**2 * bce_bg, 0.25 * (1 - p) ** 2 * bce_fg
    background, foreground = 6 * 3 * focal_bg, 2 * (focal_fg + 2 * focal_bg)
    assert stats.background_loss_share(True) == pytest.approx(background / (background + foreground))
    assert stats.background_loss_share(False, prior=0.5) == pytest.approx(18 / 24)  # every term log 2
    assert stats.background_loss_share(True) < 0.01 < stats.background_loss_share(False)
