"""The COCOeval implementations ``CocoEvaluator`` can run, behind one interface.

- "pycocotools": the reference, and the default.
- "faster_coco_eval": the faster-coco-eval package (C++ matching and accumulation behind the same COCO /
  COCOeval interface); the same 12 numbers and precision arrays as pycocotools, several times faster on
  thousands of images (``tools/bench_eval.py``). Imported only when chosen.
"""
from __future__ import annotations

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

EVAL_BACKENDS = ("pycocotools", "faster_coco_eval")


def check_backend(backend: str, key: str) -> str:
    """Return ``backend`` if it is one of ``EVAL_BACKENDS``; otherwise ValueError naming the config key ``key``."""
    if backend not in EVAL_BACKENDS:
        raise ValueError(f"{key} must be one of {EVAL_BACKENDS}, got {backend!r}")
    return backend


def backend_ground_truth(backend: str, coco_gt: COCO):
    """``coco_gt`` (a pycocotools ``COCO``) as the ``COCO`` class of ``backend``, sharing its dataset dict.

    Call it with stdout redirected: ``createIndex`` prints progress.
    """
    if backend == "pycocotools":
        return coco_gt
    ground_truth = _faster_coco_eval().COCO()
    ground_truth.dataset = coco_gt.dataset
    ground_truth.createIndex()
    return ground_truth


def new_cocoeval(backend: str, coco_gt, coco_dt):
    """A bbox COCOeval of ``backend`` for ground truth ``coco_gt`` and detections ``coco_dt`` (both of that backend).

    faster-coco-eval logs by default; it is told to print so that callers capture its output as pycocotools'.
    """
    if backend == "pycocotools":
        return COCOeval(coco_gt, coco_dt, iouType="bbox")
    return _faster_coco_eval().COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=print)


def _faster_coco_eval():
    try:
        import faster_coco_eval
    except ImportError as error:
        raise ImportError("eval backend 'faster_coco_eval' needs the faster-coco-eval package "
                          "(pip install faster-coco-eval), or choose 'pycocotools'") from error
    return faster_coco_eval
