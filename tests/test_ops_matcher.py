"""detkit.ops.Matcher: hand-computed matches, torchvision's Matcher as the oracle, the zero-IoU difference,
and its two ways of finding the gt index (sparse: matched columns only; dense: one max over all columns)."""
import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as tv_utils

from detkit.ops import Matcher
from detkit.ops import matcher as matcher_module

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
    assert int((iou.amax(dim=0) >= iou.amax(dim=1).min()).sum()) < matcher_module._FEW_CANDIDATES * iou.shape[1]
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


@pytest.fixture(params=["sparse", "dense"])
def forced_path(request, monkeypatch):
    """Makes every Matcher call take the given path, whatever the matched share."""
    monkeypatch.setattr(matcher_module, "_sparse_path_is_cheaper", lambda iou, threshold: request.param == "sparse")
    return request.param


def jittered_iou(num_gt: int, num_anchors: int, jitter: float, seed: int) -> torch.Tensor:
    """(num_gt, num_anchors) IoU of gt boxes 16 to 216 px per side with anchors that are each one gt's box,
    its corners moved by jitter x its size (normal): small jitter leaves most anchors matched."""
    generator = torch.Generator().manual_seed(seed)
    top_left = torch.rand(num_gt, 2, generator=generator) * 400
    gt_boxes = torch.cat([top_left, top_left + 16 + torch.rand(num_gt, 2, generator=generator) * 200], dim=1)
    owner = torch.randint(0, num_gt, (num_anchors,), generator=generator)
    sides = (gt_boxes[:, 2:] - gt_boxes[:, :2]).repeat(1, 2)[owner]  # (num_anchors, 4)
    corners = gt_boxes[owner] + torch.randn(num_anchors, 4, generator=generator) * sides * jitter
    anchors = torch.cat([torch.minimum(corners[:, :2], corners[:, 2:]),
                         torch.maximum(corners[:, :2], corners[:, 2:])], dim=1)
    return torchvision.ops.box_iou(gt_boxes, anchors)


def scattered_iou(num_gt: int, num_anchors: int, seed: int) -> torch.Tensor:
    """(num_gt, num_anchors) IoU of unrelated boxes 8 to 88 px per side in a 300 px square: few anchors match."""
    generator = torch.Generator().manual_seed(seed)
    boxes = []
    for n in (num_gt, num_anchors):
        top_left = torch.rand(n, 2, generator=generator) * 300
        boxes.append(torch.cat([top_left, top_left + 8 + torch.rand(n, 2, generator=generator) * 80], dim=1))
    return torchvision.ops.box_iou(*boxes)


def matched_share(iou: torch.Tensor, threshold: float = 0.5) -> float:
    return (iou.amax(dim=0) >= threshold).float().mean().item()


def test_hand_computed_dense_path():
    iou = torch.tensor([
        # anchors: 0    1     2     3     4
        [0.90, 0.60, 0.60, 0.45, 0.10],  # gt 0
        [0.20, 0.60, 0.70, 0.45, 0.30],  # gt 1
        [0.00, 0.10, 0.00, 0.00, 0.30],  # gt 2: best 0.30 on anchor 4, tied there with gt 1
    ])
    assert not matcher_module._sparse_path_is_cheaper(iou, 0.5)
    # anchor 1 ties gt 0 and gt 1 at 0.60 -> gt 0 (the first); 0.45 is ignored; 0.30 is background
    assert torch.equal(Matcher(0.5, 0.4)(iou), torch.tensor([0, 0, 1, -2, -1]))
    # anchor 4 is gt 2's best: promoted, to its own best gt among the tied 1 and 2 -> gt 1 (the first)
    assert torch.equal(Matcher(0.5, 0.4, allow_low_quality_matches=True)(iou), torch.tensor([0, 0, 1, -2, 1]))


def test_path_choice_follows_matched_share():
    dense, scattered = jittered_iou(20, 20_000, 0.1, seed=0), scattered_iou(20, 20_000, seed=0)
    assert matched_share(dense) > 0.9 and matched_share(scattered) < 0.1
    assert not matcher_module._sparse_path_is_cheaper(dense, 0.5)
    assert matcher_module._sparse_path_is_cheaper(scattered, 0.5)
    # the same scattered matrix is dense for a threshold that nearly every anchor clears
    assert not matcher_module._sparse_path_is_cheaper(scattered, 1e-6)
    # matched anchors all in the later half (as on the coarser levels): the share is sampled over all of N
    half = scattered.clone()
    half[:, 10_000:] = dense[:, 10_000:]
    assert 0.45 < matched_share(half) < 0.55 and not matcher_module._sparse_path_is_cheaper(half, 0.5)
    assert not matcher_module._sparse_path_is_cheaper(half.t().contiguous().t(), 0.5)  # any strides
    # one gt, too few anchors for the estimate to pay, or too few IoUs for the sparse path's extra ops to:
    # dense whatever the share
    assert not matcher_module._sparse_path_is_cheaper(scattered_iou(1, 50_000, seed=0), 0.5)
    assert matcher_module._sparse_path_is_cheaper(scattered_iou(2, 50_000, seed=0), 0.5)
    assert not matcher_module._sparse_path_is_cheaper(scattered[:, :10_000], 0.5)
    assert not matcher_module._sparse_path_is_cheaper(scattered[:2], 0.5)


