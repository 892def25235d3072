"""model.init_from: tensors of matching name and shape load, class layers of other classes keep the fresh init
(RetinaNet's prior bias), the anchors stay the config's, bad files are named, and a resume does not reload."""
import math
from pathlib import Path

import pytest
import torch
from shapes_data import data_args

from detkit.engine.cli import train
from detkit.engine.init_from import InitFromError, load_matching_weights
from detkit.inference.checkpoint import METADATA_KEY
from detkit.models import FasterRCNN, RetinaNet
from detkit.models.settings import OCTAVE_SCALES, Anchors, Backbone, DenseHead, Pyramid

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = {"backbone": Backbone(name="tiny", norm="bn", trainable_layers=5), "fpn": Pyramid(3, 16, 0)}


def retinanet(num_classes: int, sizes=(10, 20, 40)) -> RetinaNet:
    return RetinaNet(num_classes=num_classes, anchors=Anchors(sizes=sizes), **TINY)


def save_checkpoint(detector, path: Path, class_names: list[str]) -> Path:
    """A checkpoint as training writes it: the detector's tensors under ``detector.``, the classes recorded."""
    state = {f"detector.{key}": value for key, value in detector.state_dict().items()}
    metadata = {"config": None, "class_names": class_names, "category_ids": list(range(1, len(class_names) + 1))}
    torch.save({"state_dict": state, METADATA_KEY: metadata}, path)
    return path


def test_matching_tensors_load_and_other_classes_start_fresh(tmp_path):
    torch.manual_seed(0)
    source = retinanet(5, sizes=(12, 24, 48))
    with torch.no_grad():
        source.head.cls_logits.bias.fill_(3.0)
    path = save_checkpoint(source, tmp_path / "source.ckpt", [f"c{i}" for i in range(5)])
    target = retinanet(3)
    report = load_matching_weights(target, str(path), ["circle", "square", "triangle"])

    for key, value in target.state_dict().items():
        if key.startswith("head.cls_logits"):  # 9 anchors x 5 classes in the file, x 3 here
            assert value.shape != source.state_dict()[key].shape
        elif key.startswith("dense."):  # anchors: the run's config's
            continue
        else:
            torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0)
    prior_bias = -math.log((1 - 0.01) / 0.01)
    torch.testing.assert_close(target.head.cls_logits.bias, torch.full((9,), prior_bias))
    assert target.dense.base_sizes.tolist() == [10, 20, 40]
    assert sorted(report.reinitialised) == ["head.cls_logits.bias (15,) -> (9,)",
                                            "head.cls_logits.weight (15, 16, 3, 3) -> (9, 16, 3, 3)"]
    assert len(report.loaded) == len(target.state_dict()) - 2 - len(report.anchors) and not report.left_out
    assert "class layers start fresh" in report.summary() and "loaded: " in report.summary()


def test_faster_rcnn_class_layers_reinitialised_rest_loaded(tmp_path):
    source = FasterRCNN(num_classes=4, fpn=Pyramid(2, 16, 1), backbone=TINY["backbone"])
    path = save_checkpoint(source, tmp_path / "source.ckpt", list("abcd"))
    target = FasterRCNN(num_classes=2, fpn=Pyramid(2, 16, 1), backbone=TINY["backbone"])
    fresh_cls = target.roi_heads.predictor.cls_score.weight.clone()
    report = load_matching_weights(target, str(path))
    assert sorted(key.split(" ")[0] for key in report.reinitialised) == [
        "roi_heads.predictor.bbox_pred.bias", "roi_heads.predictor.bbox_pred.weight",
        "roi_heads.predictor.cls_score.bias", "roi_heads.predictor.cls_score.weight"]
    torch.testing.assert_close(target.roi_heads.predictor.cls_score.weight, fresh_cls, rtol=0, atol=0)
    torch.testing.assert_close(target.roi_heads.box_head.fc6.weight, source.roi_heads.box_head.fc6.weight)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(InitFromError, match=r"model.init_from: checkpoint not found: .*missing.ckpt"):
        load_matching_weights(retinanet(3), str(tmp_path / "missing.ckpt"))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(save_checkpoint(retinanet(3), tmp_path / "whole.ckpt", list("abc")).read_bytes()[:5000])
    with pytest.raises(InitFromError, match=r"truncated.ckpt: cannot be read .* truncated or corrupt"):
        load_matching_weights(retinanet(3), str(truncated))
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"detector.trunk.conv.weight": torch.zeros(3)}, METADATA_KEY: {}}, other)
    with pytest.raises(InitFromError, match=r"other.ckpt: no tensor matches this detector \(RetinaNet\)"):
        load_matching_weights(retinanet(3), str(other))


def shapes_training(root: Path, save_dir: Path, *extra: str) -> list[str]:
    return ["--config", str(CONFIGS / "retinanet_shapes.yaml"), *data_args(root), "--data.batch_size", "4",
            "--data.min_size", "64", "--data.max_size", "64", "--model.detector.init_args.fpn.channels", "16",
            "--budget.minutes", "null", "--trainer.max_epochs", "null", "--trainer.max_steps", "2",
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false", "--anchors.enabled", "false",
            "--trainer.logger.init_args.save_dir", str(save_dir), *extra]


def test_training_loads_it_once_and_a_resume_does_not(shapes_root, tmp_path, capsys, one_thread):
    torch.manual_seed(1)
    like_the_config = RetinaNet(num_classes=7, anchors=Anchors(sizes=(10, 20, 40), scales=OCTAVE_SCALES),
                                head=DenseHead(depth=2, norm="gn"), **TINY)  # retinanet_shapes, 16 channels
    init = save_checkpoint(like_the_config, tmp_path / "init.ckpt", [f"c{i}" for i in range(7)])
    train(shapes_training(shapes_root, tmp_path / "runs", "--model.init_from", str(init)))
    printed = capsys.readouterr().out
    assert f"model.init_from {init}:" in printed and "re-initialised (other shape in the file): 2" in printed
    assert "initialised fresh (not in the file): 0" in printed
    assert "left out (the file's, unknown to this detector): 0" in printed
    trained = torch.load(tmp_path / "runs" / "retinanet_shapes" / "version_0" / "checkpoints" / "last.ckpt",
                         weights_only=True)["state_dict"]["detector.backbone.fpn.output.0.weight"]
    torch.testing.assert_close(trained, like_the_config.backbone.fpn.output[0].weight, atol=1e-4, rtol=0)  # 2 steps
    init.unlink()  # the same command resumed needs its own checkpoint only
    train(shapes_training(shapes_root, tmp_path / "runs", "--model.init_from", str(init), "--trainer.max_steps", "3",
                          "--resume", "last"))
    assert "model.init_from" not in capsys.readouterr().out


def test_training_with_a_bad_init_file_exits_naming_it(shapes_root, tmp_path):
    with pytest.raises(SystemExit, match=r"error: model.init_from: checkpoint not found: .*nowhere.ckpt"):
        train(shapes_training(shapes_root, tmp_path / "runs", "--model.init_from", str(tmp_path / "nowhere.ckpt")))
