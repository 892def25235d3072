"""``detkit.load`` + ``Detector.predict``: the validation path's detections from a checkpoint alone, for every
input kind and image shape, and clear errors naming the file for every bad checkpoint."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from inference_helpers import data_paths, edited_config, save_perfect_checkpoint, train_tiny_retinanet
from nonsquare_data import CATEGORY_IDS, IMAGES, write_dataset
from PIL import Image

import detkit
from detkit.drawing.boxes import annotate, class_colour
from detkit.engine.cli import evaluate
from detkit.inference import CheckpointError, expand_image_paths, read_image

pytestmark = pytest.mark.usefixtures("one_thread")

CLASS_NAMES = ["red", "green", "blue"]  # label order: ascending category ids 4, 7, 9
FILES = [f"{w}x{h}.png" for w, h in IMAGES]  # the val dataset's order: 200x90, 90x200, 200x57, 300x300, 640x480


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny RetinaNet trained 3 steps on the non-square images (resized to 128 px), its checkpoint, the
    validation path's results on those images, and a copy of the images; the training data is then deleted."""
    root = tmp_path_factory.mktemp("trained")
    checkpoint = train_tiny_retinanet(root)
    images = root / "images"
    shutil.copytree(root / "train_data" / "images", images)
    results = root / "eval_results.json"
    evaluate(["--checkpoint", str(checkpoint), "--results", str(results)])  # validation path, weights_only=True
    moved = root / "elsewhere" / "best.ckpt"  # no config.yaml beside it: only what the checkpoint embeds
    moved.parent.mkdir()
    shutil.copy(checkpoint, moved)
    shutil.rmtree(root / "train_data")  # prediction must not need the datasets
    return {"checkpoint": checkpoint, "moved": moved, "results": json.loads(results.read_text()), "images": images,
            "config": checkpoint.parents[1] / "config.yaml"}


@pytest.fixture(scope="module")
def detector(trained):
    return detkit.load(trained["moved"], device="cpu")


def test_a_checkpoint_alone_gives_the_validation_detections_in_original_pixels(trained, detector):
    # the same images in the same batch of 5 as validation: every box within 1e-3 px of the results JSON
    predictions = detector.predict([trained["images"] / name for name in FILES], batch_size=5)
    assert detector.device == torch.device("cpu") and not trained["config"].parent.samefile(trained["moved"].parent)
    for image_id, (prediction, (width, height)) in enumerate(zip(predictions, IMAGES), start=1):
        expected = [r for r in trained["results"] if r["image_id"] == image_id]
        assert prediction.image_size == (height, width) and len(prediction.boxes) == len(expected) > 10
        xywh = prediction.boxes.double().clone()
        xywh[:, 2:] -= xywh[:, :2]
        np.testing.assert_allclose(xywh.numpy(), [r["bbox"] for r in expected], atol=1e-3)
        np.testing.assert_allclose(prediction.scores.numpy(), [r["score"] for r in expected], atol=1e-6)
        assert [CATEGORY_IDS[label] for label in prediction.labels.tolist()] == [r["category_id"] for r in expected]
        # original pixels: inside the original image, and past its resized (128 px) size on the long side
        assert (prediction.boxes >= 0).all() and (prediction.boxes[:, 0::2] <= width).all()
        assert (prediction.boxes[:, 1::2] <= height).all() and prediction.boxes.max() > 129


def test_every_input_kind_gives_the_same_detections(trained, detector):
    path = trained["images"] / "90x200.png"
    array = np.asarray(Image.open(path).convert("RGB"))
    chw = torch.from_numpy(array).permute(2, 0, 1)
    inputs = [str(path), path, Image.open(path), array, chw, chw.float() / 255, chw[None]]
    reference = detector.predict(str(path))[0]
    assert len(reference.boxes) > 10
    for kind in inputs:
        (prediction,) = detector.predict(kind)
        assert torch.equal(prediction.boxes, reference.boxes) and torch.equal(prediction.scores, reference.scores)
        assert torch.equal(prediction.labels, reference.labels) and prediction.names == reference.names


def test_score_threshold_keeps_exactly_the_detections_above_it_and_names_their_classes(trained, detector):
    path = trained["images"] / "200x90.png"
    everything = detector.predict(path)[0]
    threshold = float(everything.scores.median())
    kept = detector.predict(path, score_threshold=threshold)[0]
    above = everything.scores >= threshold
    assert 0 < len(kept.scores) == int(above.sum()) < len(everything.scores)
    assert torch.equal(kept.boxes, everything.boxes[above]) and (kept.scores >= threshold).all()
    assert detector.class_names == CLASS_NAMES and detector.category_ids == CATEGORY_IDS
    assert kept.names == [CLASS_NAMES[label] for label in kept.labels.tolist()]
    with pytest.raises(ValueError, match="score_threshold"):
        detector.predict(path, score_threshold=1.5)


