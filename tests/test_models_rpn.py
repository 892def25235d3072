"""RegionProposalNetwork: proposals against torchvision's RPN filtering, count and order, losses by hand."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.rpn import RegionProposalNetwork as TorchvisionRPN
from torchvision.ops import box_iou

from detkit.models.rpn import RegionProposalNetwork
from detkit.models.settings import Anchors, Proposals

STRIDES = [8, 16]
IMAGE_SIZES = [(64, 80), (50, 70)]  # batch padded to 64 x 80


def make_rpn(anchors: Anchors = Anchors(sizes=(16, 32)), **settings) -> RegionProposalNetwork:
    """An RPN on two levels; ``settings`` replace ``Proposals`` keys."""
    options = dict(pre_nms_top_n_test=30, post_nms_top_n_test=20, pre_nms_top_n_train=12, post_nms_top_n_train=7)
    return RegionProposalNetwork(in_channels=8, strides=STRIDES, anchors=anchors,
                                 settings=Proposals(**(options | settings)))


def make_features(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 8, 64 // s, 80 // s, generator=generator) for s in STRIDES]


def randomise_head(rpn: RegionProposalNetwork, seed: int = 1) -> None:
    """Larger random weights than the 0.01 init, so scores and deltas spread and proposals differ."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in rpn.head.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


@pytest.mark.parametrize("training", [False, True])
def test_proposals_equal_torchvision_filter_proposals(training):
    rpn = make_rpn().train(training)
    randomise_head(rpn)
    features = make_features()
    logits, deltas = rpn.head(features)
    anchors = rpn.dense.anchor_generator([tuple(f.shape[-2:]) for f in features], STRIDES)
    boxes, scores = rpn.select_proposals(logits, deltas, anchors, IMAGE_SIZES)

    oracle = TorchvisionRPN(None, None, 0.7, 0.3, 256, 0.5, dict(training=12, testing=30), dict(training=7, testing=20),
                            0.7)
    oracle.train(training)
    decoded = tv_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(torch.cat(deltas, 1).reshape(-1, 4),
                                                                    torch.cat(anchors).repeat(2, 1))
    expected_boxes, expected_scores = oracle.filter_proposals(decoded.view(2, -1, 4), torch.cat(logits, 1), IMAGE_SIZES,
                                                              [len(a) for a in anchors])
    top_n = 7 if training else 20
    for i, (h, w) in enumerate(IMAGE_SIZES):
        torch.testing.assert_close(boxes[i], expected_boxes[i])
        torch.testing.assert_close(scores[i], expected_scores[i])
        assert 0 < len(boxes[i]) <= top_n
        assert torch.all(scores[i][:-1] >= scores[i][1:]), "proposals must come by decreasing objectness"
        assert boxes[i][:, 0::2].min() >= 0 and boxes[i][:, 2].max() <= w and boxes[i][:, 3].max() <= h


def test_forward_returns_detached_proposals_capped_per_image():
    rpn = make_rpn(pre_nms_top_n_test=1000, post_nms_top_n_test=5).eval()
    randomise_head(rpn)
    proposals, losses = rpn(make_features(), IMAGE_SIZES)
    assert losses == {}
    assert [p.shape for p in proposals] == [(5, 4), (5, 4)]  # 300+ anchors, NMS leaves far more than 5
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in proposals)


def zero_head(rpn: RegionProposalNetwork) -> None:
    """Objectness logits 0 and deltas 0 everywhere: the losses become hand-computable."""
    with torch.no_grad():
        for parameter in rpn.head.parameters():
            parameter.zero_()


def test_losses_equal_hand_computation_and_empty_image_only_adds_background():
    rpn = make_rpn().train()
    zero_head(rpn)
    gt = torch.tensor([[8.0, 8.0, 30.0, 26.0], [30.0, 20.0, 62.0, 52.0]])
    targets = [{"boxes": gt, "labels": torch.tensor([0, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    _, losses = rpn(make_features(), IMAGE_SIZES, targets)

    anchors = torch.cat(rpn.dense.anchor_generator([(8, 10), (4, 5)], STRIDES))  # (N, 4)
    matched = tv_utils.Matcher(0.7, 0.3, allow_low_quality_matches=True)(box_iou(gt, anchors))
    positive = matched >= 0
    num_positive, num_negative = int(positive.sum()), int((matched == -1).sum())
    assert 0 < num_positive <= 128 and num_negative >= 256  # every positive is sampled: no randomness below
    num_sampled = 256 + 256  # image 1: all positives + negatives up to 256; image 2: 256 background anchors
    target_deltas = tv_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(gt[matched[positive]], anchors[positive])
    expected_box = F.smooth_l1_loss(torch.zeros_like(target_deltas), target_deltas, beta=1 / 9,
                                    reduction="sum") / num_sampled
    torch.testing.assert_close(losses["rpn_objectness"], torch.tensor(math.log(2.0)))  # BCE of logit 0 on any target
    torch.testing.assert_close(losses["rpn_box"], expected_box)


def test_images_without_objects_give_finite_losses_and_gradients():
    rpn = make_rpn().train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    features = [f.requires_grad_() for f in make_features()]
    _, losses = rpn(features, IMAGE_SIZES, [empty, empty])
    assert losses["rpn_box"].item() == 0.0 and losses["rpn_objectness"].item() > 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in rpn.head.parameters())
    assert rpn.head.objectness.bias.grad.abs().sum() > 0  # the background anchors were trained on


def test_anchor_sizes_are_one_base_size_per_level_times_the_scales():
    rpn = make_rpn(anchors=Anchors(sizes=(16, 32), scales=(1.0, 1.5)))
    assert rpn.dense.anchor_sizes.tolist() == [[16.0, 24.0], [32.0, 48.0]]
    assert rpn.dense.anchor_generator.sizes == ((16.0, 24.0), (32.0, 48.0))
    assert rpn.dense.num_anchors_per_location == 2 * 3 and rpn.head.objectness.out_channels == 6
