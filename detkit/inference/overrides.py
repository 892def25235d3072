"""Per-call overrides of a checkpoint's prediction settings (``Detector.predict``'s keywords, ``tools/predict.py``'s
options).

The score threshold, NMS IoU, class-agnostic NMS and per-image cap replace the model's ``inference`` settings
(``detkit.models.settings.Inference``, read by the detector at call time) for the duration of one call, so the
model's own thresholding, NMS and cap see them; nothing is filtered afterwards. ``min_size``/``max_size`` replace
the validation resize. ``classes`` keeps some classes only: their detections are picked from the model's output,
with the model's cap lifted for the call, and the cap is applied after that choice (see ``call_settings``).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import numbers
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from detkit.data.transforms import DetectionTransform

INFERENCE_FIELDS = ("score_threshold", "nms_threshold", "class_agnostic", "detections_per_image")
UNCAPPED = sys.maxsize  # detections_per_image while classes are chosen: the predictor caps after choosing


@dataclass(frozen=True)
class PredictOptions:
    """What one prediction call changes; every None keeps the checkpoint's own setting.

    score_threshold: keep detections scoring >= this, in [0, 1] (``Inference.score_threshold``).
    nms_threshold: IoU in [0, 1] above which NMS suppresses the lower-scored box.
    class_agnostic: NMS over all classes together (True) or per class (False).
    detections_per_image: the most detections per image, best first, >= 1.
    min_size, max_size: the resize: shorter side to ``min_size`` unless the longer would exceed ``max_size``.
    classes: class names whose detections are kept (others are dropped before the per-image cap).
    """

    score_threshold: float | None = None
    nms_threshold: float | None = None
    class_agnostic: bool | None = None
    detections_per_image: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    classes: tuple[str, ...] | None = None

    def __post_init__(self):
        if isinstance(self.classes, str):  # one name, not its letters
            object.__setattr__(self, "classes", (self.classes,))
        elif self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))

    def check(self, spell: Callable[[str], str] = str) -> None:
        """ValueError naming the option out of range; ``spell`` writes an option's name as the caller knows it
        (the keyword for the API, ``--flag`` for the tool)."""
        for name in ("score_threshold", "nms_threshold"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value, numbers.Real) and 0.0 <= value <= 1.0):
                raise ValueError(f"{spell(name)} must lie in [0, 1], got {value!r}")
        for name in ("detections_per_image", "min_size", "max_size"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value, numbers.Integral) and value >= 1):
                raise ValueError(f"{spell(name)} must be an integer >= 1, got {value!r}")
        if self.class_agnostic is not None and not isinstance(self.class_agnostic, bool):
            raise ValueError(f"{spell('class_agnostic')} must be True or False, got {self.class_agnostic!r}")
        if self.classes is not None and not self.classes:
            raise ValueError(f"{spell('classes')} must name at least one class")

    def inference_changes(self) -> dict:
        """The ``Inference`` fields this call sets: name -> value."""
        return {name: getattr(self, name) for name in INFERENCE_FIELDS if getattr(self, name) is not None}


def _is_number(value, kind: type) -> bool:
    """``value`` is a ``kind`` (numbers.Real, numbers.Integral) and not a bool: True is no threshold or count."""
    return isinstance(value, kind) and not isinstance(value, bool)


def has_inference_settings(model: nn.Module) -> bool:
    """Whether ``model`` reads a replaceable ``inference`` dataclass (both detkit detectors do)."""
    return dataclasses.is_dataclass(getattr(model, "inference", None))


def check_model_takes(model: nn.Module, options: PredictOptions, spell: Callable[[str], str] = str) -> None:
    """ValueError naming the options when ``model`` has no ``inference`` settings to override."""
    changes = options.inference_changes()
    if changes and not has_inference_settings(model):
        names = ", ".join(spell(name) for name in changes)
        raise ValueError(f"{names}: the model ({type(model).__name__}) has no `inference` settings to override")


def class_labels(classes: Sequence[str] | None, class_names: Sequence[str],
                 spell: Callable[[str], str] = str) -> list[int] | None:
    """Training labels of the named classes (None: all classes); ValueError naming an unknown one and listing
    the model's classes."""
    if classes is None:
        return None
    unknown = [name for name in classes if name not in class_names]
    if unknown:
        raise ValueError(f"{spell('classes')}: unknown class {', '.join(map(repr, unknown))}; the model's classes "
                         f"are {list(class_names)}")
    return sorted({list(class_names).index(name) for name in classes})


def call_settings(model: nn.Module, options: PredictOptions, chooses_classes: bool) -> tuple[dict, int | None]:
    """The ``Inference`` fields to replace for one call, and the cap the predictor applies after choosing classes
    (None: the model's cap stands).

    Choosing classes lifts the model's cap (``UNCAPPED``) so that the chosen classes' detections are not crowded
    out by others before the cap. Per-class NMS gives the same boxes as if the other classes never existed; with
    class-agnostic NMS a box of an unchosen class still suppresses the chosen boxes it overlaps.
    """
    changes = options.inference_changes()
    if not chooses_classes or not has_inference_settings(model):
        return changes, None
    cap = changes.get("detections_per_image", model.inference.detections_per_image)
    return {**changes, "detections_per_image": UNCAPPED}, cap


@contextlib.contextmanager
def replaced_inference(model: nn.Module, changes: dict) -> Iterator[None]:
    """Inside the block ``model.inference`` is ``dataclasses.replace(model.inference, **changes)``; the original
    is put back after, also when the block raises. No changes: the model is left alone."""
    if not changes:
        yield
        return
    original = model.inference
    model.inference = dataclasses.replace(original, **changes)
    try:
        yield
    finally:
        model.inference = original


def keep_classes(detection: dict, labels: Sequence[int] | None, cap: int | None) -> dict:
    """One image's detections (boxes (D, 4) xyxy, scores (D,) decreasing, labels (D,) int64) restricted to
    ``labels`` (None: all) and to the best ``cap`` (None: all) of those."""
    if labels is None:
        return detection
    wanted = torch.isin(detection["labels"], torch.as_tensor(labels, device=detection["labels"].device))
    index = torch.nonzero(wanted).squeeze(1)[:cap]
    return {**detection, **{key: detection[key][index] for key in ("boxes", "scores", "labels")}}


def resized_transform(transform: DetectionTransform, options: PredictOptions) -> DetectionTransform:
    """``transform`` with the call's ``min_size``/``max_size`` (each None: the checkpoint's); a copy, so the
    detector's own is untouched and every other setting (resize mode, no augmentation) carries over."""
    if options.min_size is None and options.max_size is None:
        return transform
    resized = copy.copy(transform)
    resized.min_size = int(options.min_size or transform.min_size)
    resized.max_size = int(options.max_size or transform.max_size)
    return resized
