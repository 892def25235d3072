"""COCO bbox evaluation with pycocotools or faster-coco-eval, distributed-aware (see ``detkit.evaluation.coco``).

The evaluation pictures (``detkit.evaluation.pictures``) are not imported here: they need matplotlib.
"""
from detkit.evaluation.backends import EVAL_BACKENDS, check_backend
from detkit.evaluation.coco import STAT_NAMES, CocoEvaluator, EvalResult, format_per_class_table, to_coco_results

__all__ = ["EVAL_BACKENDS", "STAT_NAMES", "CocoEvaluator", "EvalResult", "check_backend", "format_per_class_table",
           "to_coco_results"]
