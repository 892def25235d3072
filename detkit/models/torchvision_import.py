"""Load a torchvision COCO detection checkpoint into detkit's detector of the same architecture.

``from_torchvision(arch, state_dict)`` checks the state dict against torchvision's own model of ``arch`` (built
on the meta device: no memory, no weights), renames every key to detkit's and reorders the class outputs:
torchvision's label 0 is background, detkit's labels 0..K-1 are torchvision's 1..K (``detkit.data.coco_names``):

- RetinaNet: the sigmoid classifier's background output (trained as negative everywhere) is dropped;
- Faster R-CNN: the softmax classifier's background row moves from first to last (detkit's column K), and the
  unused background box deltas are dropped.

Keys of older torchvision releases (``rpn.head.conv.weight``, ``fpn.inner_blocks.0.weight``, the RetinaNet heads'
``conv.2i``; torchvision's own version hooks still convert them) are read as torchvision reads them.
``num_batches_tracked`` may be present or not.
"""
from __future__ import annotations

import re
from typing import Callable

import torch
import torchvision
from torch import nn

from detkit.data.coco_names import NUM_COCO_LABELS
from detkit.models.torchvision_architectures import ARCHITECTURES, architecture, detector_settings

Rule = tuple[str, Callable[[re.Match], str]]

# older torchvision key -> today's key, as torchvision's own _load_from_state_dict hooks rename them
LEGACY_RULES: list[Rule] = [
    (r"^backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(weight|bias)$",
     lambda m: f"backbone.fpn.{m[1]}_blocks.{m[2]}.0.{m[3]}"),
    (r"^rpn\.head\.conv\.(weight|bias)$", lambda m: f"rpn.head.conv.0.0.{m[1]}"),
    (r"^head\.(classification|regression)_head\.conv\.(\d+)\.(weight|bias)$",
     lambda m: f"head.{m[1]}_head.conv.{int(m[2]) // 2}.0.{m[3]}"),
]


class StateDictMismatch(ValueError):
    """A state dict that does not fit the architecture; ``key`` is the first torchvision key that does not."""

    def __init__(self, arch: str, key: str, problem: str):
        super().__init__(f"state dict does not fit torchvision's {arch}: key {key!r} {problem}")
        self.key = key


