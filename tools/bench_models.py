"""Benchmark detkit's detectors against torchvision's of the same architecture, alternating in one process.

    python tools/bench_models.py [--threads 2] [--warmup 3] [--steps 10] [--no-cuda] [--only TEXT] [--quick]

For each detector and size, detkit's model (built from a config in ``configs/``) and torchvision's
(``torchvision.models.detection.RetinaNet`` / ``FasterRCNN``) are built with the same trunk, FPN, anchors, head
depth and width, classes and proposal / RoI counts, and are fed the same synthetic batches. Rows:

- train: images/s of a training step (forward with the losses, backward, SGD step);
- infer: images/s of a forward pass with post-processing (score threshold, top-k, NMS), under ``no_grad``;
- peak MB: the most memory a step takes above what was held just before it: activations, gradients and
  temporaries; weights, optimizer state, the batches and caches made in warm-up excluded. CPU: growth of the
  resident set (VmHWM after resetting it through ``/proc/self/clear_refs``, minus VmRSS before; freed heap
  memory is handed back with ``malloc_trim`` first, so a step cannot reuse pages the other model left
  resident). It counts pages touched, not bytes allocated: memory allocated but never written does not count,
  allocator slack does; "n/a" where /proc/self/clear_refs cannot be written. CUDA: max allocated minus
  allocated before (the caching allocator's reserve not counted).

Times are medians over ``--steps`` steps after ``--warmup`` warm-up steps, detkit and torchvision
alternating step by step (which goes first swaps every step); memory is measured on extra steps after the
timed ones, so the malloc_trim and page faults it forces stay out of the times. ratio = detkit images/s /
torchvision images/s (above 1: detkit is faster). The last line is the worst ratio over the CPU rows.

Equal architecture: torchvision's model gets a deep copy of detkit's backbone + FPN (``SharedTrunk``, same
weights), so the two differ only in heads, target assignment, losses and post-processing. torchvision's
transform normalises (ImageNet mean / std, as detkit's ``FeaturePyramid`` does inside) and ``SharedTrunk``
skips detkit's normalisation: one normalisation each. min_size / max_size equal the images' size, so
torchvision resizes by a factor of 1 (an identity bilinear pass it always makes) and pads to 32 as detkit's
data does. Anchors, head towers (depth, GroupNorm groups), matcher thresholds, samplers, top-n counts,
RoIAlign levels and the box head are read off detkit's model; the head weights are copied, so both
compute the same outputs (``architecture_check`` verifies anchors, parameter counts and head outputs:
column ``same``). What stays different: torchvision's Faster R-CNN box predictor also regresses a
background box (4 x (representation + 1) more parameters); torchvision RetinaNet's post-processing does
not drop boxes under 0.01 px; torchvision's anchor generator infers each level's stride as image size //
map size, which shifts the anchors of P6 / P7 on sizes that are not multiples of their stride (an 800 x 1344
input: P6 61 x 64, P7 114 x 122 instead of 64 and 128; the same number of anchors); losses are normalised
differently (same cost).

Inference with random weights: RetinaNet's classifier starts at p = 0.01 and Faster R-CNN's at 1 / (K + 1)
(0.012 for 80 classes), under the configs' 0.05 score threshold, so little reaches top-k and NMS (the same
for both: same weights); ``--score-threshold 0`` loads post-processing fully.

``--quick``: tiny images (64 px), batch 1-2, one warm-up and two timed steps, fewer RoIs and a narrower box
head on the ResNet-50 rows: a smoke run of a few seconds, not a measurement.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import dataclasses
import gc
import math
import pathlib
import statistics
import sys
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
import torchvision
import yaml
from torch import nn
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection import anchor_utils, faster_rcnn, retinanet, rpn
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import Conv2dNormActivation

from detkit.models import FasterRCNN, RetinaNet
from detkit.models.fpn import IMAGENET_MEAN, IMAGENET_STD, FeaturePyramid

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE_DIVISOR = 32  # detkit's data pads to it; torchvision's transform pads to it too (size_divisible)


@dataclass(frozen=True)
class Setting:
    """One detector at one size: two table rows (train, infer).

    ``size`` is (h, w) of every image before padding; ``object_sizes`` the range of box sides in pixels;
    ``overrides`` replace keys of the config's ``model.detector.init_args``.
    """

    detector: str  # "RetinaNet" or "Faster R-CNN"
    trunk: str  # a label for the row name
    config: str
    num_classes: int
    size: tuple[int, int]
    batch: int
    object_sizes: tuple[float, float]
    device: str = "cpu"
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; CUDA only)
    overrides: dict = field(default_factory=dict)

    def name(self, batch: int | None = None) -> str:
        h, w = self.size
        size = f"{h}px" if h == w else f"{h}x{w}"
        precision = f" {self.precision}" if self.device == "cuda" else ""
        return f"{self.detector} {self.trunk} {size} b{self.batch if batch is None else batch}{precision}"


# the ResNet-50 quick rows: fewer proposals and RoIs and a narrow box head keep a smoke step short
QUICK_R50_FASTER_RCNN = {"rpn_post_nms_top_n_train": 100, "rpn_post_nms_top_n_test": 100,
                         "roi_batch_size_per_image": 64, "representation_size": 256}


def settings(quick: bool, cuda: bool, cpu: bool = True) -> list[Setting]:
    """The benchmark's settings: CPU rows (the two shapes configs, ResNet-50-FPN at 512 px), then CUDA rows."""
    retina_shapes = ("RetinaNet", "shapes", "configs/retinanet_shapes.yaml", 3)
    faster_shapes = ("Faster R-CNN", "shapes", "configs/faster_rcnn_shapes.yaml", 3)
    retina_r50 = ("RetinaNet", "R50-FPN", "configs/retinanet_r50_fpn_coco.yaml", 80)
    faster_r50 = ("Faster R-CNN", "R50-FPN", "configs/faster_rcnn_r50_fpn_coco.yaml", 80)
    rows: list[Setting] = []
    if cpu and quick:
        rows += [Setting(*retina_shapes, (64, 64), 2, (8, 32)), Setting(*faster_shapes, (64, 64), 2, (8, 32)),
                 Setting(*retina_r50, (64, 64), 1, (12, 48)),
                 Setting(*faster_r50, (64, 64), 1, (12, 48), overrides=QUICK_R50_FASTER_RCNN)]
    elif cpu:
        rows += [Setting(*retina_shapes, (128, 128), 16, (8, 64)), Setting(*faster_shapes, (128, 128), 16, (8, 64)),
                 Setting(*retina_r50, (512, 512), 2, (16, 256)), Setting(*faster_r50, (512, 512), 2, (16, 256))]
    if cuda:
        size, batch, objects = ((128, 192), 2, (16, 96)) if quick else ((800, 1333), 8, (32, 512))
        for precision in ("fp32", "bf16"):
            rows += [Setting(*retina_r50, size, batch, objects, "cuda", precision),
                     Setting(*faster_r50, size, batch, objects, "cuda", precision,
                             QUICK_R50_FASTER_RCNN if quick else {})]
    return rows


