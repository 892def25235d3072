"""Benchmarks and the GPU check: detkit against torchvision (``ops``, ``models``), the COCO evaluation backends
against pycocotools (``eval``) and the one-command check of a GPU machine (``gpu_check``). The command lines are
``tools/bench_ops.py``, ``tools/bench_models.py``, ``tools/bench_eval.py`` and ``tools/gpu_check.py``.

This package may import anything in detkit; nothing in detkit imports it. Importing it imports nothing else, so
``gpu_wheels`` works on a machine that still lacks detkit's dependencies.
"""
