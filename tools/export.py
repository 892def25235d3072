"""Export a trained checkpoint to ONNX, pre- and post-processing included, checked against PyTorch.

    python tools/export.py --checkpoint runs/retinanet_shapes/version_0/checkpoints/best.ckpt --out model.onnx \
        [--check-images a.png b.jpg] [--bench 20 [--threads 1]]

The model takes ``image`` (3, H, W) float32 RGB in [0, 1] of any size and returns ``boxes`` (D, 4) xyxy in its
pixels, ``scores`` (D,) and ``labels`` (D,) int64 (docs/guide/export.md). Exit status: 0 written and checked,
1 the checkpoint unusable or onnxruntime's detections differ from PyTorch's (nothing written), 2 a wrong command line.
The work: ``detkit.inference.cli.export_command``.
"""
import sys

from detkit.inference.cli import export_command

if __name__ == "__main__":
    sys.exit(export_command())
