"""The sizing rules of detkit.data.sizing on hand-computed cases, their resolution into a config, and that the
chosen values come back with the checkpoint."""
import json
import math

import numpy as np
import pytest
import torch

from detkit.data.sizing import (
    BoxStatistics,
    InputSizeRule,
    choose_input_size,
    choose_levels,
    class_balanced_quantile,
    level_of,
)


def stats(image_sizes, boxes):
    """image_sizes: [(width, height)]; boxes: [(image index, box side, label)] square boxes."""
    return BoxStatistics(sides=np.array([side for _, side, _ in boxes], dtype=float),
                         labels=np.array([label for _, _, label in boxes], dtype=np.int64),
                         box_image=np.array([image for image, _, _ in boxes], dtype=np.int64),
                         heights=np.array([h for _, h in image_sizes], dtype=float),
                         widths=np.array([w for w, _ in image_sizes], dtype=float))


def test_class_balanced_quantile_counts_every_class_alike():
    values = np.array([10.0] + [100.0] * 9)
    labels = np.array([1] + [2] * 9)
    assert np.quantile(values, 0.2) == 100.0  # by box: one box in ten is small
    assert class_balanced_quantile(values, labels, 0.2) == 10.0  # by class: half the weight is the small class
    assert class_balanced_quantile(values, labels, 0.6) == 100.0
    assert math.isnan(class_balanced_quantile(np.zeros(0), np.zeros(0), 0.5))


def test_level_of_puts_an_object_on_the_level_whose_base_anchors_match_it():
    # base anchor 4 x stride: 32 px on P3, 64 px on P4; the boundary is the geometric mean (45.25 px)
    assert [level_of(s) for s in (32, 45, 46, 64, 128, 512)] == [3, 3, 4, 4, 5, 7]


def test_tiny_objects_get_the_largest_input_and_the_finest_level():
    # 10 px objects in 1000x800 photos (relative 0.0125): the median rule wants 24 / 0.0125 = 1920 px, capped at 384
    sizing = stats([(1000, 800)] * 2, [(0, 10, 1), (1, 10, 1)])
    assert choose_input_size(sizing) == (384, 480)  # 384 x 1000 / 800 = 480
    assert choose_levels(sizing, 384, 480) == (3, 0)  # 4.8 px objects: P3 is the finest level there is


def test_huge_objects_get_the_smallest_input_and_coarse_levels():
    # one 400 px object in each 600x400 photo: the whole shorter side; any size would do: the floor, 192
    sizing = stats([(600, 400)] * 3, [(i, 400, 1) for i in range(3)])
    assert choose_input_size(sizing) == (192, 288)
    # at 192 px the objects are 192 px: log2(192 / 4) = 5.58 -> P6; the finest level stays at P4 (two trunk levels)
    assert choose_levels(sizing, 192, 288) == (4, 1)


def test_mixed_sizes_span_the_levels_between_the_small_and_the_large():
    # 640x480 photos; a class of 12 px, one of 60 px, one of 300 px: every class weighs a third
    boxes = [(0, 12, 1)] * 5 + [(1, 60, 2)] * 20 + [(2, 300, 3)] * 5
    sizing = stats([(640, 480)] * 3, boxes)
    # median (class-balanced) = 60 px -> 24 / (60 / 480) = 192; the 10% box = 12 px -> 12 / (12 / 480) = 480
    assert choose_input_size(sizing) == (384, 512)
    # at 384 px (x0.8): 9.6, 48, 240 px: levels 3 (clamped up from 1), ..., log2(240 / 4) = 5.9 -> 6
    assert choose_levels(sizing, 384, 512) == (3, 1)


def test_one_class_and_many_classes():
    one = stats([(800, 800)], [(0, 100, 7)] * 4)  # 100 / 800 = 0.125 relative: 24 / 0.125 = 192
    assert choose_input_size(one) == (192, 192)
    # ten classes of one box each, 10..100 px in 1000 px squares: 10% -> 10 px (12 / 0.01 = 1200), median 50 px
    many = stats([(1000, 1000)], [(0, 10 * k, k) for k in range(1, 11)])
    assert class_balanced_quantile(many.relative_sides(), many.labels, 0.5) == pytest.approx(0.05)
    assert choose_input_size(many) == (384, 384)


def test_portrait_and_landscape_photos_share_one_rule_on_their_shorter_side():
    # 20 px objects in 1000 px shorter sides, portrait and landscape: median 0.02 relative -> 1200 -> 384
    portrait = stats([(1000, 2000)], [(0, 20, 1)])
    landscape = stats([(2000, 1000)], [(0, 20, 1)])
    assert choose_input_size(portrait) == choose_input_size(landscape) == (384, 768)
    mixed = stats([(1000, 2000), (2000, 1000), (1500, 1000)], [(0, 20, 1), (1, 20, 1), (2, 20, 1)])
    assert choose_input_size(mixed) == (384, 768)  # median shape 2.0 (2, 2, 1.5)


def test_small_photos_are_not_enlarged():
    # 5 px objects in 300x200 photos want far more than 200 px: the photos keep their own size
    sizing = stats([(300, 200)] * 2, [(0, 5, 1), (1, 5, 1)])
    min_size, max_size = choose_input_size(sizing)
    assert min_size == 200 and max_size >= 300  # at 200 the 300 px side is not shrunk by the cap either
    assert choose_input_size(sizing, InputSizeRule(largest=160)) == (160, 256)


