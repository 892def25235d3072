"""RetinaNet (Lin et al., 2017): the one-stage detector.

Backbone + FPN -> dense anchors on every level -> per-anchor class logits (sigmoid, focal loss) and box
deltas. Every target and post-processing step goes through ``detkit.ops``.

Dims: B images, N anchors over all levels, M ground truths of one image, K classes, C FPN width.
Labels follow ``detkit.data.categories``: 0..K-1 are object classes; background is the all-zero target.
"""
from __future__ import annotations

import torch
from torch import nn

from detkit.models.dense import DenseAnchorStage
from detkit.models.fpn import FeaturePyramid
from detkit.models.labels import check_labels
from detkit.models.postprocess import select_detections
from detkit.models.retinanet_head import RetinaNetHead
from detkit.models.settings import (
    OCTAVE_SCALES,
    Anchors,
    Backbone,
    DenseHead,
    DenseLoss,
    Inference,
    Matching,
    Pyramid,
    check_groups,
    check_num_classes,
)
from detkit.ops import IGNORED, sigmoid_focal_loss, topk_at_most


class RetinaNet(nn.Module):
    """One-stage detector; ``forward(images, image_sizes, targets=None)`` as every detkit detector.

    The defaults are the standard COCO recipe (ResNet-50-FPN, P3-P7, the paper's anchors and focal loss). Every
    group is a dataclass of ``detkit.models.settings``; in a config each nests under ``init_args``.

    Args:
        num_classes: K object classes (no background class).
        backbone, fpn: the feature pyramid (``Backbone``, ``Pyramid``).
        anchors: ``Anchors`` on every level (three octave scales x three ratios by default).
        matching: ``Matching`` of anchors to ground truths (positive, ignored band, background).
        head: ``DenseHead``, the class and box subnets; loss: ``DenseLoss``, focal loss and box loss.
        inference: ``Inference``, from scores to detections.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        backbone: Backbone = Backbone(),
        fpn: Pyramid = Pyramid(min_level=3, extra_levels=2),
        anchors: Anchors = Anchors(scales=OCTAVE_SCALES),
        matching: Matching = Matching(0.5, 0.4, True),
        head: DenseHead = DenseHead(),
        loss: DenseLoss = DenseLoss(),
        inference: Inference = Inference(),
    ):
        super().__init__()
        check_num_classes(num_classes)
        check_groups(backbone=backbone, fpn=fpn, anchors=anchors, matching=matching, head=head, loss=loss,
                     inference=inference)
        self.num_classes, self.loss_settings, self.inference = num_classes, loss, inference
        self.backbone = FeaturePyramid(backbone=backbone, fpn=fpn)
        self.dense = DenseAnchorStage(strides=self.backbone.strides, anchors=anchors, matching=matching,
                                      box_loss=loss.box_loss)
        self.head = RetinaNetHead(in_channels=fpn.channels, num_anchors=self.dense.num_anchors_per_location,
                                  num_classes=num_classes, settings=head)
        self.register_buffer("loss_normalizer", torch.tensor(100.0))  # in checkpoints: a resumed run continues it

    def forward(self, images: torch.Tensor, image_sizes: list[tuple[int, int]], targets: list[dict] | None = None):
        """images (B, 3, H, W) in [0, 1]; image_sizes [(h, w)] before padding; targets with ``boxes`` (M, 4)
        xyxy pixels and ``labels`` (M,) int64. Training: dict of scalar losses. Eval: per image
        ``{boxes (D, 4), scores (D,), labels (D,)}`` in the input's pixels."""
        features = self.backbone(images)
        logits, deltas = self.head(features)
        anchors = self.dense.anchors(features, images.shape[-2:])  # per level (N_l, 4)
        if self.training:
            if targets is None:
                raise ValueError("RetinaNet needs targets in training mode")
            # losses in float32 whatever the autocast dtype: bf16/fp16 sums over ~10^5 anchors lose the small terms
            return self.losses(torch.cat(logits, 1).float(), torch.cat(deltas, 1).float(), torch.cat(anchors), targets)
        return [self.detect_image(i, logits, deltas, anchors, size) for i, size in enumerate(image_sizes)]

    def losses(self, logits: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor,
               targets: list[dict]) -> dict[str, torch.Tensor]:
        """logits (B, N, K), deltas (B, N, 4), anchors (N, 4) -> {"cls": focal loss, "box": box loss}."""
        check_labels(targets, self.num_classes)
        matched = self.dense.match(anchors, targets)  # (B, N)
        positive = matched >= 0  # (B, N)
        gt_boxes, gt_labels = self.dense.matched_targets(matched, positive, targets)  # (P, 4), (P,)
        valid = matched != IGNORED  # (B, N): ignored anchors get no classification loss
        cls_targets = torch.zeros_like(logits)  # (B, N, K)
        cls_targets[positive, gt_labels] = 1.0
        settings = self.loss_settings
        per_anchor = settings.background_weight != 1.0 or settings.normalize_per_image
        cls_loss = sigmoid_focal_loss(logits[valid], cls_targets[valid], settings.focal_alpha, settings.focal_gamma,
                                      reduction="none" if per_anchor else "sum")
        if per_anchor:
            cls_loss = cls_loss.sum(dim=1) * torch.where(positive[valid], 1.0, settings.background_weight)  # (V,)
        if settings.normalize_per_image:
            return self._losses_per_image(cls_loss, valid, positive, deltas, anchors, gt_boxes)
        num_positive, world_size = positive.sum(), 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(num_positive)  # every rank divides by the global count
            world_size = torch.distributed.get_world_size()
        # DDP averages the ranks' gradients: W * (rank's sum) / (global normalizer) makes that average the gradient
        # of (global sum) / (global normalizer), what one process computes on the whole batch
        normalizer = self._update_normalizer(num_positive.float()) / world_size
        box_loss = self.dense.box_loss_sum(deltas, anchors, positive, gt_boxes)
        return {"cls": cls_loss.sum() / normalizer, "box": box_loss / normalizer}

    def _losses_per_image(self, cls_loss: torch.Tensor, valid: torch.Tensor, positive: torch.Tensor,
                          deltas: torch.Tensor, anchors: torch.Tensor,
                          gt_boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """torchvision's normalisation: each image's sums divided by its own positive count (at least 1), then the
        mean over the images (under DDP the ranks' average makes it the mean over all images).

        cls_loss (V,) per valid anchor of the batch (row-major over (B, N)), valid and positive (B, N) bool,
        deltas (B, N, 4), anchors (N, 4), gt_boxes (P, 4) matched to the positives in the same order."""
        batch = len(positive)
        image_of_anchor = torch.arange(batch, device=positive.device)[:, None].expand_as(positive)  # (B, N)
        cls_sums = cls_loss.new_zeros(batch).index_add_(0, image_of_anchor[valid], cls_loss)  # (B,)
        counts = positive.sum(dim=1)  # (B,)
        box_sums = torch.stack([
            self.dense.box_loss_sum(image_deltas[None], anchors, image_positive[None], image_gt_boxes)
            for image_deltas, image_positive, image_gt_boxes in zip(deltas, positive, gt_boxes.split(counts.tolist()))
        ])  # (B,)
        normalizer = counts.clamp(min=1)
        return {"cls": (cls_sums / normalizer).mean(), "box": (box_sums / normalizer).mean()}

    def imbalance_setup(self) -> dict:
        """What ``tools/imbalance_stats.py`` needs of this dense stage: its name, classification loss at the start
        (K classes, the prior probability of the classifier bias, focal alpha and gamma) and sampler (none)."""
        prior = round(float(self.head.cls_logits.bias[0].detach().sigmoid()), 4)
        return {"name": "RetinaNet", "stage": self.dense, "num_classes": self.num_classes, "prior": prior,
                "focal_alpha": self.loss_settings.focal_alpha, "focal_gamma": self.loss_settings.focal_gamma,
                "sampler": None}

    def _update_normalizer(self, num_positive: torch.Tensor) -> torch.Tensor:
        momentum = self.loss_settings.normalizer_momentum
        value = momentum * self.loss_normalizer + (1 - momentum) * num_positive.clamp(min=1)
        self.loss_normalizer = value.detach()
        return value.clamp(min=1)

    @torch.no_grad()
    def detect_image(self, index: int, logits: list[torch.Tensor], deltas: list[torch.Tensor],
                     anchors: list[torch.Tensor], image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Per level: top-k (anchor, class) pairs scoring at least the threshold, decoded; then NMS over all levels."""
        settings = self.inference
        boxes, scores, labels = [], [], []
        for level_logits, level_deltas, level_anchors in zip(logits, deltas, anchors):
            level_scores = level_logits[index].float().sigmoid().flatten()  # (N_l * K,)
            candidates = torch.nonzero(level_scores >= settings.score_threshold).squeeze(1)  # (C,)
            top = topk_at_most(level_scores[candidates], settings.topk_candidates)
            candidates = candidates[top.indices]
            anchor_index = candidates // self.num_classes
            boxes.append(self.dense.box_coder.decode(level_deltas[index, anchor_index].float(),
                                                     level_anchors[anchor_index]))
            scores.append(top.values)
            labels.append(candidates % self.num_classes)
        return select_detections(torch.cat(boxes), torch.cat(scores), torch.cat(labels), image_size, settings)

