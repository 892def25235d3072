"""CocoEvaluator against tiny hand-made COCO ground truth with hand-computed AP."""
from __future__ import annotations

import gc
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pytest import approx

from detkit.evaluation import STAT_NAMES, CocoEvaluator, format_per_class_table
from detkit.evaluation.coco import (
    ImageDetections,
    collector_paused,
    merge_records,
    result_columns,
    results_array,
    to_coco_results,
)


def make_coco_gt(images: dict[int, tuple[int, int]], annotations: list[tuple], categories: dict[int, str]) -> COCO:
    """In-memory COCO ground truth.

    images: image id -> (height, width); annotations: (image_id, category_id, [x, y, w, h], iscrowd);
    categories: category id -> name.
    """
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "height": h, "width": w, "file_name": f"{i}.png"} for i, (h, w) in images.items()],
        "categories": [{"id": c, "name": n} for c, n in categories.items()],
        "annotations": [
            {"id": n + 1, "image_id": image_id, "category_id": cat, "bbox": list(xywh),
             "area": float(xywh[2] * xywh[3]), "iscrowd": crowd}
            for n, (image_id, cat, xywh, crowd) in enumerate(annotations)
        ],
    }
    coco.createIndex()
    return coco


def xyxy(*xywh_boxes) -> torch.Tensor:
    """(N, 4) float32 xyxy from COCO [x, y, w, h] boxes."""
    boxes = torch.tensor(xywh_boxes, dtype=torch.float32).reshape(-1, 4)
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def empty_detections():
    return torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)


CATEGORIES = {1: "circle", 5: "square", 90: "triangle"}  # sparse ids: labels 0, 1, 2
CATEGORY_IDS = [1, 5, 90]
SMALL, MEDIUM, LARGE = [10, 20, 20, 20], [50, 40, 60, 60], [100, 100, 150, 120]  # areas 400, 3600, 18000

# Every area range and every category, at most one object per (image, category): all 12 numbers reach 1.0.
SCENE_IMAGES = {10: (300, 400), 20: (300, 400), 35: (300, 400)}
SCENE_ANNOTATIONS = [
    (10, 1, SMALL, 0), (10, 5, LARGE, 0),
    (20, 90, MEDIUM, 0), (20, 5, SMALL, 0),
    (35, 1, LARGE, 0),
]


def scene_gt() -> COCO:
    return make_coco_gt(SCENE_IMAGES, SCENE_ANNOTATIONS, CATEGORIES)


def feed_perfect_predictions(evaluator: CocoEvaluator, image_ids=None, label_of=CATEGORY_IDS.index) -> None:
    """update() every (or the given) scene image with its ground truth boxes as detections."""
    for image_id in image_ids or SCENE_IMAGES:
        objects = [(cat, box) for i, cat, box, _ in SCENE_ANNOTATIONS if i == image_id]
        boxes = xyxy(*[box for _, box in objects])
        scores = torch.linspace(0.9, 0.5, len(objects))
        labels = torch.tensor([label_of(cat) for cat, _ in objects], dtype=torch.int64)
        evaluator.update(image_id, boxes, scores, labels)


def test_perfect_predictions_give_one_everywhere():
    # COCOeval's precision is tp / (tp + fp + eps), so "1.0" is 1 - 2e-16: compare with approx.
    evaluator = CocoEvaluator(scene_gt(), CATEGORY_IDS)
    feed_perfect_predictions(evaluator)
    result = evaluator.compute(verbose=False)
    assert result.stats == approx({name: 1.0 for name in STAT_NAMES})
    assert result.per_class == [("circle", approx(1.0), approx(1.0)), ("square", approx(1.0), approx(1.0)),
                                ("triangle", approx(1.0), approx(1.0))]
    assert (result.num_images, result.num_detections) == (3, 5)


