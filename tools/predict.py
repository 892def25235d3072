"""Predict with a trained checkpoint: annotated images and a COCO results JSON, annotated videos and JSON lines.

    python tools/predict.py --checkpoint runs/retinanet_shapes/version_0/checkpoints/best.ckpt \
        --images photos/ "more/*.jpg" one.png --videos clip.mp4 --out predictions \
        [--score-threshold 0.3] [--nms-threshold 0.5] [--class-agnostic] [--detections-per-image 20] \
        [--min-size 512] [--max-size 853] [--classes person car] [--device cpu] [--batch-size 8]

Writes ``OUT/<name>.png``, ``OUT/detections.json`` (COCO results) and ``OUT/images.json`` (image ids, classes) for
images, ``OUT/<name>.mp4`` and ``OUT/<name>.jsonl`` (one line per frame) for videos. Every setting not given is
the checkpoint's own. An unreadable image or video is reported and skipped; the others are predicted. Exit
status: 0 everything predicted, 1 some input unreadable (all others written) or the checkpoint unusable, 2 a
wrong command line. docs/guide/predict.md describes the options and outputs; the work:
``detkit.inference.cli.predict_command``.
"""
import sys

from detkit.inference.cli import predict_command

if __name__ == "__main__":
    sys.exit(predict_command())
