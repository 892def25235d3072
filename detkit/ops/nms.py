"""Non-maximum suppression, single-class and per class.

Dims:
    N: candidate boxes
    K: kept boxes
    C: distinct class ids present

Chosen by measurement (tools/bench_ops.py): greedy NMS is inherently sequential, and torchvision's
compiled kernel beats every exact vectorised formulation tried on CPU (a pairwise IoU matrix alone costs
more than the whole kernel at N = 1k and 10k), so `nms` calls it. `batched_nms` runs it once per class on
class-sorted contiguous slices for large inputs, and once on class-separated copies of the boxes for small
inputs, where the per-class Python loop would dominate.
"""
from __future__ import annotations

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)

# Below this many boxes (CPU) one kernel call on class-separated boxes beats a loop over classes; the
# separated call compares every pair across classes, so it loses as N grows (torchvision uses the same cut).
SEPARATED_CALL_MAX_BOXES_CPU = 1000
SEPARATED_CALL_MAX_BOXES_CUDA = 25_000


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: (N, 4) xyxy, any float dtype; scores: (N,) float.
        iou_threshold: a box is suppressed iff its IoU with a kept, higher-scored box is > iou_threshold.
    Returns:
        (K,) int64 indices into boxes of the kept boxes, by decreasing score. fp16/bf16 inputs are
        converted to float32 first (exactly), so they keep the same indices as the same values in float32.
    """
    _check_inputs(boxes, scores)
    if len(boxes) == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    boxes, scores = _as_kernel_dtype(boxes, scores)
    return torch.ops.torchvision.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression within each class independently.

    Args:
        boxes: (N, 4) xyxy, any float dtype; scores: (N,) float; idxs: (N,) int64 class ids >= 0.
        iou_threshold: as in `nms`, only between boxes of the same class id.
    Returns:
        (K,) int64 indices into boxes of the kept boxes of all classes together, by decreasing score
        (equal scores: the order torch.sort gives, as torchvision.ops.batched_nms).
    """
    _check_inputs(boxes, scores)
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must have shape (N,) like scores {tuple(scores.shape)}, got {tuple(idxs.shape)}")
    if len(boxes) == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    boxes, scores = _as_kernel_dtype(boxes, scores)
    max_boxes = SEPARATED_CALL_MAX_BOXES_CPU if boxes.device.type == "cpu" else SEPARATED_CALL_MAX_BOXES_CUDA
    if len(boxes) <= max_boxes:
        return _nms_on_separated_classes(boxes, scores, idxs, iou_threshold)
    return _nms_per_class_slices(boxes, scores, idxs, iou_threshold)


def _check_inputs(boxes: torch.Tensor, scores: torch.Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) tensor of xyxy boxes, got shape {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must have shape (N,) = ({len(boxes)},), got {tuple(scores.shape)}")


def _as_kernel_dtype(boxes: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp16/bf16 -> float32 (exact); the kernel needs boxes and scores of one dtype."""
    dtype = torch.float64 if torch.float64 in (boxes.dtype, scores.dtype) else torch.float32
    return boxes.to(dtype), scores.to(dtype)


def _nms_on_separated_classes(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                              iou_threshold: float) -> torch.Tensor:
    """One kernel call on boxes translated so that different classes never overlap.

    Translated in float64, where the offsets move coordinates by ~1e-10 pixels at most: in float32 the
    rounding of coordinates near class_id * extent would change the IoUs of small boxes by up to a few
    percent, and with them which boxes survive.
    """
    boxes64 = boxes.to(torch.float64)  # (N, 4)
    origin = boxes64.min()
    extent = boxes64.max() - origin + 1
    separated = boxes64 - origin + (idxs.to(torch.float64) * extent)[:, None]  # (N, 4)
    return torch.ops.torchvision.nms(separated, scores.to(torch.float64), float(iou_threshold))


def _nms_per_class_slices(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                          iou_threshold: float) -> torch.Tensor:
    """One kernel call per class on contiguous slices of the boxes sorted by class (stable, so each class
    keeps its boxes in their original order, as torchvision's per-class loop gives them to the kernel)."""
    order = torch.argsort(idxs, stable=True)  # (N,)
    counts = torch.bincount(idxs).tolist()  # per class id, zeros included
    sorted_boxes, sorted_scores = boxes[order], scores[order]  # (N, 4), (N,)
    kept_positions = []
    start = 0
    for count in counts:
        if count:
            end = start + count
            kept_positions.append(torch.ops.torchvision.nms(sorted_boxes[start:end], sorted_scores[start:end],
                                                            float(iou_threshold)) + start)
            start = end
    keep_mask = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)  # (N,)
    keep_mask[order[torch.cat(kept_positions)]] = True
    keep = torch.nonzero(keep_mask).squeeze(1)  # (K,) ascending
    return keep[scores[keep].sort(descending=True).indices]
