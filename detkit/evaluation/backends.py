"""The COCOeval implementations ``CocoEvaluator`` can run, behind one interface.

- "pycocotools": the reference.
- "faster_coco_eval": the faster-coco-eval package (C++ matching and accumulation behind the same COCO /
  COCOeval interface).
- "hotcoco": the hotcoco package (the whole of loadRes, evaluate and accumulate in Rust), fed the detections
  as one array instead of a dict per detection.

All three give the same 12 numbers, per-class AP and precision arrays (``tests/test_evaluation_backends.py``
checks it against pycocotools); ``tools/bench_eval.py`` times them. The optional packages are imported only
when chosen.
"""
from __future__ import annotations

import contextlib
import importlib
import io

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

EVAL_BACKENDS = ("pycocotools", "faster_coco_eval", "hotcoco")

# Backends whose loadRes takes the (N, 7) results array itself; the others get a dict per detection, built by
# detkit faster than their own per-row conversion of an array.
ARRAY_BACKENDS = ("hotcoco",)

_PACKAGES = {"faster_coco_eval": "faster-coco-eval", "hotcoco": "hotcoco"}


def check_backend(backend: str, key: str) -> str:
    """Return ``backend`` if it is one of ``EVAL_BACKENDS``; otherwise ValueError naming the config key ``key``."""
    if backend not in EVAL_BACKENDS:
        raise ValueError(f"{key} must be one of {EVAL_BACKENDS}, got {backend!r}")
    return backend


def coco_from_dataset(dataset: dict, backend: str = "pycocotools"):
    """The ``COCO`` class of ``backend`` indexed from ``dataset``, a COCO-format dict (images, annotations with
    xywh ``bbox``, categories), without the progress lines pycocotools and faster-coco-eval print."""
    if backend == "hotcoco":
        return _import_backend(backend).COCO(dataset)
    coco = COCO() if backend == "pycocotools" else _import_backend(backend).COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def backend_ground_truth(backend: str, coco_gt: COCO):
    """``coco_gt`` (a pycocotools ``COCO``) as the ``COCO`` class of ``backend``, built from its dataset dict."""
    if backend == "pycocotools":
        return coco_gt
    return coco_from_dataset(coco_gt.dataset, backend)


def new_cocoeval(backend: str, coco_gt, coco_dt):
    """A bbox COCOeval of ``backend`` for ground truth ``coco_gt`` and detections ``coco_dt`` (both of that backend).

    faster-coco-eval logs by default; it is told to print so that callers capture its output as pycocotools'.
    """
    if backend == "pycocotools":
        return COCOeval(coco_gt, coco_dt, iouType="bbox")
    if backend == "hotcoco":
        return _import_backend(backend).COCOeval(coco_gt, coco_dt, "bbox")
    return _import_backend(backend).COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=print)


def _import_backend(backend: str):
    """The module of the optional package behind ``backend``, or ImportError saying how to get it."""
    try:
        return importlib.import_module(backend)  # the backend's name is its module's
    except ImportError as error:
        raise ImportError(f"eval backend {backend!r} needs the {_PACKAGES[backend]} package "
                          f"(pip install {_PACKAGES[backend]}), or choose 'pycocotools'") from error
