"""Before training: fit the anchors a config marks "auto", then report how well every dense stage's anchors
cover the training boxes, per class and per size, and warn when they do not fit."""
from __future__ import annotations

import warnings

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from detkit.models.anchor_fit import anchor_coverage, fit_anchors
from detkit.models.dense import DenseAnchorStage
from detkit.models.settings import DETECTOR_KEY as DETECTOR

# which config group sets each stage's matching thresholds, by the stage's place in the detector
MATCHING_KEYS = {"dense": f"{DETECTOR}.matching", "rpn.dense": f"{DETECTOR}.rpn.matching"}


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
        print_once(f"anchor coverage of {name} ({stage.matcher}) on {len(sizes)} training images, "
               f"input size as trained, no augmentation:\n{coverage.table(class_names)}")
        if coverage.poor_share > self.warn_above:
            threshold_keys = MATCHING_KEYS.get(name, MATCHING_KEYS["dense"])
            change = (f"the fitted anchors cannot reach them: change the pyramid levels ({DETECTOR}.fpn.min_level / "
                      "extra_levels), " if stage.fit_sizes else
                      f"set {DETECTOR}.anchors.sizes (and aspect_ratios) to 'auto', or change {DETECTOR}.anchors "
                      "(sizes / scales / aspect_ratios), ")
            warnings.warn(
                f"{100 * coverage.poor_share:.0f}% of the training objects have no anchor of {name} with IoU >= "
                f"{stage.matcher.low_threshold:g}: the anchors do not fit the objects. To fix it, {change}"
                f"the input size (data.min_size / data.max_size) or {threshold_keys} "
                "(fg_iou_threshold / bg_iou_threshold).", stacklevel=2)


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
            base_sizes, ratios = fit_anchors(stage, sizes, boxes, labels)
            stage.set_anchors(base_sizes, ratios)
            per_level = [[round(size, 1) for size in level] for level in stage.anchor_sizes.tolist()]
            print_once(f"anchors fitted to {len(sizes)} training images for {name}: base sizes {list(base_sizes)} px "
                   f"(per level with the scales: {per_level}), aspect ratios {list(ratios)} (kept in the checkpoint)")


@rank_zero_only
def print_once(message: str) -> None:
    """Print on the first process only (every DDP rank runs the same start-up)."""
    print(message, flush=True)
