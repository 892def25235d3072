"""The setting groups detectors are composed from: one small frozen dataclass per concept.

Both detectors take these by keyword (``RetinaNet(num_classes=3, anchors=Anchors(sizes="auto"), ...)``); a YAML
config nests them under the detector's ``init_args`` and the command line reaches any key, e.g.
``--model.detector.init_args.anchors.sizes auto`` or ``--model.detector.init_args.rpn.matching.fg_iou_threshold 0.6``.
A group does not know where it sits in a config, so the detector calls ``check(key)`` once per group with the
group's full config key, and every error names the key a user would edit.

Box format everywhere: xyxy, absolute pixels of the model's input image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DETECTOR_KEY = "model.detector.init_args"
BOX_LOSSES = ("l1", "smooth_l1", "giou")
NORMS = ("bn", "frozen_bn", "gn")
MOBILENET = "mobilenet_v3_large"
EXTRA_BLOCKS = ("conv", "conv_from_input", "max_pool")
STRIDE_RULES = ("level", "padded_image")
OCTAVE_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))  # RetinaNet's three anchor sizes an octave


def _fail(key: str, requirement: str, value) -> None:
    raise ValueError(f"{key} must {requirement}, got {value!r}")


def check_unit_interval(key: str, **values: float) -> None:
    """Every value lies in [0, 1] (IoU and score thresholds, fractions); ValueError naming ``key.<name>``."""
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            _fail(f"{key}.{name}", "lie in [0, 1]", value)


def check_at_least_one(key: str, **values: int) -> None:
    """Every value is >= 1 (counts of detections, candidates, samples); ValueError naming ``key.<name>``."""
    for name, value in values.items():
        if value < 1:
            _fail(f"{key}.{name}", "be >= 1", value)


def _null_to_none(group, *names: str) -> None:
    """A dotted command-line override ``--...backbone.weights null`` reaches a nested dataclass as the string
    "None" (jsonargparse 4.5x); read it as the null it was meant to be."""
    for name in names:
        if getattr(group, name) in ("None", "null"):
            object.__setattr__(group, name, None)


def check_box_loss(key: str, value: str) -> None:
    """``value`` is one of ``BOX_LOSSES``."""
    if value not in BOX_LOSSES:
        _fail(key, f"be one of {BOX_LOSSES}", value)


@dataclass(frozen=True)
class Backbone:
    """The trunk (``detkit.models.backbones``).

    Args:
        name: "tiny" (a plain CNN for CPU training from scratch), "resnet18", "resnet34", "resnet50" or
            "mobilenet_v3_large" (its FPN inputs are torchvision's: the first stride-32 block and the final 1x1
            conv, both at stride 32; use it with ``fpn.min_level`` 5).
        weights: None (random init), a torchvision weights name such as "DEFAULT" (downloads: needs internet), or a
            local file holding a torchvision state dict.
        norm: "bn", "frozen_bn" (keeps pretrained statistics; the usual choice when fine-tuning) or "gn".
        trainable_layers: how many of (layer4, layer3, layer2, layer1, stem) train, counted from the top; 5: all
            (MobileNetV3: its 6 stages as torchvision counts them; 6: all).
    """

    name: str = "resnet50"
    weights: str | None = None
    norm: str = "frozen_bn"
    trainable_layers: int = 3

    def __post_init__(self):
        _null_to_none(self, "weights")

    def check(self, key: str) -> None:
        if self.norm not in NORMS:
            _fail(f"{key}.norm", f"be one of {NORMS}", self.norm)
        if not 0 <= self.trainable_layers <= self.num_stages:
            _fail(f"{key}.trainable_layers", f"lie in [0, {self.num_stages}]", self.trainable_layers)
        if self.name == "tiny" and self.weights is not None:
            _fail(f"{key}.weights", "be null for backbone 'tiny' (it has no pretrained weights; pick a resnet "
                  f"in {key}.name)", self.weights)

    @property
    def num_stages(self) -> int:
        """The stages ``trainable_layers`` counts."""
        return 6 if self.name == MOBILENET else 5

    @property
    def coarsest_maps(self) -> int:
        """Maps the trunk gives the pyramid at its coarsest level: MobileNetV3 gives two at stride 32."""
        return 2 if self.name == MOBILENET else 1


@dataclass(frozen=True)
class Pyramid:
    """The feature pyramid (``detkit.models.fpn``).

    Args:
        min_level: the finest backbone level used (3: stride 8); levels run up to 5 (stride 32). "auto" in a
            config: the level of the smaller training objects (``detkit.data.sizing``).
        channels: C, the width of every pyramid level.
        extra_levels: levels above the backbone's coarsest (P6, P7), each of half the previous one's size
            ("auto": up to the level of the larger training objects).
        extra_block: how they are made: "conv": stride-2 3x3 convs, the first on the coarsest output, then on the
            ReLU of the previous (RetinaNet; torchvision's ``LastLevelP6P7(256, 256)``); "conv_from_input": the
            same, the first on the coarsest backbone map (C5: torchvision's RetinaNet v2, ``LastLevelP6P7(2048,
            256)``); "max_pool": stride-2 subsampling of the previous output, no weights (torchvision's Faster
            R-CNN, ``LastLevelMaxPool``).
        norm: null, or a norm after every lateral and output conv (which then have no bias): "bn", "frozen_bn" or
            "gn" (torchvision's Faster R-CNN v2: "bn").
    """

    min_level: int | Literal["auto"] = 3
    channels: int = 256
    extra_levels: int | Literal["auto"] = 2
    extra_block: str = "conv"
    norm: str | None = None

    def __post_init__(self):
        _null_to_none(self, "norm")

    def check(self, key: str) -> None:
        for name in ("min_level", "extra_levels"):
            if getattr(self, name) == "auto":
                _fail(f"{key}.{name}", "be chosen before the detector is built ('auto' is resolved from the training "
                      "boxes by tools/train.py; from Python: detkit.engine.sizing.resolve_auto_sizing)", "auto")
        if self.min_level not in (2, 3, 4, 5):
            _fail(f"{key}.min_level", "be one of 2, 3, 4, 5", self.min_level)
        check_at_least_one(key, channels=self.channels)
        if self.extra_levels < 0:
            _fail(f"{key}.extra_levels", "be >= 0", self.extra_levels)
        if self.extra_block not in EXTRA_BLOCKS:
            _fail(f"{key}.extra_block", f"be one of {EXTRA_BLOCKS}", self.extra_block)
        if self.norm not in (None, *NORMS):
            _fail(f"{key}.norm", f"be null or one of {NORMS}", self.norm)

    def num_levels(self, backbone: Backbone) -> int:
        """L, the levels the pyramid outputs on ``backbone``."""
        return 5 - self.min_level + backbone.coarsest_maps + self.extra_levels


@dataclass(frozen=True)
class Anchors:
    """The anchors of a dense stage: at every location of level l, ``sizes[l] * s`` for each scale s and each
    aspect ratio (w * h = size^2, h / w = ratio).

    Args:
        sizes: one base size in pixels per pyramid level, finest first, or "auto": fitted to the training boxes
            before training (``detkit.models.anchor_fit``), kept in the checkpoint.
        scales: multipliers of the base size at every location (``OCTAVE_SCALES`` in RetinaNet, (1.0,) in the RPN).
        aspect_ratios: h / w, the same on every level, or "auto": ``num_aspect_ratios`` ratios fitted to the boxes.
        num_aspect_ratios: how many ratios "auto" fits.
        whole_pixel_sizes: round every size (base size x scale) down to whole pixels, as torchvision's RetinaNet
            anchors are (int(32 * 2 ** (1 / 3)) = 40); its weights were trained on those.
        stride_rule: how far apart the anchor centres of a level are: "level": the level's stride (8 px on P3);
            "padded_image": the padded image size // the map size on each axis, as torchvision's AnchorGenerator
            (the same up to the padding multiple, 32; coarser levels differ: 800 px over P6's 13 cells gives 61 px).
    """

    sizes: tuple[float, ...] | Literal["auto"] = (32, 64, 128, 256, 512)
    scales: tuple[float, ...] = (1.0,)
    aspect_ratios: tuple[float, ...] | Literal["auto"] = (0.5, 1.0, 2.0)
    num_aspect_ratios: int = 3
    whole_pixel_sizes: bool = False
    stride_rule: str = "level"

    def check(self, key: str, num_levels: int) -> None:
        for name, value in (("sizes", self.sizes), ("aspect_ratios", self.aspect_ratios)):
            if isinstance(value, str):
                if value != "auto":
                    _fail(f"{key}.{name}", "be a list of numbers or 'auto'", value)
            elif not value or any(v <= 0 for v in value):
                _fail(f"{key}.{name}", "hold positive numbers", list(value))
        if self.sizes != "auto" and len(self.sizes) != num_levels:
            _fail(f"{key}.sizes", f"give one size per pyramid level ({num_levels} levels)", list(self.sizes))
        if not self.scales or any(s <= 0 for s in self.scales):
            _fail(f"{key}.scales", "hold positive numbers", list(self.scales))
        check_at_least_one(key, num_aspect_ratios=self.num_aspect_ratios)
        if self.stride_rule not in STRIDE_RULES:
            _fail(f"{key}.stride_rule", f"be one of {STRIDE_RULES}", self.stride_rule)

    @property
    def fit_sizes(self) -> bool:
        return self.sizes == "auto"

    @property
    def fit_ratios(self) -> bool:
        return self.aspect_ratios == "auto"

    def base_sizes(self, strides: list[int]) -> tuple[float, ...]:
        """(L,) base sizes; placeholders of 4 x the stride (the COCO recipes' ratio) while they are to be fitted."""
        return tuple(4.0 * s for s in strides) if self.fit_sizes else tuple(float(s) for s in self.sizes)

    def ratios(self) -> tuple[float, ...]:
        """(R,) ratios; placeholders spread evenly in log from 1/2 to 2 while they are to be fitted."""
        if not self.fit_ratios:
            return tuple(float(r) for r in self.aspect_ratios)
        count = self.num_aspect_ratios
        return tuple(2.0 ** (2 * i / (count - 1) - 1) if count > 1 else 1.0 for i in range(count))


@dataclass(frozen=True)
class Matching:
    """IoU matching of anchors or proposals to ground truths (``detkit.ops.Matcher``).

    Args:
        fg_iou_threshold: IoU >= this is positive.
        bg_iou_threshold: IoU < this is background; between the two: ignored (zero loss weight).
        allow_low_quality_matches: each ground truth's best anchor is positive even below fg_iou_threshold.
    """

    fg_iou_threshold: float = 0.5
    bg_iou_threshold: float = 0.4
    allow_low_quality_matches: bool = True

    def check(self, key: str) -> None:
        check_unit_interval(key, fg_iou_threshold=self.fg_iou_threshold, bg_iou_threshold=self.bg_iou_threshold)
        if self.fg_iou_threshold < self.bg_iou_threshold:
            raise ValueError(f"{key}.fg_iou_threshold ({self.fg_iou_threshold}) must be >= {key}.bg_iou_threshold "
                             f"({self.bg_iou_threshold}): IoU >= fg is positive, below bg background")


@dataclass(frozen=True)
class Sampling:
    """Samples per image for a two-stage loss (``detkit.ops.BalancedSampler``).

    Args:
        batch_size_per_image: anchors or RoIs sampled per image.
        positive_fraction: the most of them that are positive (the rest are background).
    """

    batch_size_per_image: int = 256
    positive_fraction: float = 0.5

    def check(self, key: str) -> None:
        check_at_least_one(key, batch_size_per_image=self.batch_size_per_image)
        check_unit_interval(key, positive_fraction=self.positive_fraction)


@dataclass(frozen=True)
class DenseHead:
    """RetinaNet's head: a class tower and a box tower shared by all pyramid levels.

    Args:
        depth: 3x3 conv layers in each tower.
        norm: null or "gn" (GroupNorm after each conv).
        prior_probability: the classifier's bias makes every anchor start at this foreground probability.
    """

    depth: int = 4
    norm: str | None = None
    prior_probability: float = 0.01

    def __post_init__(self):
        _null_to_none(self, "norm")

    def check(self, key: str) -> None:
        if self.depth < 0:
            _fail(f"{key}.depth", "be >= 0", self.depth)
        if self.norm not in (None, "gn"):
            _fail(f"{key}.norm", "be null or 'gn'", self.norm)
        if not 0.0 < self.prior_probability < 1.0:
            _fail(f"{key}.prior_probability", "lie in (0, 1)", self.prior_probability)


@dataclass(frozen=True)
class DenseLoss:
    """RetinaNet's losses, both divided by an exponential moving average of the positive anchor count (or, with
    ``normalize_per_image``, each image's by its own count).

    Args:
        focal_alpha, focal_gamma: sigmoid focal loss (alpha -1 and gamma 0: plain BCE).
        background_weight: loss weight of background anchors (1: standard), for imbalance studies.
        box_loss: "l1", "smooth_l1" or "giou".
        normalizer_momentum: momentum of the positive-count average (0: this batch's count).
        normalize_per_image: divide each image's losses by its own positive count (at least 1) and average over
            the images, as torchvision's RetinaNet does (the moving average is then unused); equal to
            ``normalizer_momentum`` 0 for one image per batch.
    """

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    background_weight: float = 1.0
    box_loss: str = "l1"
    normalizer_momentum: float = 0.9
    normalize_per_image: bool = False

    def check(self, key: str) -> None:
        if not (self.focal_alpha == -1 or 0.0 <= self.focal_alpha <= 1.0):
            _fail(f"{key}.focal_alpha", "lie in [0, 1] or be -1 (no weighting)", self.focal_alpha)
        if self.focal_gamma < 0:
            _fail(f"{key}.focal_gamma", "be >= 0", self.focal_gamma)
        if self.background_weight < 0:
            _fail(f"{key}.background_weight", "be >= 0", self.background_weight)
        check_box_loss(f"{key}.box_loss", self.box_loss)
        check_unit_interval(key, normalizer_momentum=self.normalizer_momentum)


@dataclass(frozen=True)
class Proposals:
    """Faster R-CNN's region proposal network (``detkit.models.rpn``).

    Args:
        matching, sampling: which anchors are objects, and how many train the RPN per image.
        pre_nms_top_n_train / _test: best-scored anchors kept per level and image before NMS.
        post_nms_top_n_train / _test: proposals kept per image after NMS.
        nms_threshold: proposal NMS IoU (per level); min_size: proposals narrower or lower than this are dropped.
        box_loss: "l1", "smooth_l1" or "giou".
        score_threshold: proposals whose objectness probability is below this are dropped before NMS
            (torchvision's ``rpn_score_thresh``: 0.05 in its MobileNet models).
        head_convs: 3x3 conv + ReLU layers of the head before its outputs (torchvision's Faster R-CNN v2: 2).
    """

    matching: Matching = Matching(0.7, 0.3, True)
    sampling: Sampling = Sampling(256, 0.5)
    pre_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 1000
    post_nms_top_n_train: int = 1000
    post_nms_top_n_test: int = 1000
    nms_threshold: float = 0.7
    min_size: float = 1e-3
    box_loss: str = "smooth_l1"
    score_threshold: float = 0.0
    head_convs: int = 1

    def check(self, key: str) -> None:
        self.matching.check(f"{key}.matching")
        self.sampling.check(f"{key}.sampling")
        check_at_least_one(key, pre_nms_top_n_train=self.pre_nms_top_n_train,
                           pre_nms_top_n_test=self.pre_nms_top_n_test,
                           post_nms_top_n_train=self.post_nms_top_n_train,
                           post_nms_top_n_test=self.post_nms_top_n_test,
                           head_convs=self.head_convs)
        check_unit_interval(key, nms_threshold=self.nms_threshold, score_threshold=self.score_threshold)
        if self.min_size < 0:
            _fail(f"{key}.min_size", "be >= 0", self.min_size)
        check_box_loss(f"{key}.box_loss", self.box_loss)


@dataclass(frozen=True)
class RoIHead:
    """Faster R-CNN's second stage (``detkit.models.roi_heads``).

    Args:
        matching, sampling: which proposals are positive (IoU >= fg; below bg background), and how many RoIs train
            the head per image (fewer RoIs is the main speed lever on a CPU: RoIAlign's backward dominates).
        canonical_scale, canonical_level: a RoI of sqrt(area) = canonical_scale is pooled from that level (FPN paper,
            eq. 1: 224 and 4); smaller RoIs from finer levels.
        representation_size: width of the fully connected layers; box_loss: "l1", "smooth_l1" or "giou".
        box_head_convs: 3x3 conv + BatchNorm + ReLU layers (C channels) between RoIAlign and the fully connected
            layers (torchvision's Faster R-CNN v2 ``FastRCNNConvFCHead``: 4, with ``box_head_fcs`` 1).
        box_head_fcs: fully connected + ReLU layers (2: torchvision's ``TwoMLPHead``).
    """

    matching: Matching = Matching(0.5, 0.5, False)
    sampling: Sampling = Sampling(512, 0.25)
    canonical_scale: int = 224
    canonical_level: int = 4
    representation_size: int = 1024
    box_loss: str = "smooth_l1"
    box_head_convs: int = 0
    box_head_fcs: int = 2

    def check(self, key: str) -> None:
        self.matching.check(f"{key}.matching")
        self.sampling.check(f"{key}.sampling")
        check_at_least_one(key, canonical_scale=self.canonical_scale, representation_size=self.representation_size,
                           box_head_fcs=self.box_head_fcs)
        if self.box_head_convs < 0:
            _fail(f"{key}.box_head_convs", "be >= 0", self.box_head_convs)
        check_box_loss(f"{key}.box_loss", self.box_loss)


@dataclass(frozen=True)
class Inference:
    """From scored boxes to detections, for both detectors.

    Args:
        score_threshold: a detection is kept when its score is >= this (the one rule of detkit, also at prediction).
        nms_threshold: IoU above which a lower-scored box of the same class is suppressed.
        detections_per_image: the most detections kept per image, best first.
        topk_candidates: RetinaNet only: best (anchor, class) pairs kept per level before NMS.
        class_agnostic: NMS over all classes together instead of per class.
        min_box_size: boxes narrower or lower than this (pixels, after clipping to the image) are dropped before
            NMS; 0 keeps them all (torchvision's RetinaNet).
    """

    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100
    topk_candidates: int = 1000
    class_agnostic: bool = False
    min_box_size: float = 1e-2

    def check(self, key: str) -> None:
        check_unit_interval(key, score_threshold=self.score_threshold, nms_threshold=self.nms_threshold)
        check_at_least_one(key, detections_per_image=self.detections_per_image, topk_candidates=self.topk_candidates)
        if self.min_box_size < 0:
            _fail(f"{key}.min_box_size", "be >= 0", self.min_box_size)


def check_num_classes(num_classes: int) -> None:
    """K >= 1 object classes (training links it from the data: ``data.num_classes``)."""
    if num_classes < 1:
        _fail(f"{DETECTOR_KEY}.num_classes", "be >= 1", num_classes)


def check_groups(**groups) -> None:
    """Check each group once under ``model.detector.init_args.<name>``; anchors are checked against the pyramid."""
    pyramid, backbone = groups.get("fpn"), groups.get("backbone")
    for name, group in groups.items():
        key = f"{DETECTOR_KEY}.{name}"
        if isinstance(group, Anchors):
            group.check(key, pyramid.num_levels(backbone))
        else:
            group.check(key)


__all__ = ["Anchors", "Backbone", "DenseHead", "DenseLoss", "Inference", "Matching", "OCTAVE_SCALES", "Proposals",
           "Pyramid", "RoIHead", "Sampling", "check_groups", "check_num_classes"]
