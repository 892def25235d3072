"""A 2-process (gloo, CPU) CocoEvaluator gives exactly the 1-process numbers, with DistributedSampler's padding."""
from __future__ import annotations

import datetime
import json
import math

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO
from torch.utils.data import DistributedSampler

from detkit.evaluation import CocoEvaluator

CATEGORY_IDS = [2, 7, 11]
NUM_IMAGES = 7  # odd: DistributedSampler pads rank 1 with a repeat of image index 0
WORLD_SIZE = 2


def image_id_of(index: int) -> int:
    return 100 + 3 * index  # sparse, not the dataset index


def random_scene(seed: int = 0) -> tuple[COCO, dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Ground truth of NUM_IMAGES images (1-4 objects each) and imperfect detections: jittered boxes, a wrong
    label now and then, false positives, random scores. Deterministic, so every process builds the same."""
    generator = torch.Generator().manual_seed(seed)
    images, annotations, detections = [], [], {}
    for index in range(NUM_IMAGES):
        image_id = image_id_of(index)
        images.append({"id": image_id, "height": 200, "width": 200, "file_name": f"{image_id}.png"})
        count = int(torch.randint(1, 5, (1,), generator=generator))
        xy = torch.rand(count, 2, generator=generator) * 120
        wh = 8 + torch.rand(count, 2, generator=generator) * 70
        labels = torch.randint(0, len(CATEGORY_IDS), (count,), generator=generator)
        for box, label in zip(torch.cat([xy, wh], 1).tolist(), labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[label],
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        boxes = torch.cat([xy, xy + wh], 1) + torch.randn(count, 4, generator=generator) * wh.repeat(1, 2) * 0.05
        false_positives = torch.rand(2, 4, generator=generator) * 100
        false_positives[:, 2:] += false_positives[:, :2]
        wrong = torch.rand(count, generator=generator) < 0.2
        labels = torch.where(wrong, (labels + 1) % len(CATEGORY_IDS), labels)
        detections[image_id] = (
            torch.cat([boxes, false_positives]),
            torch.rand(count + 2, generator=generator),
            torch.cat([labels, torch.randint(0, len(CATEGORY_IDS), (2,), generator=generator)]),
        )
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]}
    coco.createIndex()
    return coco, detections


def evaluate_rank(rank: int, init_file: str, out_dir: str) -> None:
    """One DDP process: evaluate the images its DistributedSampler hands it, dump what compute() returned."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
                            timeout=datetime.timedelta(seconds=60))
    try:
        coco, detections = random_scene()
        evaluator = CocoEvaluator(coco, CATEGORY_IDS)
        indices = list(DistributedSampler(range(NUM_IMAGES), num_replicas=WORLD_SIZE, rank=rank, shuffle=False))
        for index in indices:
            evaluator.update(image_id_of(index), *detections[image_id_of(index)])
        result = evaluator.compute(f"{out_dir}/results_rank{rank}.json", verbose=False)
        try:  # a failure on rank 0 must reach every rank instead of leaving them waiting
            CocoEvaluator(coco, CATEGORY_IDS).compute(verbose=False)
            error = None
        except (ValueError, RuntimeError) as exception:
            error = str(exception)
        with open(f"{out_dir}/rank{rank}.json", "w") as file:
            json.dump({"indices": indices, "stats": result.stats, "per_class": result.per_class,
                       "num_images": result.num_images, "num_detections": result.num_detections,
                       "error": error}, file)
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process(tmp_path):
    coco, detections = random_scene()
    evaluator = CocoEvaluator(coco, CATEGORY_IDS)
    for image_id, detection in detections.items():
        evaluator.update(image_id, *detection)
    expected = evaluator.compute(tmp_path / "results_single.json", verbose=False)
    assert 0.1 < expected.stats["AP"] < 0.9  # imperfect detections: a non-trivial value to compare
    double_counted = CocoEvaluator(coco, CATEGORY_IDS)  # what counting the padded repeat twice would give
    for image_id, (boxes, scores, labels) in detections.items():
        repeats = 2 if image_id == image_id_of(0) else 1
        double_counted.update(image_id, boxes.repeat(repeats, 1), scores.repeat(repeats), labels.repeat(repeats))
    assert double_counted.compute(verbose=False).stats["AP"] != expected.stats["AP"]

    mp.spawn(evaluate_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)

    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    assert ranks[0]["indices"] == [0, 2, 4, 6] and ranks[1]["indices"] == [1, 3, 5, 0]  # image 0 twice
    for outcome in ranks:
        assert outcome["stats"] == expected.stats  # exactly, on every rank
        assert [(n, ap, ap50) for n, ap, ap50 in outcome["per_class"]] == [
            (n, ap, ap50) for n, ap, ap50 in expected.per_class
        ]
        assert not any(math.isnan(ap) for _, ap, _ in expected.per_class)  # else == above would fail on nan
        assert (outcome["num_images"], outcome["num_detections"]) == (NUM_IMAGES, expected.num_detections)
    assert "no image was passed" in ranks[0]["error"]
    assert ranks[1]["error"].startswith("CocoEvaluator.compute failed on rank 0: ValueError")
    # Only rank 0 writes the results file, with the same contents as a single process.
    assert not (tmp_path / "results_rank1.json").exists()
    assert json.loads((tmp_path / "results_rank0.json").read_text()) == json.loads(
        (tmp_path / "results_single.json").read_text()
    )
