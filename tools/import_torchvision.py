"""Import one of torchvision's six COCO detectors into a detkit checkpoint (docs/guide/pretrained.md).

    python tools/import_torchvision.py --arch fasterrcnn_mobilenet_v3_large_320_fpn \
        --weights fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth --out mobilenet_320_coco.ckpt [--force]

The checkpoint then works as any other: detkit.load(...).predict, tools/predict.py, tools/eval.py, and
--model.init_from to fine-tune (configs/*_finetune.yaml). --weights DEFAULT asks torchvision to download the
published file (needs internet). Exit status 1 on a bad file (named, with the first mismatching key). The work:
``detkit.inference.cli.import_torchvision_command``.
"""
import sys

from detkit.inference.cli import import_torchvision_command

if __name__ == "__main__":
    sys.exit(import_torchvision_command())
