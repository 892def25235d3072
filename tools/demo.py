"""`make demo`: train RetinaNet on the built-in dataset (generated on first use), print the COCO summary
of the best checkpoint on the val split, and draw its predictions on a few val images.

    python tools/demo.py [--config configs/retinanet_shapes.yaml] [overrides such as --trainer.max_epochs 2]
"""
import sys

from detkit.engine.demo import run_demo

if __name__ == "__main__":
    print(run_demo(sys.argv[1:]))
