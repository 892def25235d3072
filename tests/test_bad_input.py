"""Bad input at the commands users type (``train`` / ``evaluate``, in-process with their argv lists).

Each case either fails with a clear error naming the config key, the file or the image id, before anything
already written is touched, or is handled correctly, checked against COCO's definitions: a 1x1 image, an
image 20x larger than ``max_size``, 300 objects, a val split without annotations, a class only in val, a model
that predicts nothing. The data is ``nonsquare_data``'s solid colour rectangles, in a folder with a space.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from nonsquare_data import IMAGES, ColourBoxFinder, write_dataset
from pycocotools.cocoeval import Params

from detkit.data import DetectionDataModule
from detkit.engine.cli import DetectionCLI, evaluate, train
from detkit.engine.module import DetectionModule

pytestmark = pytest.mark.usefixtures("one_thread", "no_pictures")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL_MODEL = {
    "retinanet_shapes.yaml": ["--model.detector.init_args.head.depth", "1"],
    "faster_rcnn_shapes.yaml": ["--model.detector.init_args.roi.representation_size", "32",
                                "--model.detector.init_args.roi.sampling.batch_size_per_image", "32",
                                "--model.detector.init_args.rpn.pre_nms_top_n_test", "200",
                                "--model.detector.init_args.rpn.post_nms_top_n_test", "100"],
}
DETECTIONS_PER_IMAGE = 100  # both shapes configs
# 300 red 12 px squares on a 20 px grid: far enough apart for ColourBoxFinder at scale 1
GRID_OF_300 = [(20 * column + 4, 20 * row + 4, 12, 12, 0) for row in range(15) for column in range(20)]
ODD_IMAGES = {
    (1, 1): [(0, 0, 1, 1, 0)],
    (2560, 1280): [(100, 200, 900, 700, 1), (2000, 1000, 500, 250, 2)],  # 20x the configs' max_size of 128
    (400, 300): GRID_OF_300,
}


def tiny_args(save_dir: Path, config: str = "retinanet_shapes.yaml") -> list[str]:
    """A shapes recipe shrunk to 2 steps of a small model on the CPU, validated at the end, logs in ``save_dir``."""
    return ["--config", str(CONFIGS / config), "--data.builtin", "null", "--data.cache_images", "false",
            "--data.train_augmentations", "[]", "--data.batch_size", "2", "--data.val_batch_size", "2",
            "--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir", str(save_dir),
            "--trainer.max_steps", "2", "--trainer.max_epochs", "null", "--budget.minutes", "null",
            "--trainer.val_check_interval", "2", "--trainer.check_val_every_n_epoch", "null",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.log_every_n_steps", "1", "--model.warmup_steps", "1",
            "--model.detector.init_args.fpn.channels", "16",
            # an untrained model scores everything low: keep all its boxes
            "--model.detector.init_args.inference.score_threshold", "0.0", *SMALL_MODEL[config]]


def data_args(root: Path, train_json: str = "instances_train.json", val_json: str = "instances_val.json",
              **paths: str) -> list[str]:
    """``--data.*`` paths of the dataset in ``root``; ``paths`` (e.g. ``train_images=...``) replace single ones."""
    values = {"train_images": str(root / "images"), "train_annotations": str(root / train_json),
              "val_images": str(root / "images"), "val_annotations": str(root / val_json), **paths}
    return [arg for key, value in values.items() for arg in (f"--data.{key}", value)]


def write_split(root: Path, name: str, data: dict) -> str:
    """Write ``data`` as ``root/name`` (a COCO JSON beside the dataset's own); returns ``name``."""
    (root / name).write_text(json.dumps(data))
    return name


def literal(path: Path) -> str:
    """``path`` as a regex that matches it literally."""
    return re.escape(str(path))


def file_digests(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def skip_pictures(monkeypatch) -> None:
    """The evaluation pictures (tests/test_evaluation_pictures.py) take 2/3 of a tiny run here: drawn only where
    a test asks for them."""
    monkeypatch.setattr("detkit.evaluation.pictures.write_evaluation_pictures", lambda *args, **kwargs: None)


@pytest.fixture
def no_pictures(monkeypatch) -> None:
    skip_pictures(monkeypatch)


@pytest.fixture
def fit_calls(monkeypatch) -> list:
    """Records every ``Trainer.fit`` call (then runs it): empty means the error came before training."""
    calls, fit = [], L.Trainer.fit
    monkeypatch.setattr(L.Trainer, "fit", lambda self, *args, **kwargs: calls.append(1) or fit(self, *args, **kwargs))
    return calls


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bad_input") / "my data"
    return root, write_dataset(root)


@pytest.fixture(scope="module")
def first_run(dataset, tmp_path_factory) -> Path:
    """The run folder of one finished tiny training (``<save_dir>/retinanet_shapes/version_0``)."""
    root, _ = dataset
    save_dir = tmp_path_factory.mktemp("runs")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            skip_pictures(monkeypatch)
            run = train(tiny_args(save_dir) + data_args(root))
            cli = run.cli
    finally:
        torch.set_num_threads(before)
    return Path(cli.trainer.log_dir)


# -- the config: keys, types, ranges, files ------------------------------------------------------------------

def build(dataset, tmp_path, *extra: str, config: str = "retinanet_shapes.yaml") -> DetectionCLI:
    """The CLI of ``tiny_args`` on ``dataset`` with ``extra`` arguments, built but not run."""
    root, _ = dataset
    return DetectionCLI(run=False, args=tiny_args(tmp_path / "runs", config) + data_args(root) + list(extra))


@pytest.mark.parametrize("yaml_text, args, key, value", [
    (None, ["--model.lr", "abc"], "model.lr", "abc"),
    (None, ["--data.batch_size", "2.5"], "data.batch_size", "2.5"),
    ("data:\n  batch_size: two\n", [], "data.batch_size", "two"),
])
def test_wrong_value_type_names_the_key_and_value(yaml_text, args, key, value, dataset, tmp_path, capsys):
    if yaml_text is not None:
        (tmp_path / "override.yaml").write_text(yaml_text)
        args = ["--config", str(tmp_path / "override.yaml")]
    with pytest.raises(SystemExit) as exit_info:
        build(dataset, tmp_path, *args)
    error = capsys.readouterr().err
    assert exit_info.value.code != 0 and f'"{key}"' in error and value in error


def test_misspelt_section_of_a_config_file_is_named(dataset, tmp_path, capsys):
    (tmp_path / "typo.yaml").write_text("modle:\n  lr: 0.1\n")
    with pytest.raises(SystemExit):
        build(dataset, tmp_path, "--config", str(tmp_path / "typo.yaml"))
    assert "modle.lr" in capsys.readouterr().err


def test_config_file_with_a_yaml_syntax_error_is_named_with_its_line(dataset, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  lr: [0.1\ndata:\n  batch_size: 2\n")
    with pytest.raises(SystemExit, match=rf"(?s)--config {literal(path)} is not valid YAML: .*line 2, column 7"):
        build(dataset, tmp_path, "--config", str(path))


def test_missing_config_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        DetectionCLI(run=False, args=["--config", str(tmp_path / "nope.yaml")])
    assert f"File does not exist: '{tmp_path / 'nope.yaml'}'" in capsys.readouterr().err


DETECTOR = "model.detector.init_args"


@pytest.mark.parametrize("config, args, message", [
    ("retinanet_shapes.yaml",
     [f"--{DETECTOR}.matching.fg_iou_threshold", "0.3", f"--{DETECTOR}.matching.bg_iou_threshold", "0.4"],
     rf"{DETECTOR}.matching.fg_iou_threshold \(0.3\) must be >= {DETECTOR}.matching.bg_iou_threshold \(0.4\)"),
    ("retinanet_shapes.yaml", [f"--{DETECTOR}.matching.fg_iou_threshold", "1.2"],
     rf"{DETECTOR}.matching.fg_iou_threshold must lie in \[0, 1\], got 1.2"),
    ("retinanet_shapes.yaml", [f"--{DETECTOR}.inference.nms_threshold", "1.5"],
     rf"{DETECTOR}.inference.nms_threshold must lie in \[0, 1\], got 1.5"),
    ("retinanet_shapes.yaml", [f"--{DETECTOR}.inference.score_threshold", "-0.1"],
     rf"{DETECTOR}.inference.score_threshold must lie in"),
    ("retinanet_shapes.yaml", [f"--{DETECTOR}.inference.detections_per_image", "0"],
     rf"{DETECTOR}.inference.detections_per_image must be >= 1, got 0"),
    ("retinanet_shapes.yaml", [f"--{DETECTOR}.anchors.sizes", "[10, 20]"],
     rf"{DETECTOR}.anchors.sizes must give one size per pyramid level \(3 levels\)"),
    ("faster_rcnn_shapes.yaml", [f"--{DETECTOR}.rpn.matching.fg_iou_threshold", "0.2"],
     rf"{DETECTOR}.rpn.matching.fg_iou_threshold \(0.2\) must be >= {DETECTOR}.rpn.matching.bg_iou_threshold \(0.3\)"),
    ("faster_rcnn_shapes.yaml", [f"--{DETECTOR}.rpn.nms_threshold", "1.01"],
     rf"{DETECTOR}.rpn.nms_threshold must lie in"),
    ("faster_rcnn_shapes.yaml", [f"--{DETECTOR}.roi.sampling.positive_fraction", "2"],
     rf"{DETECTOR}.roi.sampling.positive_fraction must lie in"),
    ("retinanet_shapes.yaml", ["--model.lr", "-0.1"], r"model.lr must be > 0, got -0.1"),
    ("retinanet_shapes.yaml", ["--model.weight_decay=-1e-4"], r"model.weight_decay must be >= 0"),
    ("retinanet_shapes.yaml", ["--model.momentum", "1.5"], r"model.momentum must be in \[0, 1\)"),
    ("retinanet_shapes.yaml", ["--model.optimizer", "adam"],
     r"model.optimizer must be one of \('sgd', 'adamw'\), got 'adam'"),
])
def test_out_of_range_value_names_the_key(config, args, message, dataset, tmp_path):
    with pytest.raises(ValueError, match=message):
        build(dataset, tmp_path, *args, config=config)


def test_values_at_the_ends_of_their_ranges_are_accepted(dataset, tmp_path):
    cli = build(dataset, tmp_path, f"--{DETECTOR}.matching.fg_iou_threshold", "0.5",
                f"--{DETECTOR}.matching.bg_iou_threshold", "0.5", f"--{DETECTOR}.inference.nms_threshold", "1.0",
                f"--{DETECTOR}.inference.score_threshold", "1.0", "--model.momentum", "0")
    matcher = cli.model.detector.dense.matcher
    assert matcher.high_threshold == matcher.low_threshold == 0.5 and cli.model.detector.inference.nms_threshold == 1.0


# -- paths: the dataset, the output folders --------------------------------------------------------------------

@pytest.mark.parametrize("key, value, error, message", [
    ("train_annotations", "{missing}/train.json", FileNotFoundError,
     "data.train_annotations: {missing}/train.json does not exist"),
    ("train_images", "{missing}", FileNotFoundError, "data.train_images: {missing} does not exist"),
    ("val_images", "{missing}", FileNotFoundError, "data.val_images: {missing} does not exist"),
    ("val_annotations", "{missing}/val.json", FileNotFoundError,
     "data.val_annotations: {missing}/val.json does not exist"),
    ("train_images", "{json}", FileNotFoundError, "data.train_images: {json} is not a folder"),
])
def test_dataset_path_that_does_not_exist_names_the_key(key, value, error, message, dataset, tmp_path):
    root, _ = dataset
    names = {"missing": str(tmp_path / "no such folder"), "json": str(root / "instances_train.json")}
    args = tiny_args(tmp_path / "runs") + data_args(root, **{key: value.format(**names)})
    with pytest.raises(error, match=message.format(**{k: re.escape(v) for k, v in names.items()})):
        train(args)


def path_under_a_file(tmp_path: Path, name: str) -> Path:
    """A folder path that cannot be created, even by root: its parent is a regular file."""
    (tmp_path / "a file").write_text("not a folder")
    return tmp_path / "a file" / name


@pytest.mark.parametrize("key, args", [
    ("trainer.logger.init_args.save_dir", ["--trainer.logger.init_args.save_dir", "{blocked}"]),
    ("trainer.default_root_dir", ["--trainer.logger", "false", "--trainer.default_root_dir", "{blocked}"]),
    ("checkpoint.dirpath", ["--checkpoint.dirpath", "{blocked}"]),
    ("model.results_path", ["--model.results_path", "{blocked}/results.json"]),
])
def test_unwritable_output_folder_is_named_before_training(key, args, dataset, tmp_path, fit_calls):
    root, _ = dataset
    blocked = path_under_a_file(tmp_path, "runs")
    args = tiny_args(tmp_path / "runs") + data_args(root) + [arg.format(blocked=blocked) for arg in args]
    message = f"{key}: cannot write into {literal(blocked)}: {literal(tmp_path / 'a file')} is a file, not a folder"
    with pytest.raises(ValueError, match=message):
        train(args)
    assert fit_calls == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_named_before_training(dataset, tmp_path, fit_calls):
    root, _ = dataset
    (tmp_path / "read-only").mkdir()
    (tmp_path / "read-only").chmod(0o555)
    args = tiny_args(tmp_path / "read-only" / "runs") + data_args(root)
    try:
        message = f"trainer.logger.init_args.save_dir: .*{literal(tmp_path / 'read-only')} is not writable"
        with pytest.raises(ValueError, match=message):
            train(args)
    finally:
        (tmp_path / "read-only").chmod(0o755)
    assert fit_calls == []


def test_unwritable_results_path_is_named_before_evaluating(first_run, tmp_path):
    results = path_under_a_file(tmp_path, "results.json")
    with pytest.raises(ValueError, match=f"--results: cannot write into {literal(results.parent)}: .* is a file"):
        evaluate(["--checkpoint", str(first_run / "checkpoints" / "best.ckpt"), "--results", str(results)])


# -- nothing already written is lost ---------------------------------------------------------------------------

def test_second_training_with_the_same_command_keeps_the_first_run(first_run, dataset):
    root, _ = dataset
    before = file_digests(first_run)
    assert {"config.yaml", "metrics.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt"} <= set(before)
    run = train(tiny_args(first_run.parent.parent) + data_args(root))
    cli = run.cli
    assert Path(cli.trainer.log_dir) == first_run.parent / "version_1"
    assert file_digests(first_run) == before


def test_training_into_an_earlier_run_folder_is_refused_before_touching_it(first_run, dataset, fit_calls):
    root, _ = dataset
    before = file_digests(first_run)
    args = tiny_args(first_run.parent.parent) + data_args(root) + ["--trainer.logger.init_args.version", "0"]
    # Lightning's CSV writer deletes metrics.csv of a folder it opens: the refusal must come before it does
    message = f"trainer.logger.init_args.version: the run folder {literal(first_run)} holds an earlier run"
    with pytest.raises(ValueError, match=message):
        train(args)
    assert fit_calls == [] and file_digests(first_run) == before


def test_second_evaluation_keeps_the_first_results(first_run, tmp_path):
    results = tmp_path / "results.json"
    checkpoint = str(first_run / "checkpoints" / "best.ckpt")
    first = evaluate(["--checkpoint", checkpoint, "--results", str(results)])
    written = results.read_bytes()
    # another score threshold: other results, which must not replace the first ones
    second = evaluate(["--checkpoint", checkpoint, "--results", str(results),
                       f"--{DETECTOR}.inference.score_threshold", "0.5"])
    assert results.read_bytes() == written and len(json.loads(written)) == first.num_detections
    assert len(json.loads((tmp_path / "results-v1.json").read_text())) == second.num_detections < first.num_detections


def test_failing_evaluation_names_the_path_and_keeps_earlier_results(first_run, tmp_path):
    results = tmp_path / "results.json"
    results.write_text("[]")
    with pytest.raises(FileNotFoundError, match=f"data.val_images: {literal(tmp_path / 'gone')} does not exist"):
        evaluate(["--checkpoint", str(first_run / "checkpoints" / "best.ckpt"), "--results", str(results),
                  "--data.val_images", str(tmp_path / "gone")])
    assert results.read_text() == "[]" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


# -- inputs that must just work --------------------------------------------------------------------------------

def test_model_that_predicts_nothing_scores_zero_as_coco_defines(first_run, dataset, tmp_path):
    _, data = dataset
    results = tmp_path / "results.json"
    evaluation = evaluate(["--checkpoint", str(first_run / "checkpoints" / "best.ckpt"), "--results", str(results),
                           f"--{DETECTOR}.inference.score_threshold", "1.0"])  # sigmoid scores never exceed 1
    assert json.loads(results.read_text()) == [] and evaluation.num_detections == 0
    assert evaluation.num_images == len(data["images"])
    has_small = any(a["area"] < 32 ** 2 for a in data["annotations"])  # COCO's "small": no ground truth there -> -1
    assert evaluation.stats["AP"] == evaluation.stats["AR100"] == 0.0
    assert evaluation.stats["APs"] == (0.0 if has_small else -1.0)
    assert [ap for _, ap, _ in evaluation.per_class] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("config", sorted(SMALL_MODEL))
def test_1x1_20x_and_300_object_images_train_and_give_boxes_inside_them(config, tmp_path):
    root = tmp_path / "odd"
    data = write_dataset(root, {**ODD_IMAGES, (200, 90): IMAGES[(200, 90)]})
    run = train(tiny_args(tmp_path / "runs", config) + data_args(root))
    cli, evaluation = run.cli, run.evaluation
    with open(Path(cli.trainer.log_dir) / "metrics.csv") as file:
        losses = [float(row["train/loss"]) for row in csv.DictReader(file) if row.get("train/loss")]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    objects = [len(boxes) for _, boxes, _ in cli.datamodule.train_dataset.original_targets()]
    assert objects == [len(v) for v in ODD_IMAGES.values()] + [3]  # all 300 boxes are targets
    assert cli.datamodule.val_dataset[1][0].shape == (3, 64, 128)  # 2560x1280 shrunk to max_size 128
    results = json.loads((Path(cli.trainer.log_dir) / "results_val.json").read_text())
    assert evaluation.num_images == 4 and len(results) == evaluation.num_detections
    for image in data["images"]:
        boxes = np.array([r["bbox"] for r in results if r["image_id"] == image["id"]]).reshape(-1, 4)
        x, y, w, h = boxes.T
        assert 0 < len(boxes) <= DETECTIONS_PER_IMAGE, image["file_name"]
        assert (x >= 0).all() and (y >= 0).all() and (w > 0).all() and (h > 0).all(), image["file_name"]
        assert (x + w <= image["width"] + 1e-3).all() and (y + h <= image["height"] + 1e-3).all(), image["file_name"]


def validate_perfect_predictor(root: Path, min_size: int, max_size: int):
    """Validation of ``ColourBoxFinder`` (exact boxes, score 1) on ``root``: (EvalResult, results JSON list)."""
    datamodule = DetectionDataModule(
        train_images=str(root / "images"), train_annotations=str(root / "instances_train.json"),
        val_images=str(root / "images"), val_annotations=str(root / "instances_val.json"),
        val_batch_size=2, min_size=min_size, max_size=max_size)
    module = DetectionModule(ColourBoxFinder(), results_path=str(root / "results.json"))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return module.last_evaluation, json.loads((root / "results.json").read_text())


def test_1x1_and_20x_images_keep_their_boxes_in_original_pixels(tmp_path):
    data = write_dataset(tmp_path, {size: ODD_IMAGES[size] for size in [(1, 1), (2560, 1280)]})
    evaluation, results = validate_perfect_predictor(tmp_path, 128, 128)  # 1x1 grown 128x, 2560x1280 shrunk 20x
    assert evaluation.stats["AP50"] == pytest.approx(1.0) and evaluation.stats["AP"] > 0.99
    found = {(r["image_id"], r["category_id"]): r["bbox"] for r in results}
    expected = {(a["image_id"], a["category_id"]): a["bbox"] for a in data["annotations"]}
    assert found.keys() == expected.keys()
    assert found[(1, 4)] == pytest.approx([0, 0, 1, 1], abs=1e-3)  # the 1x1 image's one red object
    for key, bbox in expected.items():
        assert found[key] == pytest.approx(bbox, abs=1.0), key


def test_300_objects_are_scored_with_cocos_100_detections_limit(tmp_path):
    write_dataset(tmp_path, {(400, 300): GRID_OF_300})
    evaluation, results = validate_perfect_predictor(tmp_path, 300, 400)  # scale 1
    assert len(results) == 300  # all found and written; COCOeval keeps the 100 best per image and class
    for name in ("AR1", "AR10", "AR100"):
        assert evaluation.stats[name] == pytest.approx(int(name[2:]) / 300)
    # precision 1 up to recall 100/300, nothing beyond: AP is the share of COCO's recall points up to 1/3
    expected_ap = float(np.mean(Params(iouType="bbox").recThrs <= 100 / 300 + 1e-9))
    assert evaluation.stats["AP"] == pytest.approx(expected_ap)
    assert evaluation.per_class[0][1] == pytest.approx(expected_ap)  # red, the only class with ground truth


def test_validation_set_without_annotations_scores_minus_one_as_coco_defines(dataset, tmp_path):
    root, data = dataset
    val = write_split(root, "val_without_annotations.json", {**data, "annotations": []})
    with pytest.warns(UserWarning, match=f"data.val_annotations: {literal(root / val)} has no annotations"):
        run = train(tiny_args(tmp_path / "runs") + data_args(root, val_json=val))
        cli, evaluation = run.cli, run.evaluation
    assert set(evaluation.stats.values()) == {-1.0}
    assert all(math.isnan(ap) and math.isnan(ap50) for _, ap, ap50 in evaluation.per_class)
    results = json.loads((Path(cli.trainer.log_dir) / "results_val.json").read_text())
    assert len(results) == evaluation.num_detections > 0  # the detections are still written


def test_class_present_in_val_but_never_in_train_is_warned_and_scored(dataset, tmp_path):
    root, data = dataset
    green = 7  # nonsquare_data's category id of label 1
    train_json = write_split(root, "train_without_green.json",
                             {**data, "annotations": [a for a in data["annotations"] if a["category_id"] != green]})
    message = rf"{literal(root / train_json)} has no usable box of class\(es\) \['green'\]"
    with pytest.warns(UserWarning, match=message):
        run = train(tiny_args(tmp_path / "runs") + data_args(root, train_json=train_json))
        evaluation = run.evaluation
    per_class = {name: ap for name, ap, _ in evaluation.per_class}
    assert list(per_class) == ["red", "green", "blue"]
    assert 0.0 <= per_class["green"] <= 1.0  # defined: val has green objects (nan would mean no ground truth)


@pytest.mark.parametrize("change, extra, message", [
    (lambda data: {"annotations": []}, [], "none of its 5 images has a usable box"),
    (lambda data: {"annotations": [{**a, "iscrowd": 1} for a in data["annotations"]]}, [],
     "none of its 5 images has a usable box"),
    (lambda data: {"annotations": []}, ["--data.drop_empty", "true"],
     r"leaves no training image \(data.drop_empty=True"),
    (lambda data: {"images": [], "annotations": []}, [], "leaves no training image"),
], ids=["no annotations", "only crowd regions", "all dropped as empty", "no images"])
def test_training_set_with_nothing_to_learn_is_an_error_naming_the_file(change, extra, message, dataset, tmp_path):
    root, data = dataset
    train_json = write_split(root, "train_nothing_to_learn.json", {**data, **change(data)})
    with pytest.raises(ValueError, match=rf"data.train_annotations: {literal(root / train_json)}.*{message}"):
        train(tiny_args(tmp_path / "runs") + data_args(root, train_json=train_json) + extra)


def test_validation_set_without_images_is_an_error_naming_the_file(dataset, tmp_path):
    root, data = dataset
    val = write_split(root, "val_without_images.json", {**data, "images": [], "annotations": []})
    with pytest.raises(ValueError, match=f"data.val_annotations: {literal(root / val)} has no image to evaluate on"):
        train(tiny_args(tmp_path / "runs") + data_args(root, val_json=val))
