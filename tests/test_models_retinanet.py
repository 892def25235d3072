"""RetinaNet end to end: overfits a few images to high COCO AP, its losses against a torchvision oracle,
the ignore band, low-quality matches, background down-weighting, empty images, output format."""
import math

import pytest
import torch
import torchvision
from scenes import (
    SIZE,
    K,
    assert_detections_format,
    coco_ground_truth,
    detect_on_two_sizes,
    empty_target,
    synthetic_batch,
    train_steps,
)
from torchvision.models.detection import _utils as tv_det_utils

from detkit.evaluation import CocoEvaluator
from detkit.models import RetinaNet
from detkit.models.settings import OCTAVE_SCALES, Anchors, Backbone, DenseHead, DenseLoss, Inference, Matching, Pyramid

pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(**groups) -> RetinaNet:
    """A tiny RetinaNet on P3-P5; ``groups`` replace whole setting groups."""
    options = dict(num_classes=K, backbone=Backbone(name="tiny", norm="bn", trainable_layers=5),
                   fpn=Pyramid(min_level=3, channels=32, extra_levels=0),
                   anchors=Anchors(sizes=(16, 32, 64), scales=OCTAVE_SCALES), head=DenseHead(depth=1))
    return RetinaNet(**(options | groups))


def anchors_and_outputs(model: RetinaNet, images: torch.Tensor):
    """All anchors (N, 4) and the raw head outputs: logits (B, N, K) and deltas (B, N, 4)."""
    features = model.backbone(images)
    logits, deltas = model.head(features)
    anchors = model.dense.anchors(features)
    return torch.cat(anchors), torch.cat(logits, 1), torch.cat(deltas, 1)


def test_overfits_a_few_images_to_high_coco_ap():
    torch.manual_seed(0)
    images, targets = synthetic_batch()
    model = small_model()
    train_steps(model, images, targets, steps=60, lr=3e-3)
    with torch.no_grad():
        detections = model(images, [(SIZE, SIZE)] * len(targets))
    evaluator = CocoEvaluator(coco_ground_truth(targets), category_ids=[1, 2, 3])
    for image_id, detection in enumerate(detections, start=1):
        evaluator.update(image_id, detection["boxes"], detection["scores"], detection["labels"])
    result = evaluator.compute(verbose=False)
    assert result.stats["AP50"] > 0.9 and result.stats["AP"] > 0.8, result.summary


def test_losses_equal_a_torchvision_oracle():
    """Focal loss over non-ignored anchors and L1 box loss over positives, both divided by the positive count,
    rebuilt from torchvision's Matcher, BoxCoder and sigmoid_focal_loss."""
    torch.manual_seed(0)
    images, targets = synthetic_batch()
    model = small_model(loss=DenseLoss(box_loss="l1", normalizer_momentum=0.0))
    anchors, logits, deltas = anchors_and_outputs(model, images)
    losses = model.losses(logits, deltas, anchors, targets)

    matcher = tv_det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)
    coder = tv_det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    cls_total, box_total, num_positive = 0.0, 0.0, 0
    for image_logits, image_deltas, target in zip(logits, deltas, targets):
        matched = matcher(torchvision.ops.box_iou(target["boxes"], anchors))  # (N,) -1 background, -2 between
        positive = matched >= 0
        cls_targets = torch.zeros_like(image_logits)
        cls_targets[positive, target["labels"][matched[positive]]] = 1.0
        valid = matched != -2
        cls_total += torchvision.ops.sigmoid_focal_loss(image_logits[valid], cls_targets[valid], reduction="sum")
        target_deltas = coder.encode_single(target["boxes"][matched[positive]], anchors[positive])
        box_total += (image_deltas[positive] - target_deltas).abs().sum()
        num_positive += int(positive.sum())
    assert num_positive > 0
    torch.testing.assert_close(losses["cls"], cls_total / num_positive, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["box"], box_total / num_positive, rtol=1e-5, atol=1e-6)


def test_ignored_anchors_get_no_classification_gradient():
    torch.manual_seed(0)
    images, targets = synthetic_batch()
    model = small_model()
    anchors, logits, deltas = anchors_and_outputs(model, images)
    logits = logits.detach().requires_grad_()
    model.losses(logits, deltas.detach(), anchors, targets)["cls"].backward()
    matched = model.dense.match(anchors, targets)  # (B, N)
    ignored, background = matched == -2, matched == -1
    assert ignored.any() and background.any()
    assert (logits.grad[ignored] == 0).all()
    assert (logits.grad[background].abs().sum(-1) > 0).all()


