"""The second stage of Faster R-CNN: pool each proposal's features, classify it and refine its box.

LABEL CONVENTION (see ``detkit/data/categories.py``): targets carry object labels 0..K-1 and no
background label. The box classifier here has K + 1 columns; column K, the last, is background. It
never leaves this module: detections carry labels 0..K-1 only.

Dims: B images, C FPN width, K object classes, R RoIs (proposals) of one image or of the batch,
M ground truths of one image, S = 7 the pooled size, D detections of one image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detkit.models.box_head import build_box_head
from detkit.models.box_loss import box_regression_loss
from detkit.models.labels import check_labels
from detkit.models.postprocess import select_detections
from detkit.models.roi_pooler import build_roi_pooler
from detkit.models.settings import Inference, RoIHead
from detkit.ops import BalancedSampler, BoxCoder, Matcher, box_iou

POOL_SIZE, SAMPLING_RATIO = 7, 2  # RoIAlign's S x S output and samples per bin, as in Mask R-CNN


class BoxPredictor(nn.Module):
    """Class logits over K objects + background (column K) and class-specific box deltas.

    ``forward(x (R, F)) -> (logits (R, K + 1), deltas (R, K, 4))``; the deltas of class k refine the
    box for class k (there are none for background).
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)
        # small initial outputs (as in Detectron): near-uniform class scores, proposals kept as they are
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x).view(-1, self.num_classes, 4)