# ---------------------------------------------------------------------------------------------------------
# the two models


def detkit_model(setting: Setting) -> nn.Module:
    """detkit's detector from the setting's config (random init: no weights download)."""
    config = yaml.safe_load((REPO / setting.config).read_text())
    kwargs = {**config["model"]["detector"]["init_args"], "backbone_weights": None, **setting.overrides}
    kwargs.pop("num_classes", None)
    detector = {"RetinaNet": RetinaNet, "Faster R-CNN": FasterRCNN}[setting.detector]
    return detector(num_classes=setting.num_classes, **kwargs)


class SharedTrunk(nn.Module):
    """detkit's backbone + FPN as a torchvision detection backbone (a deep copy: same weights, own gradients).

    ``forward(images (B, 3, H, W), already normalised by torchvision's transform) -> OrderedDict {"0": P_min,
    "1": ..., } of (B, C, H_l, W_l)``, finest first; ``out_channels`` = C. It runs ``FeaturePyramid``'s body
    and FPN in channels-last, as ``FeaturePyramid.forward`` does, without its normalisation (torchvision's
    transform has done it): ``architecture_check`` compares the features with detkit's.
    """

    def __init__(self, pyramid: FeaturePyramid):
        super().__init__()
        self.pyramid = copy.deepcopy(pyramid)
        self.out_channels = pyramid.out_channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.pyramid.fpn(self.pyramid.body(images.contiguous(memory_format=torch.channels_last)))
        return OrderedDict((str(level), feature) for level, feature in enumerate(features))


