"""Train a detector from a config, then print the COCO summary of its best checkpoint on the val split.

    python tools/train.py --config configs/retinanet_shapes.yaml [--trainer.max_epochs 5 ...]
"""
from detkit.engine.cli import train

if __name__ == "__main__":
    train()
