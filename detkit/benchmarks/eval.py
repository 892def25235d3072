"""COCO evaluation with each backend on generated data: pycocotools (the reference), faster-coco-eval, hotcoco.

Every backend evaluates the same detections through ``CocoEvaluator.compute`` (results conversion, loadRes,
evaluate, accumulate, summarize: what every validation pays, less the results JSON). ``format_table`` gives one row
per backend: seconds, AP, AP50, and the largest difference from pycocotools over the 12 numbers and over the
per-class AP / AP50. The command line is ``tools/bench_eval.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from detkit.benchmarks.timing import timed
from detkit.evaluation import EVAL_BACKENDS, STAT_NAMES, CocoEvaluator, EvalResult, coco_from_dataset

IMAGE_SIZE = (480, 640)  # (h, w)


@dataclass
class Row:
    backend: str
    seconds: float
    result: EvalResult
    stats_diff: float  # max |difference| from pycocotools over the 12 numbers
    per_class_diff: float  # max |difference| from pycocotools over per-class AP and AP50 (nan == nan)


def generated_evaluation(num_images: int, detections_per_image: int, num_classes: int, classes_without_gt: int = 0,
                         seed: int = 0, crowd_every: int = 0):
    """A ground truth and detections for it.

    Images are 640x480 with 1 to 12 objects of categories 1..num_classes - classes_without_gt, sides
    log-uniform in 8..300 px (all three COCO area ranges). Each image gets ``detections_per_image``
    detections of any of the ``num_classes`` categories: up to 3 jittered copies per object (the object's
    class 4 times in 5), the rest random boxes, all with random scores. ``crowd_every`` > 0 makes every
    ``crowd_every``-th annotation a crowd region (iscrowd=1); 0 keeps the ground truth crowd-free.

    Returns (coco_gt, category_ids, detections): detections is a list of (image_id, boxes (D, 4) float32 xyxy
    pixels, scores (D,) float32, labels (D,) int64) per image.
    """
    rng = np.random.default_rng(seed)
    height, width = IMAGE_SIZE
    images, annotations, detections = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": height, "width": width})
        gt_boxes = _random_boxes(rng, int(rng.integers(1, 13)))
        gt_labels = rng.integers(0, num_classes - classes_without_gt, len(gt_boxes))
        for box, label in zip(gt_boxes.tolist(), gt_labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                "area": (box[2] - box[0]) * (box[3] - box[1]),
                                "iscrowd": int(crowd_every > 0 and len(annotations) % crowd_every == 0)})
        detections.append((image_id, *_detections_for(rng, gt_boxes, gt_labels, detections_per_image, num_classes)))
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]
    coco_gt = coco_from_dataset({"images": images, "annotations": annotations, "categories": categories})
    return coco_gt, [c["id"] for c in categories], detections


def _random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 4) float64 xyxy boxes inside the image, sides log-uniform in 8..300 px."""
    height, width = IMAGE_SIZE
    sides = np.exp(rng.uniform(math.log(8), math.log(300), (count, 2)))
    corners = rng.uniform(0, 1, (count, 2)) * (np.array([width, height]) - sides)
    return np.concatenate([corners, corners + sides], axis=1)


def _detections_for(rng: np.random.Generator, gt_boxes: np.ndarray, gt_labels: np.ndarray, count: int,
                    num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` detections for one image's ground truth (``gt_boxes`` (G, 4) xyxy pixels, ``gt_labels`` (G,)
    0-based): boxes (count, 4) float32 xyxy pixels, scores (count,) float32, labels (count,) int64."""
    owners = np.repeat(np.arange(len(gt_boxes)), 3)[:count]
    sides = np.tile(gt_boxes[owners, 2:] - gt_boxes[owners, :2], 2)
    seen = gt_boxes[owners] + rng.normal(0, 0.1, (len(owners), 4)) * sides
    seen = np.concatenate([np.minimum(seen[:, :2], seen[:, 2:]), np.maximum(seen[:, :2], seen[:, 2:])], axis=1)
    right_class = rng.random(len(owners)) < 0.8
    seen_labels = np.where(right_class, gt_labels[owners], rng.integers(0, num_classes, len(owners)))
    boxes = np.concatenate([seen, _random_boxes(rng, count - len(owners))])
    labels = np.concatenate([seen_labels, rng.integers(0, num_classes, count - len(owners))])
    return (torch.from_numpy(boxes).float(), torch.from_numpy(rng.random(count)).float(),
            torch.from_numpy(labels).long())


def evaluate_with(backend: str, coco_gt, category_ids, detections) -> tuple[EvalResult, float]:
    """``CocoEvaluator.compute`` of ``detections`` with ``backend``; returns the result and its seconds."""
    evaluator = CocoEvaluator(coco_gt, category_ids, backend=backend)
    for image_id, boxes, scores, labels in detections:
        evaluator.update(image_id, boxes, scores, labels)
    seconds, result = timed(lambda: evaluator.compute(verbose=False), "cpu")
    return result, seconds


def compare(reference: EvalResult, other: EvalResult) -> tuple[float, float]:
    """Max |difference| over the 12 numbers, and over the per-class (AP, AP50) with nan matching nan only."""
    stats = max(abs(reference.stats[name] - other.stats[name]) for name in STAT_NAMES)
    ours = np.array([row[1:] for row in reference.per_class], dtype=np.float64)
    theirs = np.array([row[1:] for row in other.per_class], dtype=np.float64)
    if not np.array_equal(np.isnan(ours), np.isnan(theirs)):
        return stats, math.inf
    defined = ~np.isnan(ours)
    return stats, float(np.abs(ours[defined] - theirs[defined]).max(initial=0.0))


def run_eval_benchmark(num_images: int, detections_per_image: int, num_classes: int) -> list[Row]:
    """Evaluate one generated data set with every backend (pycocotools first: the reference)."""
    coco_gt, category_ids, detections = generated_evaluation(num_images, detections_per_image, num_classes)
    rows = []
    for backend in EVAL_BACKENDS:
        result, seconds = evaluate_with(backend, coco_gt, category_ids, detections)
        stats_diff, per_class_diff = compare(rows[0].result, result) if rows else (0.0, 0.0)
        rows.append(Row(backend, seconds, result, stats_diff, per_class_diff))
    return rows


def format_table(rows: list[Row]) -> str:
    """The printed table: one line per backend."""
    reference = rows[0]
    lines = [f"COCO bbox evaluation (CocoEvaluator.compute) of {reference.result.num_images} images, "
             f"{reference.result.num_detections} detections",
             f"{'backend':<18} {'seconds':>8} {'speed-up':>9} {'AP':>7} {'AP50':>7} {'max|diff| 12 stats':>19} "
             f"{'max|diff| per-class':>20}"]
    for row in rows:
        lines.append(f"{row.backend:<18} {row.seconds:>8.2f} {reference.seconds / row.seconds:>8.1f}x "
                     f"{row.result.stats['AP']:>7.4f} {row.result.stats['AP50']:>7.4f} {row.stats_diff:>19.1e} "
                     f"{row.per_class_diff:>20.1e}")
    return "\n".join(lines)