def copy_parameters(source: nn.Module, target: nn.Module) -> None:
    """Copy ``source``'s parameters into ``target``'s, pairing them in registration order; raise unless
    every pair has the same shape (the two modules are the same layers)."""
    ours, theirs = list(source.parameters()), list(target.parameters())
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours, theirs)):
        raise ValueError(f"{type(source).__name__} and {type(target).__name__} differ: "
                         f"{[tuple(p.shape) for p in ours]} vs {[tuple(p.shape) for p in theirs]}")
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.copy_(a)


def torchvision_anchors(dense) -> anchor_utils.AnchorGenerator:
    """torchvision's generator with a detkit ``DenseAnchorStage``'s sizes (L x S) and ratios (h / w) per level.

    Both order a location's anchors ratio-major, size-minor, round the centred anchors to whole pixels and
    put cell (x, y) at (x * stride, y * stride): the same anchors where torchvision's stride guess is right.
    """
    sizes = tuple(tuple(level) for level in dense.anchor_sizes.tolist())
    return anchor_utils.AnchorGenerator(sizes, (tuple(dense.aspect_ratios.tolist()),) * len(sizes))


def _tower(subnet: nn.Sequential) -> tuple[int, Callable[[int], nn.Module] | None]:
    """(depth, norm layer factory) of a detkit RetinaNet subnet (conv [+ GroupNorm] + ReLU per layer)."""
    depth = sum(isinstance(m, nn.Conv2d) for m in subnet)
    norms = [m for m in subnet if isinstance(m, nn.GroupNorm)]
    if not norms:
        return depth, None
    groups = norms[0].num_groups
    return depth, lambda channels: nn.GroupNorm(groups, channels)


def torchvision_retinanet(ours: RetinaNet, size: tuple[int, int]) -> retinanet.RetinaNet:
    """torchvision's RetinaNet with ``ours``' trunk (copied), anchors, head (depth, norm, copied weights),
    matcher and inference settings, its transform sized to ``size`` (h, w)."""
    head_ours, channels = ours.head, ours.backbone.out_channels
    anchors = torchvision_anchors(ours.dense)
    depth, norm = _tower(head_ours.cls_tower)
    head = retinanet.RetinaNetHead(channels, ours.dense.num_anchors_per_location, ours.num_classes, norm_layer=norm)
    # torchvision's subnets have 4 convs, fixed: replace them by towers of detkit's depth
    head.classification_head.conv = nn.Sequential(
        *[Conv2dNormActivation(channels, channels, norm_layer=norm) for _ in range(depth)])
    head.regression_head.conv = nn.Sequential(
        *[Conv2dNormActivation(channels, channels, norm_layer=norm) for _ in range(depth)])
    head.regression_head._loss_type = ours.dense.box_loss  # "l1", "smooth_l1", "giou": torchvision has all three
    copy_parameters(head_ours.cls_tower, head.classification_head.conv)
    copy_parameters(head_ours.cls_logits, head.classification_head.cls_logits)
    copy_parameters(head_ours.box_tower, head.regression_head.conv)
    copy_parameters(head_ours.box_deltas, head.regression_head.bbox_reg)
    matcher = ours.dense.matcher
    return retinanet.RetinaNet(
        SharedTrunk(ours.backbone), ours.num_classes, min_size=min(size), max_size=max(size),
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), size_divisible=SIZE_DIVISOR,
        anchor_generator=anchors, head=head,
        proposal_matcher=tv_utils.Matcher(matcher.high_threshold, matcher.low_threshold, matcher.allow_low_quality_matches),
        score_thresh=ours.score_threshold, nms_thresh=ours.nms_threshold,
        detections_per_img=ours.detections_per_image, topk_candidates=ours.topk_candidates)


