"""COCO bbox evaluation: detections -> COCO results JSON -> COCOeval -> the 12 numbers + per-class AP.

COCOeval is pycocotools' (the reference), faster-coco-eval's or hotcoco's (same numbers, faster):
``detkit.evaluation.backends``. The detections travel as columns (``ResultColumns``), not as a dict per detection,
except where a JSON file or a backend's loadRes needs the dicts.

Under DDP each rank feeds the images its DistributedSampler gave it; ``compute`` gathers every rank's
records on rank 0, keeps one record per image id (the sampler pads with repeated images), evaluates
there and broadcasts the result, so every rank returns the same numbers as a single process would.
"""
from __future__ import annotations

import contextlib
import gc
import io
import math
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.atomic_io import write_json_atomically
from detkit.evaluation.backends import ARRAY_BACKENDS, backend_ground_truth, check_backend, new_cocoeval
from detkit.evaluation.gather import broadcast_from_rank0, distributed_rank, distributed_world_size, gather_to_rank0

# Names of COCOeval.stats in its order (AP over IoU 0.50:0.95 unless named; AR at 1/10/100 detections).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class EvalResult:
    """Outcome of one COCO bbox evaluation.

    Attributes:
        stats: the 12 COCOeval numbers keyed by ``STAT_NAMES``; -1.0 where COCO defines none (no ground
            truth of that area range among the evaluated images), exactly as in ``summary``.
        per_class: (class_name, AP, AP50) per training label in label order; nan for a class with no
            ground truth among the evaluated images.
        summary: the 12 "Average Precision / Average Recall" lines as pycocotools' COCOeval.summarize prints them,
            whatever the backend (``summarize_accumulated``).
        num_images: distinct images evaluated (after de-duplication across ranks).
        num_detections: detections evaluated over those images.
    """

    stats: dict[str, float]
    per_class: list[tuple[str, float, float]] = field(default_factory=list)
    summary: str = ""
    num_images: int = 0
    num_detections: int = 0


