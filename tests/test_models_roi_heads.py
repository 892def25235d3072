"""RoIHeads: sampling share, background column, detections against torchvision, pooling levels."""
import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads as TorchvisionRoIHeads
from torchvision.ops import MultiScaleRoIAlign, box_iou, roi_align

from detkit.models.roi_heads import RoIHeads
from detkit.models.roi_pooler import build_roi_pooler
from detkit.models.settings import Inference, RoIHead, Sampling

K = 3
STRIDES = [8, 16]
IMAGE_SIZES = [(64, 80), (50, 70)]  # batch padded to 64 x 80


def make_heads(inference: Inference = Inference(), **settings) -> RoIHeads:
    """RoI heads on two levels; ``settings`` replace ``RoIHead`` keys."""
    return RoIHeads(in_channels=4, strides=STRIDES, num_classes=K,
                    settings=RoIHead(**({"representation_size": 32} | settings)), inference=inference)


def make_features(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, 64 // s, 80 // s, generator=generator) for s in STRIDES]


def random_boxes(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    """(n, 4) xyxy boxes inside a height x width image, at least 4 px wide and high."""
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=generator) * torch.tensor([width - 4.0, height - 4.0])
    size = 4 + torch.rand(n, 2, generator=generator) * 30
    far = torch.minimum(corner + size, torch.tensor([float(width), float(height)]))
    return torch.cat([corner, far], 1)


def jittered_copies(box: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n, 4) copies of a 40 px box moved by at most 2 px per side: IoU with it > 0.8."""
    generator = torch.Generator().manual_seed(seed)
    return box + (torch.rand(n, 4, generator=generator) * 4 - 2)


def test_sampler_keeps_the_positive_share_and_labels_background_as_k():
    gt = torch.tensor([[10.0, 10.0, 50.0, 50.0], [100.0, 100.0, 140.0, 140.0]])
    labels = torch.tensor([2, 0])
    far = torch.tensor([[200.0, 200.0, 240.0, 240.0]]).repeat(1000, 1) + torch.arange(1000.0)[:, None] % 50
    many_positive = torch.cat([jittered_copies(gt[0], 150, 0), jittered_copies(gt[1], 150, 1), far])
    few_positive = torch.cat([jittered_copies(gt[0], 10, 2), far])
    target = {"boxes": gt, "labels": labels}
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    heads = make_heads(sampling=Sampling(512, 0.25)).train()
    torch.manual_seed(0)
    rois, class_targets, box_targets = heads.select_training_samples([many_positive, few_positive, far[:100]],
                                                                     [target, target, empty])

    counts = [(int((c < K).sum()), int((c == K).sum())) for c in class_targets]
    # 512 * 0.25 = 128 of the 302 positives (gt boxes appended); all 12 = 10 + 2 gt when fewer; no gt: all background
    assert counts == [(128, 384), (12, 500), (0, 100)]
    for roi, classes, boxes in zip(rois, class_targets, box_targets):
        positive = classes < K
        best_gt = box_iou(roi[positive], gt).argmax(1)
        assert torch.equal(classes[positive], labels[best_gt])
        assert torch.equal(boxes[positive], gt[best_gt])
        assert box_iou(roi[~positive], gt).max() < 0.5  # every image has background RoIs here
    assert class_targets[0].dtype == torch.int64


def test_classifier_column_k_is_background():
    heads = make_heads().eval()
    features, proposals = make_features(), [random_boxes(20, 64, 80, 0), random_boxes(20, 50, 70, 1)]
    logits, deltas = heads.predict(features, proposals, IMAGE_SIZES)
    assert logits.shape == (40, K + 1) and deltas.shape == (40, K, 4)
    with torch.no_grad():
        heads.predictor.cls_score.weight.zero_()
        heads.predictor.cls_score.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 20.0]))  # column K wins everywhere
    assert all(len(d["boxes"]) == 0 for d in heads(features, proposals, IMAGE_SIZES))
    with torch.no_grad():
        heads.predictor.cls_score.bias.copy_(torch.tensor([20.0, 0.0, 0.0, 0.0]))  # column 0 is an object class
    detections = heads(features, proposals, IMAGE_SIZES)
    assert all(len(d["labels"]) > 0 and (d["labels"] == 0).all() and (d["scores"] > 0.99).all() for d in detections)

    # in the loss too: on an image without objects every sampled RoI's target is column K
    heads.train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = heads(features, proposals, IMAGE_SIZES, [empty, empty])
    assert losses["roi_cls"].item() == pytest.approx(20.0, abs=1e-3)  # -log softmax(column K) with column 0 at +20
    with torch.no_grad():
        heads.predictor.cls_score.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 20.0]))
    losses = heads(features, proposals, IMAGE_SIZES, [empty, empty])
    assert losses["roi_cls"].item() < 1e-6 and losses["roi_box"].item() == 0.0


def test_detections_equal_torchvision_postprocessing():
    heads = make_heads(inference=Inference(score_threshold=0.05, nms_threshold=0.5, detections_per_image=10)).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in heads.predictor.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    features, proposals = make_features(), [random_boxes(40, 64, 80, 0), random_boxes(30, 50, 70, 1)]
    detections = heads(features, proposals, IMAGE_SIZES)

    # torchvision keeps background in column 0 and has box deltas for it too: rearrange our outputs
    logits, deltas = heads.predict(features, proposals, IMAGE_SIZES)
    tv_logits = torch.cat([logits[:, K:], logits[:, :K]], 1)
    tv_deltas = torch.cat([torch.zeros(len(deltas), 4), deltas.reshape(len(deltas), -1)], 1)
    oracle = TorchvisionRoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 10)
    boxes, scores, labels = oracle.postprocess_detections(tv_logits, tv_deltas, proposals, IMAGE_SIZES)
    for detection, expected_boxes, expected_scores, expected_labels in zip(detections, boxes, scores, labels):
        assert len(expected_boxes) > 0
        torch.testing.assert_close(detection["boxes"], expected_boxes)
        torch.testing.assert_close(detection["scores"], expected_scores)
        assert torch.equal(detection["labels"], expected_labels - 1)


def test_pooler_uses_the_strides_not_a_guess_from_image_sizes():
    pooler = build_roi_pooler([8, 16, 32], canonical_scale=56, canonical_level=4)
    generator = torch.Generator().manual_seed(0)
    features = {str(i): torch.randn(1, 2, 128 // s, 128 // s, generator=generator) for i, s in enumerate([8, 16, 32])}
    # sqrt(area) 20 -> level floor(4 + log2(20/56)) = 2, clamped to 3; 56 -> 4; 112 -> 5; 300 -> 6, clamped to 5
    boxes = torch.tensor([[5.0, 5.0, 25.0, 25.0], [10.0, 20.0, 66.0, 76.0], [8.0, 8.0, 120.0, 120.0],
                          [0.0, 0.0, 300.0, 300.0]])
    expected_level = [0, 1, 2, 2]
    # a 65 px image padded to 128: torchvision's own guess would take the stride-8 map for stride 4
    pooled = pooler(features, [boxes], [(65, 65)])
    for row, level in enumerate(expected_level):
        expected = roi_align(features[str(level)], [boxes[row : row + 1]], 7, spatial_scale=1 / [8, 16, 32][level],
                             sampling_ratio=2)
        torch.testing.assert_close(pooled[row : row + 1], expected)
    guessing = MultiScaleRoIAlign(["0", "1", "2"], 7, 2, canonical_scale=56)
    assert not torch.allclose(guessing(features, [boxes], [(65, 65)]), pooled)
    with pytest.raises(ValueError, match="strides"):
        build_roi_pooler([8, 24])


def test_pooler_equals_torchvision_multiscale_roi_align_with_the_same_levels(threads):
    threads(2)  # detkit.ops.roi_align splits the channels over 2 threads
    strides = [4, 8, 16, 32]
    pooler = build_roi_pooler(strides)
    oracle = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    oracle.scales, oracle.map_levels = pooler.scales, pooler.map_levels
    generator = torch.Generator().manual_seed(0)
    features = {str(i): torch.randn(2, 64, 512 // s, 512 // s, generator=generator) for i, s in enumerate(strides)}
    # 8-500 px boxes, so that every level gets RoIs (P2-P5 for sqrt(area) < 112, < 224, < 448, >= 448)
    sizes = 8 * (500 / 8) ** torch.rand(500, 1, generator=generator)  # (500, 1) log-uniform
    centres = sizes / 2 + torch.rand(500, 2, generator=generator) * (512 - sizes).clamp(min=0)  # (500, 2)
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], 1).split([300, 200])
    assert sorted(set(pooler.map_levels(list(boxes)).tolist())) == [0, 1, 2, 3]
    grad = torch.randn(500, 64, 7, 7, generator=generator)
    results = []
    for module in (pooler, oracle):
        leaves = {name: f.clone().requires_grad_() for name, f in features.items()}
        pooled = module(leaves, list(boxes), [(512, 512), (512, 512)])
        pooled.backward(grad)
        results.append((pooled.detach(), [leaves[name].grad for name in sorted(leaves)]))
    (pooled, grads), (expected, expected_grads) = results
    assert torch.equal(pooled, expected)
    for grad_level, expected_level in zip(grads, expected_grads):
        assert torch.equal(grad_level, expected_level)


def test_out_of_range_labels_are_reported_with_the_image_id():
    heads = make_heads().train()
    bad = {"boxes": torch.tensor([[1.0, 1.0, 20.0, 20.0]]), "labels": torch.tensor([K]), "image_id": 42}
    with pytest.raises(ValueError, match="image 42: labels must be in 0..2"):
        heads.select_training_samples([random_boxes(5, 64, 80, 0)], [bad])
