"""Print the foreground/background imbalance of a config's dense stage on the val split: RetinaNet's anchors,
or Faster R-CNN's RPN anchors and the share of positives its sampler keeps. What focal loss, the ignore band,
low-quality matches and sampling are there to fix, in numbers.

    python tools/imbalance_stats.py --config configs/retinanet_shapes.yaml [--num-images 500] [overrides]
"""
import argparse
import sys

from detkit.engine.imbalance_report import imbalance_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=500)
    options, cli_args = parser.parse_known_args(sys.argv[1:])
    print(imbalance_report(cli_args, options.num_images))


if __name__ == "__main__":
    main()
