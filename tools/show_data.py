"""Look at a config's data before training: a PNG grid of samples with their boxes and class names (the train
split augmented as training augments it, the val split resized only), and the split's statistics: images, boxes
per class, box sizes in input pixels, and how many ground truths no anchor of the model reaches at the positive
IoU threshold.

    python tools/show_data.py --config configs/retinanet_shapes.yaml [--split train|val] [--num 16]
        [--out runs/show_data_<config>_<split>.png] [--max-images N] [overrides such as --data.min_size 256]
"""
import argparse
import os
import sys

from detkit.data.datamodule import evenly_spread
from detkit.engine.anchor_check import AnchorCheck
from detkit.engine.cli import DetectionCLI
from detkit.engine.data_report import data_report
from detkit.visualize import save_sample_grid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--num", type=int, default=16, help="samples drawn, evenly spread over the split")
    parser.add_argument("--out", help="PNG path (default: runs/show_data_<config name>_<split>.png)")
    parser.add_argument("--max-images", type=int, help="statistics on this many images, evenly spread (default: all)")
    options, cli_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    for name, value in (("--num", options.num), ("--max-images", options.max_images)):
        if value is not None and value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    cli = DetectionCLI(run=False, args=cli_args + ["--trainer.logger=false"], save_config_callback=None)
    datamodule = cli.datamodule
    datamodule.prepare_data()  # the built-in dataset is generated on first use, as training does
    check = next(c for c in cli.trainer.callbacks if isinstance(c, AnchorCheck))
    report = data_report(datamodule, cli.model.detector, options.split, options.max_images, check.max_images)
    print(report.text(datamodule.class_names))

    configs = cli.config.get("config") or ["data"]
    config_name = os.path.splitext(os.path.basename(str(configs[-1])))[0]  # the last --config given
    out = options.out or os.path.join("runs", f"show_data_{config_name}_{options.split}.png")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    dataset = datamodule.dataset(options.split)
    if len(dataset) == 0:
        raise SystemExit(f"error: the {options.split} split ({dataset.annotation_file}) has no images to draw")
    grid = save_sample_grid(dataset, evenly_spread(len(dataset), options.num), out, datamodule.class_names)
    print(f"\n{min(options.num, len(dataset))} {options.split} samples "
          f"({'augmented as in training' if options.split == 'train' else 'resized only'}) drawn in {out} "
          f"({grid.width}x{grid.height} px)")


if __name__ == "__main__":
    main()
