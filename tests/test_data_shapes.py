"""The built-in shapes dataset: determinism (same seed, same JSON bytes), tight boxes, occlusion limits,
rasterisation and contrast."""
import json

import numpy as np
import pytest

from detkit.data.coco import CocoDetection
from detkit.data.shapes import (
    MIN_VISIBLE_FRACTION,
    SHAPES_CATEGORIES,
    Shape,
    generate_shapes,
    generate_split,
    make_image,
    rasterize,
    sample_scene,
    scene_annotations,
    visible_masks,
)


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path):
    generate_shapes(str(tmp_path / "a"), num_train=12, num_val=4, seed=5, workers=1)
    generate_shapes(str(tmp_path / "b"), num_train=12, num_val=4, seed=5, workers=1)
    generate_shapes(str(tmp_path / "c"), num_train=12, num_val=4, seed=6, workers=1)
    for split in ("train", "val"):
        a = (tmp_path / "a" / f"instances_{split}.json").read_bytes()
        assert a == (tmp_path / "b" / f"instances_{split}.json").read_bytes()
        assert a != (tmp_path / "c" / f"instances_{split}.json").read_bytes()
    assert ((tmp_path / "a/images/train_000003.png").read_bytes()
            == (tmp_path / "b/images/train_000003.png").read_bytes())


def test_process_pool_gives_the_same_output(tmp_path):
    generate_split(str(tmp_path / "one"), "val", 70, 1, 128, 0, workers=1)
    generate_split(str(tmp_path / "two"), "val", 70, 1, 128, 0, workers=2)
    assert (tmp_path / "one/instances_val.json").read_bytes() == (tmp_path / "two/instances_val.json").read_bytes()


def test_json_content_loads_as_coco(tmp_path):
    paths = generate_shapes(str(tmp_path), num_train=30, num_val=10, seed=0, workers=1)
    train = json.loads(open(paths["train"]).read())
    text = open(paths["train"]).read()
    assert "date" not in text and "time" not in text  # no timestamps
    assert train["categories"] == SHAPES_CATEGORIES
    assert [im["id"] for im in train["images"]] == list(range(1, 31))
    val = json.loads(open(paths["val"]).read())
    assert [im["id"] for im in val["images"]] == list(range(31, 41))
    counts = np.bincount([a["image_id"] for a in train["annotations"]], minlength=31)[1:]
    assert counts.max() <= 8 and (counts == 0).any() and (counts >= 4).any()
    assert [a["id"] for a in train["annotations"]] == list(range(1, len(train["annotations"]) + 1))
    for a in train["annotations"]:
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128 and w >= 1 and h >= 1
        assert 0 < a["area"] <= w * h and a["iscrowd"] == 0
    dataset = CocoDetection(str(tmp_path / "images"), paths["train"])
    assert len(dataset) == 30 and dataset.categories.class_names == ["circle", "rectangle", "triangle"]


def test_boxes_are_tight_on_visible_pixels():
    """Oracle: paint the scene's masks in drawing order with distinct colours on black; each object's visible
    pixels are those still showing its colour. Box = their bounds, area = their count, >= half visible."""
    occluded = 0
    for seed in range(25):
        shapes, masks = sample_scene(np.random.default_rng([seed, 99]), 128)
        annotations = scene_annotations(shapes, masks)
        canvas = np.zeros((128, 128), dtype=np.int64)
        for index, mask in enumerate(masks):
            canvas[mask] = index + 1
        assert len(annotations) == len(shapes) <= 8
        for index, (shape, annotation) in enumerate(zip(shapes, annotations)):
            ys, xs = np.nonzero(canvas == index + 1)
            expected = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            assert annotation["bbox"] == expected
            assert annotation["area"] == len(xs)
            assert len(xs) >= MIN_VISIBLE_FRACTION * masks[index].sum()
            assert annotation["category_id"] == {"circle": 1, "rectangle": 2, "triangle": 3}[shape.kind]
            occluded += len(xs) < masks[index].sum()
    assert occluded >= 3  # the oracle did see partly hidden objects


def test_rasterize_hand_computed():
    rectangle = rasterize(Shape("rectangle", (2, 3, 4, 2)), 8)
    expected = np.zeros((8, 8), dtype=bool)
    expected[3:5, 2:6] = True
    np.testing.assert_array_equal(rectangle, expected)
    circle = rasterize(Shape("circle", (1, 1, 4)), 8)  # centre (3, 3), radius 2
    expected = np.zeros((8, 8), dtype=bool)
    expected[1, 2:4] = expected[4, 2:4] = True
    expected[2:4, 1:5] = True
    np.testing.assert_array_equal(circle, expected)
    triangle = rasterize(Shape("triangle", (0, 0, 4, 0, 0, 4)), 6)  # pixels with x + y + 1 <= 4
    np.testing.assert_array_equal(triangle, np.add.outer(np.arange(6), np.arange(6)) + 1 <= 4)
    # vertex order does not matter
    np.testing.assert_array_equal(triangle, rasterize(Shape("triangle", (0, 0, 0, 4, 4, 0)), 6))


def test_large_shapes_cover_their_geometric_area():
    circle = rasterize(Shape("circle", (10, 10, 60)), 128)
    assert circle.sum() == pytest.approx(np.pi * 30**2, rel=0.01)
    triangle = rasterize(Shape("triangle", (10, 10, 100, 20, 40, 90)), 128)
    assert triangle.sum() == pytest.approx(0.5 * abs(90 * 80 - 10 * 30), rel=0.02)


def test_objects_contrast_with_their_surroundings():
    """Mean colour of each object's visible pixels vs. the background pixels in a 3 px ring around its box."""
    distances = []
    for index in range(15):
        image, annotations = make_image(0, "train", index, 128)
        rng = np.random.default_rng([0, 0, index, 0])
        _, masks = sample_scene(rng, 128)
        covered = np.any(masks, axis=0) if masks else np.zeros((128, 128), dtype=bool)
        for annotation, seen in zip(annotations, visible_masks(masks)):
            x, y, w, h = annotation["bbox"]
            ring = np.zeros((128, 128), dtype=bool)
            ring[max(y - 3, 0):y + h + 3, max(x - 3, 0):x + w + 3] = True
            ring &= ~covered
            if ring.sum() < 20:
                continue
            inside = image[seen].astype(float).mean(axis=0)
            outside = image[ring].astype(float).mean(axis=0)
            distances.append(np.linalg.norm(inside - outside))
    assert len(distances) > 30
    assert np.percentile(distances, 5) > 60
