"""Synthetic batches for the model benchmark, in detkit's format and in torchvision's."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SIZE_DIVISOR = 32  # detkit's data pads to it; torchvision's transform pads to it too (size_divisible)


@dataclass
class Batch:
    """One synthetic batch in both models' formats.

    ``images`` (B, 3, Hpad, Wpad) float in [0, 1], zero padded to a multiple of 32; ``image_sizes`` B x (h, w);
    ``targets`` B dicts ``boxes`` (M, 4) float32 xyxy absolute pixels, ``labels`` (M,) int64 in 0..K-1 (detkit's);
    ``tv_images`` B views (3, h, w) of ``images``; ``tv_targets`` the targets with torchvision's labels.
    """

    images: torch.Tensor
    image_sizes: list[tuple[int, int]]
    targets: list[dict]
    tv_images: list[torch.Tensor]
    tv_targets: list[dict]


def random_targets(count: int, size: tuple[int, int], object_sizes: tuple[float, float], num_classes: int,
                   generator: torch.Generator) -> list[dict]:
    """``count`` images' targets: 2-6 boxes (M, 4) xyxy absolute pixels inside ``size`` (h, w), sides uniform in
    ``object_sizes``, labels (M,) int64 uniform in 0..K-1."""
    height, width = size
    low, high = object_sizes
    targets = []
    for _ in range(count):
        num = int(torch.randint(2, 7, (1,), generator=generator))
        sides = low + torch.rand(num, 2, generator=generator) * (high - low)  # (M, 2) w, h
        sides = torch.minimum(sides, torch.tensor([width - 1.0, height - 1.0]))
        corner = torch.rand(num, 2, generator=generator) * (torch.tensor([width, height]) - sides)
        targets.append({"boxes": torch.cat([corner, corner + sides], dim=1),
                        "labels": torch.randint(0, num_classes, (num,), generator=generator)})
    return targets


def synthetic_batches(*, size: tuple[int, int], batch: int, num_classes: int, object_sizes: tuple[float, float],
                      torchvision_label_offset: int, device: str = "cpu", count: int = 3) -> list[Batch]:
    """``count`` fixed batches (seeded): uniform noise images of ``size`` (h, w), targets of ``random_targets``.

    ``torchvision_label_offset`` is added to torchvision's labels: 1 for its Faster R-CNN (background is its
    class 0), 0 for its RetinaNet.
    """
    generator = torch.Generator().manual_seed(1)
    height, width = size
    padded = (math.ceil(height / SIZE_DIVISOR) * SIZE_DIVISOR, math.ceil(width / SIZE_DIVISOR) * SIZE_DIVISOR)
    batches = []
    for _ in range(count):
        images = torch.zeros(batch, 3, *padded)
        images[:, :, :height, :width] = torch.rand(batch, 3, height, width, generator=generator)
        targets = [{key: value.to(device) for key, value in target.items()}
                   for target in random_targets(batch, size, object_sizes, num_classes, generator)]
        images = images.to(device)
        torchvision_targets = [{"boxes": t["boxes"], "labels": t["labels"] + torchvision_label_offset}
                               for t in targets]
        batches.append(Batch(images, [(height, width)] * batch, targets,
                             [image[:, :height, :width] for image in images], torchvision_targets))
    return batches
