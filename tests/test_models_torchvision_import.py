"""torchvision's six COCO detectors rebuilt in detkit: a state dict of torchvision's model (random, seeded weights;
no download) imported with ``from_torchvision`` gives the same detections and training losses.

Model level only: torchvision's transform resizes, normalises and pads; detkit gets that exact batch with the
normalisation undone (it normalises inside, and padding stays zero after normalisation as in torchvision's), and
its boxes are mapped back with the ratios torchvision's postprocess uses. ``-s`` prints the largest differences.
"""
from __future__ import annotations

import copy
import re

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FrozenBatchNorm2d, box_iou
from torchvision_models import random_torchvision

from detkit.data.coco_names import TORCHVISION_COCO_CATEGORIES, coco_category_id, coco_label_names
from detkit.models.settings import Anchors, Backbone, Inference, Proposals, Pyramid, RoIHead, check_groups
from detkit.models.torchvision_import import ARCHITECTURES, StateDictMismatch, detector_settings, from_torchvision
from detkit.ops import BalancedSampler

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE_SIZES = [(200, 90), (90, 200), (300, 300), (160, 240)]  # (h, w) before torchvision's resize
MIN_SIZE, MAX_SIZE = 160, 320  # torchvision resizes to these instead of 800 / 1333: cheap on two CPU cores
BOX_TOLERANCE, SCORE_TOLERANCE, LOSS_TOLERANCE = 1e-2, 1e-4, 1e-4
SMALL = dict(min_size=MIN_SIZE, max_size=MAX_SIZE)


def detkit_input(model: nn.Module, images: list[torch.Tensor], targets: list[dict] | None = None):
    """torchvision's transformed batch as detkit takes it: (B, 3, H, W) in [0, 1] units, the image sizes and the
    targets in the resized pixels (labels as they come)."""
    batch, resized_targets = model.transform(images, targets)
    mean = torch.tensor(model.transform.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.transform.image_std).view(1, 3, 1, 1)
    return batch.tensors * std + mean, batch.image_sizes, resized_targets


