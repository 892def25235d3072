"""RetinaNet (Lin et al., 2017): the one-stage detector.

Backbone + FPN -> dense anchors on every level -> per-anchor class logits (sigmoid, focal loss) and box
deltas. Every target and post-processing step goes through ``detkit.ops``.

Dims: B images, N anchors over all levels, M ground truths of one image, K classes, C FPN width.
Labels follow ``detkit.data.categories``: 0..K-1 are object classes; background is the all-zero target.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from detkit.models.config_checks import check_at_least_one, check_iou_thresholds, check_unit_interval
from detkit.models.dense import DenseAnchorStage, anchor_shapes
from detkit.models.fpn import FeaturePyramid
from detkit.models.postprocess import select_detections
from detkit.models.retinanet_head import RetinaNetHead
from detkit.ops import IGNORED, sigmoid_focal_loss


class RetinaNet(nn.Module):
    """One-stage detector; ``forward(images, image_sizes, targets=None)`` as every detkit detector.

    Args:
        num_classes: K object classes (no background class).
        backbone, backbone_weights, norm, trainable_layers, min_level, fpn_channels, num_extra_levels:
            the feature pyramid, see ``detkit.models.fpn.FeaturePyramid``.
        anchor_sizes: base anchor size in pixels per pyramid level, finest first, or "auto": fitted to the
            training boxes before training (``detkit.models.anchor_fit``), kept in the checkpoint.
        anchor_scales: multipliers of the base size at every location (3 octave steps in the paper).
        aspect_ratios: h / w of the anchors at every location, or "auto" (``num_aspect_ratios`` fitted ratios).
        head_depth, head_norm: conv layers per subnet and their norm (null or "gn").
        fg_iou_threshold, bg_iou_threshold: IoU >= fg is positive, < bg background, between ignored.
        allow_low_quality_matches: each ground truth's best anchor is positive even below fg.
        focal_alpha, focal_gamma: focal loss parameters (gamma 0, alpha -1 is plain BCE).
        background_weight: loss weight of background anchors (1.0 = standard), for imbalance studies.
        box_loss: "l1", "smooth_l1" or "giou"; loss_normalizer_momentum: the loss is divided by an
            exponential moving average of the number of positive anchors (0 = this batch's count).
        score_threshold, topk_candidates, nms_threshold, detections_per_image: inference.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        backbone_weights: str | None = None,
        norm: str = "frozen_bn",
        trainable_layers: int = 3,
        min_level: int = 3,
        fpn_channels: int = 256,
        num_extra_levels: int = 2,
        anchor_sizes: tuple[float, ...] | Literal["auto"] = (32, 64, 128, 256, 512),
        anchor_scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
        aspect_ratios: tuple[float, ...] | Literal["auto"] = (0.5, 1.0, 2.0),
        num_aspect_ratios: int = 3,
        head_depth: int = 4,
        head_norm: str | None = None,
        fg_iou_threshold: float = 0.5,
        bg_iou_threshold: float = 0.4,
        allow_low_quality_matches: bool = True,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        background_weight: float = 1.0,
        box_loss: str = "l1",
        loss_normalizer_momentum: float = 0.9,
        score_threshold: float = 0.05,
        topk_candidates: int = 1000,
        nms_threshold: float = 0.5,
        detections_per_image: int = 100,
    ):
        super().__init__()
        check_iou_thresholds("fg_iou_threshold", fg_iou_threshold, "bg_iou_threshold", bg_iou_threshold)
        check_unit_interval(score_threshold=score_threshold, nms_threshold=nms_threshold)
        check_at_least_one(topk_candidates=topk_candidates, detections_per_image=detections_per_image)
        self.num_classes = num_classes
        self.backbone = FeaturePyramid(backbone=backbone, backbone_weights=backbone_weights, norm=norm,
                                       trainable_layers=trainable_layers, min_level=min_level,
                                       fpn_channels=fpn_channels, num_extra_levels=num_extra_levels)
        self.dense = DenseAnchorStage(
            strides=self.backbone.strides,
            **anchor_shapes(anchor_sizes, anchor_scales, aspect_ratios, num_aspect_ratios, self.backbone.strides),
            fg_iou_threshold=fg_iou_threshold, bg_iou_threshold=bg_iou_threshold,
            allow_low_quality_matches=allow_low_quality_matches, box_loss=box_loss)
        self.head = RetinaNetHead(fpn_channels, self.dense.num_anchors_per_location, num_classes, head_depth, head_norm)
        self.focal_alpha, self.focal_gamma, self.background_weight = focal_alpha, focal_gamma, background_weight
        self.loss_normalizer_momentum = loss_normalizer_momentum
        self.register_buffer("loss_normalizer", torch.tensor(100.0))  # in checkpoints: a resumed run continues it
        self.score_threshold, self.topk_candidates = score_threshold, topk_candidates
        self.nms_threshold, self.detections_per_image = nms_threshold, detections_per_image

    def forward(self, images: torch.Tensor, image_sizes: list[tuple[int, int]], targets: list[dict] | None = None):
        """images (B, 3, H, W) in [0, 1]; image_sizes [(h, w)] before padding; targets with ``boxes`` (M, 4)
        xyxy pixels and ``labels`` (M,) int64. Training: dict of scalar losses. Eval: per image
        ``{boxes (D, 4), scores (D,), labels (D,)}`` in the input's pixels."""
        features = self.backbone(images)
        logits, deltas = self.head(features)
        anchors = self.dense.anchors(features)  # per level (N_l, 4)
        if self.training:
            if targets is None:
                raise ValueError("RetinaNet needs targets in training mode")
            # losses in float32 whatever the autocast dtype: bf16/fp16 sums over ~10^5 anchors lose the small terms
            return self.losses(torch.cat(logits, 1).float(), torch.cat(deltas, 1).float(), torch.cat(anchors), targets)
        return [self.detect_image(i, logits, deltas, anchors, size) for i, size in enumerate(image_sizes)]

    def losses(self, logits: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        """logits (B, N, K), deltas (B, N, 4), anchors (N, 4) -> {"cls": focal loss, "box": box loss}."""
        matched = self.dense.match(anchors, targets)  # (B, N)
        positive = matched >= 0  # (B, N)
        num_positive, world_size = positive.sum(), 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(num_positive)  # every rank divides by the global count
            world_size = torch.distributed.get_world_size()
        # DDP averages the ranks' gradients: W * (rank's sum) / (global normalizer) makes that average the gradient
        # of (global sum) / (global normalizer), what one process computes on the whole batch
        normalizer = self._update_normalizer(num_positive.float()) / world_size
        gt_boxes, gt_labels = self.dense.matched_targets(matched, positive, targets)  # (P, 4), (P,)

        valid = matched != IGNORED  # (B, N): ignored anchors get no classification loss
        cls_targets = torch.zeros_like(logits)  # (B, N, K)
        cls_targets[positive, gt_labels] = 1.0
        cls_loss = sigmoid_focal_loss(logits[valid], cls_targets[valid], self.focal_alpha, self.focal_gamma,
                                      reduction="sum" if self.background_weight == 1.0 else "none")
        if self.background_weight != 1.0:
            weight = torch.where(positive[valid], 1.0, self.background_weight)  # (V,)
            cls_loss = (cls_loss.sum(dim=1) * weight).sum()
        box_loss = self.dense.box_loss_sum(deltas, anchors, positive, gt_boxes)
        return {"cls": cls_loss / normalizer, "box": box_loss / normalizer}

    def imbalance_setup(self) -> dict:
        """What ``tools/imbalance_stats.py`` needs of this dense stage: its name, classification loss at the start
        (K classes, the prior probability of the classifier bias, focal alpha and gamma) and sampler (none)."""
        prior = round(float(self.head.cls_logits.bias[0].detach().sigmoid()), 4)
        return {"name": "RetinaNet", "stage": self.dense, "num_classes": self.num_classes, "prior": prior,
                "focal_alpha": self.focal_alpha, "focal_gamma": self.focal_gamma, "sampler": None}

    def _update_normalizer(self, num_positive: torch.Tensor) -> torch.Tensor:
        momentum = self.loss_normalizer_momentum
        value = momentum * self.loss_normalizer + (1 - momentum) * num_positive.clamp(min=1)
        self.loss_normalizer = value.detach()
        return value.clamp(min=1)

    @torch.no_grad()
    def detect_image(self, index: int, logits: list[torch.Tensor], deltas: list[torch.Tensor],
                     anchors: list[torch.Tensor], image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Per level: top-k (anchor, class) pairs above the score threshold, decoded; then NMS over all levels."""
        boxes, scores, labels = [], [], []
        for level_logits, level_deltas, level_anchors in zip(logits, deltas, anchors):
            level_scores = level_logits[index].float().sigmoid().flatten()  # (N_l * K,)
            candidates = torch.nonzero(level_scores > self.score_threshold).squeeze(1)  # (C,)
            top = level_scores[candidates].topk(min(self.topk_candidates, len(candidates)))
            candidates = candidates[top.indices]
            anchor_index = candidates // self.num_classes
            boxes.append(self.dense.box_coder.decode(level_deltas[index, anchor_index].float(), level_anchors[anchor_index]))
            scores.append(top.values)
            labels.append(candidates % self.num_classes)
        return select_detections(torch.cat(boxes), torch.cat(scores), torch.cat(labels), image_size,
                                 self.nms_threshold, self.detections_per_image)