def from_torchvision(arch: str, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """detkit's detector of torchvision's ``arch`` (one of ``ARCHITECTURES``) holding ``state_dict``'s weights.

    Args:
        arch: e.g. "retinanet_resnet50_fpn" (the name of torchvision's builder).
        state_dict: torchvision's ``model.state_dict()`` of that architecture: its COCO files have 91 outputs
            (background and 90 category ids); a model trained with another ``num_classes`` imports alike.
    Returns:
        the detector in eval mode: ``forward(images (B, 3, H, W) in [0, 1], image_sizes)`` gives per image
        ``{boxes (D, 4) xyxy pixels, scores (D,), labels (D,) in 0..K-1}`` with K = outputs - 1 (90 for COCO);
        label i is torchvision's label i + 1.
    Raises:
        StateDictMismatch (a ValueError) naming the first key, in torchvision's order, that is missing, has the
        wrong shape, or (after those) is not part of the architecture.
    """
    state = normalised_state_dict(state_dict)
    outputs = torchvision_num_classes(arch, state)
    check_against_torchvision(arch, state, outputs)
    settings = detector_settings(arch) | {"num_classes": outputs - 1}
    detector = architecture(arch).detector(**settings)
    detector.load_state_dict(detkit_state_dict(settings, state, detector.state_dict()))
    return detector.eval()


def torchvision_num_classes(arch: str, state: dict[str, torch.Tensor]) -> int:
    """torchvision's ``num_classes`` (background included) of the classifier in ``state``; 91 (COCO) when the
    classifier is missing, which the check then reports."""
    settings = architecture(arch).settings
    if "head.classification_head.cls_logits.bias" in state:  # RetinaNet: (anchors per location x classes,)
        anchors = settings["anchors"]
        return len(state["head.classification_head.cls_logits.bias"]) // (len(anchors.scales) * len(anchors.ratios()))
    if "roi_heads.box_predictor.cls_score.bias" in state:
        return len(state["roi_heads.box_predictor.cls_score.bias"])
    return NUM_COCO_LABELS + 1


def detkit_state_dict(settings: dict, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
    """``state`` (checked, normalised torchvision keys) renamed and converted onto ``own``, the detkit detector's
    state dict, whose detkit-only entries (anchor buffers, loss normaliser, BatchNorm step counts) stay. A
    RuntimeError means the renaming rules here miss a part: a bug of this module, not of the caller's file."""
    imported = {}
    for key, value in state.items():
        detkit_key, convert = detkit_name(settings, key)
        value = convert(value)
        if detkit_key not in own or own[detkit_key].shape != value.shape:
            raise RuntimeError(f"torchvision's {key!r} {tuple(value.shape)} does not fill detkit's {detkit_key!r} "
                               f"{tuple(own[detkit_key].shape) if detkit_key in own else '(absent)'}")
        imported[detkit_key] = value
    not_filled = [k for k in own if k not in imported and not _detkit_only(k)]
    if not_filled:
        raise RuntimeError(f"no torchvision key fills detkit's {not_filled[0]!r}")
    return own | imported


def normalised_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Today's torchvision key names, without ``num_batches_tracked`` (BatchNorm's step count, which no forward
    pass reads); the order of ``state_dict`` is kept."""
    state = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, rename in LEGACY_RULES:
            match = re.match(pattern, key)
            if match:
                key = rename(match)
                break
        state[key] = value
    return state


def check_against_torchvision(arch: str, state: dict[str, torch.Tensor], num_classes: int) -> None:
    """Compare ``state`` (normalised) with torchvision's own ``arch`` of ``num_classes`` outputs: StateDictMismatch
    at the first of its keys that is missing or of another shape, then at the first key of ``state`` it lacks."""
    architecture(arch)  # unknown names fail here, naming the six
    with torch.device("meta"):
        reference = getattr(torchvision.models.detection, arch)(weights=None, weights_backbone=None,
                                                                num_classes=num_classes)
    expected = normalised_state_dict(reference.state_dict())
    for key, reference_value in expected.items():
        if key not in state:
            raise StateDictMismatch(arch, key, "is missing")
        if tuple(state[key].shape) != tuple(reference_value.shape):
            raise StateDictMismatch(arch, key, f"has shape {tuple(state[key].shape)}, expected "
                                               f"{tuple(reference_value.shape)}")
    for key in state:
        if key not in expected:
            raise StateDictMismatch(arch, key, "is not part of the architecture")


def _detkit_only(key: str) -> bool:
    """detkit state that torchvision has no weights for: anchor buffers, RetinaNet's loss normaliser, BatchNorm
    step counts."""
    return key.endswith(("base_sizes", "scales", "aspect_ratios", "fitted", "loss_normalizer", "num_batches_tracked"))


def detkit_name(settings: dict, key: str) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """torchvision's ``key`` -> (detkit's key, the conversion of its value) in the detector built from ``settings``
    (``detector_settings(arch)``, its num_classes the import's)."""
    for pattern, rename in _key_rules(settings):
        match = re.match(pattern, key)
        if match:
            return rename(match), _value_conversion(key, settings)
    # check_against_torchvision let the key through: the rules miss a part of the architecture
    raise RuntimeError(f"no detkit counterpart of torchvision's {key!r}")


def _key_rules(settings: dict) -> list[Rule]:
    """Renaming rules torchvision -> detkit for the parts these settings build, first match wins."""
    fpn_norm = settings["fpn"].norm is not None
    rules: list[Rule] = [
        (r"^backbone\.body\.conv1\.(.*)", lambda m: f"backbone.body.stem.0.{m[1]}"),
        (r"^backbone\.body\.bn1\.(.*)", lambda m: f"backbone.body.stem.1.{m[1]}"),
        (r"^backbone\.body\.layer(\d)\.(.*)", lambda m: f"backbone.body.layers.{int(m[1]) - 1}.{m[2]}"),
        (r"^backbone\.body\.(\d+)\.(.*)", lambda m: f"backbone.body.features.{m[1]}.{m[2]}"),  # MobileNetV3
        # without a norm detkit's lateral and output convs are bare Conv2d, with one (conv, norm) like torchvision's
        (r"^backbone\.fpn\.inner_blocks\.(\d+)\.(\d)\.(.*)",
         lambda m: f"backbone.fpn.lateral.{m[1]}.{m[2] + '.' if fpn_norm else ''}{m[3]}"),
        (r"^backbone\.fpn\.layer_blocks\.(\d+)\.(\d)\.(.*)",
         lambda m: f"backbone.fpn.output.{m[1]}.{m[2] + '.' if fpn_norm else ''}{m[3]}"),
        (r"^backbone\.fpn\.extra_blocks\.p([67])\.(.*)", lambda m: f"backbone.fpn.extra.{int(m[1]) - 6}.{m[2]}"),
        (r"^rpn\.head\.conv\.0\.0\.(.*)", lambda m: f"rpn.head.conv.{m[1]}"),
        (r"^rpn\.head\.conv\.(\d+)\.0\.(.*)", lambda m: f"rpn.head.more_convs.{int(m[1]) - 1}.{m[2]}"),
        (r"^rpn\.head\.cls_logits\.(.*)", lambda m: f"rpn.head.objectness.{m[1]}"),
        (r"^rpn\.head\.bbox_pred\.(.*)", lambda m: f"rpn.head.box_deltas.{m[1]}"),
        (r"^roi_heads\.box_head\.(.*)", lambda m: f"roi_heads.box_head.{m[1]}"),  # same layout in detkit
        (r"^roi_heads\.box_predictor\.(.*)", lambda m: f"roi_heads.predictor.{m[1]}"),
        (r"^head\.classification_head\.cls_logits\.(.*)", lambda m: f"head.cls_logits.{m[1]}"),
        (r"^head\.regression_head\.bbox_reg\.(.*)", lambda m: f"head.box_deltas.{m[1]}"),
    ]
    if "head" in settings:
        # detkit's towers are flat (conv, [norm], ReLU) sequences; torchvision's nest (conv, [norm]) blocks
        per_layer = 3 if settings["head"].norm else 2
        for tv_name, detkit_tower in (("classification", "cls_tower"), ("regression", "box_tower")):
            rules.append((rf"^head\.{tv_name}_head\.conv\.(\d+)\.(\d)\.(.*)",
                          lambda m, tower=detkit_tower: f"head.{tower}.{int(m[1]) * per_layer + int(m[2])}.{m[3]}"))
    return rules


def _value_conversion(key: str, settings: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """How the value of torchvision's ``key`` becomes detkit's: the class outputs lose or move background."""
    num_classes = settings["num_classes"]
    if key.startswith("head.classification_head.cls_logits."):
        # rows anchor-major, (K + 1) classes each: drop class 0 of every anchor
        return lambda v: v.reshape(-1, num_classes + 1, *v.shape[1:])[:, 1:].reshape(-1, *v.shape[1:])
    if key.startswith("roi_heads.box_predictor.cls_score."):
        return lambda v: torch.cat([v[1:], v[:1]])  # background row 0 -> last (detkit's column K)
    if key.startswith("roi_heads.box_predictor.bbox_pred."):
        return lambda v: v[4:]  # background's deltas (rows 0..3) are never used
    return lambda v: v


__all__ = ["ARCHITECTURES", "StateDictMismatch", "detector_settings", "from_torchvision"]
