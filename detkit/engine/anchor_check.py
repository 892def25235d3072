"""Before training: fit the anchors a config marks "auto", then report how well every dense stage's anchors
cover the training boxes, per class and per size, and warn when they do not fit."""
from __future__ import annotations

import warnings

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from detkit.models.anchor_fit import anchor_coverage, fit_anchors
from detkit.models.dense import DenseAnchorStage

# which config keys set each stage's anchors and thresholds, by the stage's place in the detector
KEYS = {
    "dense": ("anchor_sizes / anchor_scales / aspect_ratios", "fg_iou_threshold / bg_iou_threshold"),
    "rpn.dense": ("anchor_sizes / anchor_scales / aspect_ratios", "rpn_fg_iou_threshold / rpn_bg_iou_threshold"),
}


class AnchorCheck(L.Callback):
    """At the start of ``fit``: anchor fitting (stages with ``needs_fit``) and the coverage report.

    Args:
        enabled: run the check (fitting happens whenever a stage needs it, even when disabled).
        max_images: training images looked at (evenly spread over the split).
        warn_above: warn when more than this share of the ground truths has no anchor with IoU at least the
            background threshold: those objects have no anchor that resembles them.
    """

    def __init__(self, enabled: bool = True, max_images: int = 1000, warn_above: float = 0.1):
        self.enabled, self.max_images, self.warn_above = enabled, max_images, warn_above
        self.reports: dict[str, object] = {}  # stage name -> Coverage, for tools and tests

    def on_fit_start(self, trainer, pl_module) -> None:
        stages = dense_stages(pl_module.detector)
        if not stages or not (self.enabled or any(stage.needs_fit for _, stage in stages)):
            return
        datamodule = trainer.datamodule
        sizes, boxes, labels = datamodule.input_boxes(self.max_images)
        fit_auto_anchors(stages, sizes, boxes, labels)
        if self.enabled:
            for name, stage in stages:
                self._report(name, stage, sizes, boxes, labels, datamodule.class_names)

    def _report(self, name, stage, sizes, boxes, labels, class_names) -> None:
        coverage = anchor_coverage(stage, sizes, boxes, labels)
        self.reports[name] = coverage
        _print(f"anchor coverage of {name} ({stage.matcher}) on {len(sizes)} training images, "
               f"input size as trained, no augmentation:\n{coverage.table(class_names)}")
        if coverage.poor_share > self.warn_above:
            anchor_keys, threshold_keys = KEYS.get(name, KEYS["dense"])
            change = ("the fitted anchors cannot reach them: change the pyramid levels (model.detector.init_args."
                      "min_level / num_extra_levels), " if stage.fit_sizes else
                      "set model.detector.init_args.anchor_sizes (and aspect_ratios) to 'auto', or change "
                      f"model.detector.init_args.{anchor_keys}, ")
            warnings.warn(
                f"{100 * coverage.poor_share:.0f}% of the training objects have no anchor of {name} with IoU >= "
                f"{stage.matcher.low_threshold:g}: the anchors do not fit the objects. To fix it, {change}"
                f"the input size (data.min_size / data.max_size) or model.detector.init_args.{threshold_keys}.",
                stacklevel=2)


def dense_stages(detector) -> list[tuple[str, DenseAnchorStage]]:
    """(name, stage) of every dense-anchor stage of a detector: RetinaNet's "dense", Faster R-CNN's "rpn.dense"."""
    return [(name, module) for name, module in detector.named_modules() if isinstance(module, DenseAnchorStage)]


def fit_auto_anchors(stages: list[tuple[str, DenseAnchorStage]], sizes: list[tuple[int, int]],
                     boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> None:
    """Fit and set the anchors of the stages that a config marks "auto" (``needs_fit``), printing them.

    Args: per training image the padded input size (h, w), boxes (M, 4) xyxy input pixels and labels (M,) int64.
    """
    for name, stage in stages:
        if stage.needs_fit:
            anchor_sizes, ratios = fit_anchors(stage, sizes, boxes, labels)
            stage.set_anchors(anchor_sizes, ratios)
            _print(f"anchors fitted to {len(sizes)} training images for {name}: sizes per level "
                   f"{[list(level) for level in anchor_sizes]} px, aspect ratios {list(ratios)} "
                   "(kept in the checkpoint)")


@rank_zero_only
def _print(message: str) -> None:
    print(message, flush=True)
