"""The last step of both detectors: from scored candidate boxes to the final detections of one image.

Dims: N candidates, D <= detections_per_image kept detections.
"""
from __future__ import annotations

import torch

from detkit.models.settings import Inference
from detkit.ops import batched_nms, clip_boxes_to_image, remove_small_boxes


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, image_size: tuple[int, int],
                      settings: Inference) -> dict[str, torch.Tensor]:
    """Clip, drop degenerate boxes, NMS per class (or over all classes), keep the best detections.

    Args:
        boxes: (N, 4) float xyxy in the image's pixels; scores: (N,); labels: (N,) int64 class labels.
        image_size: (h, w) of the image before padding: boxes are clipped to it.
        settings: the detector's ``Inference`` (min_box_size, nms_threshold, class_agnostic, detections_per_image).
    Returns:
        ``{"boxes": (D, 4), "scores": (D,), "labels": (D,) int64}`` sorted by decreasing score.
    """
    boxes = clip_boxes_to_image(boxes, image_size)  # (N, 4)
    keep = remove_small_boxes(boxes, settings.min_box_size)  # (N',)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    groups = torch.zeros_like(labels) if settings.class_agnostic else labels  # (N',)
    keep = batched_nms(boxes, scores, groups, settings.nms_threshold)[: settings.detections_per_image]  # (D,)
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
