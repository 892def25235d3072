"""Detectors and their parts. Both detectors share ``forward(images, image_sizes, targets=None)``."""
from detkit.models.backbones import ResNetBackbone, TinyBackbone, build_backbone
from detkit.models.faster_rcnn import FasterRCNN
from detkit.models.fpn import FPN, FeaturePyramid
from detkit.models.retinanet import RetinaNet

__all__ = ["FPN", "FasterRCNN", "FeaturePyramid", "ResNetBackbone", "RetinaNet", "TinyBackbone", "build_backbone"]
