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
    (H, W, 3) uint8 image and pair their detections: each PyTorch detection with the unpaired onnxruntime one
    of its label whose box is nearest; every pair must lie within the tolerances and none be left over.

    Pairing instead of comparing position by position: two detections whose scores differ by less than float
    noise (1e-5 happens among 100 detections) may come out in either order, which is no disagreement.
    """
    boxes, scores, labels = session.run(["boxes", "scores", "labels"], {"image": onnx_input(image)})
    expected: Prediction = detector.predict(image, batch_size=1)[0]
    problems = _shape_problems(boxes, scores, labels)
    if len(boxes) != len(expected.boxes):
        problems.append(f"{len(boxes)} detections from onnxruntime, {len(expected.boxes)} from PyTorch")
    box_differences, score_differences = [], []
    unpaired = list(range(len(boxes)))
    for index, (box, score, label) in enumerate(zip(expected.boxes.numpy(), expected.scores.numpy(),
                                                    expected.labels.numpy())):
        candidates = [j for j in unpaired if labels[j] == label]
        if not candidates:
            problems.append(f"PyTorch detection {index} (label {label} score {score:.5f} box {_box_text(box)}) "
                            f"has no onnxruntime detection of its label")
            continue
        nearest = min(candidates, key=lambda j: np.abs(boxes[j] - box).max())
        unpaired.remove(nearest)
        box_differences.append(float(np.abs(boxes[nearest] - box).max()))
        score_differences.append(abs(float(scores[nearest]) - float(score)))
        if box_differences[-1] > box_tolerance or score_differences[-1] > score_tolerance:
            problems.append(f"PyTorch detection {index}: label {label} score {score:.5f} box {_box_text(box)}, "
                            f"nearest onnxruntime one: score {scores[nearest]:.5f} box {_box_text(boxes[nearest])}")
    return ImageParity(size=image.shape[:2], onnx_count=len(boxes), torch_count=len(expected.boxes),
                       max_box_difference=max(box_differences, default=0.0),
                       max_score_difference=max(score_differences, default=0.0), problems=problems)


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
