"""Checkpoints for the prediction tests: a perfect predictor's (exact boxes, no weights) in a run folder."""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from detkit.data import DetectionDataModule
from detkit.engine.module import DetectionModule
from nonsquare_data import ColourBoxFinder, write_dataset


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
