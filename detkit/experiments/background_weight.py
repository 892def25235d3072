"""The background weight that makes plain BCE put as much of RetinaNet's initial classification loss on background
anchors as focal loss does: the "down-weight the background" alternative to focal loss, at a matched start.

With every score at the head's initial prior, background anchors carry B and foreground anchors F of the summed
BCE loss, a share s_bce = B / (B + F) (``ImbalanceStats.background_loss_share``). Weighting background by w gives
w B / (w B + F), which equals focal loss's share s_focal for w = odds(s_focal) / odds(s_bce), odds(s) = s / (1 - s).
"""
from __future__ import annotations

from detkit.evaluation.imbalance import ImbalanceStats
from detkit.experiments.config_values import built_config


def weight_for_share(bce_share: float, target_share: float) -> float:
    """w > 0 such that BCE with background weighted by w gives background ``target_share`` of the loss, where
    unweighted BCE gives it ``bce_share`` (both shares in (0, 1))."""
    for name, share in (("bce_share", bce_share), ("target_share", target_share)):
        if not 0.0 < share < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {share}")
    return (target_share / (1.0 - target_share)) / (bce_share / (1.0 - bce_share))


def initial_imbalance(config: str, extra_args: tuple[str, ...]) -> tuple[ImbalanceStats, int]:
    """The ``ImbalanceStats`` of ``config``'s dense stage on its training boxes (unaugmented, the images the anchor
    check uses), with the focal parameters and initial prior of the config's head; and the number of images."""
    from detkit.engine.anchor_check import AnchorCheck, dense_stages, fit_auto_anchors
    from detkit.engine.imbalance_report import dense_stage_setups

    cli = built_config(config, tuple(extra_args))
    cli.datamodule.prepare_data()  # the built-in dataset is generated on first use, as training does
    check = next(c for c in cli.trainer.callbacks if isinstance(c, AnchorCheck))
    sizes, boxes, labels = cli.datamodule.input_boxes(check.max_images)
    fit_auto_anchors(dense_stages(cli.model.detector), sizes, boxes, labels)
    setup = dense_stage_setups(cli.model.detector)[0]
    stats = ImbalanceStats(num_classes=setup["num_classes"], prior=setup["prior"], focal_alpha=setup["focal_alpha"],
                           focal_gamma=setup["focal_gamma"])
    stage = setup["stage"]
    for size, image_boxes in zip(sizes, boxes):
        stats.add_image(stage.image_anchors(size), image_boxes, stage.matcher)
    return stats, len(sizes)


def matching_background_weight(config: str, extra_args: tuple[str, ...]) -> tuple[float, str]:
    """(background weight for plain BCE matching the background share of ``config``'s focal loss at the start,
    a sentence saying how it was computed)."""
    stats, images = initial_imbalance(config, extra_args)
    bce_share, focal_share = stats.background_loss_share(focal=False), stats.background_loss_share(focal=True)
    weight = weight_for_share(bce_share, focal_share)
    note = (f"background weight {weight:.4g}: on {images} training images ({stats.positive / images:.1f} positive, "
            f"{stats.background / images:.0f} background anchors per image), with every score at the head's "
            f"initial prior p = {stats.prior:g}, background anchors carry {100 * bce_share:.2f}% of the plain BCE loss "
            f"and {100 * focal_share:.2f}% of the focal loss (alpha {stats.focal_alpha:g}, gamma "
            f"{stats.focal_gamma:g}); weighting them by w = odds({focal_share:.4g}) / odds({bce_share:.4g}) gives BCE "
            f"that same {100 * focal_share:.2f}% (ImbalanceStats.background_loss_share)")
    return weight, note
