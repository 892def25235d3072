"""Region proposal network (Ren et al., 2015) on FPN levels: the first stage of Faster R-CNN.

A shared 3x3 conv scores every anchor as object / not object and regresses its box; the best-scored
decoded anchors, after NMS, are the proposals the RoI head classifies. Anchors, matching, sampling,
box coding and NMS all come from ``detkit.ops``.

Dims: B images, C FPN width, A anchors per location, N_l = H_l * W_l * A anchors of level l,
N anchors over all levels, M ground truths of one image, P_i proposals of image i.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detkit.models.dense import DenseAnchorStage, flatten_level
from detkit.models.settings import Anchors, Proposals
from detkit.ops import BalancedSampler, batched_nms, clip_boxes_to_image, remove_small_boxes, topk_at_most


class RPNHead(nn.Module):
    """Shared 3x3 conv + ReLU (``num_convs`` of them), then per-anchor objectness logits (A per location) and box
    deltas (4A).

    ``forward(features: per level (B, C, H_l, W_l)) -> (logits per level (B, N_l), deltas per level (B, N_l, 4))``,
    anchors location-major like ``detkit.ops.AnchorGenerator``.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_convs: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        # the first conv keeps its name: checkpoints of one-conv heads load as they are
        self.more_convs = nn.ModuleList(nn.Conv2d(in_channels, in_channels, 3, padding=1) for _ in range(num_convs - 1))
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.box_deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for conv in (self.conv, *self.more_convs, self.objectness, self.box_deltas):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for feature in features:
            hidden = F.relu(self.conv(feature))
            for conv in self.more_convs:
                hidden = F.relu(conv(hidden))
            logits.append(flatten_level(self.objectness(hidden), 1).squeeze(2))  # (B, N_l)
            deltas.append(flatten_level(self.box_deltas(hidden), 4))  # (B, N_l, 4)
        return logits, deltas


