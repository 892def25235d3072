"""Datasets, transforms, batching and the DataModule. Label convention: see ``detkit.data.categories``."""
from detkit.data.categories import CategoryMapping
from detkit.data.coco import BadImageError, CocoDetection, load_rgb_image
from detkit.data.collate import collate_detection, make_collate_fn
from detkit.data.datamodule import DetectionDataModule
from detkit.data.shapes import SHAPES_CATEGORIES, generate_shapes
from detkit.data.transforms import DetectionTransform, build_transforms

__all__ = [
    "BadImageError",
    "CategoryMapping",
    "CocoDetection",
    "DetectionDataModule",
    "DetectionTransform",
    "SHAPES_CATEGORIES",
    "build_transforms",
    "collate_detection",
    "generate_shapes",
    "load_rgb_image",
    "make_collate_fn",
]
