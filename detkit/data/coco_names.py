"""COCO class names of torchvision's detection checkpoints, kept here because nothing may be downloaded.

torchvision's models have 91 outputs: index 0 is background ("__background__"), 1..90 the COCO category ids
(with "N/A" for the ten ids COCO never uses). Imported into detkit (``detkit.models.torchvision_import``) the
background output is dropped, so detkit label i (0..89) is torchvision label i + 1 and COCO category id i + 1.
"""
from __future__ import annotations

# torchvision's ``weights.meta["categories"]`` of its COCO detection weights (the same list for all of them)
TORCHVISION_COCO_CATEGORIES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
NUM_COCO_LABELS = len(TORCHVISION_COCO_CATEGORIES) - 1  # K = 90 object outputs, "N/A" ids included


def coco_label_names() -> list[str]:
    """The K = 90 names of detkit labels 0..89 (torchvision labels 1..90), "N/A" for unused COCO ids."""
    return list(TORCHVISION_COCO_CATEGORIES[1:])


def coco_category_id(label: int) -> int:
    """COCO category id of detkit label ``label`` (0..89): label + 1."""
    if not 0 <= label < NUM_COCO_LABELS:
        raise ValueError(f"COCO labels of torchvision's checkpoints are 0..{NUM_COCO_LABELS - 1}, got {label}")
    return label + 1
