"""Print the foreground/background imbalance of a config's dense stage on the val split: RetinaNet's anchors,
or Faster R-CNN's RPN anchors and the share of positives its sampler keeps. What focal loss, the ignore band,
low-quality matches and sampling are there to fix, in numbers.

    python tools/imbalance_stats.py --config configs/retinanet_shapes.yaml [--num-images 500] [overrides]
"""
import argparse
import sys

from detkit.data.collate import padded_size
from detkit.engine.cli import DetectionCLI
from detkit.evaluation.imbalance import ImbalanceStats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=500)
    options, cli_args = parser.parse_known_args(sys.argv[1:])
    cli = DetectionCLI(run=False, args=cli_args + ["--trainer.logger=false"], save_config_callback=None)
    detector, dataset = cli.model.detector, cli.datamodule.val_dataset
    # RetinaNet is its own dense stage; Faster R-CNN's is its RPN
    setup = next(m for m in detector.modules() if hasattr(m, "imbalance_setup")).imbalance_setup()
    dense, sampler = setup["stage"], setup["sampler"]
    stats = ImbalanceStats(num_classes=setup["num_classes"], prior=setup["prior"], focal_alpha=setup["focal_alpha"],
                           focal_gamma=setup["focal_gamma"])
    sampled_positive = sampled = 0
    for index in range(min(options.num_images, len(dataset))):
        image, target = dataset[index]
        height, width = padded_size(*image.shape[-2:], cli.datamodule.size_divisor)
        anchors = dense.image_anchors((height, width))  # (N, 4)
        matched = stats.add_image(anchors, target["boxes"], dense.matcher)  # (N,)
        if sampler is not None:
            positive, negative = (masks[0] for masks in sampler([matched]))
            sampled_positive += int(positive.sum())
            sampled += int(positive.sum() + negative.sum())
    rows = stats.rows()
    if sampler is not None:
        rows += [(f"{setup['name']} anchors sampled per image", f"{sampled / max(stats.images, 1):.0f}"),
                 ("  positive share of the sampled", f"{100 * sampled_positive / max(sampled, 1):.1f}%")]
    width = max(len(name) for name, _ in rows)
    print(f"{setup['name']} anchors on the val split, {dense.matcher}:")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
