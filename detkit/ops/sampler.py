"""Sample a fixed-size, class-balanced subset of matched anchors or proposals per image.

Dims: B images; N_i anchors/proposals of image i; S = batch_size_per_image.
"""
from __future__ import annotations

import torch


class BalancedSampler:
    """Per image: up to floor(S * positive_fraction) positives, then negatives up to S in total.

    Args:
        batch_size_per_image: S, the number of samples per image (fewer when the image has fewer candidates).
        positive_fraction: the largest share of positives in S.

    Draws uniformly without replacement with torch.randperm, so results follow the global torch RNG
    (torch.manual_seed makes them repeatable; on CUDA the CUDA generator).
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        if batch_size_per_image <= 0 or int(batch_size_per_image) != batch_size_per_image:
            raise ValueError(f"batch_size_per_image must be a positive integer, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __repr__(self) -> str:
        return (f"BalancedSampler(batch_size_per_image={self.batch_size_per_image}, "
                f"positive_fraction={self.positive_fraction})")

    def __call__(self, matched: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """matched: B tensors (N_i,) int64 in the Matcher's encoding (gt index >= 0, -1 background, -2 ignored).

        Returns:
            (positive_masks, negative_masks): B bool tensors (N_i,) each. Positives are drawn from entries
            >= 0: floor(S * positive_fraction) of them, or all if fewer; negatives from entries == -1 fill
            up to S. Ignored entries (-2) are never sampled.
        """
        positive_masks, negative_masks = [], []
        for matched_image in matched:
            positives = torch.nonzero(matched_image >= 0).squeeze(1)  # (P_i,)
            negatives = torch.nonzero(matched_image == -1).squeeze(1)  # (Q_i,)
            num_positive = min(int(self.batch_size_per_image * self.positive_fraction), len(positives))
            num_negative = min(self.batch_size_per_image - num_positive, len(negatives))
            positive_masks.append(_mask_of_random_subset(positives, num_positive, len(matched_image)))
            negative_masks.append(_mask_of_random_subset(negatives, num_negative, len(matched_image)))
        return positive_masks, negative_masks


def _mask_of_random_subset(indices: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """(length,) bool mask, True at `count` of `indices` drawn uniformly without replacement."""
    mask = torch.zeros(length, dtype=torch.bool, device=indices.device)
    chosen = indices[torch.randperm(len(indices), device=indices.device)[:count]]
    mask[chosen] = True
    return mask
