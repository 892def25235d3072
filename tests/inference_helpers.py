"""Checkpoints for the prediction tests: a perfect predictor's (exact boxes, no weights) in a run folder, a tiny
trained RetinaNet's, and their configs with detector settings edited."""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import yaml
from nonsquare_data import ColourBoxFinder, write_dataset

from detkit.data import DetectionDataModule
from detkit.engine.cli import train
from detkit.engine.module import DetectionModule

REPO = Path(__file__).resolve().parents[1]


def data_paths(root: Path) -> dict:
    """The four DetectionDataModule paths of a ``nonsquare_data.write_dataset`` folder."""
    return {"train_images": str(root / "images"), "train_annotations": str(root / "instances_train.json"),
            "val_images": str(root / "images"), "val_annotations": str(root / "instances_val.json")}


def save_perfect_checkpoint(run_dir: Path, min_size: int = 84, max_size: int = 130) -> tuple[Path, Path, dict]:
    """Write the non-square dataset to ``run_dir/data``, validate ``ColourBoxFinder`` on it with a plain Trainer and
    save ``run_dir/checkpoints/perfect.ckpt`` plus the run's ``config.yaml`` (JSON is YAML) beside ``checkpoints/``.

    Returns (checkpoint, config, the dataset's COCO dict). The checkpoint records the classes but no config (no CLI).
    """
    data = write_dataset(run_dir / "data")
    paths = data_paths(run_dir / "data")
    datamodule = DetectionDataModule(**paths, val_batch_size=5, min_size=min_size, max_size=max_size)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(DetectionModule(ColourBoxFinder()), datamodule=datamodule, verbose=False)
    checkpoint = run_dir / "checkpoints" / "perfect.ckpt"
    trainer.save_checkpoint(checkpoint)
    config = run_dir / "config.yaml"
    config.write_text(json.dumps({"model": {"detector": {"class_path": "nonsquare_data.ColourBoxFinder"}},
                                  "data": {**paths, "min_size": min_size, "max_size": max_size}}))
    return checkpoint, config, data


def train_tiny_retinanet(root: Path) -> Path:
    """Train a tiny RetinaNet (16 pyramid channels, head depth 1) one epoch of 3 steps on the non-square dataset
    written to ``root/train_data``, resized to 128 px, logging under ``root/runs``; returns the best checkpoint.

    Its config keeps every box (``inference.score_threshold`` 0.0): an untrained model scores everything low.
    """
    write_dataset(root / "train_data")
    paths = [arg for key, value in data_paths(root / "train_data").items() for arg in (f"--data.{key}", value)]
    run = train(["--config", str(REPO / "configs" / "retinanet_shapes.yaml"), *paths, "--data.builtin", "null",
                    "--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir", str(root / "runs"),
                    "--trainer.max_epochs", "1", "--trainer.max_time", "null", "--budget.minutes", "null",
                    "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false",
                    "--trainer.enable_model_summary", "false", "--data.batch_size", "2", "--data.val_batch_size", "5",
                    "--model.warmup_steps", "1", "--model.detector.init_args.fpn.channels", "16",
                    "--model.detector.init_args.head.depth", "1", "--anchors.enabled", "false",
                    "--model.detector.init_args.inference.score_threshold", "0.0"])
    cli = run.cli
    return Path(cli.trainer.checkpoint_callback.best_model_path)


def edited_config(config: Path, out: Path, **init_args) -> Path:
    """Write to ``out`` the YAML ``config`` with detector arguments replaced (a dict value updates that setting
    group, e.g. ``inference={"nms_threshold": 0.3}``); returns ``out``."""
    values = yaml.safe_load(config.read_text())
    detector = values["model"]["detector"]["init_args"]
    for key, value in init_args.items():
        detector[key] = {**detector[key], **value} if isinstance(value, dict) else value
    out.write_text(yaml.safe_dump(values))
    return out
