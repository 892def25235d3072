"""``detkit.export_onnx(checkpoint, path)``: a detector as one ONNX model that onnxruntime runs without detkit.

The graph takes ``image``, (3, H, W) float32 RGB in [0, 1] of any H and W, and holds everything the predictor
does to it (``detkit.inference.onnx_graph``): the val resize and padding, the detector, its post-processing
(decoding, score threshold, per-class NMS, detections per image) and the mapping back to the image's pixels.
Outputs: ``boxes`` (D, 4) float32 xyxy in the input image's pixels, ``scores`` (D,) float32 by decreasing score,
``labels`` (D,) int64 class indices; the class names and COCO category ids are in the model's metadata_props.

Exporter: TorchScript tracing (``torch.onnx.export(..., dynamo=False)``), opset 17. Tracing runs the eager code
once and records it; the few data-dependent steps are written so that the trace keeps them symbolic
(``detkit.ops.topk_at_most``, the anchors and RoI pooling of traced sizes, ``batched_nms`` as ONNX's per-class
``NonMaxSuppression``), and torchvision's ``nms`` and ``roi_align`` have ONNX forms.

Every export checks itself before it is kept: onnxruntime and ``Detector.predict`` run on test images and must
give the same detections (same labels, boxes within 0.5 px, scores within 1e-3); otherwise ``OnnxExportError``
lists the differences and nothing is left at the destination.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

import detkit
from detkit.inference.checkpoint import CheckpointError
from detkit.inference.images import ImageInput, read_image
from detkit.inference.onnx_check import ImageParity, check_images, compare_image, describe_mismatches, onnx_input
from detkit.inference.onnx_graph import SingleImageDetector
from detkit.inference.predictor import Detector, load

OPSET = 17  # NonMaxSuppression and TopK with a tensor k exist from 11, RoiAlign's half-pixel modes from 16
INPUT_NAME, OUTPUT_NAMES = "image", ("boxes", "scores", "labels")
EXPORTABLE_RESIZE = "cv2"


class OnnxExportError(RuntimeError):
    """An export that cannot be made or does not agree with PyTorch; the message names the file and why."""


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote: the path, the opset, the metadata_props and the parity on each test image."""

    path: str
    opset: int
    metadata: dict[str, str]
    parity: list[ImageParity]


def export_onnx(model: str | os.PathLike | Detector, path: str | os.PathLike, *,
                images: Sequence[ImageInput] | None = None, opset: int = OPSET) -> ExportReport:
    """Write ``path``, an ONNX model of the detector with its pre- and post-processing, checked against PyTorch.

    Args:
        model: a training checkpoint (``.ckpt``, loaded with ``detkit.load`` on the CPU) or a ``Detector``.
        path: the ``.onnx`` file to write; written only once the check passes (through a ``.partial`` file).
        images: the test images of the check (file paths, arrays, tensors: ``read_image``); default
            ``onnx_check.check_images()``, three synthetic images of 200x90, 90x200 and 640x480 pixels.
        opset: the ONNX opset (>= 17).
    Returns:
        an ``ExportReport`` (the per-image parity holds the largest box and score differences).
    Raises:
        CheckpointError for an unusable checkpoint; OnnxExportError naming ``path`` when the detector cannot be
        exported (a resize mode other than "cv2", an opset below 17) or onnxruntime's detections differ from
        ``Detector.predict``'s (listed per image).
    """
    destination = os.fspath(path)
    if opset < OPSET:
        raise OnnxExportError(f"{destination}: opset must be >= {OPSET}, got {opset}")
    detector = model if isinstance(model, Detector) else load(model, device="cpu")
    _check_exportable(detector, destination)
    arrays = [read_image(image) for image in (images if images is not None else check_images())]
    if not arrays:
        raise OnnxExportError(f"{destination}: the check needs at least one test image")
    metadata = model_metadata(detector)
    partial = destination + ".partial"
    try:
        _trace(detector, arrays[0], partial, opset)
        _write_metadata(partial, metadata)
        session = onnx_session(partial)
        parity = [compare_image(session, detector, array) for array in arrays]
        mismatches = describe_mismatches(parity)
        if mismatches:
            raise OnnxExportError(f"{destination}: not written: onnxruntime's detections differ from PyTorch's "
                                  f"(detkit.load(...).predict, one image per batch):\n{mismatches}")
        os.replace(partial, destination)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return ExportReport(path=destination, opset=opset, metadata=metadata, parity=parity)


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime ``InferenceSession`` of ``path`` on the CPU (``threads``: intra-op threads, None: its own
    default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def model_metadata(detector: Detector) -> dict[str, str]:
    """The ONNX model's metadata_props: JSON ``class_names`` and ``category_ids`` indexed by label, the
    detector class, its inference settings and the resize it was exported with, and detkit's version."""
    inference = getattr(detector.model, "inference", None)
    return {
        "class_names": json.dumps(detector.class_names),
        "category_ids": json.dumps(detector.category_ids),
        "detector": type(detector.model).__name__,
        "inference": json.dumps(dataclasses.asdict(inference) if dataclasses.is_dataclass(inference) else None),
        "resize": json.dumps({"min_size": detector.transform.min_size, "max_size": detector.transform.max_size,
                              "size_divisor": detector.size_divisor, "mode": EXPORTABLE_RESIZE}),
        "input": f"{INPUT_NAME}: (3, H, W) float32 RGB in [0, 1]",
        "outputs": "boxes: (D, 4) float32 xyxy input-image pixels; scores: (D,) float32; labels: (D,) int64",
        "detkit_version": detkit.__version__,
    }


def _check_exportable(detector: Detector, destination: str) -> None:
    mode = getattr(detector.transform, "resize", EXPORTABLE_RESIZE)
    if mode != EXPORTABLE_RESIZE:
        raise OnnxExportError(f"{destination}: the checkpoint's data.resize is {mode!r}; the export reproduces "
                              f"the {EXPORTABLE_RESIZE!r} resize only")
    if not hasattr(detector.model, "inference"):
        raise OnnxExportError(f"{destination}: {type(detector.model).__name__} is not a detkit detector "
                              f"(RetinaNet or FasterRCNN): it has no inference settings")


def _trace(detector: Detector, example: np.ndarray, partial: str, opset: int) -> None:
    model = detector.model if detector.device.type == "cpu" else copy.deepcopy(detector.model).cpu()
    graph = SingleImageDetector(model, min_size=detector.transform.min_size, max_size=detector.transform.max_size,
                                size_divisor=detector.size_divisor)
    dynamic = {INPUT_NAME: {1: "height", 2: "width"}, **{name: {0: "detections"} for name in OUTPUT_NAMES}}
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer warns at every Python-level shape check; the parity check is what proves the graph
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(graph, (torch.from_numpy(onnx_input(example)),), partial, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic)


def _write_metadata(partial: str, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(partial)
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, partial)


__all__ = ["CheckpointError", "ExportReport", "OnnxExportError", "export_onnx", "model_metadata", "onnx_session"]
