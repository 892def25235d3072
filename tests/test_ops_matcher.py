"""detkit.ops.Matcher: hand-computed matches, torchvision's Matcher as the oracle, the zero-IoU difference."""
import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as tv_utils

from detkit.ops import Matcher

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

IOU = torch.tensor([
    # anchors: 0     1     2     3     4     5
    [0.70, 0.55, 0.10, 0.00, 0.30, 0.30],  # gt 0: best 0.70 (anchor 0)
    [0.20, 0.60, 0.45, 0.00, 0.35, 0.35],  # gt 1: best 0.60 (anchor 1)
    [0.00, 0.00, 0.00, 0.20, 0.20, 0.00],  # gt 2: best 0.20, tied on anchors 3 and 4
])


def test_hand_computed_without_low_quality_matches():
    # best gt per anchor: 0.70 -> gt 0; 0.60 -> gt 1; 0.45 ignored; 0.20 background; 0.35 background; 0.35 bg
    assert torch.equal(Matcher(0.5, 0.4)(IOU), torch.tensor([0, 1, -2, -1, -1, -1]))
    # low == high: nothing is ignored
    assert torch.equal(Matcher(0.5, 0.5)(IOU), torch.tensor([0, 1, -1, -1, -1, -1]))


def test_hand_computed_with_low_quality_matches():
    # gt 2's best anchors (3 and 4, tied at 0.20) become matches, each to its own best gt:
    # anchor 3 -> gt 2, anchor 4 -> gt 1 (0.35 is its best IoU); gt 0 and 1 already have theirs above 0.5
    assert torch.equal(Matcher(0.5, 0.4, allow_low_quality_matches=True)(IOU), torch.tensor([0, 1, -2, 2, 1, -1]))


def test_threshold_boundaries():
    iou = torch.tensor([[0.5, 0.4, 0.39999]])
    assert torch.equal(Matcher(0.5, 0.4)(iou), torch.tensor([0, -2, -1]))  # >= high matches, >= low is ignored


@pytest.mark.parametrize("allow_low_quality_matches", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_equals_torchvision_on_random_iou(allow_low_quality_matches, seed):
    """Quantised IoUs make ties (between gts for an anchor, and among a gt's best anchors) common."""
    generator = torch.Generator().manual_seed(seed)
    iou = torch.randint(0, 20, (7, 300), generator=generator).float() / 20
    iou[:, ::3] = 0  # many anchors overlap nothing
    iou[seed, :] *= 0.1  # one gt overlaps little: its best anchors are far below the thresholds
    expected = tv_utils.Matcher(0.5, 0.4, allow_low_quality_matches)(iou)
    assert torch.equal(Matcher(0.5, 0.4, allow_low_quality_matches)(iou), expected)


@pytest.mark.parametrize("allow_low_quality_matches", [False, True])
def test_equals_torchvision_on_boxes_with_few_candidates(allow_low_quality_matches):
    """Realistic IoUs: every gt overlaps some anchor well, so few anchors can be a gt's best and only their
    columns are compared (the other branch of the low-quality search than the random matrices above)."""
    generator = torch.Generator().manual_seed(11)
    top_left = torch.rand(3000, 2, generator=generator) * 500
    anchors = torch.cat([top_left, top_left + 16 + torch.rand(3000, 2, generator=generator) * 48], dim=1)
    gt_boxes = anchors[:12] + torch.randn(12, 4, generator=generator) * 4
    iou = torchvision.ops.box_iou(gt_boxes, anchors)
    assert 4 * int((iou.amax(dim=0) >= iou.amax(dim=1).min()).sum()) < iou.shape[1]
    expected = tv_utils.Matcher(0.7, 0.3, allow_low_quality_matches)(iou)
    assert torch.equal(Matcher(0.7, 0.3, allow_low_quality_matches)(iou), expected)


def test_gt_with_zero_best_iou_promotes_nothing_unlike_torchvision():
    iou = torch.tensor([
        [0.8, 0.1, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],  # a gt overlapping no anchor at all (e.g. a tiny box between anchors)
    ])
    ours = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert torch.equal(ours, torch.tensor([0, -1, -1, -1]))
    # torchvision promotes every anchor that ties with the zero best IoU, matching them to gt 0
    theirs = tv_utils.Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert torch.equal(theirs, torch.tensor([0, 0, 0, 0]))


def test_all_zero_iou_with_low_quality_matches():
    assert torch.equal(Matcher(0.7, 0.3, True)(torch.zeros(3, 5)), torch.full((5,), -1))


def test_empty_inputs():
    no_gt = Matcher(0.7, 0.3, True)(torch.zeros(0, 6))
    assert no_gt.dtype == torch.int64 and torch.equal(no_gt, torch.full((6,), -1))
    no_anchors = Matcher(0.7, 0.3, True)(torch.zeros(3, 0))
    assert no_anchors.dtype == torch.int64 and no_anchors.shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_iou(dtype):
    generator = torch.Generator().manual_seed(9)
    iou = (torch.rand(5, 200, generator=generator) * 0.9).to(dtype)
    for allow in (False, True):
        assert torch.equal(Matcher(0.6, 0.4, allow)(iou), Matcher(0.6, 0.4, allow)(iou.float()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="low_threshold .* must be <= high_threshold"):
        Matcher(0.3, 0.5)
    with pytest.raises(ValueError, match="IoU matrix"):
        Matcher(0.5, 0.4)(torch.zeros(5))


@requires_cuda
def test_cuda_equals_torchvision():
    generator = torch.Generator().manual_seed(10)
    iou = (torch.randint(0, 20, (30, 5000), generator=generator).float() / 20).cuda()
    for allow in (False, True):
        assert torch.equal(Matcher(0.5, 0.4, allow)(iou), tv_utils.Matcher(0.5, 0.4, allow)(iou))
