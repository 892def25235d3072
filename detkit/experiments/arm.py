"""One arm of a study in a process of its own: ``detkit.engine.cli.train`` or ``evaluate`` with the arm's command
line, then the numbers the study tabulates, as JSON at ``--record`` (written last: its presence marks the arm done).

    python -m detkit.experiments.arm --record PATH train --config CFG [overrides]
    python -m detkit.experiments.arm --record PATH evaluate --checkpoint CKPT [--results JSON] [overrides]

A process per arm gives each arm fresh random generators and thread pools, and an arm that crashes or is killed
leaves the study running.
"""
from __future__ import annotations

import csv
import os
import sys
import time

from detkit.atomic_io import write_json_atomically

CURVE_PREFIXES = ("train/", "val/")  # metrics.csv columns kept as curves


def train_record(args: list[str]) -> dict:
    """Train with ``args`` (``tools/train.py``'s command line); the best checkpoint's val numbers, throughput, the
    schedule actually run, the detector's size, the anchor coverage each dense stage had, and the logged curves."""
    from detkit.engine.anchor_check import AnchorCheck
    from detkit.engine.callbacks import Throughput
    from detkit.engine.cli import train

    run = train(args)

    cli, result = run.cli, run.evaluation
    trainer, callbacks = cli.trainer, cli.trainer.callbacks
    throughput = next(c for c in callbacks if isinstance(c, Throughput))
    anchor_check = next((c for c in callbacks if isinstance(c, AnchorCheck)), None)
    train_images = len(cli.datamodule.train_dataset)
    checkpoint = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    return {
        "mode": "train", "stats": dict(result.stats), "log_dir": trainer.log_dir,
        "best_checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "train_images_per_second": throughput.train_images_per_second,
        "inference_images_per_second": throughput.inference_images_per_second,
        "images_seen": throughput.train_images, "steps": trainer.global_step,
        "epochs": throughput.train_images / train_images if train_images else None,
        "parameters": sum(parameter.numel() for parameter in cli.model.detector.parameters()),
        "batch_size": cli.datamodule.batch_size, "fit_seconds": run.fit_seconds,
        "coverage": {name: coverage_summary(coverage)
                     for name, coverage in (anchor_check.reports if anchor_check else {}).items()},
        "curves": read_curves(os.path.join(trainer.log_dir, "metrics.csv")),
    }


def evaluate_record(args: list[str]) -> dict:
    """Evaluate with ``args`` (``tools/eval.py``'s command line): the val numbers."""
    from detkit.engine.cli import evaluate

    result = evaluate(args)
    return {"mode": "evaluate", "stats": dict(result.stats), "detections": result.num_detections}


def coverage_summary(coverage) -> dict:
    """A ``detkit.models.anchor_fit.Coverage`` in plain numbers: objects, those no anchor is matched to (the
    matcher as configured), those whose best anchor IoU is below the fg threshold and below 0.5."""
    matcher = coverage.matcher
    return {"objects": len(coverage.best_iou), "no_positive": int((~coverage.matched).sum()),
            "below_fg": int((coverage.best_iou < matcher.high_threshold).sum()),
            "below_half": int((coverage.best_iou < 0.5).sum()),
            "fg_iou": matcher.high_threshold, "bg_iou": matcher.low_threshold,
            "low_quality_matches": matcher.allow_low_quality_matches}


def read_curves(path: str) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSV log -> {column: [(step, value)]} for the train/ and val/ columns (rows without one skipped)."""
    if not os.path.isfile(path):
        return {}
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            step = int(float(row.get("step") or 0))
            for column, value in row.items():
                if column.startswith(CURVE_PREFIXES) and value not in ("", None):
                    curves.setdefault(column, []).append((step, float(value)))
    return curves


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # a fixed layout, not argparse: the overrides that follow (values such as -1) must reach the CLI untouched
    if len(argv) < 3 or argv[0] != "--record" or argv[2] not in ("train", "evaluate"):
        raise SystemExit("usage: python -m detkit.experiments.arm --record PATH {train,evaluate} [arguments]")
    record_path, mode, args = argv[1], argv[2], argv[3:]
    start = time.perf_counter()
    record = train_record(args) if mode == "train" else evaluate_record(args)
    record["wall_seconds"] = time.perf_counter() - start
    write_json_atomically(record, record_path)


if __name__ == "__main__":
    main()
