"""The fine-tuning recipes: their detector groups are torchvision's architectures (part A's detector_settings), so
an imported model initialises every weight but the class layers; a few steps of fine-tuning on other classes
give a checkpoint that predicts and evaluates; the imported checkpoint itself evaluates through tools/eval."""
import dataclasses
import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from shapes_data import data_args
from torchvision_models import published_form, random_torchvision

import detkit
from detkit.engine.cli import DetectionCLI, evaluate, train
from detkit.engine.init_from import load_matching_weights
from detkit.inference.import_torchvision import coco_categories, import_torchvision
from detkit.models.torchvision_import import detector_settings

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PREDICT = Path(__file__).resolve().parents[1] / "tools" / "predict.py"
MOBILENET = "fasterrcnn_mobilenet_v3_large_320_fpn"
# recipe -> (architecture, the (group, field) pairs fine-tuning sets otherwise: no tensor depends on them)
RECIPES = {
    "faster_rcnn_mobilenet_v3_finetune.yaml": (MOBILENET, {("rpn", "pre_nms_top_n_train"),  # CPU-sized counts
                                                           ("rpn", "post_nms_top_n_train"), ("roi", "sampling")}),
    "retinanet_v2_finetune.yaml": ("retinanet_resnet50_fpn_v2", {("backbone", "norm")}),  # frozen_bn, not bn
}


def plain(group) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(group)))


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_groups_are_the_torchvision_architecture(recipe):
    arch, changed = RECIPES[recipe]
    config = yaml.safe_load((CONFIGS / recipe).read_text())
    init_args = config["model"]["detector"]["init_args"]
    expected = {name: plain(group) for name, group in detector_settings(arch).items() if name != "num_classes"}
    assert set(init_args) == set(expected)
    for name, group in expected.items():
        for field, value in group.items():
            if (name, field) not in changed:
                assert init_args[name][field] == value, f"{recipe}: {name}.{field}"
    really_changed = [(name, field) for name, field in changed if init_args[name][field] != expected[name][field]]
    assert sorted(really_changed) == sorted(changed)
    assert config["data"]["resize"] == "torchvision" and config["data"]["size_divisor"] == 32
    assert config["model"]["lr"] < 0.01 and "minutes" in config["budget"]


@pytest.fixture(scope="module")
def imported_mobilenet(tmp_path_factory):
    """An imported random torchvision MobileNetV3 320 (the cheapest of the six)."""
    folder = tmp_path_factory.mktemp("mobilenet")
    torch.save(published_form(random_torchvision(MOBILENET)), folder / "weights.pth")
    return Path(import_torchvision(MOBILENET, str(folder / "weights.pth"), str(folder / "imported.ckpt")))


def tiny_run(root: Path, save_dir: Path, *extra: str) -> list[str]:
    """The mobilenet recipe, 3 steps at 64 px on the shapes dataset (3 classes, not COCO's)."""
    return ["--config", str(CONFIGS / "faster_rcnn_mobilenet_v3_finetune.yaml"), *data_args(root),
            "--data.batch_size", "2", "--data.val_batch_size", "4", "--data.min_size", "64", "--data.max_size", "64",
            "--budget.minutes", "null", "--trainer.max_epochs", "null", "--trainer.max_steps", "3",
            "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(save_dir),
            "--anchors.enabled", "false", *extra]


