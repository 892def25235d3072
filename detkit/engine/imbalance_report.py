"""The foreground/background imbalance of a config's dense stage on its val split, in numbers: RetinaNet's anchors,
or Faster R-CNN's RPN anchors and the share of positives its sampler keeps (``tools/imbalance_stats.py``). What
focal loss, the ignore band, low-quality matches and sampling are there to fix."""
from __future__ import annotations

import torch
from torch import nn

from detkit.data.collate import padded_size
from detkit.engine.cli import DetectionCLI
from detkit.evaluation.imbalance import ImbalanceStats


def dense_stage_setups(detector: nn.Module) -> list[dict]:
    """``imbalance_setup()`` of each dense stage of ``detector`` (RetinaNet itself; Faster R-CNN's RPN): its name,
    ``stage`` (the ``DenseAnchorStage``), loss at the start (``num_classes``, ``prior``, ``focal_alpha``,
    ``focal_gamma``) and ``sampler`` (None without one)."""
    return [module.imbalance_setup() for module in detector.modules() if hasattr(module, "imbalance_setup")]


def sampled_anchors(sampler, matched: torch.Tensor) -> tuple[int, int]:
    """(positive, all) anchors the sampler keeps of one image's matches (N,) int64 (Matcher encoding)."""
    positive, negative = (masks[0] for masks in sampler([matched]))
    return int(positive.sum()), int(positive.sum() + negative.sum())


def imbalance_report(cli_args: list[str], num_images: int = 500) -> str:
    """The table of the first dense stage of the config that ``cli_args`` (``tools/train.py``'s arguments) give,
    over up to ``num_images`` images of its val split, as printed lines."""
    cli = DetectionCLI(run=False, args=[*cli_args, "--trainer.logger=false"], save_config_callback=None)
    setup = dense_stage_setups(cli.model.detector)[0]
    dense, sampler, dataset = setup["stage"], setup["sampler"], cli.datamodule.val_dataset
    stats = ImbalanceStats(num_classes=setup["num_classes"], prior=setup["prior"], focal_alpha=setup["focal_alpha"],
                           focal_gamma=setup["focal_gamma"])
    sampled_positive = sampled = 0
    for index in range(min(num_images, len(dataset))):
        image, target = dataset[index]
        anchors = dense.image_anchors(padded_size(*image.shape[-2:], cli.datamodule.size_divisor))  # (N, 4)
        matched = stats.add_image(anchors, target["boxes"], dense.matcher)  # (N,)
        if sampler is not None:
            positive, kept = sampled_anchors(sampler, matched)
            sampled_positive, sampled = sampled_positive + positive, sampled + kept
    rows = stats.rows()
    if sampler is not None:
        rows += [(f"{setup['name']} anchors sampled per image", f"{sampled / max(stats.images, 1):.0f}"),
                 ("  positive share of the sampled", f"{100 * sampled_positive / max(sampled, 1):.1f}%")]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"{setup['name']} anchors on the val split, {dense.matcher}:",
                      *(f"  {name:<{width}}  {value}" for name, value in rows)])
