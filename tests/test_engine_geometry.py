"""Non-square images end to end: validation, COCO evaluation, the results JSON and tools/eval.py report
boxes in original-image coordinates, and (h, w) is never swapped in resizing, padding, anchors or clipping.

The data (``nonsquare_data``) is 200x90, 90x200, 200x57, 300x300 and 640x480 images (w x h) with known boxes,
resized to other sizes than their own, so a missing or transposed scale moves every evaluated box.
"""
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from nonsquare_data import IMAGES, ColourBoxFinder, write_dataset

from detkit.data import DetectionDataModule
from detkit.data.coco import CocoDetection
from detkit.data.collate import collate_detection
from detkit.data.transforms import DetectionTransform, build_transforms
from detkit.engine.cli import evaluate, train
from detkit.engine.module import DetectionModule
from detkit.models import FasterRCNN, RetinaNet
from detkit.models.settings import OCTAVE_SCALES, Anchors, Backbone, DenseHead, Inference, Proposals, Pyramid, RoIHead
from detkit.ops import AnchorGenerator, clip_boxes_to_image

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
# ColourBoxFinder is exact to ~0.05 px here; a transposed (sx, sy) moves a far-corner box by 0.3-6 px
# (the size rounding differs per axis), a missing scale by far more.
TOLERANCE = 0.25


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("nonsquare")
    return root, write_dataset(root)


def data_paths(root: Path) -> dict:
    return {"train_images": str(root / "images"), "train_annotations": str(root / "instances_train.json"),
            "val_images": str(root / "images"), "val_annotations": str(root / "instances_val.json")}


def image_sizes_by_id(data: dict) -> dict[int, tuple[int, int]]:
    """COCO image id -> original (width, height)."""
    return {image["id"]: (image["width"], image["height"]) for image in data["images"]}


def assert_results_match_ground_truth(results: list[dict], data: dict) -> None:
    """One result per ground-truth box, same image and category, its xywh within TOLERANCE px."""
    expected = {(a["image_id"], a["category_id"]): a["bbox"] for a in data["annotations"]}
    found = {(r["image_id"], r["category_id"]): r["bbox"] for r in results}
    assert len(results) == len(found) == len(expected) and found.keys() == expected.keys()
    for key, bbox in expected.items():
        assert found[key] == pytest.approx(bbox, abs=TOLERANCE), f"image {key[0]}, category {key[1]}"


def validate_perfect_predictor(root: Path, results_path: Path, min_size: int, max_size: int):
    # batches of 3 put a landscape and a portrait image in one padded batch
    datamodule = DetectionDataModule(**data_paths(root), val_batch_size=3, min_size=min_size, max_size=max_size)
    module = DetectionModule(ColourBoxFinder(), results_path=str(results_path))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return trainer, module.last_evaluation


# (70, 70) and (84, 130) round the sides of several images by up to half a pixel of a small output: sx != sy
@pytest.mark.parametrize("min_size, max_size", [(128, 128), (256, 256), (70, 70), (84, 130)])
def test_perfect_predictor_scores_ap_1_with_boxes_in_original_pixels(dataset, tmp_path, min_size, max_size):
    root, data = dataset
    results_path = tmp_path / "results.json"
    _, evaluation = validate_perfect_predictor(root, results_path, min_size, max_size)
    assert evaluation.num_images == len(IMAGES)
    assert evaluation.stats["AP50"] == 1.0 and evaluation.stats["AP"] > 0.99
    assert_results_match_ground_truth(json.loads(results_path.read_text()), data)


