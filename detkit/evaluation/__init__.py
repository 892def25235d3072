"""COCO bbox evaluation with pycocotools, distributed-aware (see ``detkit.evaluation.coco``)."""
from detkit.evaluation.coco import STAT_NAMES, CocoEvaluator, EvalResult, format_per_class_table, to_coco_results

__all__ = ["STAT_NAMES", "CocoEvaluator", "EvalResult", "format_per_class_table", "to_coco_results"]
