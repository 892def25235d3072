"""Evaluate a checkpoint: COCO summary, per-class AP table, results JSON, and beside it the evaluation pictures
(``<results stem>_pictures/``: pr_curves.png, confusion_matrix.png, worst_images.png; where is printed).
Add ``--model.eval_backend faster_coco_eval`` for the faster COCOeval (same numbers).

    python tools/eval.py --checkpoint runs/retinanet_shapes/version_0/checkpoints/best.ckpt \
        [--config configs/retinanet_shapes.yaml] [--results results.json] [--data.val_batch_size 32 ...]
"""
from detkit.engine.cli import evaluate

if __name__ == "__main__":
    evaluate()
