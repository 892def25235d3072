"""The label check both detectors run on their training targets (convention: ``detkit/data/categories.py``)."""
from __future__ import annotations

import torch


def check_labels(targets: list[dict], num_classes: int) -> None:
    """Raise if a target label is outside 0..K-1, naming the image: an out-of-range label would index past the
    classifier (RetinaNet) or silently train as background (label K in Faster R-CNN's RoI head).

    targets: B dicts with ``labels`` (M,) int64 (and ``image_id`` when the dataset gives one).
    """
    labels = torch.cat([t["labels"] for t in targets])
    if len(labels) == 0:
        return
    low, high = labels.aminmax()  # one device sync per step
    if low < 0 or high >= num_classes:
        for index, target in enumerate(targets):
            bad = (target["labels"] < 0) | (target["labels"] >= num_classes)
            if bad.any():
                image = target.get("image_id", f"#{index} of the batch")
                raise ValueError(f"image {image}: labels must be in 0..{num_classes - 1} (num_classes="
                                 f"{num_classes}), got {target['labels'].tolist()}; see detkit/data/categories.py")
