"""torchvision's RetinaNet and Faster R-CNN built to equal a detkit detector: the same trunk (a copy, same weights),
anchors, head towers, matcher thresholds, samplers, top-n counts, RoIAlign levels, box head and inference settings,
all read off the detkit model, and its head weights copied, so both compute the same outputs.

What stays different: torchvision's Faster R-CNN box predictor also regresses a background box (4 x
(representation + 1) more parameters); torchvision RetinaNet's post-processing does not drop boxes under 0.01 px;
torchvision's anchor generator infers each level's stride as image size // map size, which shifts the anchors of
P6 / P7 on sizes that are not multiples of their stride (the same number of anchors); losses are normalised
differently (same cost).

torchvision's transform normalises (ImageNet mean / std, as detkit's ``FeaturePyramid`` does inside) and
``SharedTrunk`` skips detkit's normalisation: one normalisation each. min_size / max_size equal the images' size,
so torchvision resizes by a factor of 1 (an identity bilinear pass it always makes) and pads to 32 as detkit's
data does.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from torchvision.models.detection import _utils as tv_utils  # torchvision's Matcher is public only here
from torchvision.models.detection import anchor_utils, faster_rcnn, retinanet, rpn
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import Conv2dNormActivation

from detkit.benchmarks.batches import SIZE_DIVISOR
from detkit.models import FasterRCNN, RetinaNet
from detkit.models.dense import DenseAnchorStage
from detkit.models.fpn import IMAGENET_MEAN, IMAGENET_STD, FeaturePyramid
from detkit.ops import Matcher


class SharedTrunk(nn.Module):
    """detkit's backbone + FPN as a torchvision detection backbone (a deep copy: same weights, own gradients).

    ``forward(images (B, 3, H, W), already normalised by torchvision's transform) -> OrderedDict {"0": P_min,
    "1": ..., } of (B, C, H_l, W_l)``, finest first; ``out_channels`` = C. It runs ``FeaturePyramid``'s body
    and FPN in channels-last, as ``FeaturePyramid.forward`` does, without its normalisation (torchvision's
    transform has done it).
    """

    def __init__(self, pyramid: FeaturePyramid):
        super().__init__()
        self.pyramid = copy.deepcopy(pyramid)
        self.out_channels = pyramid.out_channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.pyramid.fpn(self.pyramid.body(images.contiguous(memory_format=torch.channels_last)))
        return OrderedDict((str(level), feature) for level, feature in enumerate(features))


def copy_parameters(source: nn.Module, target: nn.Module) -> None:
    """Copy ``source``'s parameters into ``target``'s, pairing them in registration order; raise unless
    every pair has the same shape (the two modules are the same layers)."""
    ours, theirs = list(source.parameters()), list(target.parameters())
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours, theirs)):
        raise ValueError(f"{type(source).__name__} and {type(target).__name__} differ: "
                         f"{[tuple(p.shape) for p in ours]} vs {[tuple(p.shape) for p in theirs]}")
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.copy_(a)


def torchvision_anchors(dense: DenseAnchorStage) -> anchor_utils.AnchorGenerator:
    """torchvision's generator with a detkit dense stage's (L, S) ``anchor_sizes`` and (R,) ratios (h / w).

    Both order a location's anchors ratio-major, size-minor, round the centred anchors to whole pixels and
    put cell (x, y) at (x * stride, y * stride): the same anchors where torchvision's stride guess is right.
    """
    sizes = tuple(tuple(level) for level in dense.anchor_sizes.tolist())
    return anchor_utils.AnchorGenerator(sizes, (tuple(dense.aspect_ratios.tolist()),) * len(sizes))


def torchvision_matcher(matcher: Matcher) -> tv_utils.Matcher:
    """torchvision's Matcher with the thresholds and low-quality rule of a ``detkit.ops.Matcher``."""
    return tv_utils.Matcher(matcher.high_threshold, matcher.low_threshold, matcher.allow_low_quality_matches)


def tower_layout(tower: nn.Sequential) -> tuple[int, Callable[[int], nn.Module] | None]:
    """(depth, norm layer factory or None) of a detkit RetinaNet subnet (conv [+ GroupNorm] + ReLU per layer)."""
    depth = sum(isinstance(m, nn.Conv2d) for m in tower)
    norms = [m for m in tower if isinstance(m, nn.GroupNorm)]
    if not norms:
        return depth, None
    groups = norms[0].num_groups
    return depth, lambda channels: nn.GroupNorm(groups, channels)


def torchvision_retinanet_head(ours: RetinaNet) -> retinanet.RetinaNetHead:
    """torchvision's RetinaNet head with ``ours``' tower depth and norm, and its weights."""
    head_ours, channels = ours.head, ours.backbone.out_channels
    depth, norm = tower_layout(head_ours.cls_tower)
    head = retinanet.RetinaNetHead(channels, ours.dense.num_anchors_per_location, ours.num_classes, norm_layer=norm)
    # torchvision's subnets have 4 convs, fixed: replace them by towers of detkit's depth
    head.classification_head.conv = nn.Sequential(
        *[Conv2dNormActivation(channels, channels, norm_layer=norm) for _ in range(depth)])
    head.regression_head.conv = nn.Sequential(
        *[Conv2dNormActivation(channels, channels, norm_layer=norm) for _ in range(depth)])
    # "l1", "smooth_l1", "giou": torchvision has all three, chosen by this attribute only
    head.regression_head._loss_type = ours.dense.box_loss
    copy_parameters(head_ours.cls_tower, head.classification_head.conv)
    copy_parameters(head_ours.cls_logits, head.classification_head.cls_logits)
    copy_parameters(head_ours.box_tower, head.regression_head.conv)
    copy_parameters(head_ours.box_deltas, head.regression_head.bbox_reg)
    return head


