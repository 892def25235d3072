"""``make demo``: train a detector on the built-in dataset (generated on first use), print the COCO summary of the
best checkpoint on the val split, and draw its predictions on a few val images."""
from __future__ import annotations

import os
import time

from detkit.drawing.boxes import save_prediction_grid
from detkit.engine.cli import train

DEFAULT_CONFIG = "configs/retinanet_shapes.yaml"


def run_demo(args: list[str]) -> str:
    """Train with ``tools/train.py``'s arguments (``--config DEFAULT_CONFIG`` unless one is given), draw the
    predictions into ``<run dir>/predictions.png``; returns the closing line (AP, AP50, wall time, picture)."""
    if "--config" not in args:
        args = ["--config", DEFAULT_CONFIG, *args]
    start = time.perf_counter()
    run = train(args)
    cli, result = run.cli, run.evaluation
    out = os.path.join(cli.trainer.log_dir, "predictions.png")
    val = cli.datamodule.val_dataset
    save_prediction_grid(cli.model.detector, val, out, val.categories.class_names)
    return (f"\ndemo: AP {result.stats['AP']:.3f}, AP50 {result.stats['AP50']:.3f}; "
            f"wall time {time.perf_counter() - start:.0f} s; predictions drawn in {out}")
