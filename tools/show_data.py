"""Look at a config's data before training: a PNG grid of samples with their boxes and class names (the train
split augmented as training augments it, the val split resized only), and the split's statistics: images, boxes
per class, box sizes in input pixels, and how many ground truths no anchor of the model reaches at the positive
IoU threshold.

    python tools/show_data.py --config configs/retinanet_shapes.yaml [--split train|val] [--num 16]
        [--out runs/show_data_<config>_<split>.png] [--max-images N] [overrides such as --data.min_size 256]
"""
import argparse
import sys

from detkit.engine.show_data import EmptySplitError, show_data


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
    try:
        show_data(cli_args, split=options.split, num=options.num, out=options.out, max_images=options.max_images)
    except EmptySplitError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
