"""Albumentations pipelines built from YAML-friendly specs, followed by an aspect-preserving resize.

A spec is a dict naming an albumentations class and its keyword arguments, e.g.
``{"type": "HorizontalFlip", "p": 0.5}`` or ``{"type": "RandomResizedCrop", "size": [128, 128],
"scale": [0.5, 1.0]}``. Containers take nested specs: ``{"type": "OneOf", "transforms": [...]}``.
Boxes are pascal_voc (xyxy, absolute pixels) throughout; boxes that a crop leaves less than
``min_visibility`` visible, or smaller than ``min_area`` / 1 px wide or high, are dropped with their labels.
"""
from __future__ import annotations

import warnings

import albumentations as A
import cv2
import numpy as np
import torch


def build_augmentation(spec: dict, where: str = "augmentations") -> A.BasicTransform | A.BaseCompose:
    """One albumentations transform from ``{"type": Name, **kwargs}``; nested ``transforms`` lists are built too.

    Raises ValueError naming ``where`` and the type for a malformed spec, an unknown name or bad arguments.
    """
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"{where}: each augmentation must be a dict with a 'type' key, got {spec!r}")
    kwargs = {key: value for key, value in spec.items() if key != "type"}
    name = spec["type"]
    cls = getattr(A, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, (A.BasicTransform, A.BaseCompose))):
        raise ValueError(f"{where}: unknown albumentations transform {name!r} "
                         f"(expected a class name such as 'HorizontalFlip' or 'RandomResizedCrop')")
    if "transforms" in kwargs:
        kwargs["transforms"] = [build_augmentation(child, f"{where}.{name}.transforms[{i}]")
                                for i, child in enumerate(kwargs["transforms"])]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transform = cls(**kwargs)
    except Exception as error:  # albumentations raises TypeError / pydantic ValidationError
        raise ValueError(f"{where}: cannot build {name} with arguments {kwargs}: {error}") from error
    for warning in caught:
        # albumentations only warns about unknown keyword arguments; a config typo must not pass silently
        if "not valid for transform" in str(warning.message):
            raise ValueError(f"{where}: cannot build {name} with arguments {kwargs}: {warning.message}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return transform


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """The factor that brings the shorter side to ``min_size`` unless the longer would exceed ``max_size``."""
    scale = min_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return scale


def resized_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(h, w) of an image of (height, width) after the aspect-preserving resize of ``resize_scale``."""
    factor = resize_scale(height, width, min_size, max_size)
    return max(1, round(height * factor)), max(1, round(width * factor))


def to_original_pixels(boxes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """boxes (D, 4) xyxy pixels of the resized image -> (D, 4) xyxy pixels of the original image.

    ``scale`` is the (2,) (sx, sy) that ``DetectionTransform`` returned for the image (resized = original * scale).
    """
    return boxes / scale.to(boxes).repeat(2)  # (4,) sx, sy, sx, sy


class DetectionTransform:
    """``augment`` (optional albumentations Compose) then an aspect-preserving resize.

    Call with ``image`` (H, W, 3) uint8 RGB, ``boxes`` (N, 4) float32 xyxy pixels inside the image,
    ``labels`` (N,) int64. Returns ``(image (H', W', 3) uint8, boxes (N', 4) float32, labels (N',) int64,
    scale (sx, sy))`` where ``scale`` is the factor of the final resize: new = input * scale per axis, with
    the rounding of the output size included. Without geometric augmentation (val/test) this maps the
    original image to the output exactly; after a random crop it is relative to the cropped image.
    """

    def __init__(self, min_size: int, max_size: int, augment: A.Compose | None = None):
        if min_size <= 0 or max_size <= 0:
            raise ValueError(f"min_size and max_size must be positive, got {min_size} and {max_size}")
        self.min_size = int(min_size)
        self.max_size = int(max_size)
        self.augment = augment

    def reseed(self, seed: int) -> None:
        """Re-seed the augmentation's random state (one distinct seed per DataLoader worker)."""
        if self.augment is not None:
            self.augment.set_random_seed(int(seed) % 2**32)

    def random_state(self) -> list[dict]:
        """The random state of the augmentation and of each of its transforms (albumentations gives every
        transform a generator of its own), in plain types: checkpoints load it with ``weights_only=True``."""
        return [{"numpy": step.random_generator.bit_generator.state, "python": step.py_random.getstate()}
                for step in _random_steps(self.augment)]

    def set_random_state(self, state: list[dict]) -> None:
        """Continue every random stream of the augmentation from ``random_state()``'s output."""
        steps = _random_steps(self.augment)
        if len(steps) != len(state):
            raise ValueError(f"augmentation random state has {len(state)} entries for {len(steps)} transforms: "
                             f"data.train_augmentations changed since the checkpoint")
        for step, saved in zip(steps, state):
            step.random_generator.bit_generator.state = saved["numpy"]
            step.py_random.setstate(saved["python"])

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray):
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if self.augment is not None:
            out = self.augment(image=image, bboxes=boxes, labels=labels)
            image = out["image"]
            # albumentations hands labels back as floats or a list: restore int64, aligned with the kept boxes
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"]).astype(np.int64).reshape(-1)
        return self._resize(image, boxes, labels)

    def _resize(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray):
        height, width = image.shape[:2]
        new_height, new_width = resized_size(height, width, self.min_size, self.max_size)
        if (new_height, new_width) != (height, width):
            shrinks = resize_scale(height, width, self.min_size, self.max_size) < 1
            interpolation = cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR
            image = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
        scale = (new_width / width, new_height / height)
        boxes = boxes * np.array([scale[0], scale[1], scale[0], scale[1]], dtype=np.float32)
        # float rounding may put an edge a hair beyond the border
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, new_width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, new_height)
        return np.ascontiguousarray(image), boxes, labels, scale


def _random_steps(augment) -> list:
    """``augment`` and every transform nested in it, depth first (each holds its own generators)."""
    if augment is None:
        return []
    children = augment.transforms if isinstance(augment, A.BaseCompose) else []  # ColorJitter's are functions
    return [augment] + [step for child in children for step in _random_steps(child)]


def build_transforms(train: bool, min_size: int, max_size: int, augmentations: list[dict] | None = None,
                     seed: int | None = 0, min_visibility: float = 0.3, min_area: float = 4.0) -> DetectionTransform:
    """The train pipeline (``augmentations`` then resize) or the val/test pipeline (resize only).

    Args:
        train: whether to apply ``augmentations``; val/test ignore them.
        min_size, max_size: the shorter side is resized to ``min_size`` unless the longer exceeds ``max_size``.
        augmentations: YAML-friendly specs, e.g. ``[{"type": "HorizontalFlip", "p": 0.5}]``.
        seed: seed of the albumentations random state (workers re-seed it, see ``DetectionTransform.reseed``).
        min_visibility, min_area: boxes that augmentation leaves less visible / smaller (px^2) are dropped.
    """
    augment = None
    if train and augmentations:
        if not isinstance(augmentations, (list, tuple)):
            raise ValueError(f"augmentations must be a list of dicts, got {augmentations!r}")
        steps = [build_augmentation(spec, f"augmentations[{i}]") for i, spec in enumerate(augmentations)]
        bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=min_visibility,
                                   min_area=min_area, min_width=1.0, min_height=1.0, clip=True,
                                   filter_invalid_bboxes=True)
        augment = A.Compose(steps, bbox_params=bbox_params, seed=seed)
    return DetectionTransform(min_size, max_size, augment)
