"""detkit.ops.nms: hand-computed suppression, torchvision.ops as the oracle, both batched_nms strategies."""
import importlib

import pytest
import torch
import torchvision

from detkit.ops import batched_nms, box_iou, nms

nms_module = importlib.import_module("detkit.ops.nms")  # `detkit.ops.nms` the attribute is the function

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def random_detections(n: int, num_classes: int, seed: int, extent: float = 500.0):
    """(n, 4) float32 xyxy boxes that overlap often, (n,) distinct scores, (n,) int64 class ids."""
    generator = torch.Generator().manual_seed(seed)
    top_left = torch.rand(n, 2, generator=generator) * extent
    boxes = torch.cat([top_left, top_left + 10 + torch.rand(n, 2, generator=generator) * 100], dim=1)
    scores = torch.randperm(n, generator=generator).float() / n  # distinct: the order is unambiguous
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    return boxes, scores, labels


def reference_batched_nms(boxes, scores, labels, threshold):
    """NMS class by class with torchvision.ops.nms, merged by decreasing score: the definition."""
    kept = [torch.nonzero(labels == c).squeeze(1)[torchvision.ops.nms(boxes[labels == c], scores[labels == c],
                                                                      threshold)]
            for c in labels.unique()]
    kept = torch.cat(kept)
    return kept[scores[kept].argsort(descending=True)]


def test_nms_hand_computed():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],  # 0: score 0.9, kept
        [1.0, 0.0, 11.0, 10.0],  # 1: IoU 9/11 with box 0
        [2.0, 0.0, 12.0, 10.0],  # 2: IoU 2/3 with box 0, 9/11 with box 1
        [9.0, 0.0, 19.0, 10.0],  # 3: IoU 1/19 with box 0, 1/9 with 1, 3/17 with 2
        [50.0, 50.0, 60.0, 60.0],  # 4: alone -> kept
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95])
    assert torch.equal(nms(boxes, scores, 0.5), torch.tensor([4, 0, 3]))
    assert torch.equal(nms(boxes, scores, 0.85), torch.tensor([4, 0, 1, 2, 3]))  # no IoU above 0.85
    # 1 is suppressed by 0 (9/11 > 0.8); 2 overlaps 1 by 9/11 too, but a suppressed box suppresses nothing
    assert torch.equal(nms(boxes, scores, 0.8), torch.tensor([4, 0, 2, 3]))


def test_nms_threshold_is_strict():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8])
    assert box_iou(boxes[:1], boxes[1:]).item() == 0.5
    assert torch.equal(nms(boxes, scores, 0.5), torch.tensor([0, 1]))
    assert torch.equal(nms(boxes, scores, 0.49), torch.tensor([0]))


@pytest.mark.parametrize("n", [50, 2000])
@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_nms_equals_torchvision(n, threshold):
    boxes, scores, _ = random_detections(n, 1, seed=n, extent=n / 4)
    expected = torchvision.ops.nms(boxes, scores, threshold)
    assert 0 < len(expected) < n
    assert torch.equal(nms(boxes, scores, threshold), expected)


