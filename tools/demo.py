"""`make demo`: train RetinaNet on the built-in dataset (generated on first use), print the COCO summary
of the best checkpoint on the val split, and draw its predictions on a few val images.

    python tools/demo.py [--config configs/retinanet_shapes.yaml] [overrides such as --trainer.max_epochs 2]
"""
import os
import sys
import time

from detkit.engine.cli import train
from detkit.visualize import save_prediction_grid

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--config" not in args:
        args = ["--config", "configs/retinanet_shapes.yaml"] + args
    start = time.perf_counter()
    cli, result = train(args)
    out = os.path.join(cli.trainer.log_dir, "predictions.png")
    val = cli.datamodule.val_dataset
    save_prediction_grid(cli.model.detector, val, out, val.categories.class_names)
    print(f"\ndemo: AP {result.stats['AP']:.3f}, AP50 {result.stats['AP50']:.3f}; "
          f"wall time {time.perf_counter() - start:.0f} s; predictions drawn in {out}")