def test_tools_eval_scores_a_perfect_predictor_checkpoint_at_ap_1(dataset, tmp_path, capsys):
    root, data = dataset
    trainer, _ = validate_perfect_predictor(root, tmp_path / "unused.json", 128, 128)
    checkpoint = tmp_path / "perfect.ckpt"
    trainer.save_checkpoint(checkpoint)
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False},
        "model": {"detector": {"class_path": "nonsquare_data.ColourBoxFinder"}},
        # the eval config's resize, not the one of the checkpoint's run, decides the scale to undo
        "data": {**data_paths(root), "val_batch_size": 5, "min_size": 84, "max_size": 130},
    }
    (tmp_path / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    results_path = tmp_path / "eval_results.json"
    evaluate(["--checkpoint", str(checkpoint), "--config", str(tmp_path / "config.yaml"),
              "--results", str(results_path)])  # tools/eval.py's work
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in capsys.readouterr().out
    assert_results_match_ground_truth(json.loads(results_path.read_text()), data)


TRAIN_OPTIONS = {
    "retinanet_shapes.yaml": ["--model.detector.init_args.head.depth", "1"],
    "faster_rcnn_shapes.yaml": ["--model.detector.init_args.roi.representation_size", "64",
                                "--model.detector.init_args.roi.sampling.batch_size_per_image", "32",
                                "--model.detector.init_args.rpn.pre_nms_top_n_test", "200",
                                "--model.detector.init_args.rpn.post_nms_top_n_test", "100"],
}


@pytest.mark.parametrize("config", sorted(TRAIN_OPTIONS))
def test_trained_detector_results_lie_inside_each_original_image(config, dataset, tmp_path):
    root, data = dataset
    paths = [arg for key, value in data_paths(root).items() for arg in (f"--data.{key}", value)]
    args = ["--config", str(REPO / "configs" / config), *paths, "--data.builtin", "null",
            "--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--trainer.max_epochs", "1", "--trainer.max_time", "null", "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.log_every_n_steps", "1",
            "--data.batch_size", "2", "--data.val_batch_size", "5", "--model.warmup_steps", "1",
            "--model.detector.init_args.fpn.channels", "16",
            # an untrained model scores everything low: keep all its boxes, they land all over the images
            "--model.detector.init_args.inference.score_threshold", "0.0", *TRAIN_OPTIONS[config]]
    run = train(args)
    cli = run.cli
    results_path = tmp_path / "eval_results.json"
    evaluation = evaluate(["--checkpoint", cli.trainer.checkpoint_callback.best_model_path,
                           "--results", str(results_path)])
    results = json.loads(results_path.read_text())
    assert evaluation.num_images == len(IMAGES) and len(results) == evaluation.num_detections > 0
    sizes = image_sizes_by_id(data)
    for image_id, (width, height) in sizes.items():
        boxes = np.array([r["bbox"] for r in results if r["image_id"] == image_id]).reshape(-1, 4)
        assert len(boxes) > 10, f"{width}x{height}"
        x, y, w, h = boxes.T
        # inside the ORIGINAL image, though the batch was padded to the largest resized side of 5 images
        assert (x >= 0).all() and (y >= 0).all() and (w > 0).all() and (h > 0).all()
        assert (x + w).max() <= width + 1e-3 and (y + h).max() <= height + 1e-3, f"{width}x{height}"
        # and spread over all of it: a box past x = height in a landscape image (or y = width in a portrait
        # one) could not exist if h and w were swapped anywhere on the way
        assert (x + w).max() > 0.75 * width and (y + h).max() > 0.75 * height, f"{width}x{height}"


# -- (h, w) at each step, hand-computed ------------------------------------------------------------------

def test_transform_scales_each_axis_of_a_landscape_and_a_portrait_image():
    transform = DetectionTransform(min_size=128, max_size=128)
    landscape = np.zeros((90, 200, 3), dtype=np.uint8)  # (h, w): 200 wide, 90 high
    image, boxes, _, scale = transform(landscape, np.array([[100, 45, 200, 90]]), np.array([0]))
    assert image.shape == (58, 128, 3)  # 90 * 0.64 = 57.6 rounds to 58: sy = 58 / 90 != sx
    assert scale == (128 / 200, 58 / 90)
    np.testing.assert_allclose(boxes, [[64, 29, 128, 58]], atol=1e-4)
    image, boxes, _, scale = transform(landscape.transpose(1, 0, 2), np.array([[45, 100, 90, 200]]), np.array([0]))
    assert image.shape == (128, 58, 3) and scale == (58 / 90, 128 / 200)
    np.testing.assert_allclose(boxes, [[29, 64, 58, 128]], atol=1e-4)


def test_dataset_item_of_a_non_square_image_keeps_orig_size_and_scale_per_axis(dataset):
    root, data = dataset
    items = CocoDetection(str(root / "images"), str(root / "instances_val.json"), build_transforms(False, 128, 128))
    image, target = items[0]  # the 200x90 (w x h) image
    assert data["images"][0]["file_name"] == "200x90.png"
    assert image.shape == (3, 58, 128) and target["orig_size"] == (90, 200)
    torch.testing.assert_close(target["scale"], torch.tensor([128 / 200, 58 / 90]))
    expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h, _ in IMAGES[(200, 90)]], dtype=torch.float32)
    torch.testing.assert_close(target["boxes"], expected * target["scale"].repeat(2))
    # label l is channel l: the red box (label 0) is red in the resized image
    x1, y1, x2, y2 = target["boxes"][0].round().int().tolist()
    assert image[0, y1 + 1:y2 - 1, x1 + 1:x2 - 1].min() > 0.99 and image[1:, y1:y2, x1:x2].max() == 0