def clustered_detections(n: int, num_objects: int, seed: int):
    """(n, 4) boxes jittered around num_objects objects, as a detector proposes them, and (n,) scores."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(num_objects, 2, generator=generator) * 800
    sizes = 20 + torch.rand(num_objects, 2, generator=generator) * 150
    which = torch.randint(0, num_objects, (n,), generator=generator)
    centre = centres[which] + torch.randn(n, 2, generator=generator) * sizes[which] * 0.1
    half_size = sizes[which] * (1 + torch.randn(n, 2, generator=generator) * 0.1) / 2
    return torch.cat([centre - half_size, centre + half_size], dim=1), torch.rand(n, generator=generator)


@pytest.mark.parametrize("num_objects", [5, 300])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.9])
def test_blocked_nms_on_clustered_boxes_equals_torchvision(num_objects, threshold):
    """3000 boxes take the blocked path; few objects keep few boxes (growing blocks), many keep many."""
    boxes, scores = clustered_detections(3000, num_objects, seed=num_objects)
    assert len(boxes) >= nms_module.BLOCKED_MIN_BOXES
    assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


@pytest.mark.parametrize("block_boxes, max_block_boxes", [(1, 1), (7, 50)])
def test_blocked_nms_with_tiny_blocks_equals_torchvision(monkeypatch, block_boxes, max_block_boxes):
    """Blocks of one box: every decision goes through the vectorised IoU test; 7 growing to 50: both parts."""
    monkeypatch.setattr(nms_module, "BLOCKED_MIN_BOXES", 0)
    monkeypatch.setattr(nms_module, "BLOCK_BOXES", block_boxes)
    monkeypatch.setattr(nms_module, "MAX_BLOCK_BOXES", max_block_boxes)
    for boxes, scores in (random_detections(300, 1, seed=8)[:2], clustered_detections(300, 4, seed=9)):
        for threshold in (0.4, 0.7):
            assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))
    boxes, scores, _ = random_detections(200, 1, seed=10)
    assert torch.equal(nms(boxes.double(), scores.double(), 0.5),
                       torchvision.ops.nms(boxes.double(), scores.double(), 0.5))


def test_blocked_nms_compares_the_threshold_like_the_kernel(monkeypatch):
    """The kernel tests float IoU > double threshold. A threshold just below an IoU x (not a float32 itself)
    must suppress, though it rounds to x in float32, where x > x would not."""
    monkeypatch.setattr(nms_module, "BLOCKED_MIN_BOXES", 0)
    monkeypatch.setattr(nms_module, "BLOCK_BOXES", 1)  # the second box is decided by the vectorised test
    boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]])  # IoU 2/4 = 0.5, exact
    scores = torch.tensor([0.9, 0.8])
    iou = box_iou(boxes[:1], boxes[1:]).item()
    just_below = iou - 1e-12
    assert torch.tensor(just_below, dtype=torch.float32).item() == iou
    for threshold in (iou, just_below):
        assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))
    assert torch.equal(nms(boxes, scores, just_below), torch.tensor([0]))


def test_nms_with_tied_scores_equals_torchvision():
    boxes, _, _ = random_detections(3000, 1, seed=11)
    scores = torch.randint(0, 30, (3000,), generator=torch.Generator().manual_seed(12)).float()  # many ties
    assert torch.equal(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_the_indices_of_the_same_values_in_float32(dtype):
    boxes, scores, labels = random_detections(1500, 20, seed=1, extent=2000.0)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    expected = torchvision.ops.nms(boxes.float(), scores.float(), 0.5)
    assert torch.equal(nms(boxes, scores, 0.5), expected)
    expected = torchvision.ops.batched_nms(boxes.float(), scores.float(), labels, 0.5)
    assert torch.equal(batched_nms(boxes, scores, labels, 0.5), expected)


def test_empty_inputs():
    for keep in (nms(torch.zeros(0, 4), torch.zeros(0), 0.5),
                 batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)):
        assert keep.dtype == torch.int64 and keep.shape == (0,)


def test_batched_nms_hand_computed():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [1.0, 0.0, 11.0, 10.0],
                          [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    labels = torch.tensor([0, 0, 1, 1])  # overlapping boxes of different classes never suppress each other
    assert torch.equal(batched_nms(boxes, scores, labels, 0.5), torch.tensor([3, 0]))
    assert torch.equal(batched_nms(boxes, scores, labels, 0.9), torch.tensor([3, 0, 1, 2]))


@pytest.mark.parametrize("n, num_classes", [(300, 5), (1000, 80), (1001, 80), (4000, 7)])
def test_batched_nms_equals_torchvision_and_the_per_class_definition(n, num_classes):
    """Sizes on both sides of the strategy switch (one separated call up to 1000 boxes, per class above)."""
    boxes, scores, labels = random_detections(n, num_classes, seed=n)
    keep = batched_nms(boxes, scores, labels, 0.5)
    assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, labels, 0.5))
    assert torch.equal(keep, reference_batched_nms(boxes, scores, labels, 0.5))


@pytest.mark.parametrize("n", [500, 3000])
def test_batched_nms_far_from_the_origin_equals_the_per_class_definition(n):
    """Small boxes near 1e4 pixels in 80 classes: float32 class offsets (up to ~8e5) would round their
    coordinates by ~0.06 pixels and change IoUs near the threshold; both strategies here stay exact."""
    boxes, scores, labels = random_detections(n, 80, seed=7, extent=40.0)
    boxes = boxes / 10 + 9900.0  # 1..11 pixel boxes, heavily overlapping, near x, y = 1e4
    for threshold in (0.3, 0.5, 0.7):
        assert torch.equal(batched_nms(boxes, scores, labels, threshold),
                           reference_batched_nms(boxes, scores, labels, threshold))


def test_batched_nms_with_tied_scores_equals_torchvision():
    boxes, _, labels = random_detections(3000, 10, seed=3)
    scores = torch.randint(0, 20, (3000,), generator=torch.Generator().manual_seed(4)).float()  # many ties
    assert torch.equal(batched_nms(boxes, scores, labels, 0.5), torchvision.ops.batched_nms(boxes, scores, labels, 0.5))


def test_strategies_agree_when_forced(monkeypatch):
    boxes, scores, labels = random_detections(800, 30, seed=5)
    monkeypatch.setattr(nms_module, "SEPARATED_CALL_MAX_BOXES_CPU", 10_000)
    separated = batched_nms(boxes, scores, labels, 0.6)
    monkeypatch.setattr(nms_module, "SEPARATED_CALL_MAX_BOXES_CPU", 0)
    assert torch.equal(batched_nms(boxes, scores, labels, 0.6), separated)


def test_wrong_shapes_are_rejected():
    with pytest.raises(ValueError, match="scores must have shape"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="idxs must have shape"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.int64), 0.5)


@requires_cuda
def test_cuda_equals_torchvision():
    boxes, scores, labels = random_detections(3000, 80, seed=6)
    boxes, scores, labels = boxes.cuda(), scores.cuda(), labels.cuda()
    assert torch.equal(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))
    assert torch.equal(nms(boxes.half(), scores.half(), 0.5),
                       torchvision.ops.nms(boxes.half().float(), scores.half().float(), 0.5))
    assert torch.equal(batched_nms(boxes, scores, labels, 0.5).cpu(),
                       reference_batched_nms(boxes.cpu(), scores.cpu(), labels.cpu(), 0.5))
