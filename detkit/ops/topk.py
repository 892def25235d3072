"""Top-k with k capped at the number of values, in a form an ONNX export keeps symbolic.

Dims: N values along ``dim``.
"""
from __future__ import annotations

import torch


def topk_at_most(values: torch.Tensor, k: int, dim: int = -1) -> torch.return_types.topk:
    """``values.topk(min(k, N), dim)``: the k largest values (all N when N < k) and their indices, largest first.

    While tracing (ONNX export) ``min(k, N)`` is computed in the graph: N depends on the image there (the
    candidates above a score threshold, the anchors of a level), and a Python ``min`` would fix it to the
    traced image's count.
    """
    if torch.jit.is_tracing():
        count = torch.clamp(torch._shape_as_tensor(values)[dim], max=k)  # 0-dim int64, traced
        return values.topk(count, dim)
    return values.topk(min(k, values.shape[dim]), dim)
