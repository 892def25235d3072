"""Faster R-CNN with FPN (Ren et al., 2015; Lin et al., 2017): the two-stage detector.

Backbone + FPN -> region proposal network (``rpn.py``) on every pyramid level -> RoIAlign of the
proposals on the backbone's levels -> box classifier and class-specific box refinement (``roi_heads.py``).
Extra pyramid levels (``fpn.extra_levels``, e.g. P6) feed the RPN only, as in the FPN paper.

LABEL CONVENTION (stated in ``detkit/data/categories.py``): targets and detections carry labels
0..K-1. The RoI classifier has K + 1 columns internally; column K, the last, is background.

Dims: B images, K object classes, M ground truths of one image, D detections of one image.
"""
from __future__ import annotations

from torch import Tensor, nn

from detkit.models.fpn import FeaturePyramid
from detkit.models.roi_heads import RoIHeads
from detkit.models.rpn import RegionProposalNetwork
from detkit.models.settings import (
    Anchors,
    Backbone,
    Inference,
    Proposals,
    Pyramid,
    RoIHead,
    check_groups,
    check_num_classes,
)


class FasterRCNN(nn.Module):
    """Two-stage detector; ``forward(images, image_sizes, targets=None)`` as every detkit detector.

    The defaults are the standard COCO recipe (ResNet-50-FPN, P2-P6, Detectron/torchvision values). Every group is
    a dataclass of ``detkit.models.settings``; in a config each nests under ``init_args``.

    Args:
        num_classes: K object classes (no background class: the classifier adds it as column K).
        backbone, fpn: the feature pyramid (``Backbone``, ``Pyramid``); the extra levels feed the RPN only.
        anchors: the RPN's ``Anchors`` (one size per level by default).
        rpn: ``Proposals``, the region proposal network (matching, sampling, NMS, counts).
        roi: ``RoIHead``, the second stage (matching, sampling, pooling levels, box head).
        inference: ``Inference``, from scores to detections.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        backbone: Backbone = Backbone(),
        fpn: Pyramid = Pyramid(min_level=2, extra_levels=1),
        anchors: Anchors = Anchors(),
        rpn: Proposals = Proposals(),
        roi: RoIHead = RoIHead(),
        inference: Inference = Inference(),
    ):
        super().__init__()
        check_num_classes(num_classes)
        check_groups(backbone=backbone, fpn=fpn, anchors=anchors, rpn=rpn, roi=roi, inference=inference)
        self.num_classes = num_classes
        self.backbone = FeaturePyramid(backbone=backbone, fpn=fpn)
        strides = self.backbone.strides
        self.rpn = RegionProposalNetwork(in_channels=fpn.channels, strides=strides, anchors=anchors, settings=rpn)
        self.num_roi_levels = len(strides) - fpn.extra_levels  # the extra levels feed the RPN only
        self.roi_heads = RoIHeads(in_channels=fpn.channels, strides=strides[: self.num_roi_levels],
                                  num_classes=num_classes, settings=roi, inference=inference)

    @property
    def inference(self) -> Inference:
        """The ``Inference`` settings; assigning replaces them for the next detections (the predictor's overrides)."""
        return self.roi_heads.inference

    @inference.setter
    def inference(self, settings: Inference) -> None:
        self.roi_heads.inference = settings

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
        proposals, rpn_losses = self.rpn(features, image_sizes, targets, padded_size=images.shape[-2:])
        roi_output = self.roi_heads(features[: self.num_roi_levels], proposals, image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_output}
        return roi_output
