"""Faster R-CNN with FPN (Ren et al., 2015; Lin et al., 2017): the two-stage detector.

Backbone + FPN -> region proposal network (``rpn.py``) on every pyramid level -> RoIAlign of the
proposals on the backbone's levels -> box classifier and class-specific box refinement (``roi_heads.py``).
Extra pyramid levels (``num_extra_levels``, e.g. P6) feed the RPN only, as in the FPN paper.

LABEL CONVENTION (stated in ``detkit/data/categories.py``): targets and detections carry labels
0..K-1. The RoI classifier has K + 1 columns internally; column K, the last, is background.

Dims: B images, K object classes, M ground truths of one image, D detections of one image.
"""
from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from detkit.models.box_loss import BOX_LOSSES
from detkit.models.config_checks import check_at_least_one, check_iou_thresholds, check_unit_interval
from detkit.models.dense import anchor_shapes
from detkit.models.fpn import FeaturePyramid
from detkit.models.roi_heads import RoIHeads
from detkit.models.rpn import RegionProposalNetwork


class FasterRCNN(nn.Module):
    """Two-stage detector; ``forward(images, image_sizes, targets=None)`` as every detkit detector.

    The defaults are the standard COCO recipe (ResNet-50-FPN, P2-P6, Detectron/torchvision values).

    Args:
        num_classes: K object classes (no background class: the classifier adds it as column K).
        backbone, backbone_weights, norm, trainable_layers, min_level, fpn_channels, num_extra_levels:
            the feature pyramid, see ``detkit.models.fpn.FeaturePyramid``.
        anchor_sizes: base anchor size in pixels per pyramid level, finest first (extra levels included), or
            "auto": fitted to the training boxes before training (``detkit.models.anchor_fit``), kept in the checkpoint.
        anchor_scales: multipliers of the base size at every location (1.0: one size per level).
        aspect_ratios: h / w of the anchors at every location, or "auto" (``num_aspect_ratios`` fitted ratios).
        rpn_fg_iou_threshold, rpn_bg_iou_threshold: anchors with IoU >= fg are positive, < bg background,
            between ignored; each ground truth's best anchor is positive even below fg.
        rpn_batch_size_per_image, rpn_positive_fraction: anchors sampled per image for the RPN losses.
        rpn_pre_nms_top_n_train / _test: anchors kept per level and image before NMS.
        rpn_post_nms_top_n_train / _test: proposals kept per image after NMS.
        rpn_nms_threshold, rpn_min_size: proposal NMS IoU and the smallest proposal side in pixels.
        rpn_box_loss: "l1", "smooth_l1" or "giou" for the RPN.
        roi_canonical_scale, roi_canonical_level: a RoI of sqrt(area) = canonical_scale is pooled from
            level canonical_level (FPN paper, eq. 1: 224 and 4); smaller RoIs from finer levels.
        roi_fg_iou_threshold: proposals with IoU >= this are positive, the rest background.
        roi_batch_size_per_image, roi_positive_fraction: RoIs sampled per image for the RoI losses
            (fewer RoIs is the main speed lever on a CPU: RoIAlign's backward dominates).
        representation_size: width of the two fully connected layers of the box head.
        box_loss: "l1", "smooth_l1" or "giou" for the RoI head.
        score_threshold, nms_threshold, detections_per_image: inference.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        backbone_weights: str | None = None,
        norm: str = "frozen_bn",
        trainable_layers: int = 3,
        min_level: int = 2,
        fpn_channels: int = 256,
        num_extra_levels: int = 1,
        anchor_sizes: tuple[float, ...] | Literal["auto"] = (32, 64, 128, 256, 512),
        anchor_scales: tuple[float, ...] = (1.0,),
        aspect_ratios: tuple[float, ...] | Literal["auto"] = (0.5, 1.0, 2.0),
        num_aspect_ratios: int = 3,
        rpn_fg_iou_threshold: float = 0.7,
        rpn_bg_iou_threshold: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 1000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_nms_threshold: float = 0.7,
        rpn_min_size: float = 1e-3,
        rpn_box_loss: str = "smooth_l1",
        roi_canonical_scale: int = 224,
        roi_canonical_level: int = 4,
        roi_fg_iou_threshold: float = 0.5,
        roi_batch_size_per_image: int = 512,
        roi_positive_fraction: float = 0.25,
        representation_size: int = 1024,
        box_loss: str = "smooth_l1",
        score_threshold: float = 0.05,
        nms_threshold: float = 0.5,
        detections_per_image: int = 100,
    ):
        super().__init__()
        check_iou_thresholds("rpn_fg_iou_threshold", rpn_fg_iou_threshold, "rpn_bg_iou_threshold", rpn_bg_iou_threshold)
        check_unit_interval(rpn_positive_fraction=rpn_positive_fraction, rpn_nms_threshold=rpn_nms_threshold,
                            roi_fg_iou_threshold=roi_fg_iou_threshold, roi_positive_fraction=roi_positive_fraction,
                            score_threshold=score_threshold, nms_threshold=nms_threshold)
        check_at_least_one(rpn_batch_size_per_image=rpn_batch_size_per_image,
                           rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
                           rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
                           rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
                           roi_batch_size_per_image=roi_batch_size_per_image, detections_per_image=detections_per_image)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        for key, value in (("rpn_box_loss", rpn_box_loss), ("box_loss", box_loss)):
            if value not in BOX_LOSSES:
                raise ValueError(f"{key} must be one of {BOX_LOSSES}, got {value!r}")
        self.num_classes = num_classes
        self.backbone = FeaturePyramid(backbone=backbone, backbone_weights=backbone_weights, norm=norm,
                                       trainable_layers=trainable_layers, min_level=min_level,
                                       fpn_channels=fpn_channels, num_extra_levels=num_extra_levels)
        strides = self.backbone.strides
        self.rpn = RegionProposalNetwork(
            in_channels=fpn_channels, strides=strides,
            **anchor_shapes(anchor_sizes, anchor_scales, aspect_ratios, num_aspect_ratios, strides),
            fg_iou_threshold=rpn_fg_iou_threshold, bg_iou_threshold=rpn_bg_iou_threshold,
            batch_size_per_image=rpn_batch_size_per_image, positive_fraction=rpn_positive_fraction,
            pre_nms_top_n_train=rpn_pre_nms_top_n_train, pre_nms_top_n_test=rpn_pre_nms_top_n_test,
            post_nms_top_n_train=rpn_post_nms_top_n_train, post_nms_top_n_test=rpn_post_nms_top_n_test,
            nms_threshold=rpn_nms_threshold, min_size=rpn_min_size, box_loss=rpn_box_loss,
        )
        self.num_roi_levels = len(strides) - num_extra_levels  # the extra levels feed the RPN only
        self.roi_heads = RoIHeads(
            in_channels=fpn_channels, strides=strides[: self.num_roi_levels], num_classes=num_classes,
            pool_size=7, sampling_ratio=2, canonical_scale=roi_canonical_scale, canonical_level=roi_canonical_level,
            representation_size=representation_size, fg_iou_threshold=roi_fg_iou_threshold,
            batch_size_per_image=roi_batch_size_per_image, positive_fraction=roi_positive_fraction, box_loss=box_loss,
            score_threshold=score_threshold, nms_threshold=nms_threshold, detections_per_image=detections_per_image,
        )

    def forward(self, images: Tensor, image_sizes: list[tuple[int, int]], targets: list[dict] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Detect, or compute the training losses.

        Args:
            images: (B, 3, H, W) float in [0, 1] (the model normalises), zero padded at bottom/right.
            image_sizes: B x (h, w) before padding.
            targets: B dicts with ``boxes`` (M, 4) float32 xyxy pixels and ``labels`` (M,) int64 in 0..K-1;
                needed in training (M may be 0).
        Returns:
            training: ``{"rpn_objectness", "rpn_box", "roi_cls", "roi_box"}`` scalar losses (sum them);
            eval: B dicts ``{boxes (D, 4) float32 xyxy, scores (D,), labels (D,) int64 in 0..K-1}`` in the
            input images' pixels, by decreasing score.
        """
        if self.training and targets is None:
            raise ValueError("FasterRCNN needs targets in training mode")
        features = self.backbone(images)
        proposals, rpn_losses = self.rpn(features, image_sizes, targets)
        roi_output = self.roi_heads(features[: self.num_roi_levels], proposals, image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_output}
        return roi_output
