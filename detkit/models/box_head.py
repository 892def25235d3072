"""The box heads of Faster R-CNN's second stage: from pooled RoI features to one vector per RoI.

Dims: R RoIs, C channels, S x S the pooled size, F = representation_size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TwoMLPHead(nn.Module):
    """Flatten pooled features and apply two fully connected layers with ReLU.

    ``forward(pooled (R, C, S, S)) -> (R, representation_size)``.
    """

    def __init__(self, in_features: int, representation_size: int):
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(pooled.flatten(1)))))


class ConvFCHead(nn.Sequential):
    """``num_convs`` x (3x3 conv without bias + BatchNorm + ReLU) on the pooled maps, flatten, then ``num_fcs`` x
    (fully connected + ReLU): the layout of torchvision's ``FastRCNNConvFCHead`` (Faster R-CNN v2: 4 convs, 1 FC).

    ``forward(pooled (R, C, S, S)) -> (R, representation_size)``.
    """

    def __init__(self, channels: int, pool_size: int, num_convs: int, num_fcs: int, representation_size: int):
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                          nn.ReLU(inplace=True))
            for _ in range(num_convs)
        ]
        layers.append(nn.Flatten())
        in_features = channels * pool_size**2
        for _ in range(num_fcs):
            layers += [nn.Linear(in_features, representation_size), nn.ReLU(inplace=True)]
            in_features = representation_size
        super().__init__(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def build_box_head(channels: int, pool_size: int, num_convs: int, num_fcs: int, representation_size: int) -> nn.Module:
    """``TwoMLPHead`` for no convs and two FCs (the FPN paper's head), else ``ConvFCHead``; both map
    (R, channels, pool_size, pool_size) -> (R, representation_size)."""
    if num_convs == 0 and num_fcs == 2:
        return TwoMLPHead(channels * pool_size**2, representation_size)
    return ConvFCHead(channels, pool_size, num_convs, num_fcs, representation_size)
