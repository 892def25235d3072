"""tools/eval.py on an imported torchvision checkpoint gives the 12 COCO numbers that pycocotools' COCOeval gives for
torchvision's own detections (the oracle: torchvision's model run per image in eval mode, its boxes as COCO xywh,
category id = torchvision's label), on a small generated COCO set of images of several sizes whose categories are
torchvision's 90 ids (1..90, its names; ground truth on three of them).

The ground truth is made from torchvision's detections (those not slivers, their sides moved by up to 15%, plus
boxes nothing detects), so that every one of the 12 numbers is defined and most are neither 0 nor 1.

The random model's trunk is calibrated (``tests/torchvision_models.match_statistics``): its features depend on
the image, so a resize or normalisation unlike torchvision's would move every score. Such a model also magnifies
float rounding: the two sides' boxes differ by up to ~0.06 px and scores by ~1e-4 (measured on 6 images, 442
detections); tools/eval's numbers equal pycocotools' on the results file it wrote exactly, and torchvision's
within 5.2e-4 (ARl; boxes that far apart cross a COCO IoU threshold now and then).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision_models import published_form, random_torchvision

from detkit.engine.cli import evaluate
from detkit.evaluation.coco import STAT_NAMES
from detkit.inference.import_torchvision import coco_categories, import_torchvision

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"  # the cheapest of the six
IMAGE_SIZES = [(240, 320), (480, 560), (200, 500), (360, 360), (300, 420), (150, 250)]  # (h, w), no two of one shape
DETECTED_CATEGORIES = 2  # ground truth on the two ids torchvision detects most, and on one it never detects
# ground truth only from detections this large: many of the random model's are slivers (~0.1-5 px), where the two
# models' float rounding (up to ~0.06 px, see the module's docstring) moves an IoU across one of COCO's thresholds
GROUND_TRUTH_SIDE = 8.0
BOX_TOLERANCE, SCORE_TOLERANCE = 0.2, 1e-3  # px on every coordinate, and score, of paired detections
STAT_TOLERANCE = 5e-3


def scene(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8: a smooth colour field (bilinear from 6 x 8 random colours) under six rectangles, with
    pixel noise (+-32) everywhere: flat regions would give many locations exactly tied objectness, whose order at
    the proposal cut neither model defines."""
    height, width = size
    field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(field).resize((width, height), Image.BILINEAR)).astype(np.int64)
    for _ in range(6):
        box_w, box_h = int(rng.integers(12, width // 2)), int(rng.integers(12, height // 2))
        x, y = int(rng.integers(0, width - box_w)), int(rng.integers(0, height - box_h))
        image[y:y + box_h, x:x + box_w] = rng.integers(0, 256, 3)
    return np.clip(image + rng.integers(-32, 33, image.shape), 0, 255).astype(np.uint8)


def torchvision_detections(model: torch.nn.Module, arrays: list[np.ndarray]) -> list[dict]:
    """torchvision's detections per image (eval mode, one image a call): boxes (D, 4) xyxy absolute pixels of the
    original image, scores (D,), labels (D,) torchvision's 1..90."""
    with torch.no_grad():
        return [model([torch.from_numpy(array).permute(2, 0, 1).float() / 255])[0] for array in arrays]


def coco_box(xyxy: list[float]) -> list[float]:
    """[x1, y1, x2, y2] -> COCO's [x, y, w, h]."""
    x1, y1, x2, y2 = xyxy
    return [x1, y1, x2 - x1, y2 - y1]


def ground_truth(detections: list[dict], sizes: list[tuple[int, int]], rng: np.random.Generator) -> list[dict]:
    """COCO annotations on the ``DETECTED_CATEGORIES`` labels torchvision detects most and on the first id it never
    detects (AP 0, in the mean): per image and category its detections at least ``GROUND_TRUTH_SIDE`` px wide and
    high, each side moved by up to 15% of its length (IoU about 0.5-0.9; boxes (4,) xyxy clipped to the image), and
    one box of 16-200 px sides where nothing may be (a miss: recall below 1)."""
    counts = Counter(label for image in detections for label in image["labels"].tolist())
    categories = [label for label, _ in counts.most_common(DETECTED_CATEGORIES)]
    categories.append(next(category for category in range(1, 91) if category not in counts))
    annotations = []
    for image_id, (found, (height, width)) in enumerate(zip(detections, sizes), start=1):
        boxes = []
        for category in categories:
            of_category = found["labels"] == category
            chosen = found["boxes"][of_category].numpy()  # (M, 4)
            sides = np.tile(chosen[:, 2:] - chosen[:, :2], 2)
            keep = sides.min(1) >= GROUND_TRUTH_SIDE
            chosen, sides = chosen[keep], sides[keep]
            shifted = chosen + rng.uniform(-0.15, 0.15, chosen.shape) * sides
            boxes += [(category, box) for box in shifted]
            side = rng.uniform(16, min(200, height, width), 2)
            corner = rng.uniform(0, 1, 2) * (np.array([width, height]) - side)
            boxes.append((category, np.concatenate([corner, corner + side])))
        for category, box in boxes:
            x1, y1, x2, y2 = np.clip(box, 0, [width, height, width, height]).tolist()
            if x2 <= x1 or y2 <= y1:
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(category),
                                "bbox": coco_box([x1, y1, x2, y2]), "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    return annotations


def write_dataset(folder: Path, arrays: list[np.ndarray], annotations: list[dict]) -> Path:
    """PNG images under ``folder / "images"`` and their COCO file, categories torchvision's 90; returns the file."""
    (folder / "images").mkdir()
    images = []
    for image_id, array in enumerate(arrays, start=1):
        name = f"{image_id:03d}.png"
        Image.fromarray(array).save(folder / "images" / name)
        images.append({"id": image_id, "file_name": name, "height": array.shape[0], "width": array.shape[1]})
    path = folder / "instances_val.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": coco_categories().to_coco()}))
    return path


