"""``detkit.export_onnx`` / tools/export.py: onnxruntime's detections equal ``detkit.load(ckpt).predict``'s for
both detectors of the shapes and custom recipes on images of every aspect, empty outputs without detections, and no
file after a failed check. The checkpoints are randomly initialised small models (16-channel FPN): no training
needed."""
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

import detkit
from detkit.inference import CheckpointError
from detkit.inference.cli import export_command
from detkit.inference.config import RunConfig, build_detector
from detkit.inference.export import OnnxExportError, export_onnx, onnx_session
from detkit.inference.onnx_check import onnx_input
from detkit.inference.predictor import Detector

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]

CLASS_NAMES, CATEGORY_IDS = ["red", "green", "blue"], [4, 7, 9]
RECIPES = ("retinanet_shapes", "faster_rcnn_shapes", "retinanet_custom", "faster_rcnn_custom")
# (width, height): wide, tall, a 4:3 photo, square, 2x and 4x shrinks (OpenCV rounds those differently), two small
# ones; the shapes recipes (128 px) shrink all but the small ones (INTER_AREA) and grow those (INTER_LINEAR); the
# custom recipes (320-480 px) shrink 640x480 and 256x512 and grow the others
SIZES = [(200, 90), (90, 200), (640, 480), (300, 300), (256, 256), (256, 512), (64, 50), (37, 101)]


def write_checkpoint(path: Path, recipe: str, *, silent: bool = False) -> Path:
    """A checkpoint of the recipe's detector, random weights, 16 FPN channels; its class (and objectness) scores
    spread over [0, 1] (an untrained head scores every anchor nearly alike, which would leave the top-k cuts and
    the NMS order to differences of 1e-7) or, with ``silent``, all far below the score threshold."""
    config = yaml.safe_load((REPO / "configs" / f"{recipe}.yaml").read_text())
    init_args = config["model"]["detector"]["init_args"]
    init_args["fpn"]["channels"] = 16
    # the custom recipes' "auto" sizes and levels, as a training run resolves and stores them
    for group, key, value in (("fpn", "min_level", 3), ("fpn", "extra_levels", 1)):
        init_args[group][key] = value if init_args[group][key] == "auto" else init_args[group][key]
    for key, value in (("min_size", 320), ("max_size", 480), ("size_divisor", 64)):
        config["data"][key] = value if config["data"][key] == "auto" else config["data"][key]
    init_args.get("head", {})["depth"] = 1
    init_args.get("roi", {})["representation_size"] = 64
    torch.manual_seed(0)
    model = build_detector(RunConfig(config, str(path), explicit=True), num_classes=len(CLASS_NAMES))
    with torch.no_grad():
        classifier = model.head.cls_logits if recipe.startswith("retinanet") else model.roi_heads.predictor.cls_score
        classifier.weight.mul_(30.0 if recipe.startswith("retinanet") else 30.0)
        if not recipe.startswith("retinanet"):  # objectness too: near-equal proposals would tie at the top-n cuts
            model.rpn.head.objectness.weight.mul_(100.0)
        if silent:  # RetinaNet: every sigmoid ~1e-13; Faster R-CNN: the background column takes all the softmax
            classifier.bias.fill_(-30.0) if recipe.startswith("retinanet") else classifier.bias[-1:].fill_(60.0)
    metadata = {"config": yaml.safe_dump(config), "class_names": CLASS_NAMES, "category_ids": CATEGORY_IDS}
    torch.save({"state_dict": {f"detector.{k}": v for k, v in model.state_dict().items()}, "detkit": metadata}, path)
    return path


