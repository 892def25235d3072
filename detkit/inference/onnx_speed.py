"""Images per second of an exported model under onnxruntime and of the same checkpoint under PyTorch."""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from detkit.inference.images import ImageInput, read_image
from detkit.inference.onnx_check import onnx_input
from detkit.inference.predictor import Detector


def compare_speed(detector: Detector, onnx_path: str, images: Sequence[ImageInput], repeats: int = 10,
                  threads: int | None = None) -> dict[str, float]:
    """Images per second, one image per call, of ``detector.predict`` and of onnxruntime on ``onnx_path``, both
    with ``threads`` CPU threads (None: torch's current count), over ``repeats`` passes of ``images`` after one
    warm-up pass.

    Both start from the decoded (H, W, 3) uint8 image; onnxruntime's time includes its (3, H, W) float conversion.
    """
    from detkit.inference.export import onnx_session

    if threads is not None:
        torch.set_num_threads(threads)
    arrays = [read_image(image) for image in images]
    session = onnx_session(onnx_path, threads=torch.get_num_threads())

    def run_onnx(array: np.ndarray) -> None:
        session.run(None, {"image": onnx_input(array)})

    def run_torch(array: np.ndarray) -> None:
        detector.predict(array, batch_size=1)

    return {"pytorch": _images_per_second(run_torch, arrays, repeats),
            "onnxruntime": _images_per_second(run_onnx, arrays, repeats), "threads": torch.get_num_threads()}


def _images_per_second(run, arrays: list[np.ndarray], repeats: int) -> float:
    for array in arrays:  # warm-up: first-call allocations, oneDNN/onnxruntime kernel choice
        run(array)
    start = time.perf_counter()
    for _ in range(repeats):
        for array in arrays:
            run(array)
    return repeats * len(arrays) / (time.perf_counter() - start)


def speed_table(speed: dict[str, float]) -> str:
    """A two-line summary of ``compare_speed``'s result."""
    return (f"PyTorch {speed['pytorch']:.1f} images/s, onnxruntime {speed['onnxruntime']:.1f} images/s "
            f"({speed['onnxruntime'] / speed['pytorch']:.2f}x), {speed['threads']} CPU threads")
