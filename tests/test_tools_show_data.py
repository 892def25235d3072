"""detkit.engine.show_data (tools/show_data.py): the statistics of a hand-made dataset (counts, box sizes after the
resize, ground truths that no anchor reaches at the fg IoU) and the sample grid (tile count and size, boxes drawn
where the train split's augmentation puts them)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detkit.data.datamodule import evenly_spread
from detkit.drawing.boxes import class_colour
from detkit.engine.cli import DetectionCLI
from detkit.engine.data_report import data_report
from detkit.engine.show_data import show_data

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
GREY = (128, 128, 128)
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
# (width, height) -> [(x, y, w, h, category id)] in original pixels; resized to 128 px, the 256-px image halves.
# Anchors: one square anchor a level, 16 / 32 / 64 px at strides 8 / 16 / 32, centred on multiples of the stride.
IMAGES = [
    ((128, 128), [(0, 0, 16, 16, 1),       # input 16x16 centred on (8, 8): an anchor exactly, IoU 1
                  (20, 20, 4, 6, 2)]),     # input 4x6: IoU <= 24 / 256 with any anchor
    ((256, 256), [(0, 0, 64, 64, 1),       # input 32x32 centred on (16, 16): an anchor exactly
                  (8, 8, 240, 200, 2)]),   # input 120x100: IoU <= 64^2 / 12000 = 0.34
    ((128, 128), []),
]
INPUT_WIDTHS, INPUT_HEIGHTS = [16, 4, 32, 120], [16, 6, 32, 100]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("handmade")
    (root / "images").mkdir()
    images, annotations = [], []
    for image_id, ((width, height), objects) in enumerate(IMAGES, start=1):
        Image.new("RGB", (width, height), GREY).save(root / "images" / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": width, "height": height})
        for x, y, w, h, category in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    for split in ("train", "val"):
        (root / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return root


def config_args(root: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "retinanet_shapes.yaml"), "--data.builtin", "null",
            "--data.train_images", str(root / "images"), "--data.train_annotations", str(root / "instances_train.json"),
            "--data.val_images", str(root / "images"), "--data.val_annotations", str(root / "instances_val.json"),
            "--trainer.accelerator", "cpu", "--data.min_size", "128", "--data.max_size", "128",
            "--model.detector.init_args.anchors.sizes", "[16, 32, 64]",
            "--model.detector.init_args.anchors.scales", "[1.0]",
            "--model.detector.init_args.anchors.aspect_ratios", "[1.0]", *extra]


@pytest.mark.parametrize("split", ["train", "val"])
def test_statistics_of_a_hand_made_dataset(root, split):
    cli = DetectionCLI(run=False, args=config_args(root, "--trainer.logger=false"), save_config_callback=None)
    report = data_report(cli.datamodule, cli.model.detector, split)
    stats = report.stats
    assert (stats.images, stats.images_without_boxes) == (3, 1)
    assert stats.boxes_per_class(2).tolist() == [2, 2]
    assert report.coverages["dense"].missed_per_class(2).tolist() == [0, 2]  # both dogs, no cat
    quantiles = torch.tensor([0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0], dtype=torch.float64)
    sizes = stats.size_quantiles()
    for name, values in (("width", INPUT_WIDTHS), ("height", INPUT_HEIGHTS)):
        assert sizes[name] == pytest.approx(torch.tensor(values, dtype=torch.float64).quantile(quantiles).tolist())
    areas = [w * h for w, h in zip(INPUT_WIDTHS, INPUT_HEIGHTS)]
    assert (sizes["area (px^2)"][0], sizes["area (px^2)"][-1]) == (min(areas), max(areas))
    table = stats.class_table(["cat", "dog"], report.missed(2))
    assert table in report.text(["cat", "dog"])
    rows = {line.split()[0]: line.split() for line in table.splitlines()}
    assert rows["cat"][1:5] == ["2", "50.0%", "0", "(0.0%)"]
    assert rows["dog"][1:5] == ["2", "50.0%", "2", "(100.0%)"]
    assert rows["all"][1:5] == ["4", "100.0%", "2", "(50.0%)"]


def pixel(grid: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return grid.getpixel((x, y))


# box 1 (cat, input [0, 0, 16, 16]) is drawn twice as large: its right edge at x = 31-32 of the first tile;
# mirrored by the flip, its left edge at x = 256 - 32 = 224-225
RIGHT_EDGE, MIRRORED_LEFT_EDGE, MID_HEIGHT = 32, 224, 24


def test_val_grid_draws_every_image_unaugmented(root, tmp_path):
    out = tmp_path / "val.png"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "show_data.py"), *config_args(root), "--split", "val",
                           "--num", "16", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    grid = Image.open(out).convert("RGB")
    assert grid.size == (3 * 256, 256)  # 3 images (fewer than --num) of 128 px enlarged twice, one row
    assert pixel(grid, RIGHT_EDGE, MID_HEIGHT) == class_colour(0)
    assert pixel(grid, MIRRORED_LEFT_EDGE, MID_HEIGHT) == GREY
    assert pixel(grid, 2 * 256 + 128, 128) == GREY  # the image without boxes
    printed = done.stdout
    assert "val split: 3 images (1 without boxes), 4 boxes" in printed and str(out) in printed


def test_train_grid_shows_the_configured_augmentation(root, tmp_path):
    out = tmp_path / "train.png"
    show_data(config_args(root, "--data.train_augmentations", "[{type: HorizontalFlip, p: 1.0}]"), split="train",
              num=2, out=str(out))
    grid = Image.open(out).convert("RGB")
    assert grid.size == (2 * 256, 256)
    assert pixel(grid, MIRRORED_LEFT_EDGE, MID_HEIGHT) == class_colour(0)
    assert pixel(grid, RIGHT_EDGE, MID_HEIGHT) == GREY


def test_evenly_spread_indices():
    assert evenly_spread(10, 4) == [0, 3, 6, 9]
    assert evenly_spread(3, 16) == [0, 1, 2] == evenly_spread(3, None)
    assert np.diff(evenly_spread(1000, 16)).min() >= 66
