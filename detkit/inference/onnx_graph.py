"""The module an ONNX export traces: one image in, its detections in the image's own pixels out.

The predictor's steps for a batch of one, as tensor operations (``detkit.inference.predictor``): the val resize
and padding (``detkit.inference.onnx_resize``), the detector itself (it normalises; its post-processing exports
through ``detkit.ops``: symbolic top-k counts, anchors and per-class ``NonMaxSuppression``), and the mapping back
to the input's pixels with the clip to it.
"""
from __future__ import annotations

import torch
from torch import nn

from detkit.data.transforms import to_original_pixels
from detkit.inference.onnx_resize import resize_and_pad
from detkit.ops import clip_boxes_to_image


class SingleImageDetector(nn.Module):
    """``forward(image (3, H, W) float32 RGB in [0, 1]) -> (boxes (D, 4) float32 xyxy in the image's pixels,
    scores (D,) float32 by decreasing score, labels (D,) int64 class indices 0..K-1)``.

    Args:
        model: a detkit detector in eval mode (``forward(images, image_sizes)`` -> per image boxes, scores, labels).
        min_size, max_size, size_divisor: the checkpoint's validation resize and padding (``data.*``).
    """

    def __init__(self, model: nn.Module, *, min_size: int, max_size: int, size_divisor: int):
        super().__init__()
        self.model = model
        self.min_size, self.max_size, self.size_divisor = min_size, max_size, size_divisor
        self.eval()  # the exporter restores this module's mode, and with it the detector's, after tracing

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = torch._shape_as_tensor(image)  # (3,): traced, H and W follow the input
        padded, height, width, scale = resize_and_pad(image, self.min_size, self.max_size, self.size_divisor)
        detection = self.model(padded, [(height, width)])[0]
        boxes = clip_boxes_to_image(to_original_pixels(detection["boxes"], scale), (shape[1], shape[2]))
        return boxes.float(), detection["scores"].float(), detection["labels"].to(torch.int64)
