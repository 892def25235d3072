"""Batching: pad images of different sizes into one tensor whose sides divide the model's largest stride."""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch


def padded_size(height: int, width: int, size_divisor: int) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``size_divisor``."""
    return (-(-height // size_divisor) * size_divisor, -(-width // size_divisor) * size_divisor)


def collate_detection(batch: list[tuple[torch.Tensor, dict]], size_divisor: int = 32,
                      pad_value: float | Sequence[float] = 0.0) -> dict:
    """Stack ``(image, target)`` items into a padded batch.

    Args:
        batch: B items; image (3, H_b, W_b) float32, target dict (see ``detkit.data.coco.CocoDetection``).
        size_divisor: the padded height and width are the batch maxima rounded up to a multiple of this.
        pad_value: the padding, one value or one per channel (``detkit.data.transforms.padding_fill``).
    Returns:
        ``images`` (B, 3, Hpad, Wpad) float32, padded with ``pad_value`` at the bottom/right; ``image_sizes`` list of B
        (H_b, W_b) before padding; ``targets`` list of the B target dicts, unchanged.
    """
    if not batch:
        raise ValueError("collate_detection got an empty batch")
    if size_divisor < 1:
        raise ValueError(f"size_divisor must be >= 1, got {size_divisor}")
    images = [image for image, _ in batch]
    image_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
    height, width = padded_size(max(h for h, _ in image_sizes), max(w for _, w in image_sizes), size_divisor)
    padded = images[0].new_empty((len(images), images[0].shape[0], height, width))
    padded.copy_(torch.as_tensor(pad_value, dtype=padded.dtype).reshape(1, -1, 1, 1).expand_as(padded))
    for slot, image in zip(padded, images):
        slot[:, :image.shape[-2], :image.shape[-1]].copy_(image)
    return {"images": padded, "image_sizes": image_sizes, "targets": [target for _, target in batch]}


def make_collate_fn(size_divisor: int = 32, pad_value: float | Sequence[float] = 0.0) -> functools.partial:
    """A picklable ``collate_fn`` for ``torch.utils.data.DataLoader`` (works with worker processes)."""
    return functools.partial(collate_detection, size_divisor=size_divisor, pad_value=pad_value)
