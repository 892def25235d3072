"""Assign each anchor (or proposal) a ground truth, background, or "ignored" from an IoU matrix.

Dims:
    M: ground-truth boxes (rows of the IoU matrix)
    N: anchors or proposals (columns)
    P: candidate anchors for low-quality promotion

Encoding of the result (shared by every detector): gt index >= 0 matched, -1 background, -2 ignored
(zero loss weight).
"""
from __future__ import annotations

import torch

BACKGROUND = -1
IGNORED = -2


class Matcher:
    """Threshold matching of anchors to ground truths.

    Args:
        high_threshold: IoU >= high_threshold with its best gt matches an anchor to that gt.
        low_threshold: low_threshold <= IoU < high_threshold is ignored (-2); IoU < low_threshold is background (-1).
            low_threshold == high_threshold leaves nothing ignored.
        allow_low_quality_matches: also match, for each gt, its highest-IoU anchor(s) (ties included) even
            below high_threshold, each to the anchor's own best gt. A gt whose best IoU is 0 promotes
            nothing (unlike torchvision's Matcher, which would then promote every anchor).
    """

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"Matcher low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self) -> str:
        return (f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches})")

    def __call__(self, iou: torch.Tensor) -> torch.Tensor:
        """iou (M, N) float, gt x anchors -> (N,) int64 in the encoding above.

        M == 0 (an image without objects) gives all -1; N == 0 gives an empty tensor.
        """
        if iou.ndim != 2:
            raise ValueError(f"Matcher expects an (M gt, N anchors) IoU matrix, got shape {tuple(iou.shape)}")
        num_gt, num_anchors = iou.shape
        if num_gt == 0 or num_anchors == 0:
            return torch.full((num_anchors,), BACKGROUND, dtype=torch.int64, device=iou.device)
        best_iou = iou.amax(dim=0)  # (N,)
        matches = torch.where(best_iou >= self.low_threshold, IGNORED, BACKGROUND)  # (N,) int64
        is_matched = best_iou >= self.high_threshold  # (N,)
        if self.allow_low_quality_matches:
            is_matched[self._low_quality_anchors(iou, best_iou)] = True
        # The gt index is needed for the matched anchors only (usually a few percent): the max with
        # indices over all N columns costs ~4x the max without.
        matched = torch.nonzero(is_matched).squeeze(1)  # (Q,)
        matches[matched] = _columns(iou, matched).max(dim=0).indices  # first gt among ties
        return matches

    @staticmethod
    def _low_quality_anchors(iou: torch.Tensor, best_iou: torch.Tensor) -> torch.Tensor:
        """Indices of anchors that have the highest IoU of some gt whose highest IoU is > 0.

        An anchor that is some gt's best has best_iou >= that gt's best IoU >= the smallest positive
        per-gt best, so when those candidates (P) are few only their columns are compared with the
        per-gt bests, instead of the whole (M, N) matrix.
        """
        gt_best = iou.amax(dim=1)  # (M,)
        gt_best = torch.where(gt_best > 0, gt_best, torch.inf)  # a gt with best IoU 0 promotes nothing
        candidates = torch.nonzero(best_iou >= gt_best.min()).squeeze(1)  # (P,)
        few = 4 * len(candidates) < iou.shape[1]
        columns = _columns(iou, candidates) if few else iou  # (M, P) or (M, N)
        # any() over the rows of a bool matrix is ~10x slower than amax over the same bytes as uint8
        is_a_gt_best = (columns == gt_best[:, None]).view(torch.uint8).amax(dim=0).bool()  # (P,) or (N,)
        return candidates[is_a_gt_best] if few else torch.nonzero(is_a_gt_best).squeeze(1)


def _columns(matrix: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """matrix (M, N), indices (Q,) -> matrix[:, indices] (M, Q); gather is ~2x faster than index_select here."""
    return matrix.gather(1, indices.expand(matrix.shape[0], -1))