def random_image(size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(3, *size, generator=generator)


def assert_same_detections(ours: dict, theirs: dict, nms_threshold: float = 0.5) -> tuple[float, float, int]:
    """Same set of detections: detkit's label + 1 == torchvision's, boxes within BOX_TOLERANCE px, scores within
    SCORE_TOLERANCE. Both are sorted by score and equal-ranked entries may swap where scores differ by less than the
    tolerance, so each torchvision detection is paired with detkit's closest one of its label.

    A near-tie in NMS is the one other accepted difference: two overlapping candidates (IoU above the NMS threshold)
    of one label whose scores differ by float32 rounding, where each side keeps the other one. Such a pair has
    scores within SCORE_TOLERANCE; at most one per image. Returns the largest (box, score) differences of the
    paired detections and the number of near-ties."""
    assert len(ours["scores"]) == len(theirs["scores"]), (len(ours["scores"]), len(theirs["scores"]))
    unpaired = list(range(len(ours["scores"])))
    unmatched, box_diff, score_diff = [], 0.0, 0.0
    for index, (box, score, label) in enumerate(zip(theirs["boxes"], theirs["scores"], theirs["labels"])):
        candidates = [i for i in unpaired if ours["labels"][i] + 1 == label]
        distance = [float((ours["boxes"][i] - box).abs().max()) for i in candidates]
        if not candidates or min(distance) > BOX_TOLERANCE:
            unmatched.append(index)
            continue
        best = candidates[min(range(len(candidates)), key=distance.__getitem__)]
        unpaired.remove(best)
        box_diff = max(box_diff, min(distance))
        score_diff = max(score_diff, float((ours["scores"][best] - score).abs()))
    assert score_diff <= SCORE_TOLERANCE, score_diff
    for index in unmatched:  # only NMS near-ties may remain
        label, score = theirs["labels"][index], theirs["scores"][index]
        overlap = box_iou(ours["boxes"], theirs["boxes"][index, None])[:, 0]  # (D,)
        ties = [i for i in unpaired if ours["labels"][i] + 1 == label and overlap[i] > nms_threshold
                and abs(float(ours["scores"][i] - score)) <= SCORE_TOLERANCE]
        assert ties, f"torchvision's {theirs['boxes'][index].tolist()} {float(score):.6f} label {int(label)}: no match"
        unpaired.remove(ties[0])
    assert len(unmatched) <= 1, f"{len(unmatched)} NMS near-ties in one image"
    return box_diff, score_diff, len(unmatched)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def pair(request):
    """(arch, torchvision's model, detkit's import of its state dict)."""
    arch = request.param
    theirs = random_torchvision(arch, **SMALL)
    return arch, theirs, from_torchvision(arch, theirs.state_dict())


def fewer_test_proposals(arch: str, theirs: nn.Module, ours: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Copies keeping TEST_PROPOSALS[arch] proposals after NMS on both sides (fasterrcnn v2's four 3x3 convs per
    RoI make its default 1000 the most expensive step of this file); the others unchanged."""
    if arch not in TEST_PROPOSALS:
        return theirs, ours
    theirs, ours = copy.deepcopy(theirs), copy.deepcopy(ours)
    theirs.rpn._post_nms_top_n["testing"] = ours.rpn.post_nms_top_n[False] = TEST_PROPOSALS[arch]
    return theirs, ours


def compare_detections(theirs: nn.Module, ours: nn.Module, size: tuple[int, int], generator: torch.Generator
                       ) -> tuple[float, float, int, int]:
    """One random image of ``size`` through both: (max box diff, max score diff, NMS near-ties, detections)."""
    image = random_image(size, generator)
    with torch.no_grad():
        expected = theirs([image])[0]
        batch, image_sizes, _ = detkit_input(theirs, [image])
        detections = ours(batch, image_sizes)[0]
    # torchvision's postprocess: boxes times original / resized size per axis
    ratio_y, ratio_x = size[0] / image_sizes[0][0], size[1] / image_sizes[0][1]
    detections["boxes"] = detections["boxes"] * torch.tensor([ratio_x, ratio_y, ratio_x, ratio_y])
    return *assert_same_detections(detections, expected), len(expected["scores"])


def test_eval_detections_equal_torchvisions(pair):
    arch, theirs, ours = pair
    theirs, ours = fewer_test_proposals(arch, theirs, ours)
    generator = torch.Generator().manual_seed(2)
    largest, counts, near_ties = (0.0, 0.0), [], 0
    for size in IMAGE_SIZES:
        *differences, ties, count = compare_detections(theirs, ours, size, generator)
        largest = tuple(max(a, b) for a, b in zip(largest, differences))
        near_ties += ties
        counts.append(count)
    assert sum(counts) > 0
    print(f"\n{arch}: detections per image {counts}, max box diff {largest[0]:.2e} px, max score diff "
          f"{largest[1]:.2e}, NMS near-ties {near_ties}")


def test_wrong_architecture_names_the_first_mismatching_key():
    state = random_torchvision("retinanet_resnet50_fpn", **SMALL).state_dict()
    with pytest.raises(StateDictMismatch, match=r"'backbone\.fpn\.inner_blocks\.0\.0\.weight' has shape"):
        from_torchvision("fasterrcnn_resnet50_fpn", state)


def test_truncated_state_dict_names_the_first_missing_key():
    state = random_torchvision("retinanet_resnet50_fpn", **SMALL).state_dict()
    keys = list(state)
    truncated = {k: state[k] for k in keys[: keys.index("head.regression_head.conv.0.0.weight")]}
    with pytest.raises(StateDictMismatch, match=r"'head\.regression_head\.conv\.0\.0\.weight' is missing"):
        from_torchvision("retinanet_resnet50_fpn", truncated)


def test_coco_names_are_torchvisions():
    weights = torchvision.models.detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1  # its meta needs no download
    assert list(TORCHVISION_COCO_CATEGORIES) == weights.meta["categories"]
    assert len(coco_label_names()) == 90 and coco_label_names()[0] == "person" and coco_category_id(0) == 1
    assert all(detector_settings(arch)["num_classes"] == 90 for arch in ARCHITECTURES)


def random_targets(size: tuple[int, int], generator: torch.Generator, count: int = 3) -> dict:
    """``count`` boxes (count, 4) xyxy of 10-60% of the image's sides, torchvision labels 1..90."""
    height, width = size
    wh = torch.rand(count, 2, generator=generator) * 0.5 + 0.1
    corner = torch.rand(count, 2, generator=generator) * (1 - wh)
    boxes = torch.cat([corner, corner + wh], 1) * torch.tensor([width, height, width, height])
    return {"boxes": boxes, "labels": torch.randint(1, 91, (count,), generator=generator)}


def torchvision_losses(model: nn.Module, images: list[torch.Tensor], targets: list[dict], seed: int = 0) -> dict:
    """torchvision's training losses; the RNG is seeded past its transform (whose random size choice draws from it),
    where detkit's forward starts."""
    batch, resized = model.transform(images, targets)
    torch.manual_seed(seed)
    features = model.backbone(batch.tensors)
    if hasattr(model, "head"):
        feature_list = list(features.values())
        head_outputs = model.head(feature_list)
        anchors = model.anchor_generator(batch, feature_list)
        return model.compute_loss(resized, head_outputs, anchors)
    proposals, rpn_losses = model.rpn(batch, features, resized)
    _, roi_losses = model.roi_heads(features, proposals, batch.image_sizes, resized)
    return rpn_losses | roi_losses


LOSS_NAMES = {"classification": "cls", "bbox_regression": "box", "loss_objectness": "rpn_objectness",
              "loss_rpn_box_reg": "rpn_box", "loss_classifier": "roi_cls", "loss_box_reg": "roi_box"}
TRAINING_PROPOSALS = 300  # both RPNs keep 300 proposals in training (2000 by default): the RoI head stays cheap
TEST_PROPOSALS = {"fasterrcnn_resnet50_fpn_v2": 300}


def sample_everything(theirs: nn.Module, ours: nn.Module) -> None:
    """Both two-stage samplers take every candidate (positives and background alike), so the losses do not depend
    on the random draw or on the order of equal-scored proposals; fewer training proposals on both sides."""
    if hasattr(theirs, "head"):
        return
    for sampler in (theirs.rpn.fg_bg_sampler, theirs.roi_heads.fg_bg_sampler):
        sampler.batch_size_per_image = 10**7
    ours.rpn.sampler = BalancedSampler(10**7, ours.rpn.sampler.positive_fraction)
    ours.roi_heads.sampler = BalancedSampler(10**7, ours.roi_heads.sampler.positive_fraction)
    theirs.rpn._post_nms_top_n["training"] = TRAINING_PROPOSALS
    ours.rpn.post_nms_top_n[True] = TRAINING_PROPOSALS


def detkit_losses(model: nn.Module, theirs: nn.Module, images: list[torch.Tensor], targets: list[dict],
                  seed: int = 0) -> dict:
    """detkit's training losses on torchvision's transformed batch and targets (labels - 1), the RNG seeded."""
    batch, image_sizes, resized = detkit_input(theirs, images, targets)
    torch.manual_seed(seed)
    return model(batch, image_sizes, [t | {"labels": t["labels"] - 1} for t in resized])


def hand_over_proposals(theirs: nn.Module, ours: nn.Module) -> None:
    """detkit's RPN passes torchvision's proposals on to its RoI head, once it has checked they are its own up to
    order: two proposals whose objectness is tied to float rounding (~1e-7) may swap places on one CPU and not on
    another, and the RoI sampler draws positions."""
    captured = {}
    their_forward, our_forward = theirs.rpn.forward, ours.rpn.forward

    def capture(*args, **kwargs):
        proposals, losses = their_forward(*args, **kwargs)
        captured["proposals"] = proposals
        return proposals, losses

    def hand_over(*args, **kwargs):
        proposals, losses = our_forward(*args, **kwargs)
        for mine, their in zip(proposals, captured["proposals"], strict=True):
            assert mine.shape == their.shape
            nearest = torch.cdist(mine, their, p=float("inf")).min(1).values  # (P,) px to their closest
            assert float(nearest.max()) <= BOX_TOLERANCE
        return captured["proposals"], losses

    theirs.rpn.forward, ours.rpn.forward = capture, hand_over


def test_default_sampling_draws_torchvisions_samples(pair):
    """With torchvision's own sampler sizes (RPN 256, RoI 512) both sides draw the same anchors and RoIs from the
    same seed: their samplers take candidates in index order, positives then background, one randperm each."""
    arch, theirs, ours = pair
    if hasattr(theirs, "head"):
        pytest.skip("RetinaNet samples nothing")
    theirs, ours = copy.deepcopy(theirs).train(), copy.deepcopy(ours).train()
    hand_over_proposals(theirs, ours)
    generator = torch.Generator().manual_seed(3)
    image, target = random_image(IMAGE_SIZES[0], generator), random_targets(IMAGE_SIZES[0], generator)
    with torch.no_grad():
        expected, losses = torchvision_losses(theirs, [image], [target]), detkit_losses(ours, theirs, [image], [target])
    for name, value in expected.items():
        assert float(losses[LOSS_NAMES[name]]) == pytest.approx(float(value), rel=LOSS_TOLERANCE), name


def test_training_losses_equal_torchvisions(pair):
    arch, theirs, ours = pair
    theirs, ours = copy.deepcopy(theirs).train(), copy.deepcopy(ours).train()
    sample_everything(theirs, ours)
    generator = torch.Generator().manual_seed(3)
    largest = 0.0
    for size in IMAGE_SIZES[:2]:
        image, target = random_image(size, generator), random_targets(size, generator)
        with torch.no_grad():
            expected = torchvision_losses(theirs, [image], [target])
            losses = detkit_losses(ours, theirs, [image], [target])
        assert set(losses) == {LOSS_NAMES[name] for name in expected}
        for name, value in expected.items():
            relative = float((losses[LOSS_NAMES[name]] - value).abs() / value.abs().clamp(min=1e-12))
            assert relative <= LOSS_TOLERANCE, (name, float(losses[LOSS_NAMES[name]]), float(value))
            largest = max(largest, relative)
    print(f"\n{arch}: training losses {dict((k, round(float(v), 4)) for k, v in expected.items())}, max relative "
          f"difference {largest:.2e}")


def legacy_form(state: dict) -> dict:
    """The key names of older torchvision releases, which torchvision's version hooks still convert on loading
    (its first COCO files may be in this form): FPN and RPN convs without their ``.0`` block, RetinaNet towers as
    plain (conv, ReLU) sequences."""
    renamed = {}
    for key, value in state.items():
        key = re.sub(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.0\.", r"\1.", key)
        key = re.sub(r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv.", key)
        key = re.sub(r"^(head\.\w+_head\.conv)\.(\d+)\.0\.", lambda m: f"{m[1]}.{2 * int(m[2])}.", key)
        renamed[key] = value
    return renamed


@pytest.mark.parametrize("arch", ["retinanet_resnet50_fpn", "fasterrcnn_resnet50_fpn"])
def test_older_key_names_and_batch_norm_step_counts_import_alike(arch):
    torch.manual_seed(0)
    model = getattr(torchvision.models.detection, arch)(weights=None, weights_backbone=None)
    state = model.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in state)  # BatchNorm trunk: with step counts
    legacy = legacy_form(state)
    assert legacy.keys() != state.keys()
    model.load_state_dict(legacy)  # torchvision reads this form too: it is the old one
    expected = from_torchvision(arch, state).state_dict()
    imported = from_torchvision(arch, legacy).state_dict()
    assert all(torch.equal(imported[k], expected[k]) for k in expected)


def test_unknown_architecture_lists_the_six():
    with pytest.raises(ValueError, match="fasterrcnn_mobilenet_v3_large_320_fpn"):
        from_torchvision("ssd300_vgg16", {})


@pytest.mark.parametrize("arch", ["retinanet_resnet50_fpn_v2"])
def test_retinanet_losses_per_image_equal_torchvisions_on_a_batch(arch):
    """Two images in one batch: ``loss.normalize_per_image`` (set by ``detector_settings``) divides each image's
    loss by its own positive count and averages the images, as torchvision does; the batch's count would not."""
    theirs = random_torchvision(arch, **SMALL).train()
    ours = from_torchvision(arch, theirs.state_dict()).train()
    assert ours.loss_settings.normalize_per_image
    generator = torch.Generator().manual_seed(4)
    images = [random_image(size, generator) for size in IMAGE_SIZES[:2]]
    targets = [random_targets(size, generator, count) for size, count in zip(IMAGE_SIZES[:2], (1, 4))]
    with torch.no_grad():
        expected, losses = torchvision_losses(theirs, images, targets), detkit_losses(ours, theirs, images, targets)
    for name, value in expected.items():
        assert float(losses[LOSS_NAMES[name]]) == pytest.approx(float(value), rel=LOSS_TOLERANCE), name


def test_anchors_equal_torchvisions_at_full_size(pair):
    """At torchvision's own input size (800 x 1216 padded) the coarse levels' anchor centres are not 2**l apart
    (P6: 1216 // 19 = 64 across, 800 // 13 = 61 down); detkit's ``stride_rule`` "padded_image" follows."""
    arch, theirs, ours = pair
    dense = ours.dense if hasattr(ours, "dense") else ours.rpn.dense
    generator = theirs.anchor_generator if hasattr(theirs, "anchor_generator") else theirs.rpn.anchor_generator
    padded = (800, 1216)
    shapes = [(-(-padded[0] // stride), -(-padded[1] // stride)) for stride in dense.strides]
    feature_maps = [torch.zeros(1, 1, *shape) for shape in shapes]
    expected = generator(ImageList(torch.zeros(1, 3, *padded), [padded]), feature_maps)[0]
    assert dense.num_anchors_per_location == generator.num_anchors_per_location()[0]
    assert torch.equal(dense.image_anchors(padded), expected)


def test_mobilenet_norms_match_torchvisions_build_with_weights(pair):
    """torchvision's MobileNetV3 detection trunk is FrozenBatchNorm2d (eps 1e-5) once weights are given; detkit's
    imported one is the same, not MobileNetV3's own BatchNorm of eps 1e-3."""
    arch, theirs, ours = pair
    if "mobilenet" not in arch:
        pytest.skip("MobileNetV3 only")
    norms = [m for m in ours.backbone.body.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) and m.eps == 1e-5 for m in norms)
    with torch.device("meta"):
        published = getattr(torchvision.models.detection, arch)(weights=None, weights_backbone=None)
    assert all(m.eps == 1e-5 for m in published.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("groups, message", [
    (dict(fpn=Pyramid(extra_block="avg_pool")), r"init_args\.fpn\.extra_block must be one of"),
    (dict(fpn=Pyramid(norm="ln")), r"init_args\.fpn\.norm must be null or one of"),
    (dict(anchors=Anchors(stride_rule="image")), r"init_args\.anchors\.stride_rule must be one of"),
    (dict(inference=Inference(min_box_size=-1.0)), r"init_args\.inference\.min_box_size must be >= 0"),
    (dict(rpn=Proposals(score_threshold=1.5)), r"init_args\.rpn\.score_threshold must lie in \[0, 1\]"),
    (dict(rpn=Proposals(head_convs=0)), r"init_args\.rpn\.head_convs must be >= 1"),
    (dict(roi=RoIHead(box_head_convs=-1)), r"init_args\.roi\.box_head_convs must be >= 0"),
    (dict(roi=RoIHead(box_head_fcs=0)), r"init_args\.roi\.box_head_fcs must be >= 1"),
    (dict(backbone=Backbone(name="mobilenet_v3_large", trainable_layers=7)),
     r"init_args\.backbone\.trainable_layers must lie in \[0, 6\]"),
])
def test_the_new_options_name_their_config_key(groups, message):
    with pytest.raises(ValueError, match=message):
        check_groups(**({"backbone": Backbone(), "fpn": Pyramid(), "anchors": Anchors()} | groups))


@pytest.mark.parametrize("arch", ["retinanet_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn"])
def test_a_model_of_other_classes_imports_with_its_class_count(arch):
    """torchvision trained with num_classes=4 (background and three classes): K = 3, same detections."""
    theirs = random_torchvision(arch, num_classes=4, **SMALL)
    ours = from_torchvision(arch, theirs.state_dict())
    assert ours.num_classes == 3
    *_, count = compare_detections(theirs, ours, IMAGE_SIZES[2], torch.Generator().manual_seed(5))
    assert count > 0