def test_checkpoints_embed_the_config_and_classes_and_load_with_weights_only(trained):
    contents = torch.load(trained["checkpoint"], map_location="cpu", weights_only=True)
    metadata = contents["detkit"]
    assert metadata["class_names"] == CLASS_NAMES and metadata["category_ids"] == CATEGORY_IDS
    embedded = yaml.safe_load(metadata["config"])
    assert embedded["model"]["detector"]["init_args"]["head"]["depth"] == 1
    assert embedded == yaml.safe_load(trained["config"].read_text())


def test_a_perfect_predictor_checkpoint_predicts_the_ground_truth_in_original_pixels(tmp_path):
    checkpoint, config, data = save_perfect_checkpoint(tmp_path / "run")
    # the config.yaml beside it names a class outside detkit.models: refused unless passed explicitly
    with pytest.raises(CheckpointError, match=r"nonsquare_data\.ColourBoxFinder.*pass config="):
        detkit.load(checkpoint)
    detector = detkit.load(checkpoint, config=config, device="cpu")
    predictions = detector.predict([tmp_path / "run" / "data" / "images" / name for name in FILES], batch_size=2)
    for image_id, prediction in enumerate(predictions, start=1):
        expected = sorted((CATEGORY_IDS.index(a["category_id"]), a["bbox"]) for a in data["annotations"]
                          if a["image_id"] == image_id)
        found = sorted(zip(prediction.labels.tolist(), prediction.boxes.tolist()))
        assert [label for label, _ in found] == [label for label, _ in expected]
        for (_, box), (_, (x, y, w, h)) in zip(found, expected):
            assert box == pytest.approx([x, y, x + w, y + h], abs=0.25)


def test_without_recorded_classes_or_any_config(trained, tmp_path):
    contents = torch.load(trained["moved"], weights_only=True)
    del contents["detkit"]  # as written before checkpoints recorded their classes and config
    older = tmp_path / "older.ckpt"
    torch.save(contents, older)
    with pytest.raises(CheckpointError, match=r"older.ckpt: no config to rebuild the model from.*config.yaml; pass"):
        detkit.load(older)
    # the classes then come from the config's dataset: the run's own was deleted, a copy has them
    with pytest.raises(CheckpointError, match=r"config.yaml: the data section gives no classes: .*instances_val.json"):
        detkit.load(older, config=trained["config"])
    config = yaml.safe_load(trained["config"].read_text())
    config["data"].update(data_paths(tmp_path / "data"))
    write_dataset(tmp_path / "data")  # sparse ids 9, 4, 7 in the JSON: label order 4, 7, 9
    (tmp_path / "copy.yaml").write_text(yaml.safe_dump(config))
    detector = detkit.load(older, config=tmp_path / "copy.yaml", device="cpu")
    assert detector.class_names == CLASS_NAMES and detector.category_ids == CATEGORY_IDS


# -- bad checkpoints: each error names the file and what is wrong -------------------------------------------

class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_missing_truncated_corrupt_unsafe_and_foreign_files_are_named(trained, tmp_path):
    data = trained["checkpoint"].read_bytes()
    truncated, corrupt, unsafe, bare = (tmp_path / name for name in ("truncated.ckpt", "corrupt.ckpt", "unsafe.ckpt",
                                                                     "bare.pth"))
    truncated.write_bytes(data[:len(data) // 2])
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {}, "payload": RunsCodeWhenUnpickled(marker)}, unsafe)
    torch.save({"conv.weight": torch.zeros(2, 3)}, bare)
    cases = [(tmp_path / "missing.ckpt", "checkpoint not found"), (truncated, "truncated or corrupt"),
             (corrupt, "truncated or corrupt"), (unsafe, r"refused.*weights_only=True"),
             (bare, r"not a detkit checkpoint: it has no 'state_dict'.*bare state dict of 1 tensors")]
    for path, problem in cases:
        with pytest.raises(CheckpointError, match=problem) as error:
            detkit.load(path)
        assert str(path) in str(error.value)
    assert not marker.exists()  # the pickle's code never ran


def test_a_config_with_another_number_of_classes_is_named(trained, tmp_path):
    config = edited_config(trained["config"], tmp_path / "edited.yaml", num_classes=5)
    with pytest.raises(CheckpointError, match=r"number of classes differs: the checkpoint was trained on 3 classes "
                                              r"\['red', 'green', 'blue'\], .*edited.yaml sets .*num_classes: 5"):
        detkit.load(trained["moved"], config=config)


@pytest.mark.parametrize("change, problem", [
    ({"head": {"depth": 2}}, r"\d+ weights the model needs are missing \(e.g. head.cls_tower.3.weight"),
    ({"fpn": {"channels": 32}}, r"weights differ in shape \(e.g. backbone.fpn.*\(16, .*\) in the checkpoint, \(32, "),
])
def test_a_config_with_another_architecture_is_named(trained, tmp_path, change, problem):
    with pytest.raises(CheckpointError, match=problem) as error:
        detkit.load(trained["moved"], config=edited_config(trained["config"], tmp_path / "edited.yaml", **change))
    assert str(trained["moved"]) in str(error.value) and "architecture differs" in str(error.value)


