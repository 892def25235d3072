"""Detections matched to ground truth one image at a time: the counts behind the confusion matrix and the
choice of the worst images.

The convention (``MATCHING_RULE`` is printed on the plots):

1. Only detections with score >= ``score_threshold`` count.
2. In descending score order, each detection takes the still unmatched ground truth of its own class with
   the highest IoU >= ``iou_threshold``: a correct detection (as COCOeval matches at that IoU).
3. The detections left, in the same order, take the unmatched ground truth of any other class with the
   highest IoU >= ``iou_threshold``: a confusion (the object is found, with the wrong class).
4. A detection still left that lies on a crowd region of its class (COCO's crowd IoU, the share of the
   detection inside the region, >= ``iou_threshold``) is ignored, as COCOeval ignores it.
5. The other detections left are false detections (predicted class vs. background); the ground truths
   left are missed objects (class vs. background).

IoUs come from ``pycocotools.mask.iou``, the function COCOeval uses. Boxes in ``ImageMatch`` are (N, 4)
float32 xyxy original-image pixels; labels are contiguous training labels ``0..K-1``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

MATCHING_RULE = "detections with score >= {score:g}, matched to ground truth by IoU >= {iou:g}, own class first"


@dataclass
class ImageMatch:
    """One image's ground truth and counted detections after matching.

    Attributes:
        image_id: the COCO image id.
        gt_boxes: (M, 4) float32 xyxy of the non-crowd ground truths of evaluated classes; gt_labels (M,) int64.
        det_boxes: (D, 4) float32 xyxy of the counted detections (above the score threshold, not ignored on a
            crowd region), by descending score; det_scores (D,) float32; det_labels (D,) int64.
        det_to_gt: (D,) int64, the index of the ground truth each detection matched (any class), or -1.
    """

    image_id: int
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    det_boxes: np.ndarray
    det_scores: np.ndarray
    det_labels: np.ndarray
    det_to_gt: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        """(D,) bool: the detection matched a ground truth of its own class."""
        matched = self.det_to_gt >= 0
        correct = np.zeros(len(self.det_labels), dtype=bool)
        correct[matched] = self.gt_labels[self.det_to_gt[matched]] == self.det_labels[matched]
        return correct

    @property
    def found(self) -> np.ndarray:
        """(M,) bool: a detection of the ground truth's own class matched it."""
        found = np.zeros(len(self.gt_labels), dtype=bool)
        found[self.det_to_gt[self.correct]] = True
        return found

    @property
    def errors(self) -> int:
        """Missed objects plus false boxes; a confusion is one of each (the object is missed in its class
        and the box is false in the predicted one), as average precision counts it."""
        return int((~self.found).sum() + (~self.correct).sum())


