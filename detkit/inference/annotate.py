"""Drawing one image's predictions on it with torchvision's ``draw_bounding_boxes``."""
from __future__ import annotations

import os

import matplotlib
import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

from detkit.inference.predictor import Prediction
from detkit.visualize import class_colour

# a TrueType font scales with the image (PIL's built-in bitmap font is 11 px high on any photo); matplotlib ships it
FONT = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")


def annotate(image: np.ndarray, prediction: Prediction) -> np.ndarray:
    """image (H, W, 3) uint8 RGB and its ``Prediction`` (boxes xyxy in its pixels) -> a copy (H, W, 3) uint8 with
    a box per detection in its class's colour (``detkit.visualize.class_colour``) and "name score" in its top left
    corner, black on that colour."""
    if len(prediction.boxes) == 0:
        return image.copy()
    longer_side = max(image.shape[:2])
    captions = [f"{name} {score:.2f}" for name, score in zip(prediction.names, prediction.scores.tolist())]
    drawn = draw_bounding_boxes(
        torch.from_numpy(np.array(image)).permute(2, 0, 1), prediction.boxes, labels=captions,  # a copy: PIL arrays are read-only
        colors=[class_colour(label) for label in prediction.labels.tolist()],
        width=max(1, round(longer_side / 250)), font=FONT, font_size=max(9, round(longer_side / 45)),
        fill_labels=True)  # black text on the class colour: readable on any photo
    return np.ascontiguousarray(drawn.permute(1, 2, 0).numpy())