def test_low_quality_matches_make_each_objects_best_anchor_positive():
    # a thin 6 x 40 box overlaps every square-ish anchor by IoU < 0.4: without low-quality matches nothing is
    # positive for it; with them its best anchor is
    target = {"boxes": torch.tensor([[40.0, 20.0, 46.0, 60.0]]), "labels": torch.tensor([1])}
    anchors_of = lambda model: anchors_and_outputs(model, torch.zeros(1, 3, SIZE, SIZE))[0]  # noqa: E731
    strict = small_model(matching=Matching(allow_low_quality_matches=False),
                         anchors=Anchors(sizes=(16, 32, 64), scales=OCTAVE_SCALES, aspect_ratios=(1.0,)))
    anchors = anchors_of(strict)
    assert torchvision.ops.box_iou(target["boxes"], anchors).max() < 0.4
    assert (strict.dense.match(anchors, [target]) >= 0).sum() == 0
    lenient = small_model(matching=Matching(allow_low_quality_matches=True),
                          anchors=Anchors(sizes=(16, 32, 64), scales=OCTAVE_SCALES, aspect_ratios=(1.0,)))
    matched = lenient.dense.match(anchors, [target])[0]
    best = torchvision.ops.box_iou(target["boxes"], anchors)[0]
    assert torch.equal(torch.nonzero(matched >= 0).squeeze(1), torch.nonzero(best == best.max()).squeeze(1))


def test_background_weight_scales_only_the_background_loss():
    torch.manual_seed(0)
    images, targets = synthetic_batch()
    model = small_model(loss=DenseLoss(normalizer_momentum=0.0))
    anchors, logits, deltas = anchors_and_outputs(model, images)
    empty = [empty_target()] * len(targets)
    full = model.losses(logits, deltas, anchors, empty)["cls"]
    model.loss_settings = DenseLoss(normalizer_momentum=0.0, background_weight=0.25)
    assert torch.allclose(model.losses(logits, deltas, anchors, empty)["cls"], 0.25 * full)
    # with objects, positives keep weight 1: the loss shrinks by less than 4x
    weighted = model.losses(logits, deltas, anchors, targets)["cls"]
    model.loss_settings = DenseLoss(normalizer_momentum=0.0)
    unweighted = model.losses(logits, deltas, anchors, targets)["cls"]
    assert 0.25 * unweighted < weighted < unweighted


def test_empty_images_train_without_nan():
    torch.manual_seed(0)
    images, targets = synthetic_batch()
    model = small_model().train()
    losses = model(images[:2], [(SIZE, SIZE)] * 2, [empty_target(), empty_target()])
    assert set(losses) == {"cls", "box"}
    assert losses["box"].item() == 0.0 and losses["cls"].item() > 0
    sum(losses.values()).backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    mixed = model(images[:2], [(SIZE, SIZE)] * 2, [targets[0], empty_target()])
    assert all(torch.isfinite(v) for v in mixed.values()) and mixed["box"] > 0


def test_classifier_starts_at_the_prior_probability():
    model = small_model().eval()
    assert torch.allclose(model.head.cls_logits.bias.sigmoid(), torch.tensor(0.01))
    _, logits, _ = anchors_and_outputs(model, torch.rand(2, 3, SIZE, SIZE))
    assert math.isclose(logits.sigmoid().mean().item(), 0.01, rel_tol=0.2)


def test_detections_format_in_each_images_pixels():
    # an untrained classifier scores every anchor ~0.01 > 0.005: there are detections to check
    model = small_model(inference=Inference(detections_per_image=30, score_threshold=0.005))
    detections, sizes = detect_on_two_sizes(model)
    assert_detections_format(detections, sizes, max_detections=30, score_threshold=0.005)


def test_bad_configuration_names_the_key():
    with pytest.raises(ValueError,
                       match=r"model\.detector\.init_args\.anchors\.sizes must give one size per pyramid level"):
        small_model(anchors=Anchors(sizes=(16, 32)))
    with pytest.raises(ValueError,
                       match=r"init_args\.matching\.fg_iou_threshold \(0\.3\) must be >= .*bg_iou_threshold"):
        small_model(matching=Matching(0.3, 0.4))
    with pytest.raises(ValueError, match=r"init_args\.loss\.box_loss must be one of"):
        small_model(loss=DenseLoss(box_loss="iou"))
    with pytest.raises(ValueError, match=r"init_args\.num_classes must be >= 1"):
        small_model(num_classes=0)
    with pytest.raises(ValueError, match="needs targets"):
        small_model().train()(torch.zeros(1, 3, 64, 64), [(64, 64)])
