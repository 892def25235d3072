"""The faster-coco-eval and hotcoco backends give pycocotools' numbers (the 12 stats, per-class AP, the precision,
recall and scores arrays), and detkit.benchmarks.eval (tools/bench_eval.py) compares them; a wrong backend name is
an error naming its key."""
import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from detkit.benchmarks.eval import compare, format_table, generated_evaluation, run_eval_benchmark
from detkit.engine.module import DetectionModule
from detkit.evaluation import EVAL_BACKENDS, STAT_NAMES, CocoEvaluator, EvalResult
from detkit.evaluation.pr_curves import pr_curve_data

FASTER_BACKENDS = [backend for backend in EVAL_BACKENDS if backend != "pycocotools"]
# faster-coco-eval accumulates in C++: its precision can differ from pycocotools' in the last bit (~2e-16);
# hotcoco's numbers and arrays are bit for bit pycocotools'
ROUNDING = 1e-12
TOLERANCE = {"faster_coco_eval": ROUNDING, "hotcoco": 0.0}


def without_detections_on_every_third_image(case):
    coco_gt, category_ids, detections = case
    nothing = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    return coco_gt, category_ids, [(i, *nothing) if i % 3 == 0 else (i, *rest) for i, *rest in detections]


# Each case: (coco_gt, category_ids, detections) from the bench's generator; each must also be neither trivial
# nor perfect (asserted below) so that agreeing means something.
CASES = {
    # 5 classes, the last never in the ground truth but predicted: its AP is nan
    "class_without_ground_truth": lambda: generated_evaluation(60, 40, num_classes=5, classes_without_gt=1,
                                                                     seed=3),
    # every 4th object a crowd region: detections on it are neither true nor false positives
    "crowd_ground_truth": lambda: generated_evaluation(60, 40, num_classes=4, seed=5, crowd_every=4),
    # about 150 detections per (image, class): COCOeval keeps each one's top 100 by score
    "more_than_100_detections_per_image": lambda: generated_evaluation(30, 300, num_classes=2, seed=7),
    "images_without_detections": lambda: without_detections_on_every_third_image(
        generated_evaluation(60, 20, num_classes=3, seed=9)),
}


def evaluate(backend: str, coco_gt, category_ids, detections):
    """(EvalResult, its COCOeval) of ``detections`` evaluated by ``backend``."""
    evaluator = CocoEvaluator(coco_gt, category_ids, backend=backend)
    for image_id, boxes, scores, labels in detections:
        evaluator.update(image_id, boxes, scores, labels)
    return evaluator.compute(verbose=False), evaluator.last_cocoeval


@functools.cache
def case_and_reference(name: str):
    """The case's data and pycocotools' evaluation of it, computed once for every backend."""
    case = CASES[name]()
    return case, evaluate("pycocotools", *case)


def assert_same_evaluation(reference, reference_eval, other, other_eval, tolerance: float):
    assert other.stats == pytest.approx(reference.stats, abs=tolerance, rel=0)
    assert [row[0] for row in other.per_class] == [row[0] for row in reference.per_class]
    ours, theirs = (np.array([row[1:] for row in r.per_class]) for r in (reference, other))
    np.testing.assert_allclose(theirs, ours, atol=tolerance, rtol=0)  # nan positions must agree too
    assert other.summary == reference.summary and other.summary.count("\n") == len(STAT_NAMES) - 1
    assert (other.num_images, other.num_detections) == (reference.num_images, reference.num_detections)
    for name in ("precision", "recall", "scores"):
        assert other_eval.eval[name].shape == reference_eval.eval[name].shape
        np.testing.assert_allclose(other_eval.eval[name], reference_eval.eval[name], atol=tolerance, rtol=0)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", FASTER_BACKENDS)
def test_backend_gives_the_pycocotools_numbers(backend, case):
    data, (reference, reference_eval) = case_and_reference(case)
    assert 0.01 < reference.stats["AP"] < 0.95
    assert_same_evaluation(reference, reference_eval, *evaluate(backend, *data), TOLERANCE[backend])


