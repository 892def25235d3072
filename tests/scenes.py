"""Tiny drawn scenes that a detector can overfit in a few dozen steps: solid rectangles, one colour per class.

Boxes are (M, 4) float32 xyxy pixels of a SIZE x SIZE image; labels (M,) int64 in 0..K-1.
"""
import torch

K = 3
SIZE = 96
COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])  # one per class


def draw(boxes: list[list[int]], labels: list[int]) -> tuple[torch.Tensor, dict]:
    """A (3, SIZE, SIZE) image of dim noise with a solid rectangle of its class colour per box, and its target."""
    image = torch.rand(3, SIZE, SIZE) * 0.3
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        image[:, y1:y2, x1:x2] = COLOURS[label][:, None, None]
    return image, {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                   "labels": torch.tensor(labels, dtype=torch.int64)}


def synthetic_batch() -> tuple[torch.Tensor, list[dict]]:
    """4 images (4, 3, SIZE, SIZE) with 1-3 objects each, and their targets."""
    items = [draw([[8, 8, 40, 30], [50, 44, 80, 90]], [0, 2]),
             draw([[20, 30, 60, 60]], [1]),
             draw([[5, 60, 30, 90], [40, 10, 90, 40], [60, 60, 85, 85]], [1, 0, 2]),
             draw([[30, 20, 54, 70]], [2])]
    return torch.stack([image for image, _ in items]), [target for _, target in items]


def empty_target() -> dict:
    """The target of an image without objects."""
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


def train_steps(model: torch.nn.Module, images: torch.Tensor, targets: list[dict], steps: int,
                lr: float = 2e-3) -> None:
    """AdamW on one fixed batch; the rate drops 10x for the last quarter of the steps to settle the boxes."""
    sizes = [tuple(images.shape[-2:])] * len(targets)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        if step == 3 * steps // 4:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        losses = model(images, sizes, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    model.eval()


def coco_ground_truth(targets: list[dict]):
    """A pycocotools COCO of the targets: image id i + 1, category id label + 1, boxes as xywh."""
    from pycocotools.coco import COCO

    images, annotations = [], []
    for index, target in enumerate(targets):
        images.append({"id": index + 1, "height": SIZE, "width": SIZE, "file_name": f"{index}.png"})
        for (x1, y1, x2, y2), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": label + 1, "name": f"class{label}"} for label in range(K)]}
    coco.createIndex()
    return coco


def detect_on_two_sizes(model: torch.nn.Module) -> tuple[list[dict], list[tuple[int, int]]]:
    """Run an eval-mode detector on a batch of a SIZE x SIZE image and a 70 x 50 one zero-padded to SIZE."""
    torch.manual_seed(0)
    images, _ = synthetic_batch()
    sizes = [(SIZE, SIZE), (70, 50)]
    images = images[:2].clone()
    images[1, :, 70:], images[1, :, :, 50:] = 0, 0  # zero padding as collate does
    with torch.no_grad():
        return model.eval()(images, sizes), sizes


def assert_detections_format(detections: list[dict], sizes: list[tuple[int, int]], max_detections: int,
                             score_threshold: float) -> None:
    """Per image: boxes (D, 4) float32 inside its (h, w), scores (D,) sorted above the threshold, labels (D,) in
    0..K-1."""
    assert len(detections) == len(sizes)
    for detection, (height, width) in zip(detections, sizes):
        assert set(detection) == {"boxes", "scores", "labels"}
        boxes, scores, labels = detection["boxes"], detection["scores"], detection["labels"]
        assert 0 < len(boxes) <= max_detections and boxes.shape == (len(boxes), 4)
        assert boxes.dtype == scores.dtype == torch.float32 and labels.dtype == torch.int64
        assert scores.shape == labels.shape == (len(boxes),)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, :2] <= boxes[:, 2:]).all()
        assert (scores[:-1] >= scores[1:]).all() and (scores > score_threshold).all()
        assert ((labels >= 0) & (labels < K)).all()
