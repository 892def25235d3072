"""Per-class precision-recall curves read from COCOeval's own accumulated arrays (no recomputation)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from detkit.evaluation.coco import iou_threshold_index

PR_IOU_THRESHOLDS = (0.5, 0.75)


def pr_curve_data(coco_eval, category_ids: Sequence[int],
                  iou_thresholds: Sequence[float] = PR_IOU_THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """COCO's interpolated precision at its 101 recall points, area "all", the largest maxDets.

    Args:
        coco_eval: a COCOeval (either backend) after ``evaluate()`` and ``accumulate()``.
        category_ids: the COCO category id of each training label, in label order (K ids).
        iou_thresholds: IoU thresholds to read (T of COCOeval's 0.50:0.05:0.95).

    Returns:
        recall (R,) float64, COCOeval's ``params.recThrs``, and precision (T, K, R) float64: the slice
        ``eval["precision"][t, :, k, area_all, -1]`` with COCO's -1 (class without ground truth) as nan.
        Each curve's mean is COCO's AP of that class at that IoU.
    """
    params = coco_eval.params
    precision = coco_eval.eval["precision"]  # (T_all, R, K_eval, A, M)
    area = params.areaRngLbl.index("all")
    ious = [iou_threshold_index(params, t) for t in iou_thresholds]
    classes = [list(params.catIds).index(c) for c in category_ids]
    curves = precision[ious][:, :, classes, area, -1].transpose(0, 2, 1).astype(np.float64)  # (T, K, R)
    curves[curves == -1] = np.nan
    return np.asarray(params.recThrs, dtype=np.float64), curves
