"""DetectionDataModule: built-in generation on first use, categories before setup, determinism for a seed,
config errors, and construction from a YAML-like config through jsonargparse (as LightningCLI does)."""
import functools
import json

import pytest
import torch

from detkit.data import datamodule as datamodule_module
from detkit.data.datamodule import DetectionDataModule
from detkit.data.shapes import SHAPES_CATEGORIES, generate_shapes

AUGMENT = [{"type": "HorizontalFlip", "p": 0.5}, {"type": "RandomResizedCrop", "size": [64, 64], "scale": [0.5, 1.0]}]


def shapes_paths(root):
    return dict(train_images=str(root / "images"), train_annotations=str(root / "instances_train.json"),
                val_images=str(root / "images"), val_annotations=str(root / "instances_val.json"))


@pytest.fixture(scope="module")
def small_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(str(root), num_train=24, num_val=6, seed=0, workers=1)
    return root


@pytest.fixture
def tiny_builtin(monkeypatch):
    """Make builtin="shapes" generate 10 + 4 images instead of 2000 + 500."""
    small = functools.partial(generate_shapes, num_train=10, num_val=4, workers=1)
    monkeypatch.setitem(datamodule_module.BUILTIN_DATASETS, "shapes", (small, SHAPES_CATEGORIES))


def batches(module, epochs=2):
    """The training batches of ``epochs`` epochs, the sampler told each epoch as Lightning tells it."""
    module.setup("fit")
    loader = module.train_dataloader()
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        out += list(loader)
    return out


def test_builtin_generated_on_first_use(tmp_path, tiny_builtin):
    module = DetectionDataModule(**shapes_paths(tmp_path / "shapes"), builtin="shapes", batch_size=4)
    assert module.num_classes == 3  # known before the files exist (the model is built before prepare_data)
    assert module.class_names == ["circle", "rectangle", "triangle"] and module.category_ids == [1, 2, 3]
    module.prepare_data()
    assert json.loads((tmp_path / "shapes" / "instances_train.json").read_text())["info"]["seed"] == 0
    module.setup("fit")
    assert len(module.train_dataset) == 10 and len(module.val_dataset) == 4
    assert module.val_dataset.coco.getImgIds() == [11, 12, 13, 14]
    before = (tmp_path / "shapes" / "instances_val.json").stat().st_mtime_ns
    module.prepare_data()  # present: not regenerated
    assert (tmp_path / "shapes" / "instances_val.json").stat().st_mtime_ns == before


def test_builtin_paths_must_share_one_folder(tmp_path, tiny_builtin):
    paths = {**shapes_paths(tmp_path / "shapes"), "val_images": str(tmp_path / "elsewhere")}
    module = DetectionDataModule(**paths, builtin="shapes")
    with pytest.raises(ValueError, match=r"data.val_images=.*elsewhere.* \(expected .*shapes/images"):
        module.prepare_data()