def textured_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(height, width, 3) uint8: smooth random colour fields with solid rectangles (texture everywhere: no two
    anchors see the same pixels, so no two candidates tie)."""
    rng = np.random.default_rng(seed + width * 1000 + height)
    coarse = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2, 3))
    image = np.kron(coarse, np.ones((8, 8, 1)))[:height, :width] + rng.normal(0, 12, (height, width, 3))
    for _ in range(3):
        x, y = rng.integers(0, width - width // 4), rng.integers(0, height - height // 4)
        image[y:y + height // 4, x:x + width // 4] = rng.uniform(0, 255, 3)
    return image.clip(0, 255).astype(np.uint8)


def pair_by_nearest_box(boxes, labels, expected_boxes, expected_labels) -> list[int]:
    """For each expected detection, in order, the index of the not yet taken detection of its label with the
    nearest box (largest coordinate difference)."""
    free, order = set(range(len(boxes))), []
    for box, label in zip(expected_boxes, expected_labels):
        same_label = [j for j in free if labels[j] == label] or list(free)
        order.append(min(same_label, key=lambda j: np.abs(boxes[j] - box).max()))
        free.remove(order[-1])
    return order


@pytest.fixture(scope="module", params=RECIPES)
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    checkpoint = write_checkpoint(root / "model.ckpt", request.param)
    report = export_onnx(checkpoint, root / "model.onnx", images=[textured_image(160, 120)])
    return {"checkpoint": checkpoint, "path": Path(report.path), "report": report, "recipe": request.param}


def onnx_detections(path: Path, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(onnx_session(path).run(["boxes", "scores", "labels"], {"image": onnx_input(image)}))


@pytest.mark.parametrize("width, height", SIZES)
def test_onnxruntime_detects_what_predict_does_on_every_size(exported, width, height):
    image = textured_image(width, height)
    boxes, scores, labels = onnx_detections(exported["path"], image)
    expected = detkit.load(exported["checkpoint"], device="cpu").predict(image)[0]
    assert len(expected.boxes) == 100 and boxes.shape == (100, 4)  # the cap: every detection slot compared
    # in order, but two detections whose scores differ by float noise may swap: compare a score-sorted pairing
    order = pair_by_nearest_box(boxes, labels, expected.boxes.numpy(), expected.labels.numpy())
    assert sorted(order) == list(range(100))  # a one-to-one pairing, each of the same label
    np.testing.assert_array_equal(labels[order], expected.labels.numpy())
    np.testing.assert_allclose(boxes[order], expected.boxes.numpy(), atol=0.5, rtol=0)
    np.testing.assert_allclose(scores[order], expected.scores.numpy(), atol=1e-3, rtol=0)
    assert np.abs(np.array(order) - np.arange(100)).max() <= 3  # swaps among neighbours only
    # the input image's pixels: inside it, and beyond the 128 px model input where the image is larger
    assert (boxes >= 0).all() and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
    assert boxes.max() > 129 if max(width, height) > 150 and "shapes" in exported["recipe"] else True


def test_the_model_is_self_contained_with_dynamic_sizes_and_classes_in_its_metadata(exported):
    model = onnx.load(exported["path"])
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}  # standard operators only: no detkit
    (image,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert image.name == "image" and dims == [3, "height", "width"]
    assert [output.name for output in model.graph.output] == ["boxes", "scores", "labels"]
    props = {prop.key: prop.value for prop in model.metadata_props}
    assert yaml.safe_load(props["class_names"]) == CLASS_NAMES and yaml.safe_load(props["category_ids"]) == CATEGORY_IDS
    assert yaml.safe_load(props["inference"])["score_threshold"] == 0.05
    assert props["detector"] == ("RetinaNet" if exported["recipe"].startswith("retinanet") else "FasterRCNN")


@pytest.mark.parametrize("recipe", RECIPES[:2])
def test_an_image_without_detections_gives_empty_outputs(tmp_path, recipe):
    checkpoint = write_checkpoint(tmp_path / "silent.ckpt", recipe, silent=True)
    image = textured_image(120, 90)
    export_onnx(checkpoint, tmp_path / "silent.onnx", images=[image])
    boxes, scores, labels = onnx_detections(tmp_path / "silent.onnx", image)
    assert len(detkit.load(checkpoint, device="cpu").predict(image)[0].boxes) == 0
    assert (boxes.shape, scores.shape, labels.shape) == ((0, 4), (0,), (0,))
    assert (boxes.dtype, scores.dtype, labels.dtype) == (np.float32, np.float32, np.int64)


def test_a_mismatch_fails_loudly_and_leaves_no_file(exported, tmp_path, monkeypatch):
    detector = detkit.load(exported["checkpoint"], device="cpu")
    predict = Detector.predict

    def shifted(self, *args, **kwargs):  # PyTorch's boxes 0.6 px to the right: past the 0.5 px tolerance
        predictions = predict(self, *args, **kwargs)
        for prediction in predictions:
            prediction.boxes[:, 0::2] += 0.6
        return predictions

    monkeypatch.setattr(Detector, "predict", shifted)
    destination = tmp_path / "model.onnx"
    with pytest.raises(OnnxExportError, match=r"(?s)model.onnx: not written: onnxruntime's detections differ.*"
                                              r"image 160x120: PyTorch detection 0: label \d score [\d.]+ "
                                              r"box \[[\d., ]+\], nearest onnxruntime one"):
        export_onnx(detector, destination, images=[textured_image(160, 120)])
    assert list(tmp_path.iterdir()) == []  # neither the model nor its .partial file


def test_the_tool_writes_a_checked_model_and_names_a_bad_checkpoint(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "model.ckpt", "retinanet_shapes")
    out = tmp_path / "tool.onnx"
    assert export_command(["--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "640x480: 100 detections, max box difference" in printed and f"wrote {out}" in printed
    missing = tmp_path / "missing.ckpt"
    assert export_command(["--checkpoint", str(missing), "--out", str(tmp_path / "x.onnx")]) == 1
    assert f"checkpoint not found: {missing}" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    with pytest.raises(CheckpointError):
        export_onnx(missing, tmp_path / "y.onnx")
