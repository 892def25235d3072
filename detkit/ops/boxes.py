"""Box geometry: areas, pairwise IoU and generalized IoU, paired GIoU, clipping, small-box filtering.

Boxes are float tensors (..., 4) in absolute-pixel xyxy with x1 <= x2 and y1 <= y2.

Dims:
    N: boxes in the first set (rows of a pairwise matrix)
    M: boxes in the second set (columns)
    R: rows of one block of a pairwise matrix

Pairwise matrices are computed in float32 (float64 stays float64), whatever the input dtype, so that
fp16 areas of boxes near 1e4 pixels do not overflow. On CPU the matrix is filled block of rows by
block of rows, with the intermediates of a block in reused buffers that stay in cache: this is what
makes the kernels several times faster than a whole-matrix formulation, which is memory bound.
Where an input requires grad (and grad mode is on) a plain differentiable formulation is used instead.
"""
from __future__ import annotations

from typing import Callable

import torch

# Elements per block-of-rows buffer on CPU: large enough that the per-op overhead is amortised,
# small enough that the few buffers of a block stay in L2/L3 cache.
CPU_BLOCK_ELEMENTS = 1 << 18


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype detkit.ops computes in: float32 (also for fp16, bf16 and integer inputs, so that nothing
    overflows or rounds coarsely), float64 if any input is float64."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype) if tensor.is_floating_point() else dtype
    return dtype


def _check_boxes(boxes: torch.Tensor, name: str) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must be an (N, 4) tensor of xyxy boxes, got shape {tuple(boxes.shape)}")


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of boxes (..., 4) xyxy -> (...,), float32 (float64 for float64 input)."""
    boxes = boxes.to(compute_dtype(boxes))
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union.

    Args:
        boxes1: (N, 4) xyxy; boxes2: (M, 4) xyxy; any float dtype, same device.
    Returns:
        (N, M) float32 (float64 if an input is float64). A pair whose union is 0 (two empty boxes) has IoU 0.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    dtype = compute_dtype(boxes1, boxes2)
    boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    if _needs_grad(boxes1, boxes2):
        inter, union, _ = _differentiable_parts(boxes1, boxes2, with_hull=False)
        return inter / union.clamp(min=torch.finfo(dtype).tiny)
    return _pairwise_by_row_blocks(boxes1, boxes2, _iou_block, num_scratch=2)


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU: IoU - (C - U) / C, C the area of the smallest box enclosing both, U the union.

    Args:
        boxes1: (N, 4) xyxy; boxes2: (M, 4) xyxy; any float dtype, same device.
    Returns:
        (N, M) float32 (float64 if an input is float64) in [-1, 1]. Where C is 0 the fraction is taken as 0
        (and the IoU is 0), never NaN.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    dtype = compute_dtype(boxes1, boxes2)
    boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    if _needs_grad(boxes1, boxes2):
        tiny = torch.finfo(dtype).tiny
        inter, union, hull = _differentiable_parts(boxes1, boxes2, with_hull=True)
        return inter / union.clamp(min=tiny) - (hull - union) / hull.clamp(min=tiny)
    return _pairwise_by_row_blocks(boxes1, boxes2, _giou_block, num_scratch=4)


def paired_generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Generalized IoU of matching pairs, the diagonal of ``generalized_box_iou`` without the P x P matrix: what a
    GIoU box loss needs for P predictions and their P targets.

    Args:
        boxes1, boxes2: (P, 4) xyxy, any float dtype; row i of one is paired with row i of the other.
        eps: floor of the union and the enclosing area (as torchvision's GIoU loss), so degenerate pairs give
            finite values and gradients.
    Returns:
        (P,) float32 (float64 if an input is float64).
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    dtype = compute_dtype(boxes1, boxes2)
    boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    top_left = torch.max(boxes1[:, :2], boxes2[:, :2])  # (P, 2)
    bottom_right = torch.min(boxes1[:, 2:], boxes2[:, 2:])  # (P, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)  # (P,)
    union = box_area(boxes1) + box_area(boxes2) - inter  # (P,)
    hull = (torch.max(boxes1[:, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, :2], boxes2[:, :2])).prod(dim=1)  # (P,)
    return inter / union.clamp(min=eps) - (hull - union) / hull.clamp(min=eps)


def clip_boxes_to_image(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clamp boxes (..., 4) xyxy into an image of size (h, w): x to [0, w], y to [0, h]. Same shape and dtype.

    ``size`` may hold 0-dim tensors (the traced image size of an ONNX export), which stay in the graph.
    """
    height, width = size
    if isinstance(height, torch.Tensor):
        limits = torch.stack([width, height, width, height]).to(boxes)  # (4,)
    else:
        limits = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)  # (4,)
    return torch.minimum(boxes.clamp(min=0), limits)


