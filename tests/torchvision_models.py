"""torchvision detectors with random weights, as oracles for the import, fine-tuning and evaluation tests: the one
way the tests make one."""
from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detkit.benchmarks.torchvision_imports import freeze_batch_norm

# how far each architecture's classifier weights are spread so that some, not thousands of, detections clear 0.05
CLASSIFIER_SCALES = {"retinanet_resnet50_fpn": 300.0, "retinanet_resnet50_fpn_v2": 2.0, "fasterrcnn_resnet50_fpn": 10.0,
                     "fasterrcnn_resnet50_fpn_v2": 5.0, "fasterrcnn_mobilenet_v3_large_fpn": 3.0,
                     "fasterrcnn_mobilenet_v3_large_320_fpn": 3.0}
BACKGROUND_LOGIT = 4.0
CALIBRATED_CLASSIFIER_GAIN = 3.0  # 24-50 detections an image of the 320 MobileNet, the lowest 2e-4 above 0.05


@torch.no_grad()
def perturb(model: nn.Module, generator: torch.Generator, classifier_scale: float = 1.0,
            feature_gain: float = 1.0, box_head_gain: float = 1.0, calibrate: bool = False) -> None:
    """No norm layer an identity: random affine parameters and running statistics, the residual branches' last
    norm scaled down so features stay O(1) through ResNet-50 (as trained weights keep them; at ~70 float32 rounding
    alone moves boxes by 0.01 px); the classifiers spread so some, not thousands of, detections clear 0.05.
    ``calibrate``: the trunk's running statistics become those of a random batch (see ``match_statistics``).
    ``feature_gain`` scales the FPN's output convs (an uncalibrated MobileNetV3's are ~0.1). ``box_head_gain``
    scales Faster R-CNN's two box head layers: uncalibrated, a fresh head's RoI features hardly vary, so its scores
    lie within ~1e-7 of each other, ties float rounding may reorder."""
    def uniform(shape, low, high):
        return torch.rand(shape, generator=generator) * (high - low) + low

    for name, module in model.named_modules():
        if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d, nn.GroupNorm)):
            module.weight.copy_(uniform(module.weight.shape, *((0.1, 0.3) if name.endswith("bn3") else (0.75, 1.25))))
            module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            if getattr(module, "running_mean", None) is not None:
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(uniform(module.running_var.shape, 0.75, 1.25))
    if calibrate:
        match_statistics(model.backbone.body, generator)
    for output_conv in model.backbone.fpn.layer_blocks.parameters():
        output_conv.mul_(feature_gain)
    if hasattr(model, "head"):  # RetinaNet: sigmoid classifier, 91 outputs per anchor
        classifier = model.head.classification_head.cls_logits
        classifier.weight.mul_(classifier_scale)
        classifier.bias.add_(torch.randn(classifier.bias.shape, generator=generator) * 0.1)
        # torchvision's output 0 (background) is trained negative everywhere; detkit drops it
        classifier.bias.view(-1, model.head.classification_head.num_classes)[:, 0] = -30.0
    else:  # Faster R-CNN: objectness spread (fewer near-ties at the pre-NMS cut), softmax over 91 classes
        model.rpn.head.cls_logits.weight.mul_(10.0)
        model.rpn.head.bbox_pred.weight.mul_(3.0)
        predictor = model.roi_heads.box_predictor
        predictor.cls_score.weight.mul_(classifier_scale)
        predictor.cls_score.bias.copy_(torch.randn(predictor.cls_score.bias.shape, generator=generator) * 0.3)
        predictor.cls_score.bias[0] = BACKGROUND_LOGIT  # most RoIs background, as trained heads make them
        predictor.bbox_pred.weight.mul_(10.0)
        for layer in model.roi_heads.box_head.children():
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(box_head_gain)


@torch.no_grad()
def match_statistics(trunk: nn.Module, generator: torch.Generator) -> None:
    """Each norm layer's running mean and variance become those of its input on one random batch, layer by layer.
    MobileNetV3 with arbitrary statistics shrinks the input's trace ~7x a stage: its last features differ between
    two images by 1e-8 of their size, so every position scores alike and ties, to the last bit, decide which
    proposals a top-n cut keeps."""
    def from_input(norm: nn.Module, inputs: tuple[torch.Tensor]) -> None:
        norm.running_mean.copy_(inputs[0].mean((0, 2, 3)))
        norm.running_var.copy_(inputs[0].var((0, 2, 3)))

    norms = [m for m in trunk.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    hooks = [norm.register_forward_pre_hook(from_input) for norm in norms]
    training = trunk.training
    trunk.eval()
    trunk(torch.randn(2, 3, 192, 192, generator=generator))
    trunk.train(training)
    for hook in hooks:
        hook.remove()


def random_torchvision(arch: str, seed: int = 0, num_classes: int = 91, min_size: int | None = None,
                       max_size: int | None = None, published_norms: bool = True,
                       box_head_gain: float = 1.0, calibrate: bool = False) -> nn.Module:
    """torchvision's ``arch`` with seeded random weights, ``perturb``-ed, in eval mode.

    min_size / max_size: its transform's resize (default torchvision's for ``arch``: 800 / 1333, the 320 MobileNet
    320 / 640). published_norms: the v1 and MobileNet trunks' BatchNorm2d become FrozenBatchNorm2d, as torchvision
    builds them whenever weights are given (so its published files have no ``num_batches_tracked``); False keeps
    BatchNorm2d (the same numbers in eval mode). box_head_gain: see ``perturb``. calibrate: the trunk's running
    statistics from a random batch (``match_statistics``), so that its features depend on the image.
    """
    torch.manual_seed(seed)
    sizes = {key: value for key, value in (("min_size", min_size), ("max_size", max_size)) if value is not None}
    model = getattr(torchvision.models.detection, arch)(weights=None, weights_backbone=None, num_classes=num_classes,
                                                        **sizes)
    if published_norms and not arch.endswith("_v2"):
        freeze_batch_norm(model.backbone.body)
    # a calibrated trunk's features are O(1) without a gain: only its classifier is spread further
    feature_gain = 10.0 if "mobilenet" in arch and not calibrate else 1.0
    classifier_scale = CLASSIFIER_SCALES[arch] * (CALIBRATED_CLASSIFIER_GAIN if calibrate else 1.0)
    perturb(model, torch.Generator().manual_seed(seed + 1), classifier_scale, feature_gain, box_head_gain,
            calibrate=calibrate)
    return model.eval()


def published_form(model: nn.Module) -> dict:
    """The state dict as torchvision publishes its files: without BatchNorm's ``num_batches_tracked``."""
    return {key: value for key, value in model.state_dict().items() if not key.endswith("num_batches_tracked")}
