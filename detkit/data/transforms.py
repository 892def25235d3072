"""Albumentations pipelines built from YAML-friendly specs, followed by an aspect-preserving resize.

Two resize modes (``data.resize``): "cv2" (detkit's own: cv2 on uint8, area filter when shrinking, sides
rounded) and "torchvision" (``GeneralizedRCNNTransform``'s exactly: bilinear ``F.interpolate`` on the float
image, sides truncated, padding that is 0 after normalisation), for models imported from torchvision.

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
import torch.nn.functional as F

from detkit.models.fpn import IMAGENET_MEAN

RESIZE_MODES = ("cv2", "torchvision")
# flips and right-angle turns map boxes exactly and cost next to nothing: the augmentation strength leaves them be
FREE_AUGMENTATIONS = ("HorizontalFlip", "VerticalFlip", "RandomRotate90", "Transpose", "D4", "SquareSymmetry")


def check_resize_mode(resize: str, key: str = "data.resize") -> None:
    """ValueError naming ``key`` unless ``resize`` is one of ``RESIZE_MODES``."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"{key} must be one of {RESIZE_MODES}, got {resize!r}")


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


def torchvision_scale_factor(height: int, width: int, min_size: int, max_size: int) -> float:
    """``GeneralizedRCNNTransform``'s factor, computed as it does: min(min_size / shorter, max_size / longer)."""
    return min(min_size / min(height, width), max_size / max(height, width))


def resized_size(height: int, width: int, min_size: int, max_size: int, resize: str = "cv2") -> tuple[int, int]:
    """(h, w) of an image of (height, width) after the aspect-preserving resize of mode ``resize``."""
    if resize == "torchvision":
        factor = torchvision_scale_factor(height, width, min_size, max_size)
        return int(height * factor), int(width * factor)  # F.interpolate truncates the output size
    factor = resize_scale(height, width, min_size, max_size)
    return max(1, round(height * factor)), max(1, round(width * factor))


def resize_with_cv2(image: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H', W', 3) uint8 of ``resized_size(..., "cv2")``: area filter when shrinking."""
    height, width = image.shape[:2]
    new_height, new_width = resized_size(height, width, min_size, max_size)
    if (new_height, new_width) == (height, width):
        return image
    shrinks = resize_scale(height, width, min_size, max_size) < 1
    return cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR)


def resize_like_torchvision(image: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H', W', 3) float32 in [0, 1], the call of torchvision's ``_resize_image_and_masks``.

    torchvision normalises before resizing; bilinear weights sum to 1, so resizing first and letting the model
    normalise gives the same tensor up to float rounding (~1e-7).
    """
    height, width = image.shape[:2]
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)  # (3, H, W)
    resized = F.interpolate(tensor[None], scale_factor=torchvision_scale_factor(height, width, min_size, max_size),
                            mode="bilinear", recompute_scale_factor=True, align_corners=False)[0]
    return resized.permute(1, 2, 0).numpy()


def padding_fill(resize: str) -> tuple[float, ...] | float:
    """What ``collate_detection`` pads with: torchvision pads the normalised image with 0, which is the
    ImageNet mean before detkit's models normalise; detkit's own mode pads with 0 (black)."""
    return IMAGENET_MEAN if resize == "torchvision" else 0.0