def torchvision_faster_rcnn(ours: FasterRCNN, size: tuple[int, int]) -> faster_rcnn.FasterRCNN:
    """torchvision's Faster R-CNN with ``ours``' trunk (copied), RPN anchors / head / sampling / top-n, RoIAlign
    levels, box head and predictor (copied weights; background moved from detkit's last column to column 0),
    RoI sampling and inference settings, its transform sized to ``size`` (h, w)."""
    channels, roi = ours.backbone.out_channels, ours.roi_heads
    rpn_head = rpn.RPNHead(channels, ours.rpn.dense.num_anchors_per_location)
    copy_parameters(ours.rpn.head, rpn_head)  # 3x3 conv, objectness 1x1, deltas 1x1
    pooler = roi.pooler
    pool = MultiScaleRoIAlign([str(level) for level in range(ours.num_roi_levels)], pooler.output_size,
                              pooler.sampling_ratio, canonical_scale=pooler.canonical_scale,
                              canonical_level=pooler.canonical_level)
    representation = roi.box_head.fc7.out_features
    box_head = faster_rcnn.TwoMLPHead(roi.box_head.fc6.in_features, representation)
    copy_parameters(roi.box_head, box_head)
    predictor = faster_rcnn.FastRCNNPredictor(representation, ours.num_classes + 1)  # column 0: background
    k = ours.num_classes
    with torch.no_grad():
        ours_cls, ours_box = roi.predictor.cls_score, roi.predictor.bbox_pred
        predictor.cls_score.weight.copy_(torch.cat([ours_cls.weight[k:], ours_cls.weight[:k]]))
        predictor.cls_score.bias.copy_(torch.cat([ours_cls.bias[k:], ours_cls.bias[:k]]))
        predictor.bbox_pred.weight.copy_(torch.cat([torch.zeros_like(ours_box.weight[:4]), ours_box.weight]))
        predictor.bbox_pred.bias.copy_(torch.cat([torch.zeros_like(ours_box.bias[:4]), ours_box.bias]))
    rpn_ours, rpn_matcher = ours.rpn, ours.rpn.dense.matcher
    model = faster_rcnn.FasterRCNN(
        SharedTrunk(ours.backbone), num_classes=None, min_size=min(size), max_size=max(size),
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), size_divisible=SIZE_DIVISOR,
        rpn_anchor_generator=torchvision_anchors(rpn_ours.dense), rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=rpn_ours.pre_nms_top_n[True], rpn_pre_nms_top_n_test=rpn_ours.pre_nms_top_n[False],
        rpn_post_nms_top_n_train=rpn_ours.post_nms_top_n[True], rpn_post_nms_top_n_test=rpn_ours.post_nms_top_n[False],
        rpn_nms_thresh=rpn_ours.nms_threshold, rpn_fg_iou_thresh=rpn_matcher.high_threshold,
        rpn_bg_iou_thresh=rpn_matcher.low_threshold, rpn_batch_size_per_image=rpn_ours.sampler.batch_size_per_image,
        rpn_positive_fraction=rpn_ours.sampler.positive_fraction,
        box_roi_pool=pool, box_head=box_head, box_predictor=predictor,
        box_score_thresh=roi.score_threshold, box_nms_thresh=roi.nms_threshold,
        box_detections_per_img=roi.detections_per_image,
        box_fg_iou_thresh=roi.matcher.high_threshold, box_bg_iou_thresh=roi.matcher.low_threshold,
        box_batch_size_per_image=roi.sampler.batch_size_per_image, box_positive_fraction=roi.sampler.positive_fraction,
        bbox_reg_weights=roi.box_coder.weights)
    model.rpn.min_size = rpn_ours.min_size  # not a constructor argument (torchvision: 1e-3, detkit's default too)
    return model


def build_pair(setting: Setting) -> tuple[nn.Module, nn.Module]:
    """(detkit model, torchvision model) of the setting, on its device, with the same trunk and head weights."""
    torch.manual_seed(0)
    ours = detkit_model(setting)
    theirs = (torchvision_retinanet if setting.detector == "RetinaNet" else torchvision_faster_rcnn)(ours, setting.size)
    return ours.to(setting.device), theirs.to(setting.device)


# ---------------------------------------------------------------------------------------------------------
# inputs


