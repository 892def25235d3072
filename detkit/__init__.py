"""detkit: a small, readable PyTorch Lightning object-detection framework.

A one-stage RetinaNet and a two-stage Faster R-CNN built on one set of shared kernels in `detkit.ops`.
"""
__version__ = "0.1.0"
