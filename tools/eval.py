"""Evaluate a checkpoint: COCO summary, per-class AP table, results JSON.

    python tools/eval.py --checkpoint runs/retinanet_shapes/version_0/checkpoints/best.ckpt \
        [--config configs/retinanet_shapes.yaml] [--results results.json] [--data.val_batch_size 32 ...]
"""
from detkit.engine.cli import evaluate

if __name__ == "__main__":
    evaluate()
