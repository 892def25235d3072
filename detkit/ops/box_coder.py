"""Box <-> regression-delta coding, the Faster R-CNN (dx, dy, dw, dh) parameterisation.

Dims: (...) any leading dims; anchors broadcast against the deltas/boxes they code (e.g. deltas (B, N, 4)
with anchors (N, 4)). Boxes are xyxy absolute pixels.

With anchor centre (ax, ay) and size (aw, ah), and box centre (x, y) and size (w, h):
    dx = wx * (x - ax) / aw,  dy = wy * (y - ay) / ah,  dw = ww * log(w / aw),  dh = wh * log(h / ah).
"""
from __future__ import annotations

import math

import torch


class BoxCoder:
    """Encode boxes as deltas relative to anchors and decode them back.

    Args:
        weights: (wx, wy, ww, wh) > 0, multiplied into the deltas on encode and divided out on decode.
        bbox_xform_clip: upper clamp of dw, dh (after dividing by the weights) on decode, so that huge
            predicted deltas give large but finite boxes.
    """

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 bbox_xform_clip: float = math.log(1000.0 / 16)):
        if len(weights) != 4 or any(w <= 0 for w in weights):
            raise ValueError(f"BoxCoder weights must be 4 positive numbers (wx, wy, ww, wh), got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip})"

    def encode(self, gt_boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Deltas that turn anchors into gt_boxes.

        Args:
            gt_boxes: (..., 4) xyxy target boxes; anchors: (..., 4) xyxy, broadcastable with gt_boxes, positive sizes.
        Returns:
            (..., 4) deltas (dx, dy, dw, dh), float32 (float64 if an input is float64), computed in that
            precision whatever the input dtype.
        """
        dtype = _compute_dtype(gt_boxes, anchors)
        anchor_size, anchor_center = _size_and_center(anchors.to(dtype))  # (..., 2) each
        gt_size, gt_center = _size_and_center(gt_boxes.to(dtype))  # (..., 2) each
        center_deltas = _times(gt_center - anchor_center, self.weights[:2]) / anchor_size  # (..., 2)
        size_deltas = _times(torch.log(gt_size / anchor_size), self.weights[2:])  # (..., 2)
        return torch.cat([center_deltas, size_deltas], dim=-1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes obtained by applying deltas to anchors (the inverse of `encode`, up to the clamp).

        Args:
            deltas: (..., 4) (dx, dy, dw, dh); anchors: (..., 4) xyxy, broadcastable with deltas.
        Returns:
            (..., 4) xyxy boxes, float32 (float64 if an input is float64). Differentiable in deltas.
        """
        dtype = _compute_dtype(deltas, anchors)
        deltas = deltas.to(dtype)
        anchor_size, anchor_center = _size_and_center(anchors.to(dtype))  # (..., 2) each
        center_deltas = _divided(deltas[..., :2], self.weights[:2])  # (..., 2)
        size_deltas = _divided(deltas[..., 2:], self.weights[2:]).clamp(max=self.bbox_xform_clip)  # (..., 2)
        center = center_deltas * anchor_size + anchor_center  # (..., 2)
        half_size = 0.5 * (torch.exp(size_deltas) * anchor_size)  # (..., 2)
        return torch.cat([center - half_size, center + half_size], dim=-1)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _size_and_center(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 4) xyxy -> size (w, h) and centre (x, y), each (..., 2)."""
    size = boxes[..., 2:] - boxes[..., :2]
    return size, boxes[..., :2] + 0.5 * size


def _times(values: torch.Tensor, pair: tuple[float, float]) -> torch.Tensor:
    """values (..., 2) times per-column weights (a, b); a scalar multiply when a == b, none when 1."""
    if pair[0] == pair[1]:
        return values if pair[0] == 1.0 else pair[0] * values
    return torch.tensor(pair, dtype=values.dtype, device=values.device) * values


def _divided(values: torch.Tensor, pair: tuple[float, float]) -> torch.Tensor:
    """values (..., 2) divided by per-column weights (a, b)."""
    if pair[0] == pair[1]:
        return values if pair[0] == 1.0 else values / pair[0]
    return values / torch.tensor(pair, dtype=values.dtype, device=values.device)
