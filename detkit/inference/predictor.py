"""``detkit.load(checkpoint)`` -> a ``Detector`` whose ``predict(images)`` returns boxes in each image's own pixels.

Prediction runs the validation path: the val resize (``build_transforms(False, min_size, max_size, resize=...)``,
the mode the checkpoint's config names), the val batching (``collate_detection``, padding to ``size_divisor``
with ``padding_fill(resize)``), the model (which normalises), and the
validation step's mapping back to the original image (``to_original_pixels``), then clipping to it.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from detkit.data.coco import image_to_tensor
from detkit.data.collate import collate_detection
from detkit.data.transforms import DetectionTransform, build_transforms, padding_fill, to_original_pixels
from detkit.inference.checkpoint import (
    CheckpointError,
    check_state_fits,
    checkpoint_classes,
    detector_state_dict,
    read_checkpoint,
)
from detkit.inference.config import (
    RunConfig,
    build_detector,
    configured_classes,
    configured_num_classes,
    input_settings,
    resolve_config,
)
from detkit.inference.images import ImageInput, read_image
from detkit.inference.overrides import (
    PredictOptions,
    call_settings,
    check_model_takes,
    class_labels,
    keep_classes,
    replaced_inference,
    resized_transform,
)
from detkit.ops import clip_boxes_to_image


@dataclass
class Prediction:
    """One image's detections, on the CPU, in the ORIGINAL image's pixels.

    Attributes:
        boxes: (D, 4) float32 xyxy, clipped to the image.
        scores: (D,) float32, highest first.
        labels: (D,) int64 training labels 0..K-1.
        names: the D class names of ``labels``.
        image_size: (h, w) of the original image.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    image_size: tuple[int, int]


