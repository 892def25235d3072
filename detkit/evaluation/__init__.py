"""COCO bbox evaluation with pycocotools, faster-coco-eval or hotcoco, distributed-aware
(see ``detkit.evaluation.coco``).

The evaluation pictures (``detkit.evaluation.pictures``) are not imported here: they need matplotlib.
"""
from detkit.evaluation.backends import EVAL_BACKENDS, check_backend, coco_from_dataset
from detkit.evaluation.coco import STAT_NAMES, CocoEvaluator, EvalResult, format_per_class_table, to_coco_results

__all__ = ["EVAL_BACKENDS", "STAT_NAMES", "CocoEvaluator", "EvalResult", "check_backend", "coco_from_dataset",
           "format_per_class_table", "to_coco_results"]
