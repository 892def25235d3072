"""Box regression losses shared by the RetinaNet head, the RPN and the RoI head.

Dims: P positive samples (anchors or RoIs), each with a predicted and a target box.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from detkit.models.settings import BOX_LOSSES
from detkit.ops import BoxCoder, paired_generalized_box_iou


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
        return (1.0 - paired_generalized_box_iou(pred_boxes, gt_boxes)).sum()
    target_deltas = box_coder.encode(gt_boxes, anchors)  # (P, 4)
    if kind == "l1":
        return F.l1_loss(pred_deltas.float(), target_deltas, reduction="sum")
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred_deltas.float(), target_deltas, beta=smooth_l1_beta, reduction="sum")
    raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {kind!r}")