class ImageDetections(NamedTuple):
    """One image's detections on the CPU: boxes (K, 4) float32 xyxy original-image pixels, scores (K,) float32,
    labels (K,) int64 contiguous training labels."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


class CocoEvaluator:
    """Accumulates per-image detections and evaluates them with COCOeval against ``coco_gt``.

    Args:
        coco_gt: the dataset's ground truth (keep its iscrowd=1 annotations: COCOeval ignores detections on them).
        category_ids: ``category_ids[label]`` is the COCO category id of contiguous training label ``label``.
            Only these categories are evaluated.
        class_names: display name per label; defaults to the category names in ``coco_gt``.
        backend: the COCOeval implementation, one of ``EVAL_BACKENDS`` ("pycocotools", the default and the
            reference, "faster_coco_eval" or "hotcoco").

    Attributes:
        last_cocoeval: after ``compute``, on rank 0: the COCOeval it ran (evaluated and accumulated), for
            pictures; None on the other ranks and after ``reset``.
        last_records: the records that COCOeval scored (image id -> ``ImageDetections``), on rank 0; else None.
    """

    def __init__(self, coco_gt: COCO, category_ids: Sequence[int], class_names: Sequence[str] | None = None,
                 backend: str = "pycocotools"):
        self.backend = check_backend(backend, "CocoEvaluator backend")
        self.coco_gt = coco_gt
        self.category_ids = [int(c) for c in category_ids]
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"CocoEvaluator: category_ids has repeated ids: {self.category_ids}")
        missing = [c for c in self.category_ids if c not in coco_gt.cats]
        if missing:
            raise ValueError(f"CocoEvaluator: category ids {missing} are not categories of the ground truth")
        if class_names is None:
            class_names = [coco_gt.cats[c]["name"] for c in self.category_ids]
        if len(class_names) != len(self.category_ids):
            raise ValueError(
                f"CocoEvaluator: {len(class_names)} class_names for {len(self.category_ids)} category_ids"
            )
        self.class_names = [str(n) for n in class_names]
        self._records: dict[int, ImageDetections] = {}
        self.last_cocoeval = None
        self.last_records: dict[int, ImageDetections] | None = None

    def reset(self) -> None:
        """Forget every image passed to ``update`` and the latest evaluation."""
        self._records = {}
        self.last_cocoeval = None
        self.last_records = None

    def update(self, image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Record one image's detections. Call it for every evaluated image, also with K == 0.

        Args:
            image_id: the COCO image id.
            boxes: (K, 4) xyxy in the ORIGINAL image's pixels (any float dtype and device).
            scores: (K,) confidences.
            labels: (K,) int64 contiguous training labels in [0, len(category_ids)).

        An image id seen before is ignored (the first record is kept): DistributedSampler pads with repeats.
        """
        image_id = int(image_id)
        if image_id not in self.coco_gt.imgs:
            raise ValueError(f"CocoEvaluator.update: image id {image_id} is not in the ground truth")
        boxes, scores, labels = boxes.detach(), scores.detach(), labels.detach()
        num = boxes.shape[0] if boxes.ndim == 2 else -1
        if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (num,) or labels.shape != (num,):
            raise ValueError(
                f"CocoEvaluator.update: image id {image_id}: expected boxes (K, 4), scores (K,), labels (K,), got "
                f"{tuple(boxes.shape)}, {tuple(scores.shape)}, {tuple(labels.shape)}"
            )
        if num and (labels.min() < 0 or labels.max() >= len(self.category_ids)):
            raise ValueError(
                f"CocoEvaluator.update: image id {image_id}: labels must lie in [0, {len(self.category_ids)}), "
                f"got {labels.unique().tolist()}"
            )
        if image_id in self._records:
            return
        self._records[image_id] = ImageDetections(  # copies: the caller may reuse its tensors
            boxes.to("cpu", torch.float32, copy=True).numpy(),
            scores.to("cpu", torch.float32, copy=True).numpy(),
            labels.to("cpu", torch.int64, copy=True).numpy(),
        )

    def compute(self, results_path: str | os.PathLike | None = None, verbose: bool = True) -> EvalResult:
        """Evaluate every image recorded so far, on all ranks together when running distributed.

        Args:
            results_path: where to write the COCO results JSON (rank 0 only, replaced atomically); None: not written.
            verbose: print the summary and the per-class table (rank 0 only).

        Returns the same ``EvalResult`` on every rank. Every rank must call it.
        """
        if distributed_world_size() == 1:
            return self._evaluate(self._records, results_path, verbose)
        gathered = gather_to_rank0(self._records)
        if distributed_rank() != 0:
            outcome, payload = broadcast_from_rank0(None)
            if outcome == "error":
                raise RuntimeError(f"CocoEvaluator.compute failed on rank 0: {payload}")
            return payload
        try:
            result = self._evaluate(merge_records(gathered), results_path, verbose)
        except Exception as error:
            broadcast_from_rank0(("error", f"{type(error).__name__}: {error}"))  # the other ranks must not hang
            raise
        broadcast_from_rank0(("ok", result))
        return result

    def _evaluate(self, records: dict[int, ImageDetections], results_path, verbose: bool) -> EvalResult:
        if not records:
            raise ValueError("CocoEvaluator.compute: no image was passed to update()")
        image_ids = sorted(records)
        columns = result_columns({i: records[i] for i in image_ids}, self.category_ids)
        if results_path is not None:
            write_json_atomically(results_from_columns(columns), results_path)
        coco_eval, stats, summary = run_cocoeval(self.coco_gt, columns, image_ids, sorted(self.category_ids),
                                                 backend=self.backend)
        self.last_cocoeval, self.last_records = coco_eval, records
        stats = {name: float(value) for name, value in zip(STAT_NAMES, stats)}
        per_class = per_class_ap(coco_eval, self.category_ids, self.class_names)
        result = EvalResult(stats, per_class, summary, len(image_ids), len(columns.scores))
        if verbose:
            print(summary)
            print(format_per_class_table(per_class))
        return result