def torchvision_retinanet(ours: RetinaNet, size: tuple[int, int]) -> retinanet.RetinaNet:
    """torchvision's RetinaNet with ``ours``' trunk (copied), anchors, head, matching and ``inference`` settings,
    its transform sized to ``size`` (h, w) so that it does not resize."""
    inference = ours.inference
    return retinanet.RetinaNet(
        SharedTrunk(ours.backbone), ours.num_classes, min_size=min(size), max_size=max(size),
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), size_divisible=SIZE_DIVISOR,
        anchor_generator=torchvision_anchors(ours.dense), head=torchvision_retinanet_head(ours),
        proposal_matcher=torchvision_matcher(ours.dense.matcher),
        score_thresh=inference.score_threshold, nms_thresh=inference.nms_threshold,
        detections_per_img=inference.detections_per_image, topk_candidates=inference.topk_candidates)


def torchvision_box_predictor(ours: FasterRCNN) -> faster_rcnn.FastRCNNPredictor:
    """torchvision's box predictor with ``ours``' weights: detkit's background column (the last, K) moves to
    column 0, and torchvision's background box regressor (which detkit has not) starts at zero."""
    k, ours_predictor = ours.num_classes, ours.roi_heads.predictor
    predictor = faster_rcnn.FastRCNNPredictor(ours.roi_heads.box_head.fc7.out_features, k + 1)
    with torch.no_grad():
        ours_cls, ours_box = ours_predictor.cls_score, ours_predictor.bbox_pred
        predictor.cls_score.weight.copy_(torch.cat([ours_cls.weight[k:], ours_cls.weight[:k]]))
        predictor.cls_score.bias.copy_(torch.cat([ours_cls.bias[k:], ours_cls.bias[:k]]))
        predictor.bbox_pred.weight.copy_(torch.cat([torch.zeros_like(ours_box.weight[:4]), ours_box.weight]))
        predictor.bbox_pred.bias.copy_(torch.cat([torch.zeros_like(ours_box.bias[:4]), ours_box.bias]))
    return predictor


def torchvision_faster_rcnn(ours: FasterRCNN, size: tuple[int, int]) -> faster_rcnn.FasterRCNN:
    """torchvision's Faster R-CNN with ``ours``' trunk (copied), RPN (anchors, head weights, matching, sampling,
    top-n, NMS, smallest side), RoIAlign levels, box head and predictor (weights copied), RoI matching and
    sampling, box coder weights and ``inference`` settings, its transform sized to ``size`` (h, w)."""
    channels, proposals, roi = ours.backbone.out_channels, ours.rpn, ours.roi_heads
    rpn_head = rpn.RPNHead(channels, proposals.dense.num_anchors_per_location)
    copy_parameters(proposals.head, rpn_head)  # 3x3 conv, objectness 1x1, deltas 1x1
    pooler = roi.pooler
    pool = MultiScaleRoIAlign([str(level) for level in range(ours.num_roi_levels)], pooler.output_size,
                              pooler.sampling_ratio, canonical_scale=pooler.canonical_scale,
                              canonical_level=pooler.canonical_level)
    box_head = faster_rcnn.TwoMLPHead(roi.box_head.fc6.in_features, roi.box_head.fc7.out_features)
    copy_parameters(roi.box_head, box_head)
    inference = ours.inference
    model = faster_rcnn.FasterRCNN(
        SharedTrunk(ours.backbone), num_classes=None, min_size=min(size), max_size=max(size),
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), size_divisible=SIZE_DIVISOR,
        rpn_anchor_generator=torchvision_anchors(proposals.dense), rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=proposals.pre_nms_top_n[True], rpn_pre_nms_top_n_test=proposals.pre_nms_top_n[False],
        rpn_post_nms_top_n_train=proposals.post_nms_top_n[True],
        rpn_post_nms_top_n_test=proposals.post_nms_top_n[False],
        rpn_nms_thresh=proposals.nms_threshold, rpn_batch_size_per_image=proposals.sampler.batch_size_per_image,
        rpn_positive_fraction=proposals.sampler.positive_fraction,
        box_roi_pool=pool, box_head=box_head, box_predictor=torchvision_box_predictor(ours),
        box_score_thresh=inference.score_threshold, box_nms_thresh=inference.nms_threshold,
        box_detections_per_img=inference.detections_per_image,
        box_batch_size_per_image=roi.sampler.batch_size_per_image, box_positive_fraction=roi.sampler.positive_fraction,
        bbox_reg_weights=roi.box_coder.weights)
    model.rpn.min_size = proposals.min_size  # not a constructor argument (torchvision: 1e-3, detkit's default too)
    # set after construction: the constructor fixes allow_low_quality_matches (RPN on, RoI off), detkit's groups
    # may set either
    model.rpn.proposal_matcher = torchvision_matcher(proposals.dense.matcher)
    model.roi_heads.proposal_matcher = torchvision_matcher(roi.matcher)
    return model


def torchvision_twin(ours: nn.Module, size: tuple[int, int]) -> nn.Module:
    """The torchvision model equal to ``ours`` (a detkit RetinaNet or FasterRCNN) on images of ``size`` (h, w)."""
    if isinstance(ours, RetinaNet):
        return torchvision_retinanet(ours, size)
    if isinstance(ours, FasterRCNN):
        return torchvision_faster_rcnn(ours, size)
    raise TypeError(f"no torchvision twin for {type(ours).__name__}")
