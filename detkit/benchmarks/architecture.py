"""Whether a detkit detector and its torchvision twin are the same architecture: anchors, parameter counts,
pyramid maps and head outputs compared on one batch."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.detection import rpn

from detkit.benchmarks.batches import Batch
from detkit.models import RetinaNet
from detkit.models.fpn import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class Check:
    """What ``architecture_check`` compared, for one (detkit, torchvision) pair."""

    anchors: tuple[int, int]  # anchors per image, detkit / torchvision
    anchors_equal: bool  # the same boxes, in the same order
    trunk_parameters: tuple[int, int]
    head_parameters: tuple[int, int]  # everything but the trunk
    expected_head_extra: int  # torchvision's known extra parameters (the background box regressor)
    feature_difference: float  # max |detkit - torchvision| over the FPN maps, relative to the largest value
    head_difference: float  # the same over the head outputs on the same features

    @property
    def same(self) -> bool:
        """Same architecture: anchors per image, trunk and head parameter counts (up to the known extra),
        trunk and head outputs (to float rounding). Anchor positions may differ (``torchvision_twins``)."""
        return (self.anchors[0] == self.anchors[1] and self.trunk_parameters[0] == self.trunk_parameters[1]
                and self.head_parameters[1] - self.head_parameters[0] == self.expected_head_extra
                and self.feature_difference < 1e-4 and self.head_difference < 1e-4)

    def __str__(self) -> str:
        anchors = "equal" if self.anchors_equal else "boxes differ"
        return (f"anchors/image {self.anchors[0]} vs {self.anchors[1]} ({anchors}), "
                f"trunk params {self.trunk_parameters[0]} vs {self.trunk_parameters[1]}, head params "
                f"{self.head_parameters[0]} vs {self.head_parameters[1]} (+{self.expected_head_extra} expected), "
                f"max rel. diff features {self.feature_difference:.1e}, head outputs {self.head_difference:.1e}")


def parameter_count(module: nn.Module) -> int:
    """The number of values in ``module``'s parameters."""
    return sum(p.numel() for p in module.parameters())


def relative_difference(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> float:
    """max over the pairs of max |a - b| / max(max |b|, 1)."""
    return max(float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1.0))
               for a, b in zip(ours, theirs, strict=True))


def retinanet_head_difference(ours: RetinaNet, theirs: nn.Module, features: list[torch.Tensor]) -> float:
    """Both heads on the same pyramid maps: class logits (B, N, K) and box deltas (B, N, 4)."""
    logits, deltas = ours.head(features)
    outputs = theirs.head(features)
    return relative_difference([torch.cat(logits, 1), torch.cat(deltas, 1)],
                               [outputs["cls_logits"], outputs["bbox_regression"]])


def faster_rcnn_head_difference(ours: nn.Module, theirs: nn.Module, features: list[torch.Tensor]) -> float:
    """The RPN heads on the same pyramid maps, and the box heads and predictors on the same random pooled RoIs
    (torchvision's background column 0 against detkit's column K)."""
    logits, deltas = ours.rpn.head(features)
    objectness, box_deltas = rpn.concat_box_prediction_layers(*theirs.rpn.head(features))  # (B*N, 1), (B*N, 4)
    pooled = torch.randn(8, ours.backbone.out_channels, *ours.roi_heads.pooler.output_size,
                         generator=torch.Generator().manual_seed(2)).to(features[0].device)
    cls_ours, box_ours = ours.roi_heads.predictor(ours.roi_heads.box_head(pooled))  # (R, K + 1), (R, K, 4)
    # (R, K + 1), (R, 4 (K + 1))
    cls_theirs, box_theirs = theirs.roi_heads.box_predictor(theirs.roi_heads.box_head(pooled))
    k = ours.num_classes
    box_theirs = box_theirs.view(len(pooled), k + 1, 4)[:, 1:]  # (R, K, 4): torchvision's background deltas dropped
    return relative_difference(
        [torch.cat(logits, 1).flatten(), torch.cat(deltas, 1).reshape(-1, 4), cls_ours[:, :k], cls_ours[:, k],
         box_ours],
        [objectness.flatten(), box_deltas, cls_theirs[:, 1:], cls_theirs[:, 0], box_theirs])


@torch.no_grad()
def architecture_check(ours: nn.Module, theirs: nn.Module, batch: Batch) -> Check:
    """Compare the pair on one batch, in fp32 eval mode: anchors, parameter counts, FPN maps, head outputs.

    Both heads run on detkit's FPN maps, so a head difference is the heads' own.
    """
    ours.eval(), theirs.eval()
    image_list, _ = theirs.transform(batch.tv_images)  # normalised, padded to (B, 3, Hpad, Wpad)
    features_ours = ours.backbone(batch.images)
    # the trunk on detkit's own normalised batch: torchvision pads after normalising (zeros), detkit before
    # (zeros become -mean / std), which changes the maps near a padded edge, not the trunk
    mean, std = (torch.tensor(v, device=batch.images.device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    features_theirs = list(theirs.backbone((batch.images - mean) / std).values())
    if isinstance(ours, RetinaNet):
        dense, expected_extra, generator = ours.dense, 0, theirs.anchor_generator
        head_difference = retinanet_head_difference(ours, theirs, features_ours)
    else:
        dense, generator = ours.rpn.dense, theirs.rpn.anchor_generator
        expected_extra = 4 * (ours.roi_heads.box_head.fc7.out_features + 1)  # torchvision also regresses background
        head_difference = faster_rcnn_head_difference(ours, theirs, features_ours)
    anchors_ours = torch.cat(dense.anchors(features_ours))  # (N, 4)
    # torchvision's anchors on the maps of its own padded input
    anchors_theirs = generator(image_list, list(theirs.backbone(image_list.tensors).values()))[0]  # (N, 4) of image 0
    trunk = (parameter_count(ours.backbone), parameter_count(theirs.backbone))
    return Check(anchors=(len(anchors_ours), len(anchors_theirs)),
                 anchors_equal=(anchors_ours.shape == anchors_theirs.shape
                                and torch.allclose(anchors_ours, anchors_theirs)),
                 trunk_parameters=trunk,
                 head_parameters=(parameter_count(ours) - trunk[0], parameter_count(theirs) - trunk[1]),
                 expected_head_extra=expected_extra,
                 feature_difference=relative_difference(features_ours, features_theirs),
                 head_difference=head_difference)