@pytest.mark.parametrize("allow_low_quality_matches", [False, True])
@pytest.mark.parametrize("kind", ["jittered", "scattered"])
@pytest.mark.parametrize("seed", range(3))
def test_both_paths_equal_torchvision_on_boxes(forced_path, kind, seed, allow_low_quality_matches):
    iou = jittered_iou(20, 3000, 0.15, seed) if kind == "jittered" else scattered_iou(20, 3000, seed)
    assert (matched_share(iou) > 0.6) == (kind == "jittered")
    assert bool((iou.amax(dim=1) > 0).all())  # torchvision's Matcher differs where a gt's best IoU is 0
    expected = tv_utils.Matcher(0.5, 0.4, allow_low_quality_matches)(iou)
    assert torch.equal(Matcher(0.5, 0.4, allow_low_quality_matches)(iou), expected)


@pytest.mark.parametrize("allow_low_quality_matches", [False, True])
@pytest.mark.parametrize("low", [0, 8])
@pytest.mark.parametrize("seed", range(3))
def test_both_paths_equal_torchvision_on_quantised_iou(forced_path, low, seed, allow_low_quality_matches):
    """IoUs in twentieths from low / 20 up: ties between gts for an anchor, and among a gt's best anchors,
    are common; low = 8 leaves most anchors matched."""
    generator = torch.Generator().manual_seed(seed)
    iou = torch.randint(low, 20, (9, 400), generator=generator).float() / 20
    iou[seed, :] *= 0.1  # one gt's best anchors are far below the thresholds
    assert bool((iou.amax(dim=1) > 0).all())
    expected = tv_utils.Matcher(0.5, 0.4, allow_low_quality_matches)(iou)
    assert torch.equal(Matcher(0.5, 0.4, allow_low_quality_matches)(iou), expected)


@pytest.mark.parametrize("shape", [(40, 20_000), (3, 50_000), (200, 300)])
def test_both_paths_give_ties_to_the_first_gt(forced_path, shape):
    """Checked against the smallest row index holding the column's max (no max or argmax involved), on
    shapes whose reductions torch vectorises differently; torchvision's Matcher would agree by construction."""
    generator = torch.Generator().manual_seed(7)
    iou = torch.randint(2, 5, shape, generator=generator).float() / 4  # 0.5, 0.75 or 1.0: nearly all tied
    num_gt = shape[0]
    rows = torch.arange(num_gt)[:, None].expand(shape)
    first_best = rows.masked_fill(iou != iou.amax(dim=0), num_gt).amin(dim=0)  # (N,)
    assert torch.equal(Matcher(0.5, 0.4)(iou), first_best)


def test_both_paths_on_non_contiguous_iou(forced_path):
    iou = jittered_iou(20, 3000, 0.15, seed=6)
    strided = iou.t().contiguous().t()  # (M, N) with column-major strides
    for allow in (False, True):
        assert torch.equal(Matcher(0.5, 0.4, allow)(strided), tv_utils.Matcher(0.5, 0.4, allow)(iou))


def test_both_paths_promote_nothing_for_zero_best_iou(forced_path):
    iou = torch.zeros(3, 50)
    iou[0, :40] = 0.9  # most anchors matched to gt 0; gt 1 overlaps nothing; gt 2 only anchor 45, weakly
    iou[2, 45] = 0.2
    expected = torch.full((50,), -1)
    expected[:40], expected[45] = 0, 2
    assert torch.equal(Matcher(0.5, 0.4, allow_low_quality_matches=True)(iou), expected)


@pytest.mark.parametrize("few_candidates", [0.0, 2.0])  # compare all columns / the candidate columns only
@pytest.mark.parametrize("kind", ["jittered", "scattered", "quantised"])
def test_low_quality_search_branches_equal_torchvision(monkeypatch, few_candidates, kind):
    monkeypatch.setattr(matcher_module, "_FEW_CANDIDATES", few_candidates)
    if kind == "quantised":
        iou = torch.randint(0, 20, (9, 400), generator=torch.Generator().manual_seed(4)).float() / 20
        iou[2, :] *= 0.1  # many candidates: anchors with best IoU >= the low gt's best
    else:
        iou = jittered_iou(20, 3000, 0.15, seed=4) if kind == "jittered" else scattered_iou(20, 3000, seed=4)
    assert bool((iou.amax(dim=1) > 0).all())
    expected = tv_utils.Matcher(0.5, 0.4, True)(iou)
    assert torch.equal(Matcher(0.5, 0.4, True)(iou), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_both_paths_half_precision(forced_path, dtype):
    iou = jittered_iou(10, 1000, 0.2, seed=5)
    for allow in (False, True):
        assert torch.equal(Matcher(0.5, 0.4, allow)(iou.to(dtype)), Matcher(0.5, 0.4, allow)(iou.to(dtype).float()))


@requires_cuda
def test_cuda_path_choice_equals_cpu():
    dense, scattered = jittered_iou(20, 20_000, 0.1, seed=0), scattered_iou(20, 20_000, seed=0)
    assert not matcher_module._sparse_path_is_cheaper(dense.cuda(), 0.5)
    assert matcher_module._sparse_path_is_cheaper(scattered.cuda(), 0.5)


@requires_cuda
def test_cuda_equals_torchvision(forced_path):
    generator = torch.Generator().manual_seed(10)
    iou = (torch.randint(0, 20, (30, 5000), generator=generator).float() / 20).cuda()
    for allow in (False, True):
        assert torch.equal(Matcher(0.5, 0.4, allow)(iou), tv_utils.Matcher(0.5, 0.4, allow)(iou))
