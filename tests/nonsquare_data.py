"""A tiny COCO dataset of non-square images with known boxes, and a detector that finds them from pixels.

Every object is a solid rectangle of pure red, green or blue (label 0, 1, 2) on black, so after any resize
channel k of the image is the fraction of each pixel covered by objects of label k.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch import nn

# Sparse ids listed out of order: label l is the l-th id in ascending order (detkit.data.categories).
CATEGORIES = [{"id": 9, "name": "blue"}, {"id": 4, "name": "red"}, {"id": 7, "name": "green"}]
CATEGORY_IDS = [4, 7, 9]  # indexed by label = colour channel

# (width, height) -> [(x, y, w, h, label)], integer pixels. Objects keep >= 8 px from the border and
# >= 14 px from each other, so they stay apart after the smallest resize used (x0.109); one object
# of every image ends near the far (right, bottom) corner, where an axis mix-up moves a box the most.
IMAGES = {
    (200, 90): [(10, 10, 50, 30, 0), (80, 20, 40, 60, 2), (140, 40, 52, 42, 1)],
    (90, 200): [(10, 10, 30, 50, 2), (20, 75, 60, 40, 1), (40, 140, 42, 52, 0)],
    (200, 57): [(8, 8, 60, 40, 0), (120, 10, 72, 39, 2)],
    (300, 300): [(20, 20, 100, 60, 0), (30, 150, 60, 120, 2), (180, 200, 100, 90, 1)],
    (640, 480): [(40, 30, 200, 150, 1), (300, 60, 150, 100, 0), (400, 300, 220, 160, 2)],
}


def write_dataset(root: Path, objects_by_size: dict = IMAGES) -> dict:
    """Write ``root/images/*.png`` and ``root/instances_{train,val}.json`` (the same images); returns the JSON dict.

    ``objects_by_size``: (width, height) -> [(x, y, w, h, label)] as ``IMAGES``, one image per size.
    """
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, ((width, height), objects) in enumerate(objects_by_size.items(), start=1):
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        for x, y, w, h, label in objects:
            pixels[y:y + h, x:x + w, label] = 255
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[label],
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        file_name = f"{width}x{height}.png"
        Image.fromarray(pixels).save(root / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    for split in ("train", "val"):
        (root / f"instances_{split}.json").write_text(json.dumps(data))
    return data


def profile_edges(profile: np.ndarray, start: int) -> tuple[float, float]:
    """Sub-pixel edges (lo, hi) of one object from its coverage summed across the other axis.

    Normalised by its peak, the profile integrates to the object's extent and its centroid is the object's
    centre, both unchanged by area (down) and linear (up) resampling of a solid rectangle.
    """
    weights = profile / profile.max()
    extent = weights.sum()
    centre = ((np.arange(len(weights)) + start + 0.5) * weights).sum() / extent  # pixel i spans [i, i + 1]
    return centre - extent / 2, centre + extent / 2


def find_rectangles(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """image (3, h, w) float coverage per label -> boxes (D, 4) float64 xyxy pixels and labels (D,) int64."""
    height, width = image.shape[1:]
    boxes, labels = [], []
    for label, coverage in enumerate(image):
        regions, _ = ndimage.label(coverage > 0.3)
        for rows, cols in ndimage.find_objects(regions):
            # 2 px of margin takes in the partly covered border pixels that the threshold cut off
            ys = slice(max(rows.start - 2, 0), min(rows.stop + 2, height))
            xs = slice(max(cols.start - 2, 0), min(cols.stop + 2, width))
            window = coverage[ys, xs]
            x1, x2 = profile_edges(window.sum(axis=0), xs.start)
            y1, y2 = profile_edges(window.sum(axis=1), ys.start)
            boxes.append([x1, y1, x2, y2])
            labels.append(label)
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(labels, dtype=np.int64)


class ColourBoxFinder(nn.Module):
    """A detector with detkit's interface that reads the objects off the images: a perfect predictor.

    ``forward(images (B, 3, H, W) in [0, 1], image_sizes [(h, w)])`` -> per image ``{boxes (D, 4) float32
    xyxy in the input image's pixels, scores (D,) all 1, labels (D,) int64}``. It never sees the targets.
    """

    def __init__(self, num_classes: int = 3):
        super().__init__()
        if num_classes != 3:
            raise ValueError(f"ColourBoxFinder knows 3 colours, got num_classes={num_classes}")
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor, image_sizes: list[tuple[int, int]], targets: list[dict] | None = None):
        if self.training:
            raise RuntimeError("ColourBoxFinder only detects; it has nothing to train")
        detections = []
        for image, (height, width) in zip(images, image_sizes):
            boxes, labels = find_rectangles(image[:, :height, :width].double().cpu().numpy())
            boxes = torch.from_numpy(boxes).to(images.device, torch.float32)
            detections.append({"boxes": boxes, "scores": torch.ones(len(boxes), device=images.device),
                               "labels": torch.from_numpy(labels).to(images.device)})
        return detections
