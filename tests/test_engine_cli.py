"""The command line (LightningCLI): every config builds, overrides apply, unknown keys are named, and a short
training run writes its files and evaluates its best checkpoint to the numbers the training recorded."""
import csv
import json
from pathlib import Path

import pytest
import torch
import torchvision
from shapes_data import data_args

from detkit.engine.cli import DetectionCLI, evaluate, train
from detkit.models import FasterRCNN, RetinaNet

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def cpu_args(tmp_path: Path) -> list[str]:
    """What the GPU recipes need changed to be built on this machine: CPU, one process, no download, logs in tmp."""
    return ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
            "--trainer.precision", "32-true", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--data.num_workers", "0"]


def build(config: str, shapes_root: Path, tmp_path: Path, *extra: str) -> DetectionCLI:
    return DetectionCLI(run=False, args=["--config", str(CONFIGS / config), *data_args(shapes_root),
                                         *cpu_args(tmp_path), *extra])


@pytest.mark.parametrize("config, detector_type, backbone_channels", [
    ("retinanet_shapes.yaml", RetinaNet, 64), ("faster_rcnn_shapes.yaml", FasterRCNN, 64),
    ("retinanet_r50_fpn_coco.yaml", RetinaNet, 256), ("faster_rcnn_r50_fpn_coco.yaml", FasterRCNN, 256),
    ("retinanet_custom.yaml", RetinaNet, 64), ("faster_rcnn_custom.yaml", FasterRCNN, 64),
])
def test_every_config_builds(config, detector_type, backbone_channels, shapes_root, tmp_path):
    extra = ["--model.detector.init_args.backbone.weights", "null"] if "coco" in config else []
    cli = build(config, shapes_root, tmp_path, *extra)
    detector = cli.model.detector
    assert type(detector) is detector_type
    assert detector.num_classes == 3  # linked from the dataset's categories
    assert detector.backbone.out_channels == backbone_channels


@pytest.mark.parametrize("config", ["retinanet_custom.yaml", "faster_rcnn_custom.yaml"])
def test_custom_recipe_with_a_local_pretrained_trunk(config, shapes_root, tmp_path):
    # what README's "your own data" section tells users to do with a torchvision ResNet-18 file saved offline
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "resnet18.pth")
    cli = build(config, shapes_root, tmp_path, "--model.detector.init_args.backbone.name", "resnet18",
                "--model.detector.init_args.backbone.weights", str(tmp_path / "resnet18.pth"),
                "--model.detector.init_args.backbone.norm", "frozen_bn",
                "--model.detector.init_args.backbone.trainable_layers", "3")
    body = cli.model.detector.backbone.body
    assert torch.equal(body.layers[2][0].conv1.weight, state["layer3.0.conv1.weight"])
    assert torch.equal(body.stem[0].weight, state["conv1.weight"]) and not body.stem[0].weight.requires_grad
    assert body.layers[3][1].conv2.weight.requires_grad  # layer4, layer3, layer2 train


def test_coco_recipes_keep_the_standard_schedule(shapes_root, tmp_path):
    for config, lr in (("retinanet_r50_fpn_coco.yaml", 0.01), ("faster_rcnn_r50_fpn_coco.yaml", 0.02)):
        cli = build(config, shapes_root, tmp_path, "--model.detector.init_args.backbone.weights", "null")
        assert cli.model.hparams.lr == lr and cli.model.hparams.optimizer == "sgd"
        assert list(cli.model.hparams.milestones) == [60000, 80000] and cli.trainer.max_steps == 90000
        assert cli.datamodule.min_size == 800 and cli.datamodule.max_size == 1333


def test_command_line_overrides_any_key(shapes_root, tmp_path):
    cli = build("retinanet_shapes.yaml", shapes_root, tmp_path, "--model.lr", "0.0123",
                "--model.detector.init_args.matching.fg_iou_threshold", "0.6", "--data.batch_size", "3",
                "--trainer.max_epochs", "7")
    assert cli.model.hparams.lr == 0.0123
    assert cli.model.detector.dense.matcher.high_threshold == 0.6
    assert cli.datamodule.batch_size == 3 and cli.trainer.max_epochs == 7


@pytest.mark.parametrize("bad_key",
                         ["--model.lrr", "--model.detector.init_args.matching.fg_iou_treshold", "--data.batchsize"])
def test_unknown_key_is_an_error_naming_it(bad_key, shapes_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build("retinanet_shapes.yaml", shapes_root, tmp_path, bad_key, "1")
    assert exit_info.value.code != 0
    assert bad_key.rsplit(".", 1)[-1] in capsys.readouterr().err


def test_unknown_key_in_a_config_file_is_named(shapes_root, tmp_path, capsys):
    config = (CONFIGS / "retinanet_shapes.yaml").read_text().replace("  lr: 0.002", "  learning_rate: 0.002")
    path = tmp_path / "typo.yaml"
    path.write_text(config)
    with pytest.raises(SystemExit):
        DetectionCLI(run=False, args=["--config", str(path), *data_args(shapes_root), *cpu_args(tmp_path)])
    assert "learning_rate" in capsys.readouterr().err


def read_metrics(path: Path) -> list[dict]:
    with open(path) as file:
        return list(csv.DictReader(file))


@pytest.mark.usefixtures("one_thread")
def test_train_writes_its_run_and_eval_reproduces_the_best_score(shapes_root, tmp_path, capsys):
    args = ["--config", str(CONFIGS / "retinanet_shapes.yaml"), *data_args(shapes_root), *cpu_args(tmp_path),
            "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1", "--trainer.max_time", "null",
            "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1", "--data.batch_size", "8",
            "--model.warmup_steps", "2"]
    run = train(args)
    cli, result = run.cli, run.evaluation
    run = Path(cli.trainer.log_dir)
    assert {"config.yaml", "metrics.csv", "results_val.json"} <= {p.name for p in run.iterdir()}
    assert {"best.ckpt", "last.ckpt"} <= {p.name for p in (run / "checkpoints").iterdir()}
    rows = read_metrics(run / "metrics.csv")
    logged = [float(r["val/AP"]) for r in rows if r.get("val/AP")]
    assert len(logged) >= 2 and all(0.0 <= ap <= 1.0 for ap in logged)
    assert {"train/cls", "train/box", "train/loss", "val/AP50", "val/APs"} <= set(rows[0])
    best_score = float(cli.trainer.checkpoint_callback.best_model_score)
    assert result.stats["AP"] == pytest.approx(best_score, abs=1e-6)
    printed = capsys.readouterr().out
    assert printed.count("Average Precision") == 6 and printed.count("Average Recall") == 6

    results_path = tmp_path / "eval_results.json"
    evaluation = evaluate(["--checkpoint", str(run / "checkpoints" / "best.ckpt"), "--results", str(results_path),
                           "--data.num_workers", "0"])
    assert evaluation.stats["AP"] == pytest.approx(best_score, abs=1e-6)
    detections = json.loads(results_path.read_text())
    assert len(detections) == evaluation.num_detections and evaluation.num_images == 8
    assert {"image_id", "category_id", "bbox", "score"} == set(detections[0])
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in capsys.readouterr().out


def test_eval_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="missing.ckpt"):
        evaluate(["--checkpoint", str(tmp_path / "missing.ckpt")])
