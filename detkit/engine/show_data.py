"""A config's data before training (``tools/show_data.py``): a PNG grid of samples with their boxes and class names
(the train split augmented as training augments it, the val split resized only), and the split's statistics
(``detkit.engine.data_report``): images, boxes per class, box sizes in input pixels, and the ground truths no
anchor of the model reaches at the positive IoU threshold."""
from __future__ import annotations

import os

from detkit.data.datamodule import evenly_spread
from detkit.drawing.boxes import save_sample_grid
from detkit.engine.anchor_check import AnchorCheck
from detkit.engine.cli import DetectionCLI
from detkit.engine.data_report import data_report


class EmptySplitError(ValueError):
    """The split to draw has no image."""


def default_grid_path(cli: DetectionCLI, split: str) -> str:
    """runs/show_data_<name of the last --config given>_<split>.png"""
    configs = cli.config.get("config") or ["data"]
    config_name = os.path.splitext(os.path.basename(str(configs[-1])))[0]
    return os.path.join("runs", f"show_data_{config_name}_{split}.png")


def show_data(cli_args: list[str], *, split: str = "train", num: int = 16, out: str | None = None,
              max_images: int | None = None) -> str:
    """Print the statistics of ``split`` of the config that ``cli_args`` (``tools/train.py``'s arguments) give,
    over ``max_images`` images evenly spread (None: all), then draw ``num`` samples evenly spread into the PNG
    ``out`` (default ``default_grid_path``) and print where; returns that path. EmptySplitError when the split
    has no image."""
    cli = DetectionCLI(run=False, args=[*cli_args, "--trainer.logger=false"], save_config_callback=None)
    datamodule = cli.datamodule
    datamodule.prepare_data()  # the built-in dataset is generated on first use, as training does
    check = next(c for c in cli.trainer.callbacks if isinstance(c, AnchorCheck))
    print(data_report(datamodule, cli.model.detector, split, max_images, check.max_images).text(datamodule.class_names))
    dataset = datamodule.dataset(split)
    if len(dataset) == 0:
        raise EmptySplitError(f"the {split} split ({dataset.annotation_file}) has no images to draw")
    out = out or default_grid_path(cli, split)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    grid = save_sample_grid(dataset, evenly_spread(len(dataset), num), out, datamodule.class_names)
    print(f"\n{min(num, len(dataset))} {split} samples "
          f"({'augmented as in training' if split == 'train' else 'resized only'}) drawn in {out} "
          f"({grid.width}x{grid.height} px)")
    return out