def ground_truth_of(coco_gt: COCO, image_id: int,
                    category_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's annotations of the evaluated categories: xywh (G, 4) float64 COCO boxes, labels (G,) int64
    (the index of the category in ``category_ids``) and iscrowd (G,) bool."""
    label_of = {int(c): label for label, c in enumerate(category_ids)}
    annotations = [a for a in coco_gt.imgToAnns[image_id] if a["category_id"] in label_of]
    xywh = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
    labels = np.array([label_of[a["category_id"]] for a in annotations], dtype=np.int64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool)
    return xywh, labels, crowd


def match_image(image_id: int, gt_xywh: np.ndarray, gt_labels: np.ndarray, gt_crowd: np.ndarray,
                det_xyxy: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray,
                score_threshold: float, iou_threshold: float) -> ImageMatch:
    """Match one image's detections to its ground truth by the rule in this module's docstring.

    Args:
        gt_xywh: (G, 4) COCO xywh boxes; gt_labels (G,) int64; gt_crowd (G,) bool (crowd regions).
        det_xyxy: (D, 4) xyxy original-image pixels; det_scores (D,); det_labels (D,) int64.
    """
    keep = np.flatnonzero(det_scores >= score_threshold)
    order = keep[np.argsort(-det_scores[keep], kind="stable")]
    det_xyxy, det_scores, det_labels = det_xyxy[order], det_scores[order], det_labels[order]
    det_xywh = np.concatenate([det_xyxy[:, :2], det_xyxy[:, 2:] - det_xyxy[:, :2]], axis=1).astype(np.float64)
    objects = ~gt_crowd
    iou = coco_iou(det_xywh, gt_xywh[objects], crowd=False)  # (D, M)
    labels = gt_labels[objects]
    det_to_gt = np.full(len(det_labels), -1, dtype=np.int64)
    taken = np.zeros(len(labels), dtype=bool)
    _greedy_match(iou, det_labels[:, None] == labels[None, :], det_to_gt, taken, iou_threshold)
    _greedy_match(iou, np.ones_like(iou, dtype=bool), det_to_gt, taken, iou_threshold)
    on_crowd = coco_iou(det_xywh, gt_xywh[gt_crowd], crowd=True)  # (D, C)
    own_crowd = det_labels[:, None] == gt_labels[gt_crowd][None, :]
    ignored = (det_to_gt < 0) & (np.where(own_crowd, on_crowd, 0.0) >= iou_threshold).any(axis=1)
    gt_xyxy = np.concatenate([gt_xywh[objects, :2], gt_xywh[objects, :2] + gt_xywh[objects, 2:]], axis=1)
    return ImageMatch(int(image_id), gt_xyxy.astype(np.float32), labels, det_xyxy[~ignored].astype(np.float32),
                      det_scores[~ignored].astype(np.float32), det_labels[~ignored], det_to_gt[~ignored])


def coco_iou(det_xywh: np.ndarray, gt_xywh: np.ndarray, crowd: bool) -> np.ndarray:
    """(D, G) float64 COCO IoU of detections (D, 4) with ground truths (G, 4), both xywh; with ``crowd`` the
    ground truths are crowd regions and the value is the share of each detection inside them."""
    if len(det_xywh) == 0 or len(gt_xywh) == 0:
        return np.zeros((len(det_xywh), len(gt_xywh)))
    return np.asarray(coco_mask.iou(det_xywh, gt_xywh, [int(crowd)] * len(gt_xywh)), dtype=np.float64)


def _greedy_match(iou: np.ndarray, allowed: np.ndarray, det_to_gt: np.ndarray, taken: np.ndarray,
                  threshold: float) -> None:
    """In row order, give each unmatched detection the free allowed ground truth of highest IoU >= threshold."""
    for det in np.flatnonzero(det_to_gt < 0):
        candidates = np.where(allowed[det] & ~taken, iou[det], -1.0)
        if candidates.size and candidates.max() >= threshold:
            det_to_gt[det] = int(candidates.argmax())
            taken[det_to_gt[det]] = True


def match_images(coco_gt: COCO, records: dict, category_ids: Sequence[int], score_threshold: float,
                 iou_threshold: float) -> list[ImageMatch]:
    """``match_image`` for every image of ``records`` (image id -> ``ImageDetections``), in image id order."""
    matches = []
    for image_id in sorted(records):
        boxes, scores, labels = records[image_id]
        gt_xywh, gt_labels, gt_crowd = ground_truth_of(coco_gt, image_id, category_ids)
        matches.append(match_image(image_id, gt_xywh, gt_labels, gt_crowd, boxes, scores, labels,
                                   score_threshold, iou_threshold))
    return matches


def confusion_counts(matches: Sequence[ImageMatch], num_classes: int) -> np.ndarray:
    """(K + 1, K + 1) int64 counts: row = ground-truth class, column = predicted class, index K = background.

    [g, p]: objects of class g matched by a detection of class p (the diagonal: correct detections);
    [K, p]: false detections of class p; [g, K]: missed objects of class g; [K, K] is always 0.
    """
    counts = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for match in matches:
        matched = match.det_to_gt >= 0
        np.add.at(counts, (match.gt_labels[match.det_to_gt[matched]], match.det_labels[matched]), 1)
        np.add.at(counts, (num_classes, match.det_labels[~matched]), 1)
        unmatched_gt = np.ones(len(match.gt_labels), dtype=bool)
        unmatched_gt[match.det_to_gt[matched]] = False
        np.add.at(counts, (match.gt_labels[unmatched_gt], num_classes), 1)
    return counts


def worst_images(matches: Sequence[ImageMatch], count: int) -> list[ImageMatch]:
    """The ``count`` images with the most errors (``ImageMatch.errors``), most first, ties by image id;
    images without an error are left out."""
    ranked = sorted((m for m in matches if m.errors), key=lambda m: (-m.errors, m.image_id))
    return ranked[:count]
