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
        if _sparse_path_is_cheaper(iou, self.high_threshold):
            best_iou, best_gt = iou.amax(dim=0), None  # (N,)
        else:
            best_iou, best_gt = iou.max(dim=0)  # (N,), (N,) int64: the first gt among ties
        matches = torch.where(best_iou >= self.low_threshold, IGNORED, BACKGROUND)  # (N,) int64
        is_matched = best_iou >= self.high_threshold  # (N,)
        if self.allow_low_quality_matches:
            is_matched[self._low_quality_anchors(iou, best_iou)] = True
        if best_gt is not None:
            return torch.where(is_matched, best_gt, matches)
        matched = torch.nonzero(is_matched).squeeze(1)  # (Q,)
        matches[matched] = _columns(iou, matched).max(dim=0).indices  # first gt among ties, as above
        return matches

    @staticmethod
    def _low_quality_anchors(iou: torch.Tensor, best_iou: torch.Tensor) -> torch.Tensor:
        """Indices of anchors that have the highest IoU of some gt whose highest IoU is > 0.

        An anchor that is some gt's best has best_iou >= that gt's best IoU >= the smallest positive
        per-gt best, so when those candidates (P) are few only their columns are compared with the
        per-gt bests, instead of the whole (M, N) matrix: gathering them costs about as much as comparing
        the matrix when P ~ 0.45 N (measured on 100 x 100k, 10 x 20k and 30 x 5k).
        """
        gt_best = iou.amax(dim=1)  # (M,)
        gt_best = torch.where(gt_best > 0, gt_best, torch.inf)  # a gt with best IoU 0 promotes nothing
        candidates = torch.nonzero(best_iou >= gt_best.min()).squeeze(1)  # (P,)
        few = len(candidates) < _FEW_CANDIDATES * iou.shape[1]
        columns = _columns(iou, candidates) if few else iou  # (M, P) or (M, N)
        # any() over the rows of a bool matrix is ~10x slower than amax over the same bytes as uint8
        is_a_gt_best = (columns == gt_best[:, None]).view(torch.uint8).amax(dim=0).bool()  # (P,) or (N,)
        return candidates[is_a_gt_best] if few else torch.nonzero(is_a_gt_best).squeeze(1)


# Share of N below which _low_quality_anchors compares the candidate columns only; a little under the
# measured crossover (see there; ~0.4 on 30 x 5k with 2 threads).
_FEW_CANDIDATES = 0.4
# The sparse path's nonzero, gather and index_put cost about as much as a max with indices over this many
# IoUs (~20 us with 2 CPU threads).
_SPARSE_PATH_OVERHEAD = 20_000
# Matched share above which the dense path is taken (before the overhead): a margin under the measured
# crossover (45-55% on 10 to 100 gts, ~40% on 2 gts), as at 50% the sparse path measured up to 1.1x
# torchvision's Matcher with the machine busy, and the dense path is never slower than it.
_SPARSE_PATH_MAX_SHARE = 0.4
# Estimating the matched share costs ~25 us on 10 gts, ~40 us on 100 (~150 us on 100 x 100k, where each
# run of each gt is a TLB miss): about what the dense path saves over torchvision's Matcher in its N-sized
# element-wise ops at N ~ 16k. On fewer anchors the dense path is taken unmeasured, so it is never slower
# than torchvision's.
_MIN_SAMPLED_ANCHORS = 16_384
# The share is sampled on runs of adjacent columns spread evenly over N: anchors are laid out level by
# level, so a prefix would see the finest level only, and single spread columns cost a cache miss per gt.
_SAMPLE_RUNS, _SAMPLE_RUN_LENGTH = 16, 8


def _sparse_path_is_cheaper(iou: torch.Tensor, high_threshold: float) -> bool:
    """iou (M, N) -> whether finding the gt index for the matched anchors only (an amax, then a max with
    indices over the Q matched columns) beats one max with indices over all N columns.

    A max with indices costs ~4x an amax over the same matrix, and gathering columns about half a max over
    them, so the sparse path costs ~(1/4 + 3/2 Q/N) of the dense one plus its extra ops: break-even near
    Q/N = 1/2. With one gt the amax is no cheaper than the max with indices. Q is estimated on a sample.
    """
    num_gt, num_anchors = iou.shape
    overhead_share = _SPARSE_PATH_OVERHEAD / (num_gt * num_anchors)  # the extra ops, in matched-share units
    if num_gt == 1 or num_anchors < _MIN_SAMPLED_ANCHORS or overhead_share >= _SPARSE_PATH_MAX_SHARE:
        return False
    # (M, R, L) windows copied first: the amax over dim 0 of the strided view is ~3x slower
    sample = iou.unfold(1, _SAMPLE_RUN_LENGTH, num_anchors // _SAMPLE_RUNS).contiguous()
    best = sample.amax(dim=0)  # (R, L), R = 16 or 17
    matched_share = torch.count_nonzero(best >= high_threshold).item() / best.numel()
    return matched_share + overhead_share < _SPARSE_PATH_MAX_SHARE


def _columns(matrix: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """matrix (M, N), indices (Q,) -> matrix[:, indices] (M, Q); gather is ~2x faster than index_select here."""
    return matrix.gather(1, indices.expand(matrix.shape[0], -1))