class Detector:
    """A trained detector with its classes and its validation preprocessing; build it with ``detkit.load``.

    Args:
        model: a detkit detector (``forward(images, image_sizes)`` -> per image boxes, scores, labels).
        class_names, category_ids: per training label, the class name and the COCO category id.
        min_size, max_size, size_divisor, resize: the resize and padding of the model's validation (``data.*``
            keys; ``resize`` "cv2" or "torchvision", ``detkit.data.transforms``).
        device: where the model runs ("cpu", "cuda", "cuda:1", ...); None: CUDA when available, else the CPU.
    """

    def __init__(self, *, model: nn.Module, class_names: Sequence[str], category_ids: Sequence[int], min_size: int,
                 max_size: int, size_divisor: int, resize: str = "cv2", device: str | torch.device | None = None):
        if len(class_names) != len(category_ids):
            raise ValueError(f"{len(class_names)} class_names for {len(category_ids)} category_ids")
        self.device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.class_names, self.category_ids = list(class_names), [int(i) for i in category_ids]
        self.transform = build_transforms(False, min_size, max_size, resize=resize)
        self.size_divisor, self.pad_value = size_divisor, padding_fill(resize)

    @torch.no_grad()
    def predict(self, images: ImageInput | Sequence[ImageInput], score_threshold: float | None = None,
                batch_size: int = 8, *, nms_threshold: float | None = None, class_agnostic: bool | None = None,
                detections_per_image: int | None = None, min_size: int | None = None, max_size: int | None = None,
                classes: Sequence[str] | None = None) -> list[Prediction]:
        """Detections for each image, in the order given.

        Every setting left None is the checkpoint's own; the others override it for this call only (the model's
        ``inference`` settings are replaced during the call and restored after, ``detkit.inference.overrides``).

        Args:
            images: one image or a sequence; each a file path, PIL image, numpy (H, W, 3) uint8 array or
                (3, H, W) uint8 / [0, 1] float tensor (``detkit.inference.images.read_image``), of any size;
                a (B, 3, H, W) tensor is B images.
            score_threshold: keep detections scoring >= this, in [0, 1] (None: the checkpoint's
                ``inference.score_threshold``); applied by the model, before NMS and the per-image cap.
            batch_size: images per forward pass. Batches are padded to their largest image, as in validation;
                the same images in the same batches give the same detections as validation.
            nms_threshold: NMS IoU in [0, 1]; class_agnostic: NMS over all classes together.
            detections_per_image: the most detections per image (>= 1), best first.
            min_size, max_size: the resize (shorter side to ``min_size`` unless the longer exceeds ``max_size``).
            classes: names of the classes to keep; the per-image cap counts their detections only.
        Raises:
            ValueError naming the option that is out of range or names an unknown class (listing the classes).
        Returns:
            one ``Prediction`` per image (a list of one for a single image).
        """
        options = PredictOptions(score_threshold, nms_threshold, class_agnostic, detections_per_image, min_size,
                                 max_size, classes)
        labels = self.check_options(options)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        arrays = [_read(image, index) for index, image in enumerate(_as_sequence(images))]
        transform = resized_transform(self.transform, options)
        changes, cap = call_settings(self.model, options, chooses_classes=labels is not None)
        predictions = []
        with replaced_inference(self.model, changes):
            for start in range(0, len(arrays), batch_size):
                predictions.extend(self._predict_batch(arrays[start:start + batch_size], transform, labels, cap))
        return predictions

    def check_options(self, options: PredictOptions, spell: Callable[[str], str] = str) -> list[int] | None:
        """ValueError naming the option (as ``spell`` writes it) that is out of range, names an unknown class
        or cannot apply to this model; returns the labels of ``options.classes`` (None: all classes)."""
        options.check(spell)
        check_model_takes(self.model, options, spell)
        return class_labels(options.classes, self.class_names, spell)

    def _predict_batch(self, arrays: list[np.ndarray], transform: DetectionTransform, labels: list[int] | None,
                       cap: int | None) -> list[Prediction]:
        batch = collate_detection([self._preprocess(array, transform) for array in arrays],
                                  size_divisor=self.size_divisor,
                                  pad_value=self.pad_value)
        detections = self.model(batch["images"].to(self.device), batch["image_sizes"])
        return [self._to_prediction(keep_classes(detection, labels, cap), target)
                for detection, target in zip(detections, batch["targets"])]

    def _preprocess(self, array: np.ndarray, transform: DetectionTransform) -> tuple[torch.Tensor, dict]:
        """(H, W, 3) uint8 -> the validation input (3, H', W') float32 in [0, 1] and the scale that maps back."""
        image, _, _, scale = transform(array, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
        target = {"scale": torch.tensor(scale, dtype=torch.float32), "orig_size": tuple(array.shape[:2])}
        return image_to_tensor(image), target

    def _to_prediction(self, detection: dict, target: dict) -> Prediction:
        boxes = to_original_pixels(detection["boxes"], target["scale"])
        labels = detection["labels"].cpu()
        return Prediction(boxes=clip_boxes_to_image(boxes, target["orig_size"]).float().cpu(),
                          scores=detection["scores"].float().cpu(), labels=labels,
                          names=[self.class_names[label] for label in labels.tolist()],
                          image_size=target["orig_size"])


def _as_sequence(images) -> list:
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    return list(images) if isinstance(images, (list, tuple)) else [images]


def _read(image: ImageInput, index: int) -> np.ndarray:
    try:
        return read_image(image)
    except (ValueError, TypeError) as error:  # BadImageError (a ValueError) names its file already
        if isinstance(image, (str, os.PathLike)):
            raise
        raise type(error)(f"images[{index}]: {error}") from None


def load(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None,
         device: str | torch.device | None = None) -> Detector:
    """A ``Detector`` from a training checkpoint alone, ready to ``predict``.

    Args:
        checkpoint: a ``.ckpt`` written by training, read with ``torch.load(weights_only=True)``.
        config: a YAML config to build the model from instead of the one embedded in the checkpoint (or,
            for checkpoints without one, the ``config.yaml`` beside its ``checkpoints/`` folder).
        device: see ``Detector``.
    Raises:
        CheckpointError naming the file and the problem: missing, truncated or corrupt, unsafe content, not
        a detkit checkpoint, no config found, a number of classes or an architecture that differs from the
        config's model.
    """
    path = os.fspath(checkpoint)
    contents = read_checkpoint(path)
    run_config = resolve_config(path, contents, config)
    class_names, category_ids = _classes(path, contents, run_config)
    model = build_detector(run_config, num_classes=len(class_names))
    state = detector_state_dict(contents)
    check_state_fits(path, state, model, run_config.source)
    model.load_state_dict(state)
    return Detector(model=model, class_names=class_names, category_ids=category_ids, **input_settings(run_config),
                    device=device)


def _classes(path: str, contents: dict, run_config: RunConfig) -> tuple[list[str], list[int]]:
    """The checkpoint's classes (or, for one that does not record them, the config's dataset's), checked
    against a ``num_classes`` the config sets."""
    recorded = checkpoint_classes(contents)
    if recorded is None:
        categories = configured_classes(run_config)
        recorded = (categories.class_names, categories.category_ids)
    configured = configured_num_classes(run_config)
    if configured is not None and configured != len(recorded[0]):
        raise CheckpointError(f"{path}: the number of classes differs: the checkpoint was trained on "
                              f"{len(recorded[0])} classes {recorded[0]}, {run_config.source} sets "
                              f"model.detector.init_args.num_classes: {configured}")
    return recorded
