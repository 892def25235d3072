"""Shared detection kernels: box geometry, NMS, box coding, anchors, matching, sampling, focal loss, RoIAlign.

Imports nothing else of detkit. Boxes are float tensors (N, 4), absolute-pixel xyxy, x1 <= x2, y1 <= y2.
"""
from detkit.ops.anchors import AnchorGenerator
from detkit.ops.box_coder import BoxCoder
from detkit.ops.boxes import (
    box_area,
    box_iou,
    clip_boxes_to_image,
    generalized_box_iou,
    paired_generalized_box_iou,
    remove_small_boxes,
)
from detkit.ops.losses import sigmoid_focal_loss
from detkit.ops.matcher import BACKGROUND, IGNORED, Matcher
from detkit.ops.nms import batched_nms, nms
from detkit.ops.pooling import roi_align
from detkit.ops.sampler import BalancedSampler
from detkit.ops.topk import topk_at_most

__all__ = [
    "AnchorGenerator",
    "BACKGROUND",
    "BalancedSampler",
    "BoxCoder",
    "IGNORED",
    "Matcher",
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes_to_image",
    "generalized_box_iou",
    "nms",
    "paired_generalized_box_iou",
    "remove_small_boxes",
    "roi_align",
    "sigmoid_focal_loss",
    "topk_at_most",
]
