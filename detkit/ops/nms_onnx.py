"""Per-class NMS in an ONNX graph: ``batched_nms`` as one ONNX ``NonMaxSuppression`` with a class dimension.

Dims: N candidate boxes, K classes (the largest class id + 1), S kept boxes.

torchvision's ``nms`` exports to ``NonMaxSuppression`` for one class; ``batched_nms`` separates classes by
offsetting boxes, which in the float32 that ONNX Runtime's NMS takes would round the IoUs of small boxes (see
``detkit.ops.nms._nms_on_separated_classes``). ONNX's operator does classes itself: each box gets its score
in its own class's row of a (K, N) matrix and -1, below the operator's score threshold, in the others, so
each class's boxes are suppressed among themselves only, with the same rule (IoU > threshold suppresses;
equal scores: the lower index first) as the eager kernel.
"""
from __future__ import annotations

import sys

import torch

ONNX_FLOAT, ONNX_INT64 = 1, 7  # TensorProto data types
OTHER_CLASS_SCORE, SCORE_THRESHOLD = -1.0, -0.5  # real scores are >= 0


class _PerClassNMS(torch.autograd.Function):
    """Eagerly (also while tracing) the eager ``batched_nms``; in the exported graph ``_per_class_nms_graph``."""

    @staticmethod
    def forward(ctx, boxes, scores, idxs, iou_threshold: float):
        from detkit.ops.nms import eager_batched_nms  # nms.py imports this module

        # the node's value only: left on, the tracer records the kernel's ops too, and fails on some of them
        # (the blocked path's bool-as-uint8 view, for more than 1000 candidates)
        tracing_state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            return eager_batched_nms(boxes, scores, idxs, iou_threshold)
        finally:
            torch._C._set_tracing_state(tracing_state)

    @staticmethod
    def symbolic(g, boxes, scores, idxs, iou_threshold: float):
        return _per_class_nms_graph(g, boxes, scores, idxs, iou_threshold)


def onnx_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
                     ) -> torch.Tensor:
    """``batched_nms`` (boxes (N, 4) xyxy, scores (N,), idxs (N,) int64 class ids) -> kept indices (S,) int64
    by decreasing score, recorded as one ONNX node while tracing (the eager result gives the traced values)."""
    return _PerClassNMS.apply(boxes, scores, idxs, iou_threshold)


def _per_class_nms_graph(g, boxes, scores, idxs, iou_threshold: float):
    def constant(value):
        return g.op("Constant", value_t=torch.tensor(value))

    boxes = g.op("Cast", boxes, to_i=ONNX_FLOAT)  # ONNX Runtime's NonMaxSuppression takes float32 only
    scores = g.op("Cast", scores, to_i=ONNX_FLOAT)
    idxs = g.op("Cast", idxs, to_i=ONNX_INT64)
    first, second = constant([0]), constant([1])
    # K = max id + 1; the appended 0 gives an empty input one class instead of the max of nothing
    largest_id = g.op("ReduceMax", g.op("Concat", idxs, constant([0]), axis_i=0), keepdims_i=0)
    classes = g.op("Range", constant(0), g.op("Add", largest_id, constant(1)), constant(1))  # (K,)
    own_class = g.op("Equal", g.op("Unsqueeze", idxs, first), g.op("Unsqueeze", classes, second))  # (K, N)
    class_scores = g.op("Where", own_class, g.op("Unsqueeze", scores, first), constant(OTHER_CLASS_SCORE))
    selected = g.op("NonMaxSuppression", g.op("Unsqueeze", boxes, first), g.op("Unsqueeze", class_scores, first),
                    constant([sys.maxsize]), constant([float(iou_threshold)]), constant([SCORE_THRESHOLD]))  # (S, 3)
    kept = g.op("Gather", selected, constant(2), axis_i=1)  # (S,) box indices, class by class
    count = g.op("Shape", kept)
    # by index, then by decreasing score: TopK keeps equal values in index order, so ties end lowest index first
    _, by_index = g.op("TopK", kept, count, axis_i=0, largest_i=0, sorted_i=1, outputs=2)
    kept = g.op("Gather", kept, by_index, axis_i=0)
    _, by_score = g.op("TopK", g.op("Gather", scores, kept, axis_i=0), count, axis_i=0, largest_i=1, sorted_i=1,
                       outputs=2)
    return g.op("Gather", kept, by_score, axis_i=0)