def test_fine_tuning_an_import_loads_all_but_the_class_layers_then_predicts(imported_mobilenet, shapes_root,
                                                                            tmp_path, capsys, one_thread):
    run = train(tiny_run(shapes_root, tmp_path / "runs", "--model.init_from", str(imported_mobilenet)))
    printed = capsys.readouterr().out
    assert "re-initialised (other shape in the file): 4: roi_heads.predictor" in printed  # cls_score, bbox_pred
    assert "initialised fresh (not in the file): 0" in printed
    assert "left out (the file's, unknown to this detector): 0" in printed
    best = run.best_checkpoint
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    detector = detkit.load(best, device="cpu")
    assert detector.transform.resize == "torchvision"  # the recipe's mode, from the run's embedded config
    (prediction,) = detector.predict(image, score_threshold=0.0)
    assert set(prediction.names) <= {"circle", "rectangle", "triangle"} and prediction.image_size == (90, 120)
    assert len(prediction.boxes) > 0 and float(prediction.boxes[:, 2].max()) <= 120  # in the photo's own pixels
    result = evaluate(["--checkpoint", best, "--results", str(tmp_path / "eval.json")])
    assert result.stats["AP"] == pytest.approx(run.evaluation.stats["AP"], abs=1e-9)


def test_retinanet_recipe_takes_every_weight_of_an_imported_v2(shapes_root, tmp_path):
    arch = "retinanet_resnet50_fpn_v2"
    torch.save(published_form(random_torchvision(arch)), tmp_path / "weights.pth")
    imported = import_torchvision(arch, str(tmp_path / "weights.pth"), str(tmp_path / "imported.ckpt"))
    (tmp_path / "weights.pth").unlink()
    recipe = str(CONFIGS / "retinanet_v2_finetune.yaml")
    cli = DetectionCLI(run=False, args=["--config", recipe, *data_args(shapes_root), "--trainer.logger", "false"])
    report = load_matching_weights(cli.model.detector, imported, cli.datamodule.class_names)
    reinitialised = sorted(key.split(" ")[0] for key in report.reinitialised)
    assert reinitialised == ["head.cls_logits.bias", "head.cls_logits.weight"]
    assert not report.not_in_file and not report.left_out  # frozen BN: the file's BN tensors all load


def test_the_imported_checkpoint_evaluates_through_tools_eval(imported_mobilenet, shapes_root, tmp_path):
    """On a dataset labelled with torchvision's 90 COCO categories (the shapes images, their three classes renamed
    person, bicycle, car): the embedded config (blank train paths) serves tools/eval as a run's config does."""
    annotations = json.loads((shapes_root / "instances_val.json").read_text())
    id_of = {category["id"]: position + 1 for position, category in enumerate(annotations["categories"])}
    annotations["categories"] = coco_categories().to_coco()
    for annotation in annotations["annotations"]:
        annotation["category_id"] = id_of[annotation["category_id"]]
    (tmp_path / "coco_val.json").write_text(json.dumps(annotations))
    checkpoint = tmp_path / "imported.ckpt"
    shutil.copy(imported_mobilenet, checkpoint)
    evaluate(["--checkpoint", str(checkpoint), "--data.val_images", str(shapes_root / "images"),
              "--data.val_annotations", str(tmp_path / "coco_val.json"), "--data.val_batch_size", "4",
              "--results", str(tmp_path / "results.json")])
    results = json.loads((tmp_path / "results.json").read_text())
    paths = [str(shapes_root / "images" / image["file_name"]) for image in annotations["images"]]
    predictions = detkit.load(checkpoint, device="cpu").predict(paths, batch_size=4)  # the val batches
    for image, prediction in zip(annotations["images"], predictions):
        evaluated = sorted(r["category_id"] for r in results if r["image_id"] == image["id"])
        assert evaluated == sorted((prediction.labels + 1).tolist())  # COCO id = label + 1
    assert len(results) > 0


def test_the_imported_checkpoint_predicts_through_tools_predict(imported_mobilenet, tmp_path, monkeypatch):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(photo)
    monkeypatch.setattr(sys, "argv", [str(PREDICT), "--checkpoint", str(imported_mobilenet), "--images", str(photo),
                                      "--out", str(tmp_path / "out"), "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(PREDICT), run_name="__main__")
    assert exit_.value.code == 0
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    (expected,) = detkit.load(imported_mobilenet, device="cpu").predict(str(photo))
    assert len(results) == len(expected.labels) > 0
    assert sorted(r["category_id"] for r in results) == sorted((expected.labels + 1).tolist())  # COCO ids
