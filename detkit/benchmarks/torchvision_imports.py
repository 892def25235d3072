"""torchvision's six COCO detectors against detkit's import of them, for the model benchmark: one pair per
architecture holding the same weights.

torchvision's model is built with random (seeded) weights as its published checkpoints are built: FrozenBatchNorm2d
in the trunk where torchvision uses it once weights are given (v1 and MobileNet), and the trunk's first layers
frozen as detkit's import freezes them (``trainable_layers``: 3 of 5); ``from_torchvision`` of its state dict is
detkit's model. Both get the same batch: detkit the padded (B, 3, H, W) images in [0, 1] (it normalises inside),
torchvision the unpadded views, its transform sized to the images (``min_size`` / ``max_size`` = their sides) so
that it resizes by a factor of 1, normalises and pads to 32 itself.

What stays different: torchvision's classifiers also score background (RetinaNet: one more output per anchor;
Faster R-CNN: a background box regressor), which the import drops (``WeightsCheck.dropped``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detkit.benchmarks.architecture import parameter_count, relative_difference
from detkit.benchmarks.batches import Batch
from detkit.data.coco_names import NUM_COCO_LABELS
from detkit.models.fpn import IMAGENET_MEAN, IMAGENET_STD
from detkit.models.torchvision_import import (
    architecture,
    detector_settings,
    detkit_name,
    from_torchvision,
    normalised_state_dict,
)

# overrides (detkit's group, field[, field]) -> torchvision's builder keyword; the inference score threshold has
# one keyword per detector kind
TORCHVISION_KEYWORDS = {
    ("rpn", "post_nms_top_n_train"): "rpn_post_nms_top_n_train",
    ("rpn", "post_nms_top_n_test"): "rpn_post_nms_top_n_test",
    ("roi", "sampling", "batch_size_per_image"): "box_batch_size_per_image",
}
SCORE_THRESHOLD_KEYWORD = {True: "score_thresh", False: "box_score_thresh"}  # RetinaNet?, Faster R-CNN


def flattened(overrides: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """``{"rpn": {"post_nms_top_n_train": 100}}`` -> ``{("rpn", "post_nms_top_n_train"): 100}``."""
    out: dict[tuple[str, ...], object] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            out |= flattened(value, (*prefix, key))
        else:
            out[(*prefix, key)] = value
    return out


def torchvision_keywords(arch: str, overrides: dict) -> dict[str, object]:
    """The builder keywords of torchvision's ``arch`` that make ``overrides`` (nested like detkit's setting groups);
    ValueError on an override that has none."""
    retinanet = "retinanet" in arch
    keywords = {}
    for path, value in flattened(overrides).items():
        if path == ("inference", "score_threshold"):
            keywords[SCORE_THRESHOLD_KEYWORD[retinanet]] = value
        elif path in TORCHVISION_KEYWORDS and not retinanet:
            keywords[TORCHVISION_KEYWORDS[path]] = value
        else:
            raise ValueError(f"{arch}: no torchvision keyword for the override {'.'.join(path)}")
    return keywords


def replaced(group, path: tuple[str, ...], value):
    """A copy of the frozen setting group ``group`` with the field at ``path`` (nested groups) set to ``value``."""
    if not path:
        return value
    return dataclasses.replace(group, **{path[0]: replaced(getattr(group, path[0]), path[1:], value)})


def detkit_settings(arch: str, overrides: dict) -> dict:
    """``detector_settings(arch)`` with ``overrides`` put in (the same nesting as the groups)."""
    settings = detector_settings(arch)
    for path, value in flattened(overrides).items():
        settings[path[0]] = replaced(settings[path[0]], path[1:], value)
    return settings


def freeze_batch_norm(module: nn.Module) -> None:
    """Replace every BatchNorm2d under ``module`` by a FrozenBatchNorm2d holding its statistics and affine
    parameters, as torchvision builds its v1 and MobileNet trunks whenever weights are given."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for buffer in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, buffer).copy_(getattr(child, buffer).detach())
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)


def freeze_like(theirs: nn.Module, ours: nn.Module, arch: str) -> None:
    """Each torchvision parameter trainable exactly when detkit's counterpart is (torchvision built without
    weights trains its whole trunk; built with them, and detkit's import, freeze its first layers)."""
    settings = detector_settings(arch) | {"num_classes": ours.num_classes}
    ours_parameters = dict(ours.named_parameters())
    for name, parameter in theirs.named_parameters():
        parameter.requires_grad_(ours_parameters[detkit_name(settings, name)[0]].requires_grad)