def to_original_pixels(boxes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """boxes (D, 4) xyxy pixels of the resized image -> (D, 4) xyxy pixels of the original image.

    ``scale`` is the (2,) (sx, sy) that ``DetectionTransform`` returned for the image (resized = original * scale).
    """
    return boxes / scale.to(boxes).repeat(2)  # (4,) sx, sy, sx, sy


class DetectionTransform:
    """``augment`` (optional albumentations Compose) then an aspect-preserving resize of mode ``resize``.

    Call with ``image`` (H, W, 3) uint8 RGB, ``boxes`` (N, 4) float32 xyxy pixels inside the image,
    ``labels`` (N,) int64. Returns ``(image (H', W', 3), boxes (N', 4) float32, labels (N',) int64,
    scale (sx, sy))``, the image uint8 ("cv2") or float32 in [0, 1] ("torchvision"), where ``scale`` is the
    factor of the resize: new = input * scale per axis, with the rounding of the output size included.
    Without geometric augmentation (val/test) this maps the original image to the output exactly; after a random
    crop it is relative to the cropped image. With "cv2", training images are resized before the augmentation
    too (its cost then does not grow with the photos' size) and once more after it (a no-op unless it changed
    the image's shape); ``scale`` is the product of both.
    """

    def __init__(self, min_size: int, max_size: int, augment: A.Compose | None = None, resize: str = "cv2"):
        if min_size <= 0 or max_size <= 0:
            raise ValueError(f"min_size and max_size must be positive, got {min_size} and {max_size}")
        check_resize_mode(resize)
        self.min_size = int(min_size)
        self.max_size = int(max_size)
        self.augment = augment
        self.resize = resize
        self._configured_p = [step.p for step in augment.transforms] if augment is not None else []
        self.strength = 1.0

    def set_strength(self, strength: float) -> None:
        """Scale the probability of every augmentation but the ``FREE_AUGMENTATIONS`` to ``strength`` (in [0, 1])
        times its configured one: 0 leaves the flips only, 1 the pipeline as configured."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"augmentation strength must be in [0, 1], got {strength}")
        steps = self.augment.transforms if self.augment is not None else []
        for step, configured in zip(steps, self._configured_p):
            step.p = configured if type(step).__name__ in FREE_AUGMENTATIONS else configured * strength
        self.strength = float(strength)

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
        first_scale = (1.0, 1.0)
        if self.augment is not None:
            if self.resize == "cv2":  # augmenting a 2048 px photo costs ~20x more than the 400 px image it becomes
                image, boxes, labels, first_scale = self._resize(image, boxes, labels)
            out = self.augment(image=image, bboxes=boxes, labels=labels)
            image = out["image"]
            # albumentations hands labels back as floats or a list: restore int64, aligned with the kept boxes
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"]).astype(np.int64).reshape(-1)
        image, boxes, labels, scale = self._resize(image, boxes, labels)
        return image, boxes, labels, (first_scale[0] * scale[0], first_scale[1] * scale[1])

    def shrink(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """(H, W, 3) uint8 -> the image at the size this transform resizes it to, if that shrinks it ("cv2" only),
        and the (sx, sy) factor; else the image and (1, 1). What an image cache can keep in place of the original:
        the resize of the shrunk image is then a no-op."""
        height, width = image.shape[:2]
        if self.resize != "cv2" or resize_scale(height, width, self.min_size, self.max_size) >= 1:
            return image, (1.0, 1.0)
        small = resize_with_cv2(image, self.min_size, self.max_size)
        return small, (small.shape[1] / width, small.shape[0] / height)

    def _resize(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray):
        height, width = image.shape[:2]
        resize = resize_like_torchvision if self.resize == "torchvision" else resize_with_cv2
        image = resize(image, self.min_size, self.max_size)
        new_height, new_width = image.shape[:2]
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
                     seed: int | None = 0, min_visibility: float = 0.3, min_area: float = 4.0,
                     resize: str = "cv2") -> DetectionTransform:
    """The train pipeline (``augmentations`` then resize) or the val/test pipeline (resize only).

    Args:
        train: whether to apply ``augmentations``; val/test ignore them.
        min_size, max_size: the shorter side is resized to ``min_size`` unless the longer exceeds ``max_size``.
        augmentations: YAML-friendly specs, e.g. ``[{"type": "HorizontalFlip", "p": 0.5}]``.
        seed: seed of the albumentations random state (workers re-seed it, see ``DetectionTransform.reseed``).
        min_visibility, min_area: boxes that augmentation leaves less visible / smaller (px^2) are dropped.
        resize: one of ``RESIZE_MODES`` (see the module docstring).
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
    return DetectionTransform(min_size, max_size, augment, resize)