def test_no_detections_give_zero_not_a_crash(tmp_path):
    evaluator = CocoEvaluator(scene_gt(), CATEGORY_IDS)
    for image_id in SCENE_IMAGES:
        evaluator.update(image_id, *empty_detections())
    result = evaluator.compute(tmp_path / "results.json", verbose=False)
    assert result.stats == {name: 0.0 for name in STAT_NAMES}
    assert result.per_class == [("circle", 0.0, 0.0), ("square", 0.0, 0.0), ("triangle", 0.0, 0.0)]
    assert (result.num_images, result.num_detections) == (3, 0)
    assert json.loads((tmp_path / "results.json").read_text()) == []


def test_shift_to_iou_0613_passes_three_of_ten_thresholds():
    # 100x100 boxes shifted right by 24 px: IoU = 76 / 124 = 0.613, which passes IoU 0.50, 0.55, 0.60 only.
    # One object per image, so each passing threshold has AP 1 and each failing one AP 0: AP = 3/10.
    gt = make_coco_gt({1: (200, 200), 2: (200, 200)}, [(1, 5, [10, 10, 100, 100], 0), (2, 5, [50, 60, 100, 100], 0)],
                      CATEGORIES)
    evaluator = CocoEvaluator(gt, CATEGORY_IDS)
    evaluator.update(1, xyxy([34, 10, 100, 100]), torch.tensor([0.9]), torch.tensor([1]))
    evaluator.update(2, xyxy([74, 60, 100, 100]), torch.tensor([0.8]), torch.tensor([1]))
    stats = evaluator.compute(verbose=False).stats
    assert stats["AP"] == approx(0.3, abs=1e-12)
    assert stats["AP50"] == 1.0 and stats["AP75"] == 0.0
    assert stats["APl"] == approx(0.3, abs=1e-12)
    assert stats["APs"] == -1.0 and stats["APm"] == -1.0  # COCO: no ground truth of that size
    assert stats["AR100"] == approx(0.3, abs=1e-12)


@pytest.mark.parametrize("on_crowd, expected_ap", [(True, 1.0), (False, 0.5)])
def test_detection_on_crowd_region_is_neither_tp_nor_fp(on_crowd, expected_ap):
    # One real object and two crowd regions (one never detected). The extra detection has the top score:
    # as a false positive it halves the precision at every recall (AP 0.5); on the crowd region it is ignored.
    gt = make_coco_gt(
        {1: (300, 300)},
        [(1, 1, [10, 10, 50, 50], 0), (1, 1, [150, 150, 120, 120], 1), (1, 1, [100, 10, 40, 40], 1)],
        CATEGORIES,
    )
    extra = [160, 170, 60, 50] if on_crowd else [200, 10, 60, 50]
    evaluator = CocoEvaluator(gt, CATEGORY_IDS)
    evaluator.update(1, xyxy([10, 10, 50, 50], extra), torch.tensor([0.8, 0.9]), torch.tensor([0, 0]))
    result = evaluator.compute(verbose=False)
    assert result.stats["AP"] == approx(expected_ap, abs=1e-12)
    assert result.stats["AR100"] == 1.0  # the crowd regions are no missed objects
    assert result.per_class[0] == ("circle", approx(expected_ap, abs=1e-12), approx(expected_ap, abs=1e-12))


def test_sparse_category_ids_map_from_contiguous_labels():
    evaluator = CocoEvaluator(scene_gt(), CATEGORY_IDS)
    feed_perfect_predictions(evaluator, label_of=lambda cat: (CATEGORY_IDS.index(cat) + 1) % 3)  # every label wrong
    result = evaluator.compute(verbose=False)
    assert result.stats["AP"] == 0.0 and result.stats["AR100"] == 0.0


def test_class_without_ground_truth_is_nan_and_unlisted_categories_are_not_evaluated():
    # gt has category 3 too, which is not trained: it must not count. Category 5 has no gt among these images.
    gt = make_coco_gt({1: (200, 200)}, [(1, 1, SMALL, 0), (1, 90, MEDIUM, 0), (1, 3, LARGE, 0)],
                      {**CATEGORIES, 3: "unused"})
    evaluator = CocoEvaluator(gt, CATEGORY_IDS, class_names=["c", "s", "t"])
    evaluator.update(1, xyxy(SMALL, MEDIUM), torch.tensor([0.9, 0.7]), torch.tensor([0, 2]))
    result = evaluator.compute(verbose=False)
    assert result.stats["AP"] == approx(1.0)
    assert result.per_class[0] == ("c", approx(1.0), approx(1.0))
    assert result.per_class[2] == ("t", approx(1.0), approx(1.0))
    name, ap, ap50 = result.per_class[1]
    assert name == "s" and math.isnan(ap) and math.isnan(ap50)
    assert format_per_class_table(result.per_class).splitlines()[2].split() == ["s", "nan", "nan"]