class RoIHeads(nn.Module):
    """RoIAlign + box head (``detkit.models.box_head``) + ``BoxPredictor``, with training targets and inference
    post-processing.

    Args:
        in_channels: C, the width of the pooled pyramid levels.
        strides: strides of the pooled levels, finest first.
        num_classes: K object classes (the classifier adds background as column K).
        settings: the ``RoIHead`` group (matching, sampling, pooling levels, box head width, box loss).
        inference: the ``Inference`` group; ``inference`` may be replaced between calls.
    """

    def __init__(self, *, in_channels: int, strides: list[int], num_classes: int, settings: RoIHead,
                 inference: Inference):
        super().__init__()
        self.num_classes = num_classes
        self.pooler = build_roi_pooler(strides, POOL_SIZE, SAMPLING_RATIO, settings.canonical_scale,
                                       settings.canonical_level)
        self.box_head = build_box_head(in_channels, POOL_SIZE, settings.box_head_convs, settings.box_head_fcs,
                                       settings.representation_size)
        self.predictor = BoxPredictor(settings.representation_size, num_classes)
        matching = settings.matching
        self.matcher = Matcher(matching.fg_iou_threshold, matching.bg_iou_threshold, matching.allow_low_quality_matches)
        self.sampler = BalancedSampler(settings.sampling.batch_size_per_image, settings.sampling.positive_fraction)
        self.box_coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.box_loss = settings.box_loss
        self.inference = inference

    def forward(
        self, features: list[torch.Tensor], proposals: list[torch.Tensor], image_sizes: list[tuple[int, int]],
        targets: list[dict] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Training: ``{"roi_cls", "roi_box"}`` scalars. Eval: per image ``{boxes (D, 4), scores (D,), labels (D,)}``.

        Args:
            features: per pooled level (B, C, H_l, W_l), finest first, at ``strides``.
            proposals: B tensors (R_i, 4) float xyxy pixels (from the RPN).
            image_sizes: B x (h, w) before padding: detections are clipped to them.
            targets: B dicts with ``boxes`` (M, 4) float xyxy pixels and ``labels`` (M,) int64 in 0..K-1.
        """
        if self.training:
            if targets is None:
                raise ValueError("the RoI head needs targets in training mode")
            rois, class_targets, box_targets = self.select_training_samples(proposals, targets)
            logits, deltas = self.predict(features, rois, image_sizes)
            # losses in float32 under bf16/fp16 autocast
            return self.losses(logits.float(), deltas.float(), torch.cat(rois), torch.cat(class_targets),
                               torch.cat(box_targets))
        logits, deltas = self.predict(features, proposals, image_sizes)
        per_image = [p.shape[0] for p in proposals]  # sizes, not len(): traced, they stay symbolic
        return [self.detect_image(image_logits, image_deltas, image_proposals, size)
                for image_logits, image_deltas, image_proposals, size
                in zip(logits.split(per_image), deltas.split(per_image), proposals, image_sizes)]

    def predict(self, features: list[torch.Tensor], rois: list[torch.Tensor], image_sizes: list[tuple[int, int]]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool B x (R_i, 4) RoIs -> (logits (R, K + 1), deltas (R, K, 4)) for the R RoIs of the batch, image-major."""
        # float32 boxes even under autocast: fp16 would round coordinates above 1024 to whole pixels or worse
        pooled = self.pooler({str(i): f for i, f in enumerate(features)}, [r.float() for r in rois], image_sizes)
        return self.predictor(self.box_head(pooled))

    @torch.no_grad()
    def select_training_samples(
        self, proposals: list[torch.Tensor], targets: list[dict]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Add the ground truths to each image's proposals, match (IoU >= fg: positive) and sample.

        Returns per image: sampled RoIs (R_i, 4) float32 xyxy, their class targets (R_i,) int64 (the gt
        label 0..K-1 for positives, K for background) and matched gt boxes (R_i, 4) (meaningful for
        positives only; background rows hold the RoI itself).
        """
        check_labels(targets, self.num_classes)
        candidates = [torch.cat([p.float(), t["boxes"].float()]) for p, t in zip(proposals, targets)]  # (R_i + M, 4)
        matched = [self.matcher(box_iou(t["boxes"], c)) for t, c in zip(targets, candidates)]
        positives, negatives = self.sampler(matched)
        rois, class_targets, box_targets = [], [], []
        for boxes, target, match, positive, negative in zip(candidates, targets, matched, positives, negatives):
            keep = torch.nonzero(positive | negative).squeeze(1)  # (R_i,)
            index = match[keep]
            is_positive = index >= 0
            labels = torch.full_like(index, self.num_classes)  # background column
            labels[is_positive] = target["labels"][index[is_positive]]
            gt_boxes = boxes[keep].clone()
            gt_boxes[is_positive] = target["boxes"][index[is_positive]].float()
            rois.append(boxes[keep])
            class_targets.append(labels)
            box_targets.append(gt_boxes)
        return rois, class_targets, box_targets

    def losses(self, logits: torch.Tensor, deltas: torch.Tensor, rois: torch.Tensor, class_targets: torch.Tensor,
               box_targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """logits (R, K + 1), deltas (R, K, 4), rois (R, 4), class_targets (R,) int64 in 0..K, box_targets (R, 4).

        Cross-entropy over all sampled RoIs; box loss on positives, for their gt class only; both divided
        by R, the number of sampled RoIs in the batch.
        """
        num_sampled = max(len(class_targets), 1)
        cls_loss = F.cross_entropy(logits.float(), class_targets, reduction="sum")
        positive = torch.nonzero(class_targets < self.num_classes).squeeze(1)  # (P,)
        positive_deltas = deltas[positive, class_targets[positive]]  # (P, 4)
        box_loss = box_regression_loss(self.box_loss, positive_deltas, box_targets[positive], rois[positive],
                                       self.box_coder)
        return {"roi_cls": cls_loss / num_sampled, "roi_box": box_loss / num_sampled}

    @torch.no_grad()
    def detect_image(self, logits: torch.Tensor, deltas: torch.Tensor, proposals: torch.Tensor,
                     image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """One image: logits (R, K + 1), deltas (R, K, 4), proposals (R, 4) -> final detections.

        Every (proposal, object class) pair is a candidate, scored by softmax probability (the
        background column is dropped) and boxed by that class's deltas; then score threshold and
        ``select_detections`` (clip, class-wise NMS, cap).
        """
        num_rois, num_classes = deltas.shape[:2]
        scores = logits.float().softmax(dim=1)[:, :num_classes]  # (R, K): column K is background
        repeated = proposals.float().repeat_interleave(num_classes, 0)  # (R*K, 4): each proposal once per class
        boxes = self.box_coder.decode(deltas.float().reshape(-1, 4), repeated)  # (R*K, 4)
        labels = torch.arange(num_classes, device=logits.device).repeat(num_rois)  # (R*K,)
        keep = torch.nonzero(scores.flatten() >= self.inference.score_threshold).squeeze(1)
        return select_detections(boxes[keep], scores.flatten()[keep], labels[keep], image_size, self.inference)
