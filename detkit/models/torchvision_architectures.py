"""The six detectors torchvision publishes COCO checkpoints for, as detkit setting groups.

Each entry builds detkit's own ``RetinaNet`` or ``FasterRCNN`` with torchvision's exact architecture and settings
(``torchvision.models.detection.<name>``), so ``detkit.models.torchvision_import.from_torchvision`` can load the
checkpoint into it. K = 90: torchvision's 91 outputs less background (``detkit.data.coco_names``).

Not part of the model: torchvision resizes every image so its short side is ``min_size`` and its long side at most
``max_size`` (``Architecture.min_size`` / ``max_size``), normalises and pads to a multiple of 32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from detkit.data.coco_names import NUM_COCO_LABELS
from detkit.models.faster_rcnn import FasterRCNN
from detkit.models.retinanet import RetinaNet
from detkit.models.settings import (
    OCTAVE_SCALES,
    Anchors,
    Backbone,
    DenseHead,
    DenseLoss,
    Inference,
    Matching,
    Proposals,
    Pyramid,
    RoIHead,
    Sampling,
)

RATIOS = (0.5, 1.0, 2.0)
FPN_SIZES = (32, 64, 128, 256, 512)  # one anchor size per level, P2 (or P3) up
# torchvision's anchors: centres h // H_l, w // W_l apart on every level
TORCHVISION_ANCHORS = dict(aspect_ratios=RATIOS, stride_rule="padded_image")


@dataclass(frozen=True)
class Architecture:
    """One torchvision detector: the detkit class, its setting groups (keyword arguments of the class) and the
    input size torchvision resizes to."""

    detector: type[nn.Module]
    settings: dict[str, Any]
    min_size: int = 800
    max_size: int = 1333


def _retinanet(*, v2: bool) -> Architecture:
    """torchvision's ``retinanet_resnet50_fpn`` (v1) or ``retinanet_resnet50_fpn_v2``."""
    return Architecture(RetinaNet, dict(
        num_classes=NUM_COCO_LABELS,
        # v1 is built with frozen BatchNorm once weights are given; v2 keeps plain BatchNorm
        backbone=Backbone(name="resnet50", norm="bn" if v2 else "frozen_bn", trainable_layers=3),
        fpn=Pyramid(min_level=3, channels=256, extra_levels=2, extra_block="conv_from_input" if v2 else "conv"),
        anchors=Anchors(sizes=FPN_SIZES, scales=OCTAVE_SCALES, whole_pixel_sizes=True, **TORCHVISION_ANCHORS),
        matching=Matching(0.5, 0.4, True),
        head=DenseHead(depth=4, norm="gn" if v2 else None, prior_probability=0.01),
        # torchvision divides each image's loss by its own positive count, then averages the images
        loss=DenseLoss(focal_alpha=0.25, focal_gamma=2.0, box_loss="giou" if v2 else "l1", normalizer_momentum=0.0,
                       normalize_per_image=True),
        inference=Inference(score_threshold=0.05, nms_threshold=0.5, detections_per_image=300, topk_candidates=1000,
                            min_box_size=0.0),
    ))


def _faster_rcnn_resnet(*, v2: bool) -> Architecture:
    """torchvision's ``fasterrcnn_resnet50_fpn`` (v1) or ``fasterrcnn_resnet50_fpn_v2``."""
    return Architecture(FasterRCNN, dict(
        num_classes=NUM_COCO_LABELS,
        backbone=Backbone(name="resnet50", norm="bn" if v2 else "frozen_bn", trainable_layers=3),
        fpn=Pyramid(min_level=2, channels=256, extra_levels=1, extra_block="max_pool", norm="bn" if v2 else None),
        anchors=Anchors(sizes=FPN_SIZES, scales=(1.0,), **TORCHVISION_ANCHORS),
        rpn=_proposals(head_convs=2 if v2 else 1),
        roi=_roi_head(box_head_convs=4 if v2 else 0, box_head_fcs=1 if v2 else 2),
        inference=Inference(score_threshold=0.05, nms_threshold=0.5, detections_per_image=100),
    ))


def _faster_rcnn_mobilenet(*, low_resolution: bool) -> Architecture:
    """torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` or its ``_320_fpn`` variant (smaller input, fewer
    proposals at test time)."""
    test_proposals = dict(pre_nms_top_n_test=150, post_nms_top_n_test=150) if low_resolution else {}
    return Architecture(FasterRCNN, dict(
        num_classes=NUM_COCO_LABELS,
        backbone=Backbone(name="mobilenet_v3_large", norm="frozen_bn", trainable_layers=3),
        fpn=Pyramid(min_level=5, channels=256, extra_levels=1, extra_block="max_pool"),
        # all five sizes on each of the three levels: 15 anchors per location
        anchors=Anchors(sizes=(32, 32, 32), scales=(1.0, 2.0, 4.0, 8.0, 16.0), **TORCHVISION_ANCHORS),
        rpn=_proposals(score_threshold=0.05, **test_proposals),
        roi=_roi_head(),
        inference=Inference(score_threshold=0.05, nms_threshold=0.5, detections_per_image=100),
    ), min_size=320 if low_resolution else 800, max_size=640 if low_resolution else 1333)


def _proposals(**changes) -> Proposals:
    """torchvision's RPN defaults (2000 proposals after NMS in training, 1000 at test), with ``changes``."""
    return Proposals(**(dict(matching=Matching(0.7, 0.3, True), sampling=Sampling(256, 0.5), pre_nms_top_n_train=2000,
                             pre_nms_top_n_test=1000, post_nms_top_n_train=2000, post_nms_top_n_test=1000,
                             nms_threshold=0.7, min_size=1e-3, box_loss="smooth_l1") | changes))


def _roi_head(**changes) -> RoIHead:
    """torchvision's RoI head defaults, with ``changes``."""
    return RoIHead(**(dict(matching=Matching(0.5, 0.5, False), sampling=Sampling(512, 0.25), canonical_scale=224,
                           canonical_level=4, representation_size=1024, box_loss="smooth_l1") | changes))


ARCHITECTURES: dict[str, Architecture] = {
    "retinanet_resnet50_fpn": _retinanet(v2=False),
    "retinanet_resnet50_fpn_v2": _retinanet(v2=True),
    "fasterrcnn_resnet50_fpn": _faster_rcnn_resnet(v2=False),
    "fasterrcnn_resnet50_fpn_v2": _faster_rcnn_resnet(v2=True),
    "fasterrcnn_mobilenet_v3_large_fpn": _faster_rcnn_mobilenet(low_resolution=False),
    "fasterrcnn_mobilenet_v3_large_320_fpn": _faster_rcnn_mobilenet(low_resolution=True),
}


def architecture(arch: str) -> Architecture:
    """The ``Architecture`` of torchvision's detector ``arch``; ValueError naming the six otherwise."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown torchvision architecture {arch!r}; choose from {list(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def detector_settings(arch: str) -> dict[str, Any]:
    """The keyword arguments (``num_classes`` and the setting groups) that build ``arch`` as a detkit detector:
    ``architecture(arch).detector(**detector_settings(arch))``."""
    return dict(architecture(arch).settings)


def build_detector(arch: str) -> nn.Module:
    """detkit's detector of torchvision's architecture ``arch``, randomly initialised."""
    return architecture(arch).detector(**detector_settings(arch))