def test_only_updated_images_are_evaluated():
    evaluator = CocoEvaluator(scene_gt(), CATEGORY_IDS)
    feed_perfect_predictions(evaluator, image_ids=[10, 35])  # image 20 skipped: its objects must not count as missed
    result = evaluator.compute(verbose=False)
    assert result.stats["AP"] == approx(1.0) and result.stats["AR100"] == 1.0
    assert result.stats["APm"] == -1.0  # the only medium object is on image 20
    assert math.isnan(result.per_class[2][1])  # triangle is only on image 20
    assert (result.num_images, result.num_detections) == (2, 3)


def test_repeated_image_counts_once():
    # Counted twice, every object would get a second, unmatched detection of equal score: AP < 1.
    evaluator = CocoEvaluator(scene_gt(), CATEGORY_IDS)
    feed_perfect_predictions(evaluator)
    feed_perfect_predictions(evaluator, image_ids=[20, 10])
    result = evaluator.compute(verbose=False)
    assert result.stats["AP"] == approx(1.0)
    assert (result.num_images, result.num_detections) == (3, 5)


def test_merge_records_keeps_first_record_per_image():
    def record(score):
        return ImageDetections(np.zeros((1, 4), np.float32), np.array([score], np.float32), np.zeros(1, np.int64))

    merged = merge_records([{3: record(0.1), 1: record(0.2)}, {2: record(0.3), 3: record(0.4)}])
    assert sorted(merged) == [1, 2, 3]
    assert [float(merged[i].scores[0]) for i in (1, 2, 3)] == approx([0.2, 0.3, 0.1])


def test_results_json_holds_xywh_original_ids_and_replaces_old_file(tmp_path):
    path = tmp_path / "out" / "results.json"
    path.parent.mkdir()
    path.write_text("stale, not json")
    gt = make_coco_gt({7: (100, 100), 3: (100, 100)}, [(7, 90, [1.5, 2.0, 10.0, 20.0], 0)], CATEGORIES)
    evaluator = CocoEvaluator(gt, CATEGORY_IDS)
    evaluator.update(7, torch.tensor([[1.5, 2.0, 11.5, 22.0], [0.0, 0.0, 4.0, 8.0]]), torch.tensor([0.75, 0.25]),
                     torch.tensor([2, 1]))
    evaluator.update(3, torch.tensor([[5.0, 6.0, 7.0, 9.0]]), torch.tensor([0.5]), torch.tensor([0]))
    evaluator.compute(path, verbose=False)
    assert json.loads(path.read_text()) == [
        {"image_id": 3, "category_id": 1, "bbox": [5.0, 6.0, 2.0, 3.0], "score": 0.5},
        {"image_id": 7, "category_id": 90, "bbox": [1.5, 2.0, 10.0, 20.0], "score": 0.75},
        {"image_id": 7, "category_id": 5, "bbox": [0.0, 0.0, 4.0, 8.0], "score": 0.25},
    ]
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left behind


