"""Draw one image's ground truth with the anchors of a config's dense stage as its matcher sees them: the positive
and the ignored anchors and a sample of the background ones, with the counts and a legend. RetinaNet's anchors,
Faster R-CNN's RPN anchors; give several configs to see them side by side. The image is resized as the model
gets it, without augmentation; anchors set to "auto" are fitted first, as training fits them.

    python tools/show_anchors.py --config configs/retinanet_shapes.yaml [--config configs/faster_rcnn_shapes.yaml]
        [--image 0] [--split train|val] [--num-background 30] [--out PNG] [overrides for every config]
"""
import argparse
import sys

from detkit.engine.show_anchors import show_anchors


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
    try:
        show_anchors(options.config, overrides, split=options.split, image_index=options.image,
                     num_background=options.num_background, out=options.out)
    except IndexError as error:
        raise SystemExit(f"error: --image {options.image}: {error}") from None


if __name__ == "__main__":
    main()