def merge_records(per_rank: list[dict[int, ImageDetections]]) -> dict[int, ImageDetections]:
    """Union of the ranks' records (in rank order) keeping the first record of each image id."""
    merged: dict[int, ImageDetections] = {}
    for records in per_rank:
        for image_id, detections in records.items():
            merged.setdefault(image_id, detections)
    return merged


class ResultColumns(NamedTuple):
    """Every detection of an evaluation as columns, row i being the i-th COCO results record: image_ids (N,)
    int64, category_ids (N,) int64 COCO category ids, xywh (N, 4) float64 COCO boxes in original pixels,
    scores (N,) float64."""

    image_ids: np.ndarray
    category_ids: np.ndarray
    xywh: np.ndarray
    scores: np.ndarray


def result_columns(records: dict[int, ImageDetections], category_ids: Sequence[int]) -> ResultColumns:
    """The detections of ``records`` (image id -> boxes (K, 4) xyxy original pixels, scores (K,), labels (K,)),
    image by image in ``records`` order, as ``ResultColumns``; labels map to ``category_ids[label]``."""
    detections = list(records.values())
    counts = [len(scores) for _, scores, _ in detections]
    image_ids = np.repeat(np.fromiter(records, dtype=np.int64, count=len(records)), counts)
    boxes = np.concatenate([np.zeros((0, 4))] + [boxes for boxes, _, _ in detections]).astype(np.float64)
    scores = np.concatenate([np.zeros(0)] + [scores for _, scores, _ in detections]).astype(np.float64)
    labels = np.concatenate([np.zeros(0, np.int64)] + [labels for _, _, labels in detections]).astype(np.int64)
    boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh after the float64 cast, as COCO's results JSON holds them
    return ResultColumns(image_ids, np.asarray(category_ids, dtype=np.int64)[labels], boxes, scores)


