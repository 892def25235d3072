"""The faster-coco-eval backend gives pycocotools' numbers (the 12 stats, per-class AP, precision arrays), and
tools/bench_eval.py compares them; a wrong backend name is an error naming its key."""
import importlib.util
import math
import pathlib
import sys

import numpy as np
import pytest
import torch
from torch import nn

from detkit.engine.module import DetectionModule
from detkit.evaluation import EVAL_BACKENDS, STAT_NAMES, CocoEvaluator, EvalResult

TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "bench_eval.py"
spec = importlib.util.spec_from_file_location("bench_eval", TOOL)
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_eval"] = bench  # dataclasses look their module up there
spec.loader.exec_module(bench)

# faster-coco-eval accumulates in C++: its precision can differ from pycocotools' in the last bit (~2e-16)
ROUNDING = 1e-12


def evaluate_both(coco_gt, category_ids, detections):
    """{backend: (EvalResult, COCOeval)} of the same detections."""
    outcome = {}
    for backend in EVAL_BACKENDS:
        evaluator = CocoEvaluator(coco_gt, category_ids, backend=backend)
        for image_id, boxes, scores, labels in detections:
            evaluator.update(image_id, boxes, scores, labels)
        outcome[backend] = (evaluator.compute(verbose=False), evaluator.last_cocoeval)
    return outcome


def test_backends_give_the_same_numbers_with_a_class_without_ground_truth():
    # 5 classes, the last one never in the ground truth but predicted: its AP is nan in both
    coco_gt, category_ids, detections = bench.generated_evaluation(60, 40, num_classes=5, classes_without_gt=1, seed=3)
    (reference, reference_eval), (faster, faster_eval) = evaluate_both(coco_gt, category_ids, detections).values()
    assert 0.05 < reference.stats["AP"] < 0.95  # neither trivial nor perfect: the comparison means something
    assert reference.stats == pytest.approx(faster.stats, abs=ROUNDING, rel=0)
    assert [row[0] for row in faster.per_class] == [row[0] for row in reference.per_class]
    ours, theirs = (np.array([row[1:] for row in r.per_class]) for r in (reference, faster))
    assert np.isnan(ours[4]).all() and not np.isnan(ours[:4]).any()
    np.testing.assert_allclose(theirs, ours, atol=ROUNDING, rtol=0)  # nan positions must agree too
    assert faster.summary == reference.summary and faster.summary.count("\n") == len(STAT_NAMES) - 1
    assert (faster.num_images, faster.num_detections) == (60, 60 * 40)
    np.testing.assert_allclose(faster_eval.eval["precision"], reference_eval.eval["precision"], atol=ROUNDING, rtol=0)
    np.testing.assert_array_equal(faster_eval.eval["recall"] == -1, reference_eval.eval["recall"] == -1)


def test_backends_agree_without_any_detection():
    coco_gt, category_ids, detections = bench.generated_evaluation(5, 1, num_classes=3)
    nothing = [(image_id, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
               for image_id, *_ in detections]
    (reference, _), (faster, _) = evaluate_both(coco_gt, category_ids, nothing).values()
    assert faster.stats == reference.stats
    assert reference.stats["AP"] == 0.0 and reference.stats["AR100"] == 0.0
    assert faster.num_detections == 0


def test_bench_quick_table_compares_the_backends(capsys):
    rows = bench.main(["--quick"])
    assert [row.backend for row in rows] == list(EVAL_BACKENDS)
    assert all(row.result.num_images == 100 and row.result.num_detections == 2000 for row in rows)
    assert rows[0].stats_diff == 0.0 and rows[1].stats_diff <= ROUNDING and rows[1].per_class_diff <= ROUNDING
    assert rows[1].result.stats["AP"] == pytest.approx(rows[0].result.stats["AP"], abs=ROUNDING)
    printed = capsys.readouterr().out.splitlines()
    assert "100 images, 2000 detections" in printed[0]
    assert printed[2].split()[0] == "pycocotools" and printed[3].split()[0] == "faster_coco_eval"
    assert float(printed[3].split()[3]) == pytest.approx(rows[1].result.stats["AP"], abs=1e-4)


def test_compare_reports_a_difference_and_a_nan_mismatch():
    coco_gt, category_ids, detections = bench.generated_evaluation(10, 10, num_classes=3, classes_without_gt=1)
    result, _ = evaluate_both(coco_gt, category_ids, detections)["pycocotools"]
    changed = EvalResult(dict(result.stats, AP75=result.stats["AP75"] + 0.25), list(result.per_class))
    assert bench.compare(result, changed) == (pytest.approx(0.25), 0.0)
    name, ap, ap50 = result.per_class[2]
    assert math.isnan(ap)
    changed.per_class[2] = (name, 0.0, ap50)
    assert bench.compare(result, changed)[1] == math.inf


def test_unknown_backend_is_an_error_naming_the_key():
    coco_gt, category_ids, _ = bench.generated_evaluation(2, 1, num_classes=2)
    with pytest.raises(ValueError, match="backend must be one of .*'pycocotools'.*got 'fast'"):
        CocoEvaluator(coco_gt, category_ids, backend="fast")
    with pytest.raises(ValueError, match=r"model\.eval_backend must be one of .*got 'pycocotool'"):
        DetectionModule(detector=nn.Linear(1, 1), eval_backend="pycocotool")