def coco_results(detections: list[dict]) -> list[dict]:
    """COCO results of images 1, 2, ...: detections' boxes (D, 4) xyxy pixels as xywh, category id = torchvision's
    label, score."""
    return [{"image_id": image_id, "category_id": int(label), "bbox": coco_box(box), "score": float(score)}
            for image_id, found in enumerate(detections, start=1)
            for box, score, label in zip(found["boxes"].tolist(), found["scores"], found["labels"])]


def pycocotools_stats(annotation_file: Path, results: list[dict]) -> dict[str, float]:
    """The 12 numbers of pycocotools' own COCOeval (bbox) for COCO ``results``."""
    ground = COCO(str(annotation_file))
    coco_eval = COCOeval(ground, ground.loadRes(results), iouType="bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return dict(zip(STAT_NAMES, coco_eval.stats.tolist()))


def paired_scores(detections: list[dict], results: list[dict]) -> list[torch.Tensor]:
    """Per image, detkit's score of each of torchvision's detections (D,): the result of its category whose box is
    nearest, asserted within ``BOX_TOLERANCE`` px on every coordinate and ``SCORE_TOLERANCE``, one to one."""
    paired = []
    for image_id, found in enumerate(detections, start=1):
        ours = [r for r in results if r["image_id"] == image_id]
        assert len(ours) == len(found["scores"]) > 0
        boxes = torch.tensor([r["bbox"] for r in ours], dtype=torch.float64)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        distance = torch.cdist(found["boxes"].double(), boxes, p=float("inf"))  # (D, D) largest coordinate difference
        categories = torch.tensor([r["category_id"] for r in ours])
        distance[found["labels"][:, None] != categories[None, :]] = float("inf")
        nearest = distance.min(dim=1)
        assert float(nearest.values.max()) <= BOX_TOLERANCE and len(set(nearest.indices.tolist())) == len(ours)
        scores = torch.tensor([r["score"] for r in ours])[nearest.indices]
        torch.testing.assert_close(scores, found["scores"], atol=SCORE_TOLERANCE, rtol=0)
        paired.append(scores)
    return paired


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """(folder, COCO file, imported checkpoint, torchvision's detections) of the generated set."""
    folder = tmp_path_factory.mktemp("parity")
    torch.set_num_threads(1)
    model = random_torchvision(ARCH, calibrate=True)
    rng = np.random.default_rng(0)
    arrays = [scene(size, rng) for size in IMAGE_SIZES]
    detections = torchvision_detections(model, arrays)
    annotation_file = write_dataset(folder, arrays, ground_truth(detections, IMAGE_SIZES, rng))
    torch.save(published_form(model), folder / "weights.pth")
    checkpoint = import_torchvision(ARCH, str(folder / "weights.pth"), str(folder / "imported.ckpt"))
    return folder, annotation_file, checkpoint, detections


def test_tools_eval_gives_pycocotools_numbers_for_torchvisions_detections(case, one_thread):
    """The 12 numbers exactly pycocotools' on tools/eval's own results file, and within ``STAT_TOLERANCE`` of
    pycocotools' for torchvision's detections, with its own scores and with detkit's (the boxes' and scores' float
    rounding, see the module's docstring)."""
    folder, annotation_file, checkpoint, detections = case
    expected = pycocotools_stats(annotation_file, coco_results(detections))
    assert all(0 <= value < 1 for value in expected.values()), expected  # every number defined (-1: none)
    assert sum(value > 0 for value in expected.values()) >= 8, expected
    evaluation = evaluate(["--checkpoint", checkpoint, "--data.val_images", str(folder / "images"),
                           "--data.val_annotations", str(annotation_file), "--data.val_batch_size", "1",
                           "--data.num_workers", "0", "--results", str(folder / "results.json")])
    results = json.loads((folder / "results.json").read_text())
    assert evaluation.num_images == len(IMAGE_SIZES) and evaluation.num_detections == len(results)
    # the evaluation itself is pycocotools', exactly, on the results file tools/eval wrote
    own = pycocotools_stats(annotation_file, results)
    # the results are torchvision's detections (labels = category ids), scores to float rounding
    rescored = [found | {"scores": scores} for found, scores in zip(detections, paired_scores(detections, results))]
    with_our_scores = pycocotools_stats(annotation_file, coco_results(rescored))
    print("\n" + "\n".join(f"{name:<6} torchvision + pycocotools {expected[name]:.6f}  with detkit's scores "
                           f"{with_our_scores[name]:.6f}  tools/eval {evaluation.stats[name]:.6f}"
                           for name in STAT_NAMES))
    for name in STAT_NAMES:
        assert evaluation.stats[name] == pytest.approx(own[name], abs=1e-12), name
        assert evaluation.stats[name] == pytest.approx(with_our_scores[name], abs=STAT_TOLERANCE), name
        assert evaluation.stats[name] == pytest.approx(expected[name], abs=STAT_TOLERANCE), name
