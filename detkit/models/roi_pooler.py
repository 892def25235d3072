"""Multi-level RoI pooling for the RoI head: torchvision's ``MultiScaleRoIAlign`` with known strides.

Dims: B images, C channels, R RoIs of the batch, R_i of image i, S the pooled size.
"""
from __future__ import annotations

import math

import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper

from detkit.ops.pooling import roi_align


class LevelRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` whose per-level pooling is ``detkit.ops.roi_align``.

    Same configuration, level mapper (FPN paper, eq. 1) and output as torchvision's; only the kernel
    call differs: ``detkit.ops.roi_align`` runs torchvision's CPU kernels on all threads (identical
    values), and levels without RoIs are skipped.

    ``forward(features {name: (B, C, H_l, W_l)}, boxes B x (R_i, 4) xyxy pixels, image_sizes) -> (R, C, S, S)``,
    rows image-major. ``scales`` and ``map_levels`` must be set (``build_roi_pooler`` does).
    """

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
                ) -> torch.Tensor:
        features = [x[name] for name in self.featmap_names]
        rois = torch.cat([torch.cat([b.new_full((b.shape[0], 1), i), b], 1) for i, b in enumerate(boxes)])  # (R, 5)
        levels = self.map_levels(boxes)  # (R,) index into features
        pooled = features[0].new_zeros((rois.shape[0], features[0].shape[1], *self.output_size))  # (R, C, S, S)
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            index = torch.nonzero(levels == level).squeeze(1)
            if torch.jit.is_tracing() or len(index):  # a traced graph pools every level: another image's RoIs differ
                # autocast may give levels different dtypes: match the result's, as torchvision does
                pooled[index] = roi_align(feature, rois[index], self.output_size, scale,
                                          self.sampling_ratio).to(pooled.dtype)
        return pooled


def build_roi_pooler(strides: list[int], output_size: int = 7, sampling_ratio: int = 2,
                     canonical_scale: int = 224, canonical_level: int = 4) -> LevelRoIAlign:
    """``LevelRoIAlign`` over levels named "0", "1", ... at ``strides`` (finest first, doubling; the coarsest may
    repeat, as MobileNetV3's two stride-32 maps: like torchvision's mapper, RoIs then pool from its first map only).

    torchvision infers each level's scale on its first call from the feature and image sizes and
    caches it; that guess fails on small or strongly padded images (a 1-2 cell map of a 65 px
    image rounds to the wrong power of two). The strides are known here, so scales and the level
    mapper (FPN paper, eq. 1: level = floor(canonical_level + log2(sqrt(area) / canonical_scale)),
    clamped to the available levels) are set exactly instead.
    """
    levels = [math.log2(s) for s in strides]
    distinct = len(set(levels))
    doubling = all(b == a + 1 for a, b in zip(levels[:distinct], levels[1:distinct]))
    if any(level != round(level) for level in levels) or not doubling or set(levels[distinct:]) - {levels[-1]}:
        raise ValueError(f"RoI pooling needs power-of-two strides doubling per level (the coarsest may repeat), "
                         f"got {strides}")
    pooler = LevelRoIAlign([str(i) for i in range(len(strides))], output_size, sampling_ratio,
                           canonical_scale=canonical_scale, canonical_level=canonical_level)
    pooler.scales = [1.0 / s for s in strides]
    pooler.map_levels = initLevelMapper(int(levels[0]), int(levels[-1]), canonical_scale, canonical_level)
    return pooler
