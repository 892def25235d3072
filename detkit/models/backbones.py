"""Backbones that return multi-scale feature maps.

Every backbone here is an ``nn.Module`` with two attributes the FPN reads, ``out_channels`` and
``strides`` (one entry per returned level), and ``forward(images (B, 3, H, W)) -> list[(B, C_l, H/s_l, W/s_l)]``.
Levels are named by their log2 stride: level 3 has stride 8, level 5 stride 32 (C3..C5 in the FPN paper).

Three families:
- ``tiny``: a plain 4-stage CNN (widths 32-256) that trains fast from scratch on a CPU.
- ``resnet18`` / ``resnet34`` / ``resnet50``: torchvision's ResNets, random init, torchvision's
  pretrained weights by name (downloads, needs internet) or a local weights file.
- ``mobilenet_v3_large``: torchvision's MobileNetV3-Large trunk with the FPN inputs of its detection models
  (two maps at stride 32), weights as for the ResNets.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

NORMS = ("bn", "frozen_bn", "gn")
RESNETS = ("resnet18", "resnet34", "resnet50")
MOBILENETS = ("mobilenet_v3_large",)
# what torchvision's classification nets have above the trunk, never loaded into it
CLASSIFIER_PREFIXES = ("fc.", "classifier.")


def norm_layer_factory(norm: str) -> Callable[[int], nn.Module]:
    """Return ``channels -> norm module`` for ``norm`` in ``NORMS``.

    ``frozen_bn`` keeps pretrained statistics fixed (fine-tuning); ``gn`` (32 groups, fewer for thin
    layers) does not depend on the batch, so it suits small per-GPU batches.
    """
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "gn":
        return lambda channels: nn.GroupNorm(min(32, channels // 4), channels)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _conv_norm_relu(c_in: int, c_out: int, stride: int, norm: Callable[[int], nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), norm(c_out), nn.ReLU(inplace=True)
    )


def level_outputs(x: torch.Tensor, stages: nn.ModuleList, return_levels: tuple[int, ...]) -> list[torch.Tensor]:
    """Run ``stages`` in turn on the stem's output x (stage i makes level i + 2, stride 2**(i + 2)) and return the
    maps (B, C_l, H_l, W_l) of ``return_levels``, finest first."""
    features = []
    for level, stage in enumerate(stages, start=2):
        x = stage(x)
        if level in return_levels:
            features.append(x)
    return features


class TinyBackbone(nn.Module):
    """A plain CNN of 4 stages (strides 4, 8, 16, 32; widths 32, 64, 128, 256), two 3x3 convs each.

    Small enough to train from random init at about 100 images/s of 128 px on two CPU cores.
    """

    widths = (32, 64, 128, 256)

    def __init__(self, return_levels: tuple[int, ...] = (3, 4, 5), norm: str = "bn"):
        super().__init__()
        make_norm = norm_layer_factory(norm)
        self.stem = _conv_norm_relu(3, 16, 2, make_norm)  # stride 2
        stages, c_in = [], 16
        for width in self.widths:  # levels 2..5
            stages.append(nn.Sequential(_conv_norm_relu(c_in, width, 2, make_norm),
                                        _conv_norm_relu(width, width, 1, make_norm)))
            c_in = width
        self.stages = nn.ModuleList(stages)
        _check_levels(return_levels)
        self.return_levels = tuple(return_levels)
        self.out_channels = [self.widths[level - 2] for level in self.return_levels]
        self.strides = [2**level for level in self.return_levels]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, H, W) normalised -> one (B, C_l, H / 2**l, W / 2**l) map per return level."""
        return level_outputs(self.stem(images), self.stages, self.return_levels)


