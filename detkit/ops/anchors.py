"""Anchor boxes for every location of every pyramid level.

Dims:
    L: pyramid levels
    H, W: a level's feature map height and width
    A: anchors per location of a level = len(sizes[level]) * len(aspect_ratios[level])

Order of a level's (H * W * A, 4) anchors: location-major (row y, then column x), then ratio-major,
size-minor within a location. This is the order in which a head's (B, A * V, H, W) output flattens to
(B, H * W * A, V) after permuting to (B, H, W, A, V).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch

# Anchor sets kept per generator: one per (feature shapes, strides, device, dtype); multi-scale training
# with a handful of input sizes hits it every step, while arbitrary sizes cannot grow it without bound.
CACHE_SIZE = 16


class AnchorGenerator:
    """Anchors of given sizes and aspect ratios on the feature grid of each pyramid level.

    Args:
        sizes: per level, the anchor sizes s in pixels (an anchor's w * h = s * s).
        aspect_ratios: per level, the ratios r = h / w.
        offset: centre of cell (x, y) is (x * stride + offset, y * stride + offset), in pixels.

    The anchors centred at 0 are rounded to whole pixels (as torchvision does), so w * h = s * s and
    h / w = r hold up to that rounding.
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]], offset: float = 0.0):
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"AnchorGenerator needs one aspect_ratios tuple per level of sizes: got {len(sizes)} "
                             f"levels of sizes {sizes} and {len(aspect_ratios)} of aspect_ratios {aspect_ratios}")
        for name, per_level in (("sizes", sizes), ("aspect_ratios", aspect_ratios)):
            if any(len(level) == 0 or any(v <= 0 for v in level) for level in per_level):
                raise ValueError(f"AnchorGenerator {name} must be non-empty tuples of positive numbers per level, "
                                 f"got {per_level}")
        self.sizes = tuple(tuple(float(s) for s in level) for level in sizes)
        self.aspect_ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)
        self.offset = float(offset)
        self.cell_anchors = [centred_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]  # L x (A, 4)
        self._cache: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()

    def __repr__(self) -> str:
        return f"AnchorGenerator(sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, offset={self.offset})"

    def num_anchors_per_location(self) -> list[int]:
        """A per level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def __call__(self, feature_shapes: Sequence[Sequence[int]], strides: Sequence[float],
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        """Anchors of every level.

        Args:
            feature_shapes: per level (H, W) (a torch.Size is fine); strides: per level, pixels per feature cell,
                one number for both axes or a (stride_y, stride_x) pair.
            device, dtype: of the returned anchors (computed in float32, then converted).
        Returns:
            L tensors (H * W * A, 4) xyxy pixels, in the order of the module docstring. Cached: the same
            arguments return the same tensors, which must not be modified in place.
        """
        if len(feature_shapes) != len(self.sizes) or len(strides) != len(self.sizes):
            raise ValueError(f"AnchorGenerator has {len(self.sizes)} levels, got {len(feature_shapes)} feature shapes "
                             f"and {len(strides)} strides")
        if torch.jit.is_tracing():  # ONNX export: traced sizes stay symbolic (int() and the cache would fix them)
            return [grid_anchors(cell.to(device), shape, stride, self.offset).to(dtype)
                    for cell, shape, stride in zip(self.cell_anchors, feature_shapes, strides)]
        shapes = tuple((int(h), int(w)) for h, w in feature_shapes)
        device = torch.device(device if device is not None else "cpu")
        strides = tuple(tuple(s) if isinstance(s, (tuple, list)) else s for s in strides)
        key = (shapes, strides, device, dtype)
        if key in self._cache:
            self._cache.move_to_end(key)
            return list(self._cache[key])
        anchors = [grid_anchors(cell.to(device), shape, stride, self.offset).to(dtype)
                   for cell, shape, stride in zip(self.cell_anchors, shapes, strides)]
        self._cache[key] = anchors
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return list(anchors)


def centred_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """(A, 4) float32 xyxy anchors centred at 0, ratio-major, size-minor, rounded to whole pixels."""
    anchors = []
    for ratio in aspect_ratios:
        for size in sizes:
            half_width = size / math.sqrt(ratio) / 2  # w = s / sqrt(r), h = s * sqrt(r): w * h = s^2, h / w = r
            half_height = size * math.sqrt(ratio) / 2
            anchors.append([-half_width, -half_height, half_width, half_height])
    return torch.tensor(anchors, dtype=torch.float32).round()


def grid_anchors(cell_anchors: torch.Tensor, shape: tuple[int, int], stride: float | tuple[float, float],
                 offset: float) -> torch.Tensor:
    """cell_anchors (A, 4) centred at 0 -> (H * W * A, 4) float32, one copy per cell of an (H, W) grid whose cells
    are ``stride`` pixels apart (or (stride_y, stride_x))."""
    height, width = shape
    stride_y, stride_x = stride if isinstance(stride, tuple) else (stride, stride)
    device = cell_anchors.device
    xs = torch.arange(width, dtype=torch.float32, device=device) * stride_x + offset  # (W,)
    ys = torch.arange(height, dtype=torch.float32, device=device) * stride_y + offset  # (H,)
    center_y, center_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    centers = torch.stack([center_x, center_y, center_x, center_y], dim=-1).reshape(-1, 1, 4)  # (H * W, 1, 4)
    return (centers + cell_anchors).reshape(-1, 4)  # (H * W * A, 4)
