"""``Detector.predict``'s per-call overrides (score threshold, NMS IoU, class-agnostic NMS, detections per image,
input size, classes): each one changes the result as a checkpoint configured that way would, reaches the model
(not a filter afterwards), is undone after the call, also on error, and is checked with an error naming it."""
import pytest
import torch
from inference_helpers import edited_config, train_tiny_retinanet

import detkit
from detkit.inference import Detector
from detkit.inference.overrides import replaced_inference
from detkit.models import FasterRCNN
from detkit.models.settings import Backbone
from detkit.ops import box_iou

pytestmark = pytest.mark.usefixtures("one_thread")

UNLIMITED = 100_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny RetinaNet's checkpoint (score_threshold 0.0, NMS 0.5 per class, 100 detections per image), its run
    config and the 640x480 image of the non-square dataset."""
    root = tmp_path_factory.mktemp("trained")
    checkpoint = train_tiny_retinanet(root)
    return {"checkpoint": checkpoint, "config": checkpoint.parents[1] / "config.yaml",
            "image": root / "train_data" / "images" / "640x480.png"}


@pytest.fixture(scope="module")
def detector(trained):
    return detkit.load(trained["checkpoint"], device="cpu")


def configured(trained, tmp_path, **inference) -> Detector:
    """The same checkpoint loaded with a config whose ``inference`` group sets ``inference``: the reference."""
    config = edited_config(trained["config"], tmp_path / "edited.yaml", inference=inference)
    return detkit.load(trained["checkpoint"], config=config, device="cpu")


def rows(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> list[tuple]:
    """(score, label, x1, y1, x2, y2) per detection, sorted: an untrained model gives many equal scores, which
    two computations over different candidate sets may order differently."""
    return sorted(zip(scores.tolist(), labels.tolist(), *boxes.T.tolist()))


def assert_same(found, expected) -> None:
    assert rows(found.boxes, found.scores, found.labels) == rows(expected.boxes, expected.scores, expected.labels)


def overlapping_pairs(prediction, iou: float, same_class: bool) -> int:
    """Pairs of detections (i < j) overlapping by more than ``iou``, of the same or of different classes."""
    overlaps = box_iou(prediction.boxes, prediction.boxes) > iou
    same = prediction.labels[:, None] == prediction.labels[None, :]
    pairs = overlaps & (same if same_class else ~same)
    return int(torch.triu(pairs, diagonal=1).sum())


def test_detections_per_image_gives_the_first_of_the_unlimited_result(trained, detector):
    unlimited = detector.predict(trained["image"], detections_per_image=UNLIMITED)[0]
    default = detector.predict(trained["image"])[0]
    three = detector.predict(trained["image"], detections_per_image=3)[0]
    assert len(unlimited.scores) > 100 == len(default.scores)  # the checkpoint's cap is 100
    assert torch.equal(default.boxes, unlimited.boxes[:100])
    assert len(three.scores) == 3 and torch.equal(three.boxes, unlimited.boxes[:3])
    assert torch.equal(three.scores, unlimited.scores[:3]) and three.names == unlimited.names[:3]


def test_score_threshold_is_the_checkpoints_by_default_and_reaches_the_model(trained, detector, tmp_path):
    unlimited = detector.predict(trained["image"], detections_per_image=UNLIMITED)[0]
    threshold = float(unlimited.scores[len(unlimited.scores) // 4])
    strict = configured(trained, tmp_path, score_threshold=threshold, detections_per_image=UNLIMITED)
    by_default = strict.predict(trained["image"])[0]  # None: the checkpoint's own threshold
    above = unlimited.scores >= threshold
    assert 10 < len(by_default.scores) == int(above.sum()) < len(unlimited.scores)
    assert rows(by_default.boxes, by_default.scores, by_default.labels) == rows(
        unlimited.boxes[above], unlimited.scores[above], unlimited.labels[above])
    assert_same(detector.predict(trained["image"], score_threshold=threshold, detections_per_image=UNLIMITED)[0],
                by_default)
    # lower than the checkpoint's: boxes the model had dropped come back, which no filter afterwards could do
    assert_same(strict.predict(trained["image"], score_threshold=0.0)[0], unlimited)


def test_nms_threshold_gives_what_a_checkpoint_with_that_threshold_gives(trained, detector, tmp_path):
    reference = configured(trained, tmp_path, nms_threshold=0.2).predict(trained["image"])[0]
    found = detector.predict(trained["image"], nms_threshold=0.2)[0]
    assert_same(found, reference)
    default = detector.predict(trained["image"])[0]
    assert overlapping_pairs(default, 0.2, same_class=True) > 0 and overlapping_pairs(found, 0.2, same_class=True) == 0
    assert overlapping_pairs(found, 0.2, same_class=False) > 0  # per class: other classes' boxes stay


def test_class_agnostic_nms_removes_the_overlaps_between_classes_that_per_class_nms_keeps(trained, detector,
                                                                                           tmp_path):
    per_class = detector.predict(trained["image"], detections_per_image=UNLIMITED)[0]
    agnostic = detector.predict(trained["image"], class_agnostic=True, detections_per_image=UNLIMITED)[0]
    assert overlapping_pairs(per_class, 0.5, same_class=False) > 0
    assert overlapping_pairs(agnostic, 0.5, same_class=False) == 0 < len(agnostic.scores) < len(per_class.scores)
    reference = configured(trained, tmp_path, class_agnostic=True, detections_per_image=UNLIMITED)
    assert_same(agnostic, reference.predict(trained["image"])[0])
    assert_same(reference.predict(trained["image"], class_agnostic=False)[0], per_class)


def test_classes_keep_their_detections_before_the_per_image_cap(trained, detector):
    unlimited = detector.predict(trained["image"], detections_per_image=UNLIMITED)[0]
    wanted = torch.isin(unlimited.labels, torch.tensor([1, 2]))  # green, blue
    assert 5 < int(wanted.sum()) < len(unlimited.labels)
    found = detector.predict(trained["image"], classes=["blue", "green"], detections_per_image=5)[0]
    assert torch.equal(found.boxes, unlimited.boxes[wanted][:5]) and set(found.names) <= {"green", "blue"}
    red = detector.predict(trained["image"], classes="red")[0]  # one name; the checkpoint's cap of 100
    assert red.names == ["red"] * 100 and torch.equal(red.boxes, unlimited.boxes[unlimited.labels == 0][:100])
    with pytest.raises(ValueError, match=r"classes: unknown class 'cat'; the model's classes are "
                                         r"\['red', 'green', 'blue'\]"):
        detector.predict(trained["image"], classes=["red", "cat"])


def test_input_size_changes_the_tensor_reaching_the_model(trained, detector):
    inputs = []
    hook = detector.model.register_forward_pre_hook(lambda _, args: inputs.append((args[0].shape[-2:], args[1])))
    try:
        default = detector.predict(trained["image"])[0]
        small = detector.predict(trained["image"], min_size=64, max_size=100)[0]
        capped = detector.predict(trained["image"], max_size=64)[0]
    finally:
        hook.remove()
    # 640x480: the checkpoint's 128/128 gives 96x128; 64/100: x(64/480) = 64x85; 128/64: x0.1 = 48x64; padded to 32
    assert [(tuple(shape), sizes) for shape, sizes in inputs] == [((96, 128), [(96, 128)]), ((64, 96), [(64, 85)]),
                                                                   ((64, 64), [(48, 64)])]
    for prediction in (default, small, capped):  # boxes still in the original image's pixels
        assert prediction.image_size == (480, 640) and prediction.boxes[:, 2].max() > 400
    assert not torch.equal(small.scores, default.scores)
    assert detector.transform.min_size == 128 and detector.transform.max_size == 128


def test_settings_are_restored_after_the_call_and_after_an_error(trained, detector, monkeypatch):
    original = detector.model.inference
    detector.predict(trained["image"], score_threshold=0.5, nms_threshold=0.1, class_agnostic=True,
                     detections_per_image=2, classes=["red"])
    assert detector.model.inference is original
    seen = []

    def failing_forward(images, image_sizes):
        seen.append(detector.model.inference)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(detector.model, "forward", failing_forward)
    with pytest.raises(RuntimeError, match="out of memory"):
        detector.predict(trained["image"], nms_threshold=0.3, detections_per_image=7)
    assert detector.model.inference is original
    assert (seen[0].nms_threshold, seen[0].detections_per_image, seen[0].score_threshold) == (0.3, 7, 0.0)


def test_faster_rcnn_settings_are_replaced_in_its_roi_heads_and_restored():
    model = FasterRCNN(num_classes=2, backbone=Backbone(name="tiny", norm="gn"))
    original = model.roi_heads.inference
    with replaced_inference(model, {"nms_threshold": 0.3, "class_agnostic": True}):
        assert (model.roi_heads.inference.nms_threshold, model.roi_heads.inference.class_agnostic) == (0.3, True)
        assert model.roi_heads.inference.detections_per_image == original.detections_per_image
    assert model.roi_heads.inference is original


@pytest.mark.parametrize("option, value, problem", [
    ("score_threshold", 1.5, r"score_threshold must lie in \[0, 1\], got 1.5"),
    ("nms_threshold", -0.1, r"nms_threshold must lie in \[0, 1\], got -0.1"),
    ("score_threshold", "high", r"score_threshold must lie in \[0, 1\], got 'high'"),
    ("detections_per_image", 0, "detections_per_image must be an integer >= 1, got 0"),
    ("detections_per_image", True, "detections_per_image must be an integer >= 1, got True"),
    ("min_size", 0, "min_size must be an integer >= 1, got 0"),
    ("max_size", 2.5, "max_size must be an integer >= 1, got 2.5"),
    ("class_agnostic", "yes", "class_agnostic must be True or False, got 'yes'"),
    ("classes", [], "classes must name at least one class"),
])
def test_an_option_out_of_range_is_named(trained, detector, option, value, problem):
    with pytest.raises(ValueError, match=problem):
        detector.predict(trained["image"], **{option: value})