class ResNetBackbone(nn.Module):
    """torchvision ResNet-18/34/50 trunk returning levels 2..5 (layer1..layer4) as requested.

    Args:
        name: one of ``RESNETS``.
        weights: ``None`` (random init), a torchvision weights name such as ``"DEFAULT"`` or
            ``"IMAGENET1K_V1"`` (downloaded by torchvision: needs internet), or the path of a local
            file holding a torchvision ResNet state dict (or a checkpoint with a ``state_dict`` key).
        norm: one of ``NORMS``; ``frozen_bn`` is the usual choice when fine-tuning pretrained weights.
        trainable_layers: how many of (layer4, layer3, layer2, layer1, stem) receive gradients, counted
            from the top; 5 trains everything. Freezing the stem and layer1 is the usual fine-tuning setup.
    """

    def __init__(
        self,
        name: str = "resnet50",
        weights: str | None = None,
        norm: str = "frozen_bn",
        return_levels: tuple[int, ...] = (3, 4, 5),
        trainable_layers: int = 5,
    ):
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"backbone must be one of {RESNETS + ('tiny',)}, got {name!r}")
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in [0, 5], got {trainable_layers}")
        _check_levels(return_levels)
        resnet = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer_factory(norm))
        if weights is not None:
            _load_trunk_weights(resnet, name, weights)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layers = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])
        self.return_levels = tuple(return_levels)
        self.out_channels = [_resnet_width(resnet, level) for level in self.return_levels]
        self.strides = [2**level for level in self.return_levels]
        frozen = [self.stem, *self.layers][: 5 - trainable_layers]
        for module in frozen:
            module.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, H, W) normalised -> one (B, C_l, H / 2**l, W / 2**l) map per return level."""
        return level_outputs(self.stem(images), self.layers, self.return_levels)


class MobileNetV3Backbone(nn.Module):
    """torchvision's MobileNetV3-Large trunk (``features``, 17 blocks) with the maps its detection models take.

    torchvision's ``mobilenet_backbone(fpn=True)`` splits the trunk into 6 stages at its strided blocks and feeds
    the FPN the output of the last two stages' first blocks: block 13 (the first at stride 32, 160 channels) and
    block 16 (the final 1x1 conv, 960 channels), both at stride 32. Here level l (stride 2**l) is the first block of
    that stride, so ``return_levels`` (5,) gives exactly those two maps; the final conv's map always comes last.

    Args:
        weights: ``None``, a torchvision weights name or a local state-dict file (as for ``ResNetBackbone``).
        norm: one of ``NORMS``; torchvision's detection models use ``frozen_bn`` with weights and ``bn`` without,
            both with eps 1e-5 (not MobileNetV3's own 1e-3, which applies only when no norm is passed).
        trainable_layers: how many of the 6 stages receive gradients, counted from the top; 6 trains everything.
    """

    def __init__(self, weights: str | None = None, norm: str = "frozen_bn", return_levels: tuple[int, ...] = (5,),
                 trainable_layers: int = 6):
        super().__init__()
        _check_levels(return_levels)
        net = torchvision.models.mobilenet_v3_large(weights=None, norm_layer=norm_layer_factory(norm))
        if weights is not None:
            _load_trunk_weights(net, "mobilenet_v3_large", weights)
        self.features = net.features
        # first block of each stride: 0 (stride 2), 2, 4, 7, 13 (stride 32), then the final conv (16)
        stage_starts = [0] + [i for i, block in enumerate(self.features) if getattr(block, "_is_cn", False)]
        stage_starts.append(len(self.features) - 1)
        if not 0 <= trainable_layers <= len(stage_starts):
            raise ValueError(f"trainable_layers must be in [0, {len(stage_starts)}], got {trainable_layers}")
        self.return_indices = [stage_starts[level - 1] for level in return_levels] + [stage_starts[-1]]
        self.out_channels = [self.features[i].out_channels for i in self.return_indices]
        self.strides = [2**level for level in return_levels] + [32]
        first_trainable = stage_starts[len(stage_starts) - trainable_layers] if trainable_layers else len(self.features)
        self.features[:first_trainable].requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, H, W) normalised -> one (B, C_i, H / s_i, W / s_i) map per entry of ``strides``."""
        x, maps = images, []
        for index, block in enumerate(self.features[: self.return_indices[-1] + 1]):
            x = block(x)
            if index in self.return_indices:
                maps.append(x)
        return maps


def build_backbone(
    name: str, weights: str | None = None, norm: str = "bn", return_levels: tuple[int, ...] = (3, 4, 5),
    trainable_layers: int = 5,
) -> nn.Module:
    """Build ``tiny``, a ResNet or MobileNetV3 by name; see ``TinyBackbone``, ``ResNetBackbone`` and
    ``MobileNetV3Backbone``."""
    if name == "tiny":
        if weights is not None:
            raise ValueError("backbone 'tiny' has no pretrained weights: set backbone_weights to null")
        return TinyBackbone(return_levels, norm)
    if name in MOBILENETS:
        return MobileNetV3Backbone(weights, norm, return_levels, trainable_layers)
    return ResNetBackbone(name, weights, norm, return_levels, trainable_layers)


def _check_levels(return_levels: tuple[int, ...]) -> None:
    if (not return_levels or any(level not in (2, 3, 4, 5) for level in return_levels)
            or list(return_levels) != sorted(set(return_levels))):
        raise ValueError(f"return_levels must be increasing levels among 2..5, got {return_levels}")


def _resnet_width(resnet: nn.Module, level: int) -> int:
    last_block = getattr(resnet, f"layer{level - 1}")[-1]
    last_norm = last_block.bn3 if hasattr(last_block, "bn3") else last_block.bn2
    return last_norm.num_features if hasattr(last_norm, "num_features") else last_norm.weight.shape[0]


def _load_trunk_weights(net: nn.Module, name: str, weights: str) -> None:
    """Load torchvision weights by enum name, or a local state-dict file, into the classification net ``net``
    (its classifier excluded)."""
    if os.path.sep in weights or weights.endswith((".pth", ".pt", ".ckpt")):
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"backbone weights file not found: {weights}")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    else:
        enum = torchvision.models.get_model_weights(name)
        try:
            state = enum[weights].get_state_dict(progress=True)  # "DEFAULT" is an alias member
        except KeyError:
            raise ValueError(f"unknown weights {weights!r} for {name}; "
                             f"choose from {[w.name for w in enum]} or a file path") from None
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    # GroupNorm has no running statistics: pretrained BN statistics are dropped, affine params kept.
    own = net.state_dict()
    state = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in state and not k.startswith(CLASSIFIER_PREFIXES)
               and "num_batches_tracked" not in k and not k.endswith(("running_mean", "running_var"))]
    wrong_shape = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
                   for k, v in state.items() if v.shape != own[k].shape]
    if missing or wrong_shape:
        raise ValueError(f"backbone weights {weights!r} do not fit {name}: missing {missing[:3]}, "
                         f"wrong shape {wrong_shape[:3]} ({len(missing)} missing, {len(wrong_shape)} mismatched)")
    net.load_state_dict(state, strict=False)