def test_no_boxes_gives_the_largest_size_and_the_default_levels():
    sizing = stats([(640, 480)], [])
    assert choose_input_size(sizing) == (384, 512)
    assert choose_levels(sizing, 384, 512) == (3, 1)


def write_coco(path, image_sizes, boxes):
    """image_sizes: [(width, height)]; boxes: [(image index, x, y, w, h, category id)]."""
    data = {"images": [{"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h}
                       for i, (w, h) in enumerate(image_sizes)],
            "annotations": [{"id": k + 1, "image_id": i + 1, "category_id": c, "bbox": [x, y, w, h], "area": w * h,
                             "iscrowd": 0} for k, (i, x, y, w, h, c) in enumerate(boxes)],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    path.write_text(json.dumps(data))
    return path


def test_statistics_read_the_json_and_leave_crowds_out(tmp_path):
    path = write_coco(tmp_path / "a.json", [(640, 480), (480, 640)], [(0, 0, 0, 40, 10, 1), (1, 5, 5, 30, 30, 2)])
    data = json.loads(path.read_text())
    data["annotations"].append({**data["annotations"][0], "id": 9, "iscrowd": 1})
    path.write_text(json.dumps(data))
    sizing = BoxStatistics.from_coco(str(path))
    assert sizing.sides.tolist() == [20.0, 30.0] and sizing.labels.tolist() == [1, 2]
    assert sizing.relative_sides().tolist() == pytest.approx([20 / 480, 30 / 480])
    assert sizing.input_sides(240, 320).tolist() == pytest.approx([10.0, 15.0])


def test_auto_keys_resolve_into_the_config_and_numbers_stay(shapes_root, tmp_path, capsys):
    from shapes_data import data_args
    from test_engine_cli import CONFIGS, cpu_args

    from detkit.engine.cli import DetectionCLI
    args = ["--config", str(CONFIGS / "retinanet_custom.yaml"), *data_args(shapes_root), *cpu_args(tmp_path)]
    cli = DetectionCLI(run=False, args=args)
    # the shapes are 128 px photos: not enlarged; their 8-64 px objects use P3-P5
    assert (cli.datamodule.min_size, cli.datamodule.max_size, cli.datamodule.size_divisor) == (128, 128, 32)
    assert cli.model.detector.backbone.strides == [8, 16, 32]
    assert "sized to" in capsys.readouterr().out
    cli = DetectionCLI(run=False, args=[*args, "--data.min_size", "96", "--model.detector.init_args.fpn.extra_levels",
                                        "1"])
    assert (cli.datamodule.min_size, cli.datamodule.size_divisor) == (96, 64)
    assert cli.model.detector.backbone.strides == [8, 16, 32, 64]


def test_auto_without_the_cli_is_an_error_naming_the_key(shapes_root):
    from detkit.data import DetectionDataModule
    from detkit.models.settings import Pyramid
    with pytest.raises(ValueError, match=r"data\.min_size.*resolve_auto_sizing"):
        DetectionDataModule("a", "b", "c", "d", min_size="auto")
    with pytest.raises(ValueError, match=r"fpn\.min_level"):
        Pyramid(min_level="auto").check("fpn")


@pytest.mark.usefixtures("one_thread")
def test_the_chosen_sizes_and_levels_come_back_with_the_checkpoint(shapes_root, tmp_path):
    from test_models_anchor_fit import cli_args

    import detkit
    from detkit.engine.cli import train
    run = train(cli_args(shapes_root, tmp_path, "retinanet_custom.yaml", "--trainer.max_steps", "2"))
    loaded = detkit.load(run.best_checkpoint)
    trained = run.cli.model.detector
    assert loaded.model.backbone.strides == trained.backbone.strides == [8, 16, 32]
    assert torch.equal(loaded.model.dense.base_sizes, trained.dense.base_sizes) and bool(loaded.model.dense.fitted)
    assert (loaded.transform.min_size, loaded.transform.max_size, loaded.size_divisor) == (128, 128, 32)


@pytest.mark.usefixtures("one_thread")
def test_auto_augmentation_strength_is_set_at_the_first_plan_after_the_first_epoch(shapes_root, tmp_path, capsys):
    from test_models_anchor_fit import cli_args

    from detkit.engine.cli import train
    from detkit.engine.optim import augmentation_strength_for
    # 32 images in batches of 4: 8 steps an epoch; max_epochs 3 caps the budget's plan at 24 steps on any machine
    run = train(cli_args(shapes_root, tmp_path, "retinanet_custom.yaml", "--trainer.max_epochs", "3",
                         "--budget.minutes", "5", "--budget.validations", "1"))
    datamodule = run.cli.datamodule
    assert datamodule.augmentation_strength == "auto"
    assert datamodule.planned_strength == augmentation_strength_for(3.0) == 0.0
    steps = {type(step).__name__: step.p for step in datamodule.train_dataset.transforms.augment.transforms}
    assert steps == {"HorizontalFlip": 0.5, "Affine": 0.0, "ColorJitter": 0.0}
    assert "augmentation strength 0 for 3.0 epochs" in capsys.readouterr().out