def remove_small_boxes(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices (K,) int64, ascending, of the boxes (N, 4) xyxy whose width and height are both >= min_size."""
    _check_boxes(boxes, "boxes")
    widths = boxes[:, 2] - boxes[:, 0]  # (N,)
    heights = boxes[:, 3] - boxes[:, 1]  # (N,)
    return torch.nonzero((widths >= min_size) & (heights >= min_size)).squeeze(1)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _differentiable_parts(
    boxes1: torch.Tensor, boxes2: torch.Tensor, with_hull: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Out-of-place (autograd-friendly) intersection, union and optionally hull areas, each (N, M)."""
    area1, area2 = box_area(boxes1), box_area(boxes2)  # (N,), (M,)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[:, :2])  # (N, M, 2)
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[:, 2:])  # (N, M, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)  # (N, M)
    union = area1[:, None] + area2 - inter  # (N, M)
    if not with_hull:
        return inter, union, None
    hull_top_left = torch.minimum(boxes1[:, None, :2], boxes2[:, :2])  # (N, M, 2)
    hull_bottom_right = torch.maximum(boxes1[:, None, 2:], boxes2[:, 2:])  # (N, M, 2)
    hull = (hull_bottom_right - hull_top_left).prod(dim=2)  # (N, M)
    return inter, union, hull


BlockKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]], None]


def _pairwise_by_row_blocks(boxes1: torch.Tensor, boxes2: torch.Tensor, kernel: BlockKernel,
                            num_scratch: int) -> torch.Tensor:
    """Fill an (N, M) matrix by blocks of R rows, ``kernel(rows, columns, column_areas, out, scratch)``
    writing each block.

    ``rows`` is (R, 4); ``columns`` is boxes2 as (4, M) contiguous coordinate rows (x1, y1, x2, y2);
    ``column_areas`` (M,); ``out`` and each scratch buffer are (R, M). On CUDA the whole matrix is one block.
    """
    n, m = len(boxes1), len(boxes2)
    out = torch.empty((n, m), dtype=boxes1.dtype, device=boxes1.device)  # (N, M)
    if n == 0 or m == 0:
        return out
    columns = boxes2.t().contiguous()  # (4, M): contiguous rows read once per block
    column_areas = box_area(boxes2)  # (M,)
    rows_per_block = n if boxes1.device.type != "cpu" else max(1, min(n, CPU_BLOCK_ELEMENTS // m))
    scratch = [torch.empty((rows_per_block, m), dtype=out.dtype, device=out.device) for _ in range(num_scratch)]
    for start in range(0, n, rows_per_block):
        block = out[start:start + rows_per_block]  # (R, M)
        count = len(block)
        kernel(boxes1[start:start + count], columns, column_areas, block, [s[:count] for s in scratch])
    return out


def _iou_block(rows: torch.Tensor, columns: torch.Tensor, column_areas: torch.Tensor, out: torch.Tensor,
               scratch: list[torch.Tensor]) -> None:
    """IoU of rows (R, 4) with columns (4, M) into out (R, M), using two (R, M) scratch buffers."""
    union = _intersection_and_union_block(rows, columns, column_areas, out, scratch)
    out.div_(union)


def _giou_block(rows: torch.Tensor, columns: torch.Tensor, column_areas: torch.Tensor, out: torch.Tensor,
                scratch: list[torch.Tensor]) -> None:
    """Generalized IoU of rows (R, 4) with columns (4, M) into out (R, M), using four (R, M) scratch buffers."""
    union = _intersection_and_union_block(rows, columns, column_areas, out, scratch)  # scratch[0]
    out.div_(union)  # IoU
    hull, temp = scratch[1], scratch[2]
    rx1, ry1, rx2, ry2 = rows[:, :, None].unbind(1)  # each (R, 1)
    cx1, cy1, cx2, cy2 = columns  # each (M,)
    torch.maximum(rx2, cx2, out=hull).sub_(torch.minimum(rx1, cx1, out=temp))  # hull widths
    torch.maximum(ry2, cy2, out=temp).sub_(torch.minimum(ry1, cy1, out=scratch[3]))  # hull heights
    # C >= U, so C == 0 only where U == 0: the union is clamped to tiny already, clamping C the same way
    # makes C - U exactly 0 there, and the fraction 0 / tiny = 0
    hull.mul_(temp).clamp_(min=torch.finfo(out.dtype).tiny)
    gap = torch.sub(hull, union, out=union)  # C - U
    out.sub_(gap.div_(hull))


def _intersection_and_union_block(
    rows: torch.Tensor, columns: torch.Tensor, column_areas: torch.Tensor, out: torch.Tensor,
    scratch: list[torch.Tensor],
) -> torch.Tensor:
    """Write intersections (R, M) into out; return scratch[0] holding the unions, clamped to >= tiny.

    The union is 0 only where the intersection is 0 too, so clamping it to the smallest positive
    float makes the IoU 0 there (0 / tiny) at the cost of one cheap pass instead of a mask.
    """
    rx1, ry1, rx2, ry2 = rows[:, :, None].unbind(1)  # each (R, 1)
    cx1, cy1, cx2, cy2 = columns  # each (M,)
    heights, temp = scratch[0], scratch[1]
    torch.minimum(rx2, cx2, out=out).sub_(torch.maximum(rx1, cx1, out=temp)).clamp_(min=0)  # widths
    torch.minimum(ry2, cy2, out=heights).sub_(torch.maximum(ry1, cy1, out=temp)).clamp_(min=0)
    out.mul_(heights)  # intersections
    row_areas = (rx2 - rx1) * (ry2 - ry1)  # (R, 1)
    union = torch.add(row_areas, column_areas, out=heights).sub_(out)
    return union.clamp_(min=torch.finfo(out.dtype).tiny)