class RegionProposalNetwork(nn.Module):
    """Anchors + ``RPNHead`` + training targets + proposal selection.

    Args:
        in_channels: C, the width of every pyramid level.
        strides: stride of each pyramid level, finest first.
        anchors: the ``Anchors`` group (placeholders to fit to the training boxes when "auto", ``DenseAnchorStage``).
        settings: the ``Proposals`` group: matching, sampling, top-n before and after NMS, NMS IoU (per level),
            smallest proposal side, box loss.
    """

    def __init__(self, *, in_channels: int, strides: list[int], anchors: Anchors, settings: Proposals):
        super().__init__()
        self.dense = DenseAnchorStage(strides=strides, anchors=anchors, matching=settings.matching,
                                      box_loss=settings.box_loss)
        self.head = RPNHead(in_channels, self.dense.num_anchors_per_location, settings.head_convs)
        self.sampler = BalancedSampler(settings.sampling.batch_size_per_image, settings.sampling.positive_fraction)
        self.pre_nms_top_n = {True: settings.pre_nms_top_n_train, False: settings.pre_nms_top_n_test}
        self.post_nms_top_n = {True: settings.post_nms_top_n_train, False: settings.post_nms_top_n_test}
        self.nms_threshold, self.min_size = settings.nms_threshold, settings.min_size
        self.score_threshold = settings.score_threshold

    def forward(
        self, features: list[torch.Tensor], image_sizes: list[tuple[int, int]], targets: list[dict] | None = None,
        padded_size: tuple[int, int] | None = None,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Propose boxes for every image; in training also return the RPN losses.

        Args:
            features: per level (B, C, H_l, W_l), finest first, at ``strides``.
            image_sizes: B x (h, w) before padding: proposals are clipped to them.
            targets: B dicts with ``boxes`` (M, 4) float xyxy pixels; needed when ``self.training``.
            padded_size: (H, W) of the padded batch, for anchors with ``stride_rule`` "padded_image".
        Returns:
            proposals: B tensors (P_i, 4) float32 xyxy pixels, detached, by decreasing objectness,
                P_i <= post-NMS top-n; losses: ``{"rpn_objectness", "rpn_box"}`` scalars in training, else {}.
        """
        logits, deltas = self.head(features)
        anchors = self.dense.anchors(features, padded_size)  # per level (N_l, 4)
        proposals, _ = self.select_proposals([level.detach() for level in logits], [level.detach() for level in deltas],
                                             anchors, image_sizes)
        if not self.training:
            return proposals, {}
        if targets is None:
            raise ValueError("the RPN needs targets in training mode")
        # losses in float32 under bf16/fp16 autocast
        return proposals, self.losses(torch.cat(logits, 1).float(), torch.cat(deltas, 1).float(), torch.cat(anchors),
                                      targets)

    def losses(self, logits: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor,
               targets: list[dict]) -> dict[str, torch.Tensor]:
        """logits (B, N), deltas (B, N, 4), anchors (N, 4) -> ``{"rpn_objectness", "rpn_box"}``.

        Objectness: binary cross-entropy over the sampled anchors; box: regression loss over the sampled
        positives; both divided by the number of sampled anchors in the batch. Images without ground
        truth contribute background anchors only.
        """
        matched = self.dense.match(anchors, targets)  # (B, N) Matcher encoding
        positive, negative = (torch.stack(masks) for masks in self.sampler(list(matched)))  # (B, N) bool each
        sampled = positive | negative
        num_sampled = sampled.sum().clamp(min=1)
        objectness = F.binary_cross_entropy_with_logits(logits[sampled].float(), positive[sampled].float(),
                                                        reduction="sum")
        gt_boxes, _ = self.dense.matched_targets(matched, positive, targets)  # (P, 4)
        box = self.dense.box_loss_sum(deltas, anchors, positive, gt_boxes)
        return {"rpn_objectness": objectness / num_sampled, "rpn_box": box / num_sampled}

    def imbalance_setup(self) -> dict:
        """What ``tools/imbalance_stats.py`` needs of this dense stage: its name, the loss at the start (one
        class, BCE at the objectness bias's probability) and the anchor sampler."""
        prior = round(float(self.head.objectness.bias[0].detach().sigmoid()), 4)
        return {"name": "RPN", "stage": self.dense, "num_classes": 1, "prior": prior, "focal_alpha": -1.0,
                "focal_gamma": 0.0, "sampler": self.sampler}

    @torch.no_grad()
    def select_proposals(
        self, logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level top-k, decode, then per image clip, drop small and low-scored boxes, NMS per level, keep the top-n.

        Args:
            logits: per level (B, N_l) objectness logits; deltas: per level (B, N_l, 4); anchors: per
                level (N_l, 4) xyxy pixels; image_sizes: B x (h, w).
        Returns:
            (boxes, scores): B tensors (P_i, 4) float32 xyxy and B tensors (P_i,) objectness probabilities,
            sorted by decreasing score.
        """
        pre_nms_top_n, post_nms_top_n = self.pre_nms_top_n[self.training], self.post_nms_top_n[self.training]
        boxes, scores, levels = [], [], []
        for level, (level_logits, level_deltas, level_anchors) in enumerate(zip(logits, deltas, anchors)):
            top = topk_at_most(level_logits.float(), pre_nms_top_n, dim=1)  # (B, k)
            top_deltas = level_deltas.gather(1, top.indices[..., None].expand(-1, -1, 4))  # (B, k, 4)
            decoded = self.dense.box_coder.decode(top_deltas.float().reshape(-1, 4),
                                                  level_anchors[top.indices].reshape(-1, 4))
            boxes.append(decoded.view(top_deltas.shape))
            scores.append(top.values)
            levels.append(torch.full_like(top.indices[0], level))  # (k,)
        # (B, T, 4), (B, T), (T,)
        boxes, scores, levels = torch.cat(boxes, 1), torch.cat(scores, 1).sigmoid(), torch.cat(levels)
        image_boxes, image_scores = [], []
        for i, image_size in enumerate(image_sizes):
            clipped = clip_boxes_to_image(boxes[i], image_size)  # (T, 4)
            keep = remove_small_boxes(clipped, self.min_size)
            if self.score_threshold > 0:
                keep = keep[scores[i, keep] >= self.score_threshold]
            keep = keep[batched_nms(clipped[keep], scores[i, keep], levels[keep], self.nms_threshold)]
            # batched_nms orders the survivors of all levels by decreasing score: the cut keeps the best
            keep = keep[:post_nms_top_n]
            image_boxes.append(clipped[keep])
            image_scores.append(scores[i, keep])
        return image_boxes, image_scores