def test_collate_pads_a_landscape_and_a_portrait_image_in_place():
    landscape, portrait = torch.rand(3, 90, 200), torch.rand(3, 200, 90)
    batch = collate_detection([(landscape, {"image_id": 1}), (portrait, {"image_id": 2})], size_divisor=32)
    assert batch["images"].shape == (2, 3, 224, 224)
    assert batch["image_sizes"] == [(90, 200), (200, 90)]
    expected = torch.zeros(2, 3, 224, 224)
    expected[0, :, :90, :200], expected[1, :, :200, :90] = landscape, portrait
    assert torch.equal(batch["images"], expected)


def test_clip_boxes_to_image_clips_x_to_width_and_y_to_height():
    boxes = torch.tensor([[-5.0, -5.0, 250.0, 250.0], [150.0, 10.0, 195.0, 80.0]])
    assert torch.equal(clip_boxes_to_image(boxes, (90, 200)), torch.tensor([[0.0, 0, 200, 90], [150, 10, 195, 80]]))
    assert torch.equal(clip_boxes_to_image(boxes, (200, 90)), torch.tensor([[0.0, 0, 90, 200], [90, 10, 90, 80]]))


def test_anchor_generator_on_a_non_square_map_spans_its_width_in_x():
    (anchors,) = AnchorGenerator([[8.0]], [[1.0]])([(3, 7)], [32])  # a 96 x 224 (h x w) input at stride 32
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert anchors.shape == (21, 4)
    assert torch.equal(centres[:7, 0], torch.arange(7) * 32.0) and (centres[:7, 1] == 0).all()  # x fastest
    assert centres[:, 0].max() == 192 and centres[:, 1].max() == 64  # 224 - 32 and 96 - 32


TINY = dict(num_classes=3, backbone=Backbone(name="tiny", norm="bn", trainable_layers=5),
            fpn=Pyramid(min_level=3, channels=16, extra_levels=0))


def small_retinanet(**groups) -> RetinaNet:
    return RetinaNet(**TINY, anchors=Anchors(sizes=(16, 32, 64), scales=OCTAVE_SCALES), head=DenseHead(depth=1),
                     **groups)


def small_faster_rcnn(**groups) -> FasterRCNN:
    return FasterRCNN(**TINY, anchors=Anchors(sizes=(16, 32, 64)),
                      rpn=Proposals(pre_nms_top_n_test=200, post_nms_top_n_test=100),
                      roi=RoIHead(representation_size=64), **groups)


def test_detector_features_and_anchors_follow_a_non_square_input():
    torch.manual_seed(0)
    images = torch.rand(1, 3, 96, 224)
    retinanet, faster_rcnn = small_retinanet(), small_faster_rcnn()
    for model, dense in ((retinanet, retinanet.dense), (faster_rcnn, faster_rcnn.rpn.dense)):
        strides = model.backbone.strides
        with torch.no_grad():
            features = model.eval().backbone(images)
        shapes = [tuple(f.shape[-2:]) for f in features]
        assert shapes == [(96 // s, 224 // s) for s in strides] == [(12, 28), (6, 14), (3, 7)]
        anchors = dense.anchors(features)
        for level_anchors, stride in zip(anchors, strides):
            centres = (level_anchors[:, :2] + level_anchors[:, 2:]) / 2
            assert centres[:, 0].max() == 224 - stride and centres[:, 1].max() == 96 - stride
        # the anchors of a padded (h, w) without running the network (tools/imbalance_stats.py) are the same
        assert torch.equal(dense.image_anchors((96, 224)), torch.cat(anchors))


@pytest.mark.parametrize("build", [small_retinanet, small_faster_rcnn], ids=["retinanet", "faster_rcnn"])
def test_detections_are_clipped_to_each_images_own_height_and_width(build):
    torch.manual_seed(0)
    model = build(inference=Inference(score_threshold=0.0)).eval()
    sizes = [(58, 128), (128, 58)]  # a landscape and a portrait image in one zero-padded 128 x 128 batch
    images = torch.zeros(2, 3, 128, 128)
    images[0, :, :58], images[1, :, :, :58] = torch.rand(3, 58, 128), torch.rand(3, 128, 58)
    with torch.no_grad():
        detections = model(images, sizes)
    for detection, (height, width) in zip(detections, sizes):
        boxes = detection["boxes"]
        assert len(boxes) > 10 and (boxes >= 0).all()
        assert boxes[:, 2].max() <= width and boxes[:, 3].max() <= height
        # the untrained boxes cover the whole image and reach its borders: clipped to a transposed size,
        # the long side would stop at 58
        assert boxes[:, 2].max() == width and boxes[:, 3].max() == height
