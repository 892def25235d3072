"""Box regression losses shared by the RetinaNet head, the RPN and the RoI head.

Dims: P positive samples (anchors or RoIs), each with a predicted and a target box.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from detkit.models.settings import BOX_LOSSES
from detkit.ops import BoxCoder


def paired_giou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Generalized IoU of matching pairs: boxes1, boxes2 (P, 4) xyxy -> (P,) (not the P x P matrix)."""
    boxes1, boxes2 = boxes1.float(), boxes2.float()
    top_left = torch.max(boxes1[:, :2], boxes2[:, :2])  # (P, 2)
    bottom_right = torch.min(boxes1[:, 2:], boxes2[:, 2:])  # (P, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)  # (P,)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).clamp(min=0).prod(dim=1)  # (P,)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).clamp(min=0).prod(dim=1)  # (P,)
    union = area1 + area2 - inter  # (P,)
    hull = (torch.max(boxes1[:, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, :2], boxes2[:, :2])).prod(dim=1)  # (P,)
    return inter / union.clamp(min=eps) - (hull - union) / hull.clamp(min=eps)


def box_regression_loss(
    kind: str,
    pred_deltas: torch.Tensor,
    gt_boxes: torch.Tensor,
    anchors: torch.Tensor,
    box_coder: BoxCoder,
    smooth_l1_beta: float = 1.0 / 9,
) -> torch.Tensor:
    """Summed box loss over P positives (the caller normalises).

    Args:
        kind: one of ``BOX_LOSSES``: L1 or smooth L1 on encoded deltas, or 1 - GIoU on decoded boxes.
        pred_deltas: (P, 4) predicted deltas; gt_boxes: (P, 4) matched ground truth, xyxy pixels;
        anchors: (P, 4) the anchors or proposals the deltas are relative to, xyxy pixels.
    Returns: a scalar tensor.
    """
    if kind == "giou":
        pred_boxes = box_coder.decode(pred_deltas.float(), anchors)  # (P, 4)
        return (1.0 - paired_giou(pred_boxes, gt_boxes)).sum()
    target_deltas = box_coder.encode(gt_boxes, anchors)  # (P, 4)
    if kind == "l1":
        return F.l1_loss(pred_deltas.float(), target_deltas, reduction="sum")
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred_deltas.float(), target_deltas, beta=smooth_l1_beta, reduction="sum")
    raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {kind!r}")