@dataclass
class Batch:
    """One synthetic batch in both models' formats.

    ``images`` (B, 3, Hpad, Wpad) float in [0, 1], zero padded to a multiple of 32; ``image_sizes`` B x (h, w);
    ``targets`` B dicts ``boxes`` (M, 4) float32 xyxy pixels, ``labels`` (M,) int64 in 0..K-1 (detkit's);
    ``tv_images`` B views (3, h, w) of ``images``; ``tv_targets`` the targets with torchvision's labels.
    """

    images: torch.Tensor
    image_sizes: list[tuple[int, int]]
    targets: list[dict]
    tv_images: list[torch.Tensor]
    tv_targets: list[dict]


def synthetic_batches(setting: Setting, count: int = 3, batch: int | None = None) -> list[Batch]:
    """``count`` fixed batches: uniform noise images, 2-6 boxes per image with sides in ``object_sizes``."""
    generator = torch.Generator().manual_seed(1)
    batch = setting.batch if batch is None else batch
    height, width = setting.size
    padded = (math.ceil(height / SIZE_DIVISOR) * SIZE_DIVISOR, math.ceil(width / SIZE_DIVISOR) * SIZE_DIVISOR)
    # torchvision's Faster R-CNN counts background as class 0; its RetinaNet has no background class
    label_offset = 1 if setting.detector == "Faster R-CNN" else 0
    low, high = setting.object_sizes
    batches = []
    for _ in range(count):
        images = torch.zeros(batch, 3, *padded)
        images[:, :, :height, :width] = torch.rand(batch, 3, height, width, generator=generator)
        targets = []
        for _ in range(batch):
            num = int(torch.randint(2, 7, (1,), generator=generator))
            sides = low + torch.rand(num, 2, generator=generator) * (high - low)  # (M, 2) w, h
            sides = torch.minimum(sides, torch.tensor([width - 1.0, height - 1.0]))
            corner = torch.rand(num, 2, generator=generator) * (torch.tensor([width, height]) - sides)
            boxes = torch.cat([corner, corner + sides], dim=1)
            labels = torch.randint(0, setting.num_classes, (num,), generator=generator)
            targets.append({"boxes": boxes.to(setting.device), "labels": labels.to(setting.device)})
        images = images.to(setting.device)
        batches.append(Batch(images, [(height, width)] * batch, targets,
                             [image[:, :height, :width] for image in images],
                             [{"boxes": t["boxes"], "labels": t["labels"] + label_offset} for t in targets]))
    return batches


# ---------------------------------------------------------------------------------------------------------
# the architecture check


@dataclass
class Check:
    """What ``architecture_check`` compared, for one (detkit, torchvision) pair."""

    anchors: tuple[int, int]  # anchors per image, detkit / torchvision
    anchors_equal: bool  # the same boxes, in the same order
    trunk_parameters: tuple[int, int]
    head_parameters: tuple[int, int]  # everything but the trunk
    expected_head_extra: int  # torchvision's known extra parameters (the background box regressor)
    feature_difference: float  # max |detkit - torchvision| over the FPN maps, relative to the largest value
    head_difference: float  # the same over the head outputs on the same features

    @property
    def same(self) -> bool:
        """Same architecture: anchors per image, trunk and head parameter counts (up to the known extra),
        trunk and head outputs (to float rounding). Anchor positions may differ (see the module docstring)."""
        return (self.anchors[0] == self.anchors[1] and self.trunk_parameters[0] == self.trunk_parameters[1]
                and self.head_parameters[1] - self.head_parameters[0] == self.expected_head_extra
                and self.feature_difference < 1e-4 and self.head_difference < 1e-4)

    def __str__(self) -> str:
        return (f"anchors/image {self.anchors[0]} vs {self.anchors[1]} ({'equal' if self.anchors_equal else 'boxes differ'}), "
                f"trunk params {self.trunk_parameters[0]} vs {self.trunk_parameters[1]}, head params "
                f"{self.head_parameters[0]} vs {self.head_parameters[1]} (+{self.expected_head_extra} expected), "
                f"max rel. diff features {self.feature_difference:.1e}, head outputs {self.head_difference:.1e}")


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _relative_difference(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> float:
    return max(float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1.0))
               for a, b in zip(ours, theirs, strict=True))


