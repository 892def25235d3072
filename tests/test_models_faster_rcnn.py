"""FasterRCNN end to end: overfits a few images, trains on empty images, output format, configuration."""
import pytest
import torch
from scenes import SIZE, K, assert_detections_format, detect_on_two_sizes, empty_target, synthetic_batch, train_steps
from torchvision.ops import box_iou

from detkit.models.faster_rcnn import FasterRCNN
from detkit.models.settings import Anchors, Backbone, Inference, Matching, Proposals, Pyramid, RoIHead, Sampling

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL_RPN = dict(pre_nms_top_n_train=200, post_nms_top_n_train=100, pre_nms_top_n_test=200, post_nms_top_n_test=100)
SMALL_ROI = dict(sampling=Sampling(32, 0.25), representation_size=128)


def small_model(**groups) -> FasterRCNN:
    """A tiny Faster R-CNN on P3-P5; ``groups`` replace whole setting groups."""
    options = dict(num_classes=K, backbone=Backbone(name="tiny", norm="bn", trainable_layers=5),
                   fpn=Pyramid(min_level=3, channels=32, extra_levels=0), anchors=Anchors(sizes=(16, 32, 64)),
                   rpn=Proposals(**SMALL_RPN), roi=RoIHead(**SMALL_ROI))
    return FasterRCNN(**(options | groups))


def test_overfits_a_few_images():
    torch.manual_seed(0)
    images, targets = synthetic_batch()
    sizes = [(SIZE, SIZE)] * len(targets)
    model = small_model()
    train_steps(model, images, targets, steps=100)
    with torch.no_grad():
        detections = model(images, sizes)
    for detection, target in zip(detections, targets):
        # the N best detections are the N ground truths: one each, right class, IoU > 0.7, confident
        num_objects = len(target["boxes"])
        top_boxes, top_labels = detection["boxes"][:num_objects], detection["labels"][:num_objects]
        assert len(top_boxes) == num_objects
        iou = box_iou(top_boxes, target["boxes"]) * (top_labels[:, None] == target["labels"][None, :])  # (N, N)
        best_iou, best_gt = iou.max(1)
        assert sorted(best_gt.tolist()) == list(range(num_objects)), f"duplicates or misses: IoU {iou.tolist()}"
        assert (best_iou > 0.7).all(), (f"IoU {best_iou.tolist()} of {top_boxes.tolist()} "
                                        f"with {target['boxes'].tolist()}")
        assert (detection["scores"][:num_objects] > 0.5).all()


def test_training_returns_the_four_named_losses_and_empty_images_train():
    torch.manual_seed(0)
    images, targets = synthetic_batch()
    model = small_model().train()
    losses = model(images[:2], [(SIZE, SIZE)] * 2, [targets[0], empty_target()])
    assert set(losses) == {"rpn_objectness", "rpn_box", "roi_cls", "roi_box"}
    assert all(value.shape == () and torch.isfinite(value) for value in losses.values())

    losses = model(images[:2], [(SIZE, SIZE), (70, 50)], [empty_target(), empty_target()])
    assert losses["rpn_box"].item() == 0.0 and losses["roi_box"].item() == 0.0
    assert losses["rpn_objectness"].item() > 0 and losses["roi_cls"].item() > 0
    sum(losses.values()).backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)


@pytest.mark.parametrize("box_loss", ["l1", "giou"])
def test_other_box_losses_train(box_loss):
    torch.manual_seed(0)
    images, targets = synthetic_batch()
    model = small_model(rpn=Proposals(**SMALL_RPN, box_loss=box_loss),
                        roi=RoIHead(**SMALL_ROI, box_loss=box_loss)).train()
    losses = model(images, [(SIZE, SIZE)] * 4, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(value) for value in losses.values()) and losses["roi_box"] > 0


def test_detections_format_in_each_images_pixels():
    # an untrained classifier gives every class ~1 / (K + 1) > 0.05: there are detections to check
    model = small_model(inference=Inference(detections_per_image=30, score_threshold=0.05))
    detections, sizes = detect_on_two_sizes(model)
    assert_detections_format(detections, sizes, max_detections=30, score_threshold=0.05)


def test_extra_levels_feed_the_rpn_only():
    model = small_model(fpn=Pyramid(min_level=3, channels=32, extra_levels=1), anchors=Anchors(sizes=(16, 32, 64, 128)))
    assert model.rpn.dense.strides == [8, 16, 32, 64]
    assert model.roi_heads.pooler.scales == [1 / 8, 1 / 16, 1 / 32]
    assert model.roi_heads.predictor.cls_score.out_features == K + 1
    assert model.roi_heads.predictor.bbox_pred.out_features == 4 * K


def test_bad_configuration_names_the_key():
    with pytest.raises(ValueError,
                       match=r"model\.detector\.init_args\.anchors\.sizes must give one size per pyramid level"):
        small_model(anchors=Anchors(sizes=(16, 32)))
    with pytest.raises(ValueError, match=r"init_args\.roi\.box_loss must be one of"):
        small_model(roi=RoIHead(box_loss="iou"))
    with pytest.raises(ValueError, match=r"init_args\.rpn\.box_loss must be one of"):
        small_model(rpn=Proposals(box_loss="l2"))
    with pytest.raises(ValueError, match=r"init_args\.rpn\.matching\.fg_iou_threshold must lie in \[0, 1\]"):
        small_model(rpn=Proposals(matching=Matching(1.5, 0.3)))
    with pytest.raises(ValueError, match=r"init_args\.roi\.sampling\.batch_size_per_image must be >= 1"):
        small_model(roi=RoIHead(sampling=Sampling(0, 0.25)))
    with pytest.raises(ValueError, match="needs targets"):
        small_model().train()(torch.zeros(1, 3, 64, 64), [(64, 64)])
