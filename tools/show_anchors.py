"""Draw one image's ground truth with the anchors of a config's dense stage as its matcher sees them: the positive
and the ignored anchors and a sample of the background ones, with the counts and a legend. RetinaNet's anchors,
Faster R-CNN's RPN anchors; give several configs to see them side by side. The image is resized as the model
gets it, without augmentation; anchors set to "auto" are fitted first, as training fits them.

    python tools/show_anchors.py --config configs/retinanet_shapes.yaml [--config configs/faster_rcnn_shapes.yaml]
        [--image 0] [--split train|val] [--num-background 30] [--out PNG] [overrides for every config]
"""
import argparse
import os
import sys

from PIL import Image

from detkit.anchor_picture import anchor_view, draw_anchor_view
from detkit.data.coco import CocoDetection
from detkit.data.collate import padded_size
from detkit.data.transforms import build_transforms
from detkit.engine.anchor_check import AnchorCheck, dense_stages, fit_auto_anchors
from detkit.engine.cli import DetectionCLI
from detkit.visualize import TILE_SIDE, image_grid


def resized_item(datamodule, split: str, index: int):
    """(image (3, H, W), target) of item ``index`` of the split, resized only (the val pipeline)."""
    images, annotations = ((datamodule.train_images, datamodule.train_annotations) if split == "train" else
                           (datamodule.val_images, datamodule.val_annotations))
    resize_only = build_transforms(False, datamodule.min_size, datamodule.max_size, resize=datamodule.resize)
    dataset = CocoDetection(images, annotations, transforms=resize_only)
    if not 0 <= index < len(dataset):
        raise SystemExit(f"error: --image {index}: the {split} split ({annotations}) has images 0..{len(dataset) - 1}")
    return dataset[index]


def config_tiles(config: str, overrides: list[str], options) -> list:
    """The picture of each dense stage of ``config``'s detector on the chosen image, its title printed."""
    cli = DetectionCLI(run=False, args=["--config", config, *overrides, "--trainer.logger=false"],
                       save_config_callback=None)
    datamodule, detector = cli.datamodule, cli.model.detector
    datamodule.prepare_data()  # the built-in dataset is generated on first use, as training does
    if any(stage.needs_fit for _, stage in dense_stages(detector)):
        check = next(c for c in cli.trainer.callbacks if isinstance(c, AnchorCheck))
        fit_auto_anchors(dense_stages(detector), *datamodule.input_boxes(check.max_images))
    image, target = resized_item(datamodule, options.split, options.image)
    size = padded_size(*image.shape[-2:], datamodule.size_divisor)
    upscale = max(1, round(2 * TILE_SIDE / max(image.shape[-2:])))
    tiles = []
    for module in (m for m in detector.modules() if hasattr(m, "imbalance_setup")):  # RetinaNet itself; the RPN
        setup = module.imbalance_setup()
        view = anchor_view(f"{os.path.basename(config)}, {setup['name']}", setup["stage"], size, target["boxes"],
                           options.num_background, sampler=setup["sampler"])
        print("\n".join(view.title) + f"; {len(target['boxes'])} objects, image id {target['image_id']}")
        tiles.append(draw_anchor_view(image, target["boxes"], target["labels"], datamodule.class_names, view, upscale))
    return tiles


def bottom_aligned(tile: Image.Image, height: int) -> Image.Image:
    """``tile`` at the bottom of a white picture ``height`` px high: images side by side line up under titles of
    different lengths."""
    framed = Image.new("RGB", (tile.width, height), "white")
    framed.paste(tile, (0, height - tile.height))
    return framed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--config", action="append", required=True, help="a config; give several to compare them")
    parser.add_argument("--image", type=int, default=0, help="index of the image in the split (default 0)")
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--num-background", type=int, default=30, help="background anchors drawn (default 30)")
    parser.add_argument("--out", help="PNG path (default: runs/show_anchors_<configs>_<split>_<image>.png)")
    options, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if options.num_background < 0:
        parser.error(f"--num-background must be >= 0, got {options.num_background}")
    tiles = [tile for config in options.config for tile in config_tiles(config, overrides, options)]
    names = "_".join(os.path.splitext(os.path.basename(config))[0] for config in options.config)
    out = options.out or os.path.join("runs", f"show_anchors_{names}_{options.split}_{options.image}.png")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    grid = image_grid([bottom_aligned(tile, max(t.height for t in tiles)) for tile in tiles], columns=len(tiles))
    grid.save(out)
    print(f"drawn in {out} ({grid.width}x{grid.height} px)")


if __name__ == "__main__":
    main()
