"""Whether an exported ONNX model detects what ``detkit.load(checkpoint).predict`` does, image by image.

Dims: D detections of one image. Boxes (D, 4) xyxy in the input image's pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detkit.inference.predictor import Detector, Prediction

BOX_TOLERANCE = 0.5  # pixels of the input image
SCORE_TOLERANCE = 1e-3
CHECK_SIZES = ((200, 90), (90, 200), (640, 480))  # (width, height): wide, tall and a photo's 4:3
MAX_LISTED = 5  # differences named per image


@dataclass
class ImageParity:
    """One image's comparison: its (h, w), the detections of each side, the largest box and score differences
    over matched detections (0 when there are none), and the differences found (empty: they agree)."""

    size: tuple[int, int]
    onnx_count: int
    torch_count: int
    max_box_difference: float
    max_score_difference: float
    problems: list[str]


def check_images(sizes: tuple[tuple[int, int], ...] = CHECK_SIZES) -> list[np.ndarray]:
    """Deterministic test images (H, W, 3) uint8, one per (width, height): smooth colour gradients with solid
    rectangles, so that both resize filters and every pyramid level see structure."""
    images = []
    for width, height in sizes:
        rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
        image = np.stack([127 + 100 * np.sin(columns / (9 + 4 * c) + rows / (13 + 3 * c) + c) for c in range(3)], -1)
        for index in range(4):  # rectangles at fixed fractions of the image
            x, y = int(width * (0.1 + 0.2 * index)), int(height * (0.15 + 0.18 * index))
            image[y:y + max(height // 5, 2), x:x + max(width // 6, 2), index % 3] = 255
        images.append(image.clip(0, 255).astype(np.uint8))
    return images


def onnx_input(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the graph's ``image`` input, (3, H, W) float32 in [0, 1]."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)


def compare_image(session, detector: Detector, image: np.ndarray, box_tolerance: float = BOX_TOLERANCE,
                  score_tolerance: float = SCORE_TOLERANCE) -> ImageParity:
    """Run ``session`` (an onnxruntime InferenceSession of the export) and ``detector.predict`` on one
    (H, W, 3) uint8 image and compare detection by detection, in order (both sort by decreasing score)."""
    boxes, scores, labels = session.run(["boxes", "scores", "labels"], {"image": onnx_input(image)})
    expected: Prediction = detector.predict(image, batch_size=1)[0]
    reference = (expected.boxes.numpy(), expected.scores.numpy(), expected.labels.numpy())
    problems = _shape_problems(boxes, scores, labels)
    count = min(len(boxes), len(reference[0]))
    if len(boxes) != len(reference[0]):
        problems.append(f"{len(boxes)} detections from onnxruntime, {len(reference[0])} from PyTorch")
    box_difference = np.abs(boxes[:count] - reference[0][:count]).max(axis=1) if count else np.zeros(0)
    score_difference = np.abs(scores[:count] - reference[1][:count]) if count else np.zeros(0)
    for index in range(count):
        if labels[index] != reference[2][index] or box_difference[index] > box_tolerance \
                or score_difference[index] > score_tolerance:
            problems.append(f"detection {index}: onnxruntime label {labels[index]} score {scores[index]:.5f} box "
                            f"{_box_text(boxes[index])}, PyTorch label {reference[2][index]} score "
                            f"{reference[1][index]:.5f} box {_box_text(reference[0][index])}")
    return ImageParity(size=image.shape[:2], onnx_count=len(boxes), torch_count=len(reference[0]),
                       max_box_difference=float(box_difference.max(initial=0.0)),
                       max_score_difference=float(score_difference.max(initial=0.0)), problems=problems)


def _box_text(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{value:.2f}" for value in box.tolist()) + "]"


def _shape_problems(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> list[str]:
    count = len(scores)
    if boxes.shape != (count, 4) or labels.shape != (count,) or labels.dtype != np.int64 \
            or boxes.dtype != np.float32 or scores.dtype != np.float32:
        return [f"outputs boxes {boxes.shape} {boxes.dtype}, scores {scores.shape} {scores.dtype}, labels "
                f"{labels.shape} {labels.dtype}; expected (D, 4) float32, (D,) float32, (D,) int64"]
    return []


def describe_mismatches(results: list[ImageParity]) -> str:
    """The problems of every image that differs, at most ``MAX_LISTED`` per image, one per line."""
    lines = []
    for result in results:
        if result.problems:
            height, width = result.size
            lines.append(f"image {width}x{height}: " + "; ".join(result.problems[:MAX_LISTED])
                         + (f"; and {len(result.problems) - MAX_LISTED} more" if len(result.problems) > MAX_LISTED
                            else ""))
    return "\n".join(lines)
