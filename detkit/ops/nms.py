"""Non-maximum suppression, single-class and per class.

Dims:
    N: candidate boxes
    K: kept boxes
    B: boxes per block of the blocked algorithm

Chosen by measurement (tools/bench_ops.py, 2 CPU threads). Greedy NMS is sequential, but almost all its
work is comparing each kept box with every lower-scored box (~K * N / 2 IoUs). torchvision's compiled
CPU kernel does those one pair at a time; from about 1000 boxes on it is faster to walk the boxes in
blocks of B by decreasing score, test a whole block against all boxes kept so far with the vectorised
`box_iou`, and let the kernel settle only the block's survivors among themselves (2-4x faster at
N = 10k when many boxes are kept; ~0.3 ms slower when only a handful are). Smaller inputs, and CUDA
(where torchvision's kernel is a parallel bitmask kernel), use the kernel alone. `box_iou` performs the
kernel's float operations in the kernel's order, and the threshold is compared the way the kernel does
(see `_largest_float_not_above`), so both give the same indices.

`batched_nms` runs NMS once per class on class-sorted contiguous slices for large inputs, and once on
class-separated copies of the boxes for small inputs, where the per-class Python loop would dominate.
"""
from __future__ import annotations

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)

from detkit.ops.boxes import box_iou, compute_dtype
from detkit.ops.nms_onnx import onnx_batched_nms

# Below this many boxes (CPU) one kernel call on class-separated boxes beats a loop over classes; the
# separated call compares every pair across classes, so it loses as N grows (torchvision uses the same cut).
SEPARATED_CALL_MAX_BOXES_CPU = 1000
SEPARATED_CALL_MAX_BOXES_CUDA = 25_000
# From this many boxes on (CPU) the blocked algorithm beats the kernel alone; B boxes per block.
BLOCKED_MIN_BOXES = 1000
BLOCK_BOXES = 256
MAX_BLOCK_BOXES = 8192


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
    return _greedy_nms(boxes, scores, float(iou_threshold))


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
    if torch.onnx.is_in_onnx_export():  # the graph's own per-class NonMaxSuppression, same kept boxes and order
        return onnx_batched_nms(boxes, scores, idxs, float(iou_threshold))
    return eager_batched_nms(boxes, scores, idxs, iou_threshold)


def eager_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                      iou_threshold: float) -> torch.Tensor:
    """``batched_nms`` of checked inputs, eagerly."""
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
    dtype = compute_dtype(boxes, scores)
    return boxes.to(dtype), scores.to(dtype)


def _nms_on_separated_classes(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                              iou_threshold: float) -> torch.Tensor:
    """NMS once on boxes translated so that different classes never overlap.

    Translated in float64, where the offsets move coordinates by ~1e-10 pixels at most: in float32 the
    rounding of coordinates near class_id * extent would change the IoUs of small boxes by up to a few
    percent, and with them which boxes survive.
    """
    boxes64 = boxes.to(torch.float64)  # (N, 4)
    origin = boxes64.min()
    extent = boxes64.max() - origin + 1
    separated = boxes64 - origin + (idxs.to(torch.float64) * extent)[:, None]  # (N, 4)
    # the kernel alone: on class-separated boxes it beats the blocked algorithm (measured up to 1000 boxes)
    return torch.ops.torchvision.nms(separated, scores.to(torch.float64), float(iou_threshold))


def _nms_per_class_slices(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                          iou_threshold: float) -> torch.Tensor:
    """NMS per class on contiguous slices of the boxes sorted by class (stable, so each class keeps its
    boxes in their original order, as torchvision's per-class loop gives them to the kernel)."""
    order = torch.argsort(idxs, stable=True)  # (N,)
    counts = torch.bincount(idxs).tolist()  # per class id, zeros included
    sorted_boxes, sorted_scores = boxes[order], scores[order]  # (N, 4), (N,)
    kept_positions = []
    start = 0
    for count in counts:
        if count:
            end = start + count
            kept_positions.append(_greedy_nms(sorted_boxes[start:end], sorted_scores[start:end], float(iou_threshold))
                                  + start)
            start = end
    keep_mask = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)  # (N,)
    keep_mask[order[torch.cat(kept_positions)]] = True
    keep = torch.nonzero(keep_mask).squeeze(1)  # (K,) ascending
    return keep[scores[keep].sort(descending=True).indices]


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """boxes (N, 4), scores (N,) of one float dtype -> kept indices (K,) by decreasing score."""
    if boxes.device.type != "cpu" or len(boxes) < BLOCKED_MIN_BOXES:
        return torch.ops.torchvision.nms(boxes, scores, iou_threshold)
    return _blocked_nms(boxes, scores, iou_threshold)


def _blocked_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Exact greedy NMS, a block of boxes at a time in order of decreasing score (see the module docstring)."""
    order = scores.sort(descending=True, stable=True).indices  # (N,): ties by index, as in the kernel
    sorted_boxes, sorted_scores = boxes[order], scores[order]  # (N, 4), (N,)
    threshold = _largest_float_not_above(iou_threshold, boxes.dtype)  # IoU > it <=> IoU > iou_threshold
    kept_positions = []  # per block (K_b,) positions in the sorted order
    kept_boxes = boxes.new_empty((0, 4))  # (K, 4) kept so far
    start, block_size = 0, BLOCK_BOXES
    while start < len(boxes):
        block = sorted_boxes[start:start + block_size]  # (B, 4)
        survivors = torch.arange(len(block))  # (S,) positions in the block not overlapping a kept box
        if len(kept_boxes):
            overlaps = box_iou(kept_boxes, block) > threshold  # (K, B): B long rows vectorise well even for small K
            # any() over rows of a bool matrix is slow on CPU, amax over the same bytes as uint8 is not
            survivors = torch.nonzero(overlaps.view(torch.uint8).amax(dim=0) == 0).squeeze(1)
        # the kernel sorts stably, and the block is sorted already: it returns ascending positions
        within = torch.ops.torchvision.nms(block[survivors], sorted_scores[start:start + block_size][survivors],
                                           iou_threshold)  # (K_b,)
        kept_here = survivors[within]  # (K_b,)
        kept_positions.append(kept_here + start)
        kept_boxes = torch.cat([kept_boxes, block[kept_here]])
        start += len(block)
        # few survivors (clustered boxes): larger blocks, fewer steps; many: small blocks, small kernel calls
        block_size = min(2 * block_size, MAX_BLOCK_BOXES) if len(survivors) * 8 < len(block) else BLOCK_BOXES
    return order[torch.cat(kept_positions)]


def _largest_float_not_above(value: float, dtype: torch.dtype) -> float:
    """The kernel compares float IoUs with the threshold in double precision: for a float IoU x,
    x > value  <=>  x > (the largest float of `dtype` not above value)."""
    rounded = torch.tensor(value, dtype=dtype)
    if rounded.item() > value:
        rounded = torch.nextafter(rounded, torch.tensor(-torch.inf, dtype=dtype))
    return rounded.item()