@torch.no_grad()
def architecture_check(ours: nn.Module, theirs: nn.Module, batch: Batch) -> Check:
    """Compare the pair on one batch, in fp32 eval mode: anchors, parameter counts, FPN maps, head outputs.

    Both heads run on detkit's FPN maps, so a head difference is the heads' own.
    """
    ours.eval(), theirs.eval()
    image_list, _ = theirs.transform(batch.tv_images)  # normalised, padded to (B, 3, Hpad, Wpad)
    features_ours = ours.backbone(batch.images)
    # the trunk on detkit's own normalised batch: torchvision pads after normalising (zeros), detkit before
    # (zeros become -mean / std), which changes the maps near a padded edge, not the trunk
    mean, std = (torch.tensor(v, device=batch.images.device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    features_theirs = list(theirs.backbone((batch.images - mean) / std).values())
    feature_difference = _relative_difference(features_ours, features_theirs)
    if isinstance(ours, RetinaNet):
        dense, expected_extra = ours.dense, 0
        logits, deltas = ours.head(features_ours)
        outputs = theirs.head(features_ours)
        head_difference = _relative_difference([torch.cat(logits, 1), torch.cat(deltas, 1)],
                                               [outputs["cls_logits"], outputs["bbox_regression"]])
    else:
        dense = ours.rpn.dense
        representation = ours.roi_heads.box_head.fc7.out_features
        expected_extra = 4 * (representation + 1)  # torchvision also regresses a box for background
        logits, deltas = ours.rpn.head(features_ours)
        objectness, box_deltas = rpn.concat_box_prediction_layers(*theirs.rpn.head(features_ours))  # (B*N, 1), (B*N, 4)
        pooled = torch.randn(8, ours.backbone.out_channels, *ours.roi_heads.pooler.output_size,
                             generator=torch.Generator().manual_seed(2)).to(batch.images.device)
        cls_ours, box_ours = ours.roi_heads.predictor(ours.roi_heads.box_head(pooled))  # (R, K + 1), (R, K, 4)
        cls_theirs, box_theirs = theirs.roi_heads.box_predictor(theirs.roi_heads.box_head(pooled))  # (R, K + 1), (R, 4 (K + 1))
        k = ours.num_classes
        head_difference = _relative_difference(
            [torch.cat(logits, 1).flatten(), torch.cat(deltas, 1).reshape(-1, 4), cls_ours[:, :k], cls_ours[:, k],
             box_ours],
            [objectness.flatten(), box_deltas, cls_theirs[:, 1:], cls_theirs[:, 0], box_theirs.view(len(pooled), k + 1, 4)[:, 1:]])
    anchors_ours = torch.cat(dense.anchors(features_ours))  # (N, 4)
    # torchvision's anchors on the maps of its own padded input
    features_tv_input = list(theirs.backbone(image_list.tensors).values())
    generator = theirs.anchor_generator if isinstance(ours, RetinaNet) else theirs.rpn.anchor_generator
    anchors_theirs = generator(image_list, features_tv_input)[0]  # (N, 4) of image 0
    trunk = (_count(ours.backbone), _count(theirs.backbone))
    return Check(anchors=(len(anchors_ours), len(anchors_theirs)),
                 anchors_equal=anchors_ours.shape == anchors_theirs.shape and torch.allclose(anchors_ours, anchors_theirs),
                 trunk_parameters=trunk, head_parameters=(_count(ours) - trunk[0], _count(theirs) - trunk[1]),
                 expected_head_extra=expected_extra, feature_difference=feature_difference, head_difference=head_difference)


# ---------------------------------------------------------------------------------------------------------
# timing and memory


def _status_kib(key: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc: RSS growth then understates (freed pages stay resident)
    _malloc_trim = None


def _can_reset_peak_rss() -> bool:
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        _status_kib("VmHWM")
        return True
    except (OSError, KeyError):
        return False


class PeakMemory:
    """``with PeakMemory(device) as m: step()`` -> ``m.megabytes``: the step's peak above the memory held at
    its start (None where it cannot be measured). See the module docstring for the method and its limits."""

    rss_supported: bool | None = None

    def __init__(self, device: str):
        self.device, self.megabytes = device, None

    def __enter__(self) -> "PeakMemory":
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        if PeakMemory.rss_supported is None:
            PeakMemory.rss_supported = _can_reset_peak_rss()
        if PeakMemory.rss_supported:
            # no gc.collect(): tensors die by reference counting, and a full collection costs ~0.1 s here
            if _malloc_trim is not None:
                _malloc_trim(0)  # hand freed heap pages back: the step must fault in what it uses
            pathlib.Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self._base = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            return
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.megabytes = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        elif PeakMemory.rss_supported:
            self.megabytes = max(_status_kib("VmHWM") * 1024 - self._base, 0) / 2**20


def _autocast(setting: Setting):
    if setting.precision == "bf16":
        return torch.autocast(device_type=setting.device, dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class Contender:
    """One model and how to call it on batch i: ``train(i)`` one optimizer step, ``infer(i)`` one detection pass;
    ``release()`` frees the last step's gradients (before a memory measurement, so that it counts them)."""

    model: nn.Module
    train: Callable[[int], None]
    infer: Callable[[int], None]
    release: Callable[[], None]


def contenders(ours: nn.Module, theirs: nn.Module, batches: list[Batch], setting: Setting, lr: float = 1e-4
               ) -> list[Contender]:
    """detkit's and torchvision's contender: the same batches, the same optimizer (SGD, momentum 0.9)."""

    def make(model: nn.Module, call: Callable[[Batch, bool], object]) -> Contender:
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)

        def train(i: int) -> None:
            model.train()
            optimizer.zero_grad(set_to_none=True)  # gradients are part of each step's memory
            with _autocast(setting):
                losses = call(batches[i % len(batches)], True)
            sum(losses.values()).backward()
            optimizer.step()

        def infer(i: int) -> None:
            model.eval()
            # no_grad, not inference_mode: detkit caches anchors, which training must be able to reuse
            with torch.no_grad(), _autocast(setting):
                call(batches[i % len(batches)], False)

        return Contender(model, train, infer, lambda: optimizer.zero_grad(set_to_none=True))

    return [make(ours, lambda b, training: ours(b.images, b.image_sizes, b.targets if training else None)),
            make(theirs, lambda b, training: theirs(b.tv_images, b.tv_targets if training else None))]


def _timed(step: Callable[[], None], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(pair: list[Contender], phase: str, device: str, warmup: int, steps: int, memory_steps: int
            ) -> list[tuple[float, float | None]]:
    """Per contender (median seconds per step, peak MB) of ``phase`` ("train" or "infer").

    Steps alternate between the contenders, the first one swapping every step, so neither always runs
    on the state (caches, allocator, clocks) the other leaves.
    """
    times: list[list[float]] = [[] for _ in pair]
    for step in range(warmup + steps):
        order = range(len(pair)) if step % 2 == 0 else reversed(range(len(pair)))
        for index in order:
            seconds = _timed(lambda: getattr(pair[index], phase)(step), device)
            if step >= warmup:
                times[index].append(seconds)
    peaks: list[list[float]] = [[] for _ in pair]
    for step in range(memory_steps):
        for index, contender in enumerate(pair):
            contender.release()
            with PeakMemory(device) as memory:
                getattr(contender, phase)(step)
            if memory.megabytes is not None:
                peaks[index].append(memory.megabytes)
    return [(statistics.median(t) if t else math.nan, max(p) if p else None) for t, p in zip(times, peaks)]


@dataclass
class Row:
    name: str
    device: str
    ours: float  # images/s
    theirs: float
    ours_mb: float | None
    theirs_mb: float | None
    check: Check | None  # the pair's architecture check (None when the row failed)
    error: str = ""

    @property
    def same(self) -> bool:
        return self.check is not None and self.check.same

    @property
    def ratio(self) -> float:
        return self.ours / self.theirs


def run_setting(setting: Setting, batch: int, warmup: int, steps: int, memory_steps: int, log) -> list[Row]:
    """Build the pair, check it, measure inference (weights still identical) then training: two rows."""
    ours, theirs = build_pair(setting)
    batches = synthetic_batches(setting, batch=batch)
    check = architecture_check(ours, theirs, batches[0])
    log(f"{setting.name(batch)}: {check}")
    pair = contenders(ours, theirs, batches, setting)
    rows = []
    for phase in ("infer", "train"):
        (ours_s, ours_mb), (theirs_s, theirs_mb) = measure(pair, phase, setting.device, warmup, steps, memory_steps)
        rows.append(Row(f"{setting.name(batch)} {phase}", setting.device, batch / ours_s, batch / theirs_s,
                        ours_mb, theirs_mb, check))
    return rows[::-1]  # train first


def run_with_fallback(setting: Setting, warmup: int, steps: int, memory_steps: int, log) -> list[Row]:
    """``run_setting``; on CUDA, halve the batch until it fits, and report other failures as rows."""
    batch = setting.batch
    while True:
        out_of_memory = False
        try:
            return run_setting(setting, batch, warmup, steps, memory_steps, log)
        except torch.cuda.OutOfMemoryError:
            if setting.device != "cuda" or batch == 1:
                raise
            out_of_memory = True
        except Exception as error:  # noqa: BLE001 - a failing CUDA row should not cost the other rows
            if setting.device != "cuda":
                raise
            message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:120]
            return [Row(f"{setting.name(batch)} {phase}", setting.device, math.nan, math.nan, None, None, None,
                        message) for phase in ("train", "infer")]
        finally:
            if setting.device == "cuda":  # free the failed try's models before the next one
                gc.collect()
                torch.cuda.empty_cache()
        if out_of_memory:
            log(f"{setting.name(batch)}: out of memory, trying batch {batch // 2}")
            batch //= 2


HEADER = (f"{'row':<44} {'device':<6} {'detkit img/s':>12} {'tv img/s':>10} {'ratio':>6} "
          f"{'detkit peak MB':>14} {'tv peak MB':>10}  same")


def format_row(row: Row) -> str:
    if row.error:
        return f"{row.name:<44} {row.device:<6} failed: {row.error}"

    def mb(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    return (f"{row.name:<44} {row.device:<6} {row.ours:>12.1f} {row.theirs:>10.1f} {row.ratio:>6.2f} "
            f"{mb(row.ours_mb):>14} {mb(row.theirs_mb):>10}  {'yes' if row.same else 'NO'}")


def worst_line(rows: list[Row]) -> str:
    """``worst ratio <x> (<row>)`` over the CPU rows."""
    cpu = [row for row in rows if row.device == "cpu" and not row.error]
    if not cpu:
        return "worst ratio n/a (no CPU rows)"
    worst = min(cpu, key=lambda row: row.ratio)
    return f"worst ratio {worst.ratio:.2f} ({worst.name})"


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per model and phase (default 3; quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per model and phase (default 10; quick 2)")
    parser.add_argument("--memory-steps", type=int, default=None, help="extra steps measuring memory (default 2; quick 1)")
    parser.add_argument("--no-cuda", action="store_true", help="CPU rows only")
    parser.add_argument("--no-cpu", action="store_true", help="CUDA rows only")
    parser.add_argument("--only", default="", help="only the settings whose row name contains this text")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: a smoke run of seconds")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="inference score threshold of both models instead of the configs' 0.05 (random weights "
                             "score few candidates above 0.05; 0 gives post-processing its full top-k / NMS load)")
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    steps = args.steps if args.steps is not None else (2 if args.quick else 10)
    memory_steps = args.memory_steps if args.memory_steps is not None else (1 if args.quick else 2)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and not args.no_cuda

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if cuda else "")
          + f"; medians of {steps} steps after {warmup} warm-up, alternating; ratio = detkit / torchvision images/s")
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    rows: list[Row] = []
    for setting in settings(args.quick, cuda, cpu=not args.no_cpu):
        if args.only.lower() not in setting.name().lower():
            continue
        if args.score_threshold is not None:
            setting = dataclasses.replace(setting, overrides={**setting.overrides, "score_threshold": args.score_threshold})
        for row in run_with_fallback(setting, warmup, steps, memory_steps, log):
            rows.append(row)
            print(format_row(row), flush=True)
    print(worst_line(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()
