"""Write the evaluation pictures of one COCO evaluation into a folder (beside its results JSON).

- ``pr_curves.png``: per class, COCO's precision-recall curves at IoU 0.5 and 0.75 (``pr_curve_data``).
- ``confusion_matrix.png``: ground-truth class x predicted class, with background for missed objects and
  false detections (``detkit.evaluation.matching`` states the matching rule).
- ``worst_images.png``: the images with the most missed + false boxes, ground truth and predictions drawn.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
from pycocotools.coco import COCO

from detkit.drawing.boxes import DISPLAY_SCORE_THRESHOLD
from detkit.drawing.evaluation import plot_confusion_matrix, plot_pr_curves, plot_worst_images
from detkit.evaluation.matching import MATCHING_RULE, confusion_counts, match_images, worst_images
from detkit.evaluation.pr_curves import PR_IOU_THRESHOLDS, pr_curve_data

PICTURE_NAMES = ("pr_curves.png", "confusion_matrix.png", "worst_images.png")


def pictures_folder(results_path: str) -> str:
    """The folder for the pictures of the evaluation whose results JSON is ``results_path``: ``<stem>_pictures``
    beside it, so that evaluations of several checkpoints in one folder keep their own pictures."""
    return os.path.splitext(os.fspath(results_path))[0] + "_pictures"


def write_evaluation_pictures(coco_eval, coco_gt: COCO, records: dict, category_ids: Sequence[int],
                              class_names: Sequence[str], load_image: Callable[[int], np.ndarray], folder: str,
                              score_threshold: float = DISPLAY_SCORE_THRESHOLD, iou_threshold: float = 0.5,
                              num_images: int = 8) -> list[str]:
    """Write the three ``PICTURE_NAMES`` into ``folder``; returns their paths.

    Args:
        coco_eval: the evaluation's COCOeval (either backend) after ``evaluate()`` and ``accumulate()``
            (``CocoEvaluator.last_cocoeval``).
        coco_gt: the ground truth (pycocotools ``COCO``, crowd annotations kept).
        records: the evaluated detections, image id -> ``ImageDetections`` (boxes (D, 4) xyxy original
            pixels, scores (D,), labels (D,) training labels) (``CocoEvaluator.last_records``).
        category_ids: COCO category id of each training label (K ids); class_names: K display names.
        load_image: image id -> the original image (H, W, 3) uint8 RGB, for the gallery.
        score_threshold, iou_threshold: the confusion matrix's and gallery's matching (``MATCHING_RULE``).
        num_images: how many images the gallery shows at most.
    """
    paths = [os.path.join(folder, name) for name in PICTURE_NAMES]
    recall, precision = pr_curve_data(coco_eval, category_ids)
    plot_pr_curves(recall, precision, PR_IOU_THRESHOLDS, class_names, paths[0])
    matches = match_images(coco_gt, records, category_ids, score_threshold, iou_threshold)
    rule = MATCHING_RULE.format(score=score_threshold, iou=iou_threshold)
    plot_confusion_matrix(confusion_counts(matches, len(category_ids)), class_names, rule, paths[1])
    plot_worst_images(worst_images(matches, num_images), load_image, class_names, rule, paths[2])
    return paths