def results_from_columns(columns: ResultColumns) -> list[dict[str, Any]]:
    """COCO results list: one ``{image_id, category_id, bbox [x, y, w, h], score}`` of Python numbers per row."""
    with collector_paused():
        return [{"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}
                for image_id, category_id, box, score in zip(columns.image_ids.tolist(), columns.category_ids.tolist(),
                                                             columns.xywh.tolist(), columns.scores.tolist())]


@contextlib.contextmanager
def collector_paused():
    """Turn Python's cyclic garbage collector off inside the block; after it, the collector is on if it was before.

    A dict and a list per detection are ~10^6 new long-lived containers, none in a cycle; with the collector on,
    their growing number sets off full collections that rescan them all, most of the time of building them.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def results_array(columns: ResultColumns) -> np.ndarray:
    """(N, 7) float64 rows ``[image_id, x, y, w, h, score, category_id]``: the array form of COCO results that
    loadRes takes (pycocotools' ``loadNumpyAnnotations`` layout)."""
    return np.column_stack([columns.image_ids, columns.xywh, columns.scores, columns.category_ids])  # ints -> float64


def to_coco_results(records: dict[int, ImageDetections], category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results list: one ``{image_id, category_id, bbox [x, y, w, h], score}`` per detection.

    ``records`` maps image id to detections (boxes xyxy, original pixels); labels map to ``category_ids[label]``.
    """
    return results_from_columns(result_columns(records, category_ids))


def run_cocoeval(
    coco_gt: COCO, columns: ResultColumns, image_ids: Sequence[int], category_ids: Sequence[int],
    backend: str = "pycocotools",
) -> tuple[COCOeval, np.ndarray, str]:
    """Run ``backend``'s COCOeval (bbox) of the detections ``columns`` on ``image_ids`` x ``category_ids``.

    Returns the COCOeval (evaluated and accumulated), the 12 stats (12,) float64 in ``STAT_NAMES`` order and
    their summary lines, both from ``summarize_accumulated``.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints progress
        ground_truth = backend_ground_truth(backend, coco_gt)
        coco_dt = load_results(ground_truth, columns, backend)
        coco_eval = new_cocoeval(backend, ground_truth, coco_dt)
        coco_eval.params.imgIds = list(image_ids)
        coco_eval.params.catIds = list(category_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
    return (coco_eval, *summarize_accumulated(coco_eval))


def summarize_accumulated(coco_eval) -> tuple[np.ndarray, str]:
    """pycocotools' ``COCOeval.summarize`` of the accumulated precision and recall arrays of ``coco_eval``
    (any backend): the 12 stats (12,) float64 in ``STAT_NAMES`` order and the 12 lines it prints.

    One summary for every backend: faster-coco-eval prints two more lines (AR at IoU 0.5 and 0.75) and hotcoco
    spaces its lines otherwise, while every backend's arrays are pycocotools'.
    """
    reference, params = COCOeval(iouType="bbox"), coco_eval.params  # the thresholds that index the arrays:
    reference.params.iouThrs = np.asarray(params.iouThrs)  # summarize compares it with 0.5 and 0.75 elementwise
    reference.params.areaRngLbl, reference.params.maxDets = list(params.areaRngLbl), list(params.maxDets)
    accumulated = coco_eval.eval  # hotcoco builds this dict anew on every read
    reference.eval = {name: np.asarray(accumulated[name]) for name in ("precision", "recall")}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        reference.summarize()
    return np.asarray(reference.stats, dtype=np.float64), printed.getvalue().rstrip("\n")


def load_results(coco_gt, columns: ResultColumns, backend: str = "pycocotools"):
    """``coco_gt.loadRes`` of the detections ``columns``, also when there are none (which pycocotools' loadRes
    cannot take).

    ``coco_gt`` is a ``COCO`` of ``backend``; the detections come back in the same class. Backends in
    ``ARRAY_BACKENDS`` get the (N, 7) ``results_array``, the others the results list.
    """
    if len(columns.scores) and backend in ARRAY_BACKENDS:
        return coco_gt.loadRes(results_array(columns))
    if len(columns.scores):
        with collector_paused():  # loadRes adds a polygon list to every detection's dict
            return coco_gt.loadRes(results_from_columns(columns))
    coco_dt = type(coco_gt)()
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
                       "annotations": []}
    coco_dt.createIndex()
    return coco_dt


def per_class_ap(
    coco_eval: COCOeval, category_ids: Sequence[int], class_names: Sequence[str]
) -> list[tuple[str, float, float]]:
    """(class_name, AP@[.50:.95], AP@.50) per training label, area "all", the largest maxDets; nan without ground truth.

    Reads COCOeval's accumulated precision array (T IoU thresholds, R recall points, K categories, A areas,
    M maxDets), where -1 marks a category without ground truth.
    """
    params = coco_eval.params
    precision = coco_eval.eval["precision"]
    area = params.areaRngLbl.index("all")
    iou50 = iou_threshold_index(params, 0.5)
    table = []
    for category_id, name in zip(category_ids, class_names):
        k = list(params.catIds).index(category_id)
        curve = precision[:, :, k, area, -1]  # (T, R)
        table.append((name, mean_defined(curve), mean_defined(curve[iou50])))
    return table


def iou_threshold_index(params, iou: float) -> int:
    """Index of COCOeval's IoU threshold nearest ``iou`` in ``params.iouThrs`` (0.50, 0.55, ..., 0.95)."""
    return int(np.argmin(np.abs(np.asarray(params.iouThrs) - iou)))


def mean_defined(values: np.ndarray) -> float:
    """Mean of the entries > -1 (COCOeval's "undefined" marker); nan when there are none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else math.nan


def format_per_class_table(per_class: Sequence[tuple[str, float, float]]) -> str:
    """Plain-text table, one row per class: name, AP, AP50 (3 decimals; "nan" for a class without ground truth)."""
    width = max([len("class")] + [len(name) for name, _, _ in per_class])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}"]
    lines += [f"{name:<{width}}  {ap:>6.3f}  {ap50:>6.3f}" for name, ap, ap50 in per_class]
    return "\n".join(lines)
