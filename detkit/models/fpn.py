"""Feature Pyramid Network (Lin et al., 2017) on top of a backbone from ``backbones.py``.

Dims: B images, C FPN width, H_l x W_l the map of level l (stride 2**l).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detkit.models.backbones import build_backbone, norm_layer_factory
from detkit.models.settings import Backbone, Pyramid


def _conv(c_in: int, c_out: int, kernel: int, norm: str | None) -> nn.Module:
    """A conv with bias, or conv (no bias: the norm shifts) + norm as ``nn.Sequential`` (keys ``0.*``, ``1.*``)."""
    conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=norm is None)
    return conv if norm is None else nn.Sequential(conv, norm_layer_factory(norm)(c_out))


class FPN(nn.Module):
    """Top-down pyramid with lateral 1x1 and output 3x3 convs, plus optional extra levels.

    Args:
        in_channels: channels of the backbone maps, finest first (e.g. C3, C4, C5).
        in_strides: their strides (e.g. 8, 16, 32); each must be the previous one's or twice it.
        out_channels: C, the width of every output level.
        num_extra_levels: levels above the coarsest input, each of half the previous one's size (P6, P7).
        extra_block: how they are made (``detkit.models.settings.Pyramid.extra_block``): "conv" (stride-2 3x3
            convs on the last output, then on the ReLU of the previous), "conv_from_input" (the first on the
            coarsest input map instead) or "max_pool" (stride-2 subsampling, no weights).
        norm: None, or the norm after every lateral and output conv (``NORMS`` of ``detkit.models.backbones``).

    ``strides`` lists the stride of every output level; ``forward`` returns one (B, C, H_l, W_l) map per level.
    """

    def __init__(self, in_channels: list[int], in_strides: list[int], out_channels: int = 256,
                 num_extra_levels: int = 0, extra_block: str = "conv", norm: str | None = None):
        super().__init__()
        if any(b not in (a, 2 * a) for a, b in zip(in_strides, in_strides[1:])):
            raise ValueError(f"FPN inputs must have strides doubling per level (or repeating, as MobileNetV3's two "
                             f"stride-32 maps), got {in_strides}")
        self.lateral = nn.ModuleList(_conv(c, out_channels, 1, norm) for c in in_channels)
        self.output = nn.ModuleList(_conv(out_channels, out_channels, 3, norm) for _ in in_channels)
        self.extra_block = extra_block
        first_input = in_channels[-1] if extra_block == "conv_from_input" else out_channels
        extra_inputs = [first_input] + [out_channels] * (num_extra_levels - 1)
        self.extra = nn.ModuleList() if extra_block == "max_pool" else nn.ModuleList(
            nn.Conv2d(c_in, out_channels, 3, stride=2, padding=1) for c_in in extra_inputs[:num_extra_levels])
        self.num_extra_levels = num_extra_levels
        self.out_channels = out_channels
        self.strides = list(in_strides) + [in_strides[-1] * 2 ** (i + 1) for i in range(num_extra_levels)]
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_uniform_(conv.weight, a=1)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """features: backbone maps, finest first -> pyramid maps (B, C, H_l, W_l), finest first."""
        top_down = self.lateral[-1](features[-1])
        outputs = [self.output[-1](top_down)]
        for feature, lateral, output in zip(features[-2::-1], self.lateral[-2::-1], self.output[-2::-1]):
            # nearest upsampling to the lateral's exact size copes with odd map sizes (and equal strides)
            top_down = lateral(feature) + F.interpolate(top_down, size=feature.shape[-2:], mode="nearest")
            outputs.insert(0, output(top_down))
        for i in range(self.num_extra_levels):
            if self.extra_block == "max_pool":
                outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2))
            elif i == 0:
                outputs.append(self.extra[0](features[-1] if self.extra_block == "conv_from_input" else outputs[-1]))
            else:
                outputs.append(self.extra[i](F.relu(outputs[-1])))
        return outputs


# ImageNet statistics: what torchvision's pretrained trunks expect; harmless from random init.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeaturePyramid(nn.Module):
    """Normalise raw images, run backbone + FPN: the shared body of both detectors.

    Args:
        backbone: the ``Backbone`` group (trunk, weights, norm, trainable layers).
        fpn: the ``Pyramid`` group (finest level, width, extra levels).

    ``body`` is the backbone, ``fpn`` the pyramid on it (torchvision's names);
    ``forward(images (B, 3, H, W) float in [0, 1]) -> list[(B, C, H_l, W_l)]`` at ``strides``.
    """

    def __init__(self, *, backbone: Backbone, fpn: Pyramid):
        super().__init__()
        self.body = build_backbone(backbone.name, backbone.weights, backbone.norm, tuple(range(fpn.min_level, 6)),
                                   backbone.trainable_layers)
        self.fpn = FPN(self.body.out_channels, self.body.strides, fpn.channels, fpn.extra_levels, fpn.extra_block,
                       fpn.norm)
        self.strides = self.fpn.strides
        self.out_channels = fpn.channels
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        # channels-last is oneDNN's own layout: training steps measured 5-6% faster on the CPU, both detectors
        return self.fpn(self.body(((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)))