def test_batches_have_the_promised_shapes(small_shapes):
    module = DetectionDataModule(**shapes_paths(small_shapes), batch_size=5, val_batch_size=4, min_size=64,
                                 max_size=64, size_divisor=32, train_augmentations=AUGMENT)
    batch = batches(module, epochs=1)[0]
    assert batch["images"].shape == (5, 3, 64, 64) and batch["image_sizes"] == [(64, 64)] * 5
    val = next(iter(module.val_dataloader()))
    assert val["images"].shape == (4, 3, 64, 64)
    assert [t["image_id"] for t in val["targets"]] == [25, 26, 27, 28]
    torch.testing.assert_close(val["targets"][0]["scale"], torch.tensor([0.5, 0.5]))


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        torch.testing.assert_close(a["images"], b["images"])
        assert [t["image_id"] for t in a["targets"]] == [t["image_id"] for t in b["targets"]]
        for ta, tb in zip(a["targets"], b["targets"]):
            torch.testing.assert_close(ta["boxes"], tb["boxes"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_same_seed_same_batches(small_shapes, num_workers):
    def make(seed):
        return DetectionDataModule(**shapes_paths(small_shapes), batch_size=6, seed=seed, num_workers=num_workers,
                                   min_size=64, max_size=64, train_augmentations=AUGMENT)
    first, second, other = batches(make(1)), batches(make(1)), batches(make(2))
    assert_same_batches(first, second)
    orders = [[t["image_id"] for b in run for t in b["targets"]] for run in (first, other)]
    assert orders[0] != orders[1]
    # two epochs of one run differ (new shuffle, new augmentation)
    half = len(first) // 2
    assert [t["image_id"] for b in first[:half] for t in b["targets"]] != \
        [t["image_id"] for b in first[half:] for t in b["targets"]]


def test_drop_empty_applies_to_training_only(small_shapes):
    train = json.loads((small_shapes / "instances_train.json").read_text())
    with_objects = {a["image_id"] for a in train["annotations"]}
    assert len(with_objects) < 24  # the fixture has empty images
    module = DetectionDataModule(**shapes_paths(small_shapes), drop_empty=True)
    module.setup("fit")
    assert set(module.train_dataset.image_ids) == with_objects
    assert len(module.val_dataset) == 6


def test_train_and_val_categories_must_match(small_shapes, tmp_path):
    val = json.loads((small_shapes / "instances_val.json").read_text())
    val["categories"] = val["categories"][:2] + [{"id": 3, "name": "star"}]
    (tmp_path / "val.json").write_text(json.dumps(val))
    paths = {**shapes_paths(small_shapes), "val_annotations": str(tmp_path / "val.json")}
    module = DetectionDataModule(**paths)
    with pytest.raises(ValueError, match=r"data.val_annotations: categories of .*val.json .*star.* "
                                         r"differ from .*instances_train.json"):
        module.setup("fit")


def test_config_errors_name_the_key(small_shapes):
    paths = shapes_paths(small_shapes)
    with pytest.raises(ValueError, match="data.builtin must be one of"):
        DetectionDataModule(**paths, builtin="circles")
    with pytest.raises(ValueError, match=r"augmentations\[0\]: unknown albumentations transform 'Flip'"):
        DetectionDataModule(**paths, train_augmentations=[{"type": "Flip"}])
    with pytest.raises(ValueError, match="data.batch_size must be >= 1"):
        DetectionDataModule(**paths, batch_size=0)
    missing = {**paths, "val_annotations": "/nonexistent/val.json"}
    with pytest.raises(FileNotFoundError, match="data.val_annotations: /nonexistent/val.json"):
        _ = DetectionDataModule(**missing).num_classes  # the property reads the annotation files: it raises


def test_builds_from_a_yaml_config_with_jsonargparse(small_shapes):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DetectionDataModule, "data")
    yaml = "\n".join(["data:"] + [f"  {k}: {v}" for k, v in shapes_paths(small_shapes).items()] + [
        "  val_batch_size: null", "  builtin: shapes",
        "  train_augmentations:", "    - {type: HorizontalFlip, p: 0.5}",
    ])
    config = parser.parse_string(yaml)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    module = instantiate(config)["data"]
    assert isinstance(module, DetectionDataModule)
    assert module.train_augmentations == [{"type": "HorizontalFlip", "p": 0.5}] and module.val_batch_size == 16
    with pytest.raises(Exception, match="batch_sizee|unrecognized|not accepted|Unrecognized"):
        parser.parse_string(yaml + "\n  batch_sizee: 3")


def test_train_loader_resumes_mid_epoch_batch_for_batch(small_shapes):
    # what Lightning does on resume: the saved loader state handed back before the epoch's iteration
    def make():
        module = DetectionDataModule(**shapes_paths(small_shapes), batch_size=4, seed=3, min_size=64, max_size=64)
        module.setup("fit")
        return module.train_dataloader()
    loader = make()
    loader.sampler.set_epoch(1)
    iterator = iter(loader)
    [next(iterator) for _ in range(2)]
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    rest = list(iterator)
    resumed = make()
    resumed.load_state_dict(state)
    assert ([[t["image_id"] for t in b["targets"]] for b in resumed]
            == [[t["image_id"] for t in b["targets"]] for b in rest])
    assert len(rest) == len(loader) - 2


def test_augmentation_strength_fixed_or_planned_once_and_kept_for_a_resume(small_shapes):
    fixed = DetectionDataModule(**shapes_paths(small_shapes), train_augmentations=AUGMENT, augmentation_strength=0.5)
    fixed.setup("fit")
    assert [step.p for step in fixed.train_dataset.transforms.augment.transforms] == [0.5, 0.5]  # crop: 1.0 x 0.5
    assert fixed.plan_augmentation(0.0) == 0.5  # a number is not planned over
    auto = DetectionDataModule(**shapes_paths(small_shapes), train_augmentations=AUGMENT, augmentation_strength="auto")
    auto.setup("fit")
    assert auto.train_dataset.transforms.strength == 1.0  # the configured pipeline until the plan
    assert auto.plan_augmentation(0.25) == 0.25 and auto.plan_augmentation(1.0) == 0.25  # the first plan holds
    resumed = DetectionDataModule(**shapes_paths(small_shapes), train_augmentations=AUGMENT,
                                  augmentation_strength="auto")
    resumed.load_state_dict(auto.state_dict())
    assert resumed.planned_strength == 0.25 and resumed.train_dataset.transforms.strength == 0.25
    # loader workers that live across epochs would keep the strength they started with
    for strength, persistent in (("auto", False), (0.5, True)):
        module = DetectionDataModule(**shapes_paths(small_shapes), train_augmentations=AUGMENT, num_workers=1,
                                     augmentation_strength=strength)
        assert module.train_dataloader().persistent_workers is persistent
    for bad in (1.5, -0.1, "sometimes"):
        with pytest.raises(ValueError, match="data.augmentation_strength"):
            DetectionDataModule(**shapes_paths(small_shapes), augmentation_strength=bad)