def per_detection_results(records: dict[int, ImageDetections], category_ids) -> list[dict]:
    """The straightforward conversion, one detection at a time: the reference for the vectorised one."""
    results = []
    for image_id, (boxes, scores, labels) in records.items():
        for box, score, label in zip(boxes, scores, labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"image_id": image_id, "category_id": category_ids[int(label)],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


def random_records(rng: np.random.Generator, num_images: int, num_labels: int) -> dict[int, ImageDetections]:
    """Images with 0 to 30 detections (some none), in shuffled id order; boxes (K, 4) float32 xyxy."""
    records = {}
    for image_id in rng.permutation(np.arange(1, 10 * num_images, 10))[:num_images].tolist():
        count = int(rng.integers(0, 31)) if image_id % 3 else 0
        corners = rng.uniform(0, 900, (count, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(0.1, 300, (count, 2))], axis=1).astype(np.float32)
        records[image_id] = ImageDetections(boxes, rng.random(count).astype(np.float32),
                                            rng.integers(0, num_labels, count))
    return records


def test_vectorised_results_equal_the_per_detection_conversion():
    rng = np.random.default_rng(11)
    category_ids = [3, 17, 90, 4]
    records = random_records(rng, 40, len(category_ids))
    expected = per_detection_results(records, category_ids)
    assert len(expected) > 200 and any(len(r.scores) == 0 for r in records.values())
    results = to_coco_results(records, category_ids)
    assert results == expected
    assert all(type(r["image_id"]) is int and type(r["category_id"]) is int and type(r["score"]) is float
               and all(type(v) is float for v in r["bbox"]) for r in results)  # JSON writes ints as ints
    rows = results_array(result_columns(records, category_ids))
    np.testing.assert_array_equal(
        rows, [[r["image_id"], *r["bbox"], r["score"], r["category_id"]] for r in expected])


def test_results_of_no_images_and_of_no_detections_are_empty():
    assert to_coco_results({}, CATEGORY_IDS) == []
    nothing = ImageDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert to_coco_results({4: nothing}, CATEGORY_IDS) == []
    assert results_array(result_columns({4: nothing}, CATEGORY_IDS)).shape == (0, 7)


def test_collector_paused_restores_the_collector_as_it_was():
    assert gc.isenabled()
    with pytest.raises(KeyError):
        with collector_paused():
            assert not gc.isenabled()
            raise KeyError("inside")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller that had turned it off keeps it off
    finally:
        gc.enable()


def test_summary_is_the_twelve_pycocotools_lines(capsys):
    evaluator = CocoEvaluator(scene_gt(), CATEGORY_IDS)
    feed_perfect_predictions(evaluator, image_ids=[10])
    capsys.readouterr()  # drop COCO's "creating index" lines from building the ground truth
    result = evaluator.compute(verbose=True)
    lines = result.summary.splitlines()
    assert len(lines) == 12
    assert lines[0] == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000"
    assert lines[11] == " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = 1.000"
    assert [float(line.rsplit("=", 1)[1]) for line in lines] == [round(result.stats[n], 3) for n in STAT_NAMES]
    printed = capsys.readouterr().out
    assert printed == result.summary + "\n" + format_per_class_table(result.per_class) + "\n"  # no pycocotools chatter


def test_format_per_class_table():
    table = format_per_class_table([("cat", 0.5, 0.75), ("long_name", math.nan, math.nan)])
    assert table == (
        "class          AP    AP50\n"
        "cat         0.500   0.750\n"
        "long_name     nan     nan"
    )


def test_reset_forgets_images():
    evaluator = CocoEvaluator(scene_gt(), CATEGORY_IDS)
    feed_perfect_predictions(evaluator, image_ids=[10])
    evaluator.reset()
    evaluator.update(10, *empty_detections())
    assert evaluator.compute(verbose=False).stats["AP"] == 0.0


def test_bad_input_is_named():
    gt = scene_gt()
    with pytest.raises(ValueError, match=r"\[42\]"):
        CocoEvaluator(gt, [1, 42])
    evaluator = CocoEvaluator(gt, CATEGORY_IDS)
    with pytest.raises(ValueError, match="image id 999 is not in the ground truth"):
        evaluator.update(999, *empty_detections())
    with pytest.raises(ValueError, match=r"image id 10: labels must lie in \[0, 3\)"):
        evaluator.update(10, xyxy(SMALL), torch.tensor([0.5]), torch.tensor([3]))
    with pytest.raises(ValueError, match="image id 10: expected boxes"):
        evaluator.update(10, xyxy(SMALL), torch.tensor([0.5, 0.4]), torch.tensor([0]))
    with pytest.raises(ValueError, match="no image was passed"):
        evaluator.compute(verbose=False)
