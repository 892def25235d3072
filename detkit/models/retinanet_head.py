"""RetinaNet's dense head: a classification subnet and a box subnet shared across pyramid levels.

Dims: B images, C FPN width, A anchors per location, K classes, N_l = H_l * W_l * A anchors of level l.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from detkit.models.dense import flatten_level
from detkit.models.settings import DenseHead


def _subnet(channels: int, depth: int, norm: str | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers.append(nn.Conv2d(channels, channels, 3, padding=1, bias=norm is None))
        if norm == "gn":
            layers.append(nn.GroupNorm(min(32, channels // 4), channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class RetinaNetHead(nn.Module):
    """Two conv towers (depth x 3x3 conv + ReLU) then per-anchor class logits and box deltas.

    The classifier bias starts at -log((1 - prior) / prior), so every anchor initially predicts
    foreground with probability ``prior`` (0.01): otherwise the loss of ~10^4 easy background anchors
    per image swamps the first iterations (Lin et al., 2017, section 4.1).

    Args: in_channels C; num_anchors A per location; num_classes K; settings: the ``DenseHead`` group.
    """

    def __init__(self, *, in_channels: int, num_anchors: int, num_classes: int, settings: DenseHead):
        super().__init__()
        self.num_classes = num_classes
        self.cls_tower = _subnet(in_channels, settings.depth, settings.norm)
        self.box_tower = _subnet(in_channels, settings.depth, settings.norm)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.box_deltas = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        prior = settings.prior_probability
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior) / prior))

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """features: per level (B, C, H_l, W_l) -> (class logits per level (B, N_l, K), deltas per level
        (B, N_l, 4))."""
        logits = [flatten_level(self.cls_logits(self.cls_tower(f)), self.num_classes) for f in features]
        deltas = [flatten_level(self.box_deltas(self.box_tower(f)), 4) for f in features]
        return logits, deltas
