"""One image's ground truth with the anchors of configs' dense stages as their matchers see them, side by side
(``tools/show_anchors.py``): RetinaNet's anchors, Faster R-CNN's RPN anchors. The image is resized as the model
gets it, without augmentation; anchors set to "auto" are fitted first, as training fits them.

Boxes: (M, 4) float32 xyxy input pixels (after the resize).
"""
from __future__ import annotations

import os

import torch
from PIL import Image

from detkit.data.coco import CocoDetection
from detkit.data.collate import padded_size
from detkit.data.transforms import build_transforms
from detkit.drawing.anchors import anchor_view, draw_anchor_view
from detkit.drawing.boxes import TILE_SIDE, image_grid
from detkit.engine.anchor_check import AnchorCheck, dense_stages, fit_auto_anchors
from detkit.engine.cli import DetectionCLI
from detkit.engine.imbalance_report import dense_stage_setups


def resized_item(datamodule, split: str, index: int) -> tuple[torch.Tensor, dict]:
    """(image (3, H, W) float in [0, 1], target with ``boxes`` (M, 4)) of item ``index`` of the split, resized only
    (the val pipeline); IndexError naming the split's range."""
    images, annotations = ((datamodule.train_images, datamodule.train_annotations) if split == "train" else
                           (datamodule.val_images, datamodule.val_annotations))
    dataset = CocoDetection(images, annotations, transforms=build_transforms(False, datamodule.min_size,
                                                                             datamodule.max_size))
    if not 0 <= index < len(dataset):
        raise IndexError(f"the {split} split ({annotations}) has images 0..{len(dataset) - 1}")
    return dataset[index]


def config_tiles(config: str, overrides: list[str], *, split: str, image_index: int, num_background: int
                 ) -> list[Image.Image]:
    """The picture of each dense stage of ``config``'s detector on the chosen image; each title is printed."""
    cli = DetectionCLI(run=False, args=["--config", config, *overrides, "--trainer.logger=false"],
                       save_config_callback=None)
    datamodule, detector = cli.datamodule, cli.model.detector
    datamodule.prepare_data()  # the built-in dataset is generated on first use, as training does
    if any(stage.needs_fit for _, stage in dense_stages(detector)):
        check = next(c for c in cli.trainer.callbacks if isinstance(c, AnchorCheck))
        fit_auto_anchors(dense_stages(detector), *datamodule.input_boxes(check.max_images))
    image, target = resized_item(datamodule, split, image_index)
    size = padded_size(*image.shape[-2:], datamodule.size_divisor)
    upscale = max(1, round(2 * TILE_SIDE / max(image.shape[-2:])))
    tiles = []
    for setup in dense_stage_setups(detector):
        view = anchor_view(f"{os.path.basename(config)}, {setup['name']}", setup["stage"], size, target["boxes"],
                           num_background, sampler=setup["sampler"])
        print("\n".join(view.title) + f"; {len(target['boxes'])} objects, image id {target['image_id']}")
        tiles.append(draw_anchor_view(image, target["boxes"], target["labels"], datamodule.class_names, view, upscale))
    return tiles


def bottom_aligned(tile: Image.Image, height: int) -> Image.Image:
    """``tile`` at the bottom of a white picture ``height`` px high: images side by side line up under titles of
    different lengths."""
    framed = Image.new("RGB", (tile.width, height), "white")
    framed.paste(tile, (0, height - tile.height))
    return framed


def default_picture_path(configs: list[str], split: str, image_index: int) -> str:
    """runs/show_anchors_<config names>_<split>_<image>.png"""
    names = "_".join(os.path.splitext(os.path.basename(config))[0] for config in configs)
    return os.path.join("runs", f"show_anchors_{names}_{split}_{image_index}.png")


def show_anchors(configs: list[str], overrides: list[str], *, split: str = "train", image_index: int = 0,
                 num_background: int = 30, out: str | None = None) -> str:
    """Draw the tiles of every config (``overrides`` apply to each) in one row, save the PNG to ``out`` (default
    ``default_picture_path``), print where; returns that path."""
    tiles = [tile for config in configs for tile in config_tiles(
        config, overrides, split=split, image_index=image_index, num_background=num_background)]
    out = out or default_picture_path(configs, split, image_index)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    grid = image_grid([bottom_aligned(tile, max(t.height for t in tiles)) for tile in tiles], columns=len(tiles))
    grid.save(out)
    print(f"drawn in {out} ({grid.width}x{grid.height} px)")
    return out