def test_eval_names_another_architecture_and_other_classes(trained, tmp_path):
    config = yaml.safe_load(trained["config"].read_text())
    write_dataset(tmp_path / "data")  # the run's own data was deleted; same images and classes
    two_classes = json.loads((tmp_path / "data" / "instances_val.json").read_text())
    two_classes["categories"] = [c for c in two_classes["categories"] if c["id"] != 9]
    two_classes["annotations"] = [a for a in two_classes["annotations"] if a["category_id"] != 9]
    (tmp_path / "data" / "two.json").write_text(json.dumps(two_classes))
    config["data"].update(data_paths(tmp_path / "data"))
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    base = ["--checkpoint", str(trained["checkpoint"]), "--config", str(tmp_path / "eval.yaml"),
            "--results", str(tmp_path / "results.json")]
    with pytest.raises(SystemExit, match=r"best.ckpt: the checkpoint's architecture differs .*eval.yaml"):
        evaluate([*base, "--model.detector.init_args.head.depth", "2"])
    with pytest.raises(SystemExit, match=r"best.ckpt: the number of classes differs: .* 3 classes .* has 2"):
        evaluate([*base, "--data.val_annotations", str(tmp_path / "data" / "two.json"),
                  "--data.train_annotations", str(tmp_path / "data" / "two.json")])
    with pytest.raises(SystemExit, match="checkpoint not found: .*nothing.ckpt"):
        evaluate(["--checkpoint", str(tmp_path / "nothing.ckpt")])
    assert not (tmp_path / "results.json").exists()


# -- images --------------------------------------------------------------------------------------------------

def test_read_image_names_what_it_cannot_take(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken.png"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) RGB \(channels last\), got shape \(3, 8, 8\)"):
        read_image(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        read_image(torch.full((3, 4, 4), 255.0))
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(read_image(grey), np.stack([grey] * 3, axis=-1))


def test_expand_image_paths_takes_files_folders_and_globs_in_order(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt", "sub/c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = expand_image_paths([str(tmp_path / "sub" / "c.png"), str(tmp_path), str(tmp_path / "**" / "*.png")])
    assert [os.path.relpath(p, tmp_path) for p in found] == ["sub/c.png", "a.jpg", "b.png"]
    with pytest.raises(ValueError, match=r"no file matches .*\*.gif"):
        expand_image_paths([str(tmp_path / "*.gif")])


def test_annotate_draws_each_box_in_its_class_colour(tmp_path):
    checkpoint, config, _ = save_perfect_checkpoint(tmp_path / "run")
    image = read_image(tmp_path / "run" / "data" / "images" / "300x300.png")
    prediction = detkit.load(checkpoint, config=config, device="cpu").predict(image)[0]
    drawn = annotate(image, prediction)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    for (x1, y1, _x2, y2), label in zip(prediction.boxes.int().tolist(), prediction.labels.tolist()):
        assert tuple(drawn[(y1 + y2) // 2, x1]) == class_colour(label)  # the left edge, below the caption


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prediction_on_cuda_matches_the_cpu(trained, tmp_path):
    checkpoint, config, _ = save_perfect_checkpoint(tmp_path / "run")
    paths = [tmp_path / "run" / "data" / "images" / name for name in FILES]
    on_gpu = detkit.load(checkpoint, config=config, device="cuda").predict(paths)
    on_cpu = detkit.load(checkpoint, config=config, device="cpu").predict(paths)
    for gpu, cpu in zip(on_gpu, on_cpu):
        assert gpu.boxes.device.type == "cpu" and torch.allclose(gpu.boxes, cpu.boxes, atol=1e-4)
        assert torch.equal(gpu.labels, cpu.labels)
    trained_gpu = detkit.load(trained["moved"], device="cuda")
    assert next(trained_gpu.model.parameters()).is_cuda
    best_gpu = trained_gpu.predict(paths[0])[0]
    best_cpu = detkit.load(trained["moved"], device="cpu").predict(paths[0])[0]
    assert abs(float(best_gpu.scores[0]) - float(best_cpu.scores[0])) < 1e-3


def test_rebuilding_a_model_never_downloads_its_pretrained_trunk(monkeypatch):
    # a checkpoint trained from torchvision's weights names them in its config; its own weights replace them
    from detkit.inference.config import RunConfig, build_detector

    def no_download(*args, **kwargs):
        raise AssertionError("rebuilding a checkpoint's model must not download weights")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_download)
    init_args = {"backbone": {"name": "resnet18", "weights": "DEFAULT", "norm": "frozen_bn"},
                 "fpn": {"channels": 16, "extra_levels": 0}, "anchors": {"sizes": [32, 64, 128]}}
    config = RunConfig({"model": {"detector": {"class_path": "detkit.models.RetinaNet", "init_args": init_args}}},
                       "a config embedded in a checkpoint", explicit=False)
    model = build_detector(config, num_classes=2)
    assert model.backbone.body.stem[0].weight.shape == (64, 3, 7, 7) and model.num_classes == 2