def test_the_cases_exercise_what_they_are_named_after():
    reference = case_and_reference("class_without_ground_truth")[1][0]
    ap = np.array([row[1:] for row in reference.per_class])
    assert np.isnan(ap[4]).all() and not np.isnan(ap[:4]).any()
    (coco_gt, category_ids, detections), (crowded, _) = case_and_reference("crowd_ground_truth")
    assert sum(a["iscrowd"] for a in coco_gt.dataset["annotations"]) > 50
    crowd_free, _ = evaluate("pycocotools", *generated_evaluation(60, 40, num_classes=4, seed=5))
    assert abs(crowded.stats["AP"] - crowd_free.stats["AP"]) > 0.01  # the same detections, scored otherwise
    (coco_gt, category_ids, detections), _ = case_and_reference("more_than_100_detections_per_image")
    most_of_one_class = max(np.bincount(labels.numpy()).max() for _, _, _, labels in detections)
    assert most_of_one_class > 120


@pytest.mark.parametrize("backend", FASTER_BACKENDS)
def test_backend_cocoeval_gives_the_pictures_pycocotools_curves(backend):
    (coco_gt, category_ids, detections), (_, reference_eval) = case_and_reference("class_without_ground_truth")
    _, other_eval = evaluate(backend, coco_gt, category_ids, detections)
    order = category_ids[::-1]  # read through params.catIds: another order must be followed
    for ours, theirs in zip(pr_curve_data(reference_eval, order), pr_curve_data(other_eval, order)):
        np.testing.assert_allclose(theirs, ours, atol=TOLERANCE[backend], rtol=0)


@pytest.mark.parametrize("backend", FASTER_BACKENDS)
def test_backend_agrees_without_any_detection(backend):
    coco_gt, category_ids, detections = generated_evaluation(5, 1, num_classes=3)
    nothing = [(image_id, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
               for image_id, *_ in detections]
    reference, reference_eval = evaluate("pycocotools", coco_gt, category_ids, nothing)
    other, other_eval = evaluate(backend, coco_gt, category_ids, nothing)
    assert reference.stats["AP"] == 0.0 and reference.stats["AR100"] == 0.0
    assert other.stats == reference.stats
    assert other.num_detections == 0
    np.testing.assert_array_equal(other_eval.eval["precision"], reference_eval.eval["precision"])


def test_bench_quick_table_compares_the_backends():
    rows = run_eval_benchmark(100, 20, 10)  # tools/bench_eval.py --quick
    assert [row.backend for row in rows] == list(EVAL_BACKENDS)
    assert all(row.result.num_images == 100 and row.result.num_detections == 2000 for row in rows)
    assert rows[0].stats_diff == 0.0
    for row in rows[1:]:
        tolerance = TOLERANCE[row.backend]
        assert row.stats_diff <= tolerance and row.per_class_diff <= tolerance
        assert row.result.stats["AP"] == pytest.approx(rows[0].result.stats["AP"], abs=tolerance, rel=0)
    printed = format_table(rows).splitlines()
    assert "100 images, 2000 detections" in printed[0]
    assert [line.split()[0] for line in printed[2:]] == list(EVAL_BACKENDS)
    for line, row in zip(printed[2:], rows):
        assert float(line.split()[3]) == pytest.approx(row.result.stats["AP"], abs=1e-4)


def test_compare_reports_a_difference_and_a_nan_mismatch():
    coco_gt, category_ids, detections = generated_evaluation(10, 10, num_classes=3, classes_without_gt=1)
    result, _ = evaluate("pycocotools", coco_gt, category_ids, detections)
    changed = EvalResult(dict(result.stats, AP75=result.stats["AP75"] + 0.25), list(result.per_class))
    assert compare(result, changed) == (pytest.approx(0.25), 0.0)
    name, ap, ap50 = result.per_class[2]
    assert math.isnan(ap)
    changed.per_class[2] = (name, 0.0, ap50)
    assert compare(result, changed)[1] == math.inf


def test_unknown_backend_is_an_error_naming_the_key():
    coco_gt, category_ids, _ = generated_evaluation(2, 1, num_classes=2)
    with pytest.raises(ValueError, match="backend must be one of .*'pycocotools'.*'hotcoco'.*got 'fast'"):
        CocoEvaluator(coco_gt, category_ids, backend="fast")
    with pytest.raises(ValueError, match=r"model\.eval_backend must be one of .*got 'pycocotool'"):
        DetectionModule(detector=nn.Linear(1, 1), eval_backend="pycocotool")
