"""FasterRCNN end to end: overfits a few images, trains on empty images, output format, configuration."""
import pytest
import torch
from torchvision.ops import box_iou

from detkit.models.faster_rcnn import FasterRCNN

K = 3
SIZE = 96
COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])  # one per class


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: on a shared 2-core machine, 2 OpenMP threads next to another busy process made a
    training step ~80x slower (spinning threads waiting for each other); one thread is fast either way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(**kwargs) -> FasterRCNN:
    options = dict(num_classes=K, backbone="tiny", norm="bn", trainable_layers=5, min_level=3, fpn_channels=32,
                   num_extra_levels=0, anchor_sizes=(16, 32, 64), rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
                   rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100, roi_batch_size_per_image=32, representation_size=128)
    return FasterRCNN(**(options | kwargs))


def draw(boxes: list[list[int]], labels: list[int]) -> tuple[torch.Tensor, dict]:
    """A SIZE x SIZE image of dim noise with a solid rectangle of its class colour per box."""
    image = torch.rand(3, SIZE, SIZE) * 0.3
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        image[:, y1:y2, x1:x2] = COLOURS[label][:, None, None]
    return image, {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64)}


def synthetic_batch() -> tuple[torch.Tensor, list[dict]]:
    items = [draw([[8, 8, 40, 30], [50, 44, 80, 90]], [0, 2]),
             draw([[20, 30, 60, 60]], [1]),
             draw([[5, 60, 30, 90], [40, 10, 90, 40], [60, 60, 85, 85]], [1, 0, 2]),
             draw([[30, 20, 54, 70]], [2])]
    return torch.stack([image for image, _ in items]), [target for _, target in items]


def empty_target() -> dict:
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


def test_overfits_a_few_images():
    torch.manual_seed(0)
    images, targets = synthetic_batch()
    sizes = [(SIZE, SIZE)] * len(targets)
    model = small_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    steps = 100
    for step in range(steps):
        if step == 3 * steps // 4:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1  # a lower rate to settle the boxes
        losses = model(images, sizes, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    model.eval()
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
        assert (best_iou > 0.7).all(), f"IoU {best_iou.tolist()} of {top_boxes.tolist()} with {target['boxes'].tolist()}"
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
    model = small_model(box_loss=box_loss, rpn_box_loss=box_loss).train()
    losses = model(images, [(SIZE, SIZE)] * 4, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(value) for value in losses.values()) and losses["roi_box"] > 0


def test_detections_format_in_each_images_pixels():
    torch.manual_seed(0)
    images, _ = synthetic_batch()
    sizes = [(SIZE, SIZE), (70, 50)]
    images = images[:2].clone()
    images[1, :, 70:], images[1, :, :, 50:] = 0, 0  # zero padding as collate does
    model = small_model(detections_per_image=30, score_threshold=0.05).eval()
    with torch.no_grad():
        detections = model(images, sizes)
    assert len(detections) == 2
    for detection, (height, width) in zip(detections, sizes):
        assert set(detection) == {"boxes", "scores", "labels"}
        boxes, scores, labels = detection["boxes"], detection["scores"], detection["labels"]
        # an untrained classifier gives every class ~1 / (K + 1) > 0.05: there are detections to check
        assert 0 < len(boxes) <= 30 and boxes.shape == (len(boxes), 4)
        assert boxes.dtype == scores.dtype == torch.float32 and labels.dtype == torch.int64
        assert scores.shape == labels.shape == (len(boxes),)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, :2] <= boxes[:, 2:]).all()
        assert (scores[:-1] >= scores[1:]).all() and (scores > 0.05).all()
        assert ((labels >= 0) & (labels < K)).all()


def test_extra_levels_feed_the_rpn_only():
    model = small_model(num_extra_levels=1, anchor_sizes=(16, 32, 64, 128))
    assert model.rpn.strides == [8, 16, 32, 64]
    assert model.roi_heads.pooler.scales == [1 / 8, 1 / 16, 1 / 32]
    assert model.roi_heads.predictor.cls_score.out_features == K + 1
    assert model.roi_heads.predictor.bbox_pred.out_features == 4 * K


def test_bad_configuration_names_the_key():
    with pytest.raises(ValueError, match="anchor_sizes needs one size per pyramid level"):
        small_model(anchor_sizes=(16, 32))
    with pytest.raises(ValueError, match="box_loss must be one of"):
        small_model(box_loss="iou")
    with pytest.raises(ValueError, match="rpn_box_loss"):
        small_model(rpn_box_loss="l2")
    with pytest.raises(ValueError, match="needs targets"):
        small_model().train()(torch.zeros(1, 3, 64, 64), [(64, 64)])