def torchvision_detector(arch: str, size: tuple[int, int], overrides: dict, seed: int = 0) -> nn.Module:
    """torchvision's ``arch`` (91 outputs) with seeded random weights, built as its COCO checkpoints are (frozen
    BatchNorm in the trunk where theirs is), its transform sized to images of ``size`` (h, w): no resizing."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models.detection, arch)(
        weights=None, weights_backbone=None, num_classes=NUM_COCO_LABELS + 1, min_size=min(size), max_size=max(size),
        **torchvision_keywords(arch, overrides))
    if detector_settings(arch)["backbone"].norm == "frozen_bn":
        freeze_batch_norm(model.backbone.body)
    return model


def imported_pair(arch: str, size: tuple[int, int], overrides: dict | None = None) -> tuple[nn.Module, nn.Module]:
    """(detkit's import, torchvision's model) of ``arch`` on images of ``size`` (h, w): the same weights, the same
    trainable parameters, ``overrides`` (detkit's groups, e.g. ``{"rpn": {"post_nms_top_n_train": 100}}``) on
    both. Both in training mode, on the CPU."""
    overrides = overrides or {}
    theirs = torchvision_detector(arch, size, overrides)
    settings = detkit_settings(arch, overrides) | {"num_classes": NUM_COCO_LABELS}
    ours = architecture(arch).detector(**settings)
    ours.load_state_dict(from_torchvision(arch, theirs.state_dict()).state_dict())
    freeze_like(theirs, ours, arch)
    return ours.train(), theirs.train()


@dataclass
class WeightsCheck:
    """What ``weights_check`` compared, for one (detkit import, torchvision) pair."""

    weights_equal: bool  # every torchvision tensor, converted as the import converts it, equals detkit's
    dropped: int  # values of torchvision's background outputs, which the import drops
    parameters: tuple[int, int]  # detkit / torchvision
    trainable: tuple[int, int]  # trainable parameter values, detkit / torchvision
    feature_difference: float  # max |detkit - torchvision| over the FPN maps, relative to the largest value

    @property
    def same(self) -> bool:
        """Same weights, torchvision's parameters (all and trainable) more by exactly the dropped background
        outputs, the same FPN maps (to float rounding)."""
        return (self.weights_equal and self.parameters[1] - self.parameters[0] == self.dropped
                and self.trainable[1] - self.trainable[0] == self.dropped and self.feature_difference < 1e-4)

    def __str__(self) -> str:
        return (f"weights {'equal' if self.weights_equal else 'DIFFER'} (torchvision's {self.dropped} background "
                f"values dropped), params {self.parameters[0]} vs {self.parameters[1]}, trainable "
                f"{self.trainable[0]} vs {self.trainable[1]}, max rel. diff features {self.feature_difference:.1e}")


def trainable_count(module: nn.Module) -> int:
    """The number of values in ``module``'s parameters that require gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@torch.no_grad()
def weights_check(ours: nn.Module, theirs: nn.Module, arch: str, batch: Batch) -> WeightsCheck:
    """Compare the pair's weights (all of torchvision's state, converted key by key) and, in eval mode, their FPN
    maps on ``batch`` (torchvision's trunk on detkit's normalised padded images)."""
    settings = detector_settings(arch) | {"num_classes": ours.num_classes}
    ours_state = ours.state_dict()
    equal, dropped = True, 0
    for key, value in normalised_state_dict(theirs.state_dict()).items():
        detkit_key, convert = detkit_name(settings, key)
        converted = convert(value)
        own = ours_state[detkit_key]
        equal = equal and converted.shape == own.shape and torch.equal(converted, own)
        dropped += value.numel() - converted.numel()
    was_training = ours.training, theirs.training
    ours.eval(), theirs.eval()
    mean, std = (torch.tensor(v, device=batch.images.device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    features_ours = ours.backbone(batch.images)
    features_theirs = list(theirs.backbone((batch.images - mean) / std).values())
    ours.train(was_training[0]), theirs.train(was_training[1])
    return WeightsCheck(weights_equal=equal, dropped=dropped,
                        parameters=(parameter_count(ours), parameter_count(theirs)),
                        trainable=(trainable_count(ours), trainable_count(theirs)),
                        feature_difference=relative_difference(features_ours, features_theirs))

