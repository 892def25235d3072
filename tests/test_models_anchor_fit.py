"""Anchor coverage and anchors fitted to the boxes: hand-made cases, the fit beating badly sized anchors, fitted
anchors carried by the checkpoint, and the report + warning at the start of training."""
from pathlib import Path

import pytest
import torch

from detkit.data.shapes import generate_shapes
from detkit.engine.cli import DetectionCLI, evaluate, train
from detkit.models import FasterRCNN, RetinaNet
from detkit.models.anchor_fit import anchor_coverage, fit_anchors, fitted_aspect_ratios
from detkit.models.dense import DenseAnchorStage
from detkit.models.settings import Anchors, Backbone, DenseHead, Matching, Pyramid, RoIHead

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def stage(sizes=(32.0, 64.0, 128.0), scales=(1.0,), ratios=(1.0,)) -> DenseAnchorStage:
    """A stage on strides 8, 16, 32; sizes "auto" are placeholders (4 x the stride) to fit."""
    return DenseAnchorStage(strides=[8, 16, 32], anchors=Anchors(sizes=sizes, scales=scales, aspect_ratios=ratios),
                            matching=Matching(0.5, 0.4, True), box_loss="l1")


def square_boxes(side: float, count: int = 20, image: int = 320, seed: int = 0) -> list[torch.Tensor]:
    """One box of side x side px per image, at random whole-pixel positions."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.randint(0, int(image - side), (count, 2), generator=generator).float()
    return [torch.cat([c, c + side])[None] for c in corners]


def test_coverage_by_hand():
    # an anchor of the 32-px level is centred at (64, 64): a gt equal to it has IoU 1; a 4x4 gt reaches
    # 16 / 1024 with the nearest 32-px anchor, below the background threshold, and only a low-quality match
    anchors = stage()
    boxes = [torch.tensor([[48.0, 48.0, 80.0, 80.0], [2.0, 2.0, 6.0, 6.0]])]
    coverage = anchor_coverage(anchors, [(320, 320)], boxes, [torch.tensor([0, 1])])
    assert coverage.best_iou.tolist() == pytest.approx([1.0, 16 / 1024])
    assert coverage.matched.tolist() == [True, True]
    assert coverage.share_reaching(0.5) == 0.5 and coverage.poor_share == 0.5
    rows = {name: rest for name, *rest in coverage.rows(["a", "b"])}
    assert rows["class a"] == [1, 1.0, 1.0, 1.0] and rows["class b"][:3] == [1, 0.0, 1.0]
    assert rows["size 0-16 px"][0] == 1 and rows["size 32-64 px"][0] == 1


def test_aspect_ratios_at_the_quantiles_of_the_boxes():
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 20.0]] * 10)]
    assert fitted_aspect_ratios(boxes, 3) == (0.5, 1.0, 2.0)
    assert fitted_aspect_ratios(boxes, 1) == (1.0,)


def test_fit_reaches_objects_the_default_anchors_miss():
    boxes = square_boxes(200.0)  # larger than any of the 32/64/128-px anchors can match at IoU 0.5
    sizes = [(320, 320)] * len(boxes)
    labels = [torch.zeros(1, dtype=torch.long)] * len(boxes)
    before = anchor_coverage(stage(), sizes, boxes, labels)
    fitted = stage(sizes="auto")
    base_sizes, ratios = fit_anchors(fitted, sizes, boxes, labels, per_level=False)
    fitted.set_anchors(base_sizes, ratios)
    after = anchor_coverage(fitted, sizes, boxes, labels)
    assert before.share_reaching(0.5) == 0.0 and after.share_reaching(0.5) == 1.0
    multiples = [size / stride for size, stride in zip(base_sizes, [8, 16, 32])]
    assert multiples == pytest.approx([multiples[0]] * 3, rel=1e-3)  # one multiple of the stride on every level
    assert ratios == (1.0,) and bool(fitted.fitted) and not fitted.needs_fit


def test_per_level_fit_serves_each_level_its_objects_and_keeps_the_levels_ordered():
    # 28 px objects for P3 and 150 px ones for P5: one multiple of the stride cannot fit both at IoU 0.7
    boxes = square_boxes(28.0, count=40) + square_boxes(150.0, count=40, seed=1)
    labels = [torch.zeros(1, dtype=torch.long)] * 40 + [torch.ones(1, dtype=torch.long)] * 40
    sizes = [(320, 320)] * 80
    shared, per_level = stage(sizes="auto"), stage(sizes="auto")
    for fitted in (shared, per_level):
        fitted.matcher.high_threshold = 0.7
    shared.set_anchors(*fit_anchors(shared, sizes, boxes, labels, per_level=False))
    per_level.set_anchors(*fit_anchors(per_level, sizes, boxes, labels))
    before = anchor_coverage(shared, sizes, boxes, labels)
    after = anchor_coverage(per_level, sizes, boxes, labels)
    classes = torch.cat(labels)
    class_average = [sum(c.share_reaching(0.7, classes == k) for k in (0, 1)) / 2 for c in (before, after)]
    assert class_average[1] > class_average[0]
    base = per_level.base_sizes.tolist()
    multiples = [size / stride for size, stride in zip(base, [8, 16, 32])]
    shared_multiple = shared.base_sizes[0].item() / 8
    assert all(2 ** -0.5 - 1e-6 <= m / shared_multiple <= 2 ** 0.5 + 1e-6 for m in multiples)  # half an octave
    assert all(coarser >= 2 ** 0.5 * finer - 1e-3 for finer, coarser in zip(base, base[1:]))  # ordered levels


def test_fit_keeps_the_configured_scales_and_fits_ratios():
    boxes = [torch.tensor([[10.0, 10.0, 50.0, 30.0]] * 5 + [[10.0, 10.0, 30.0, 50.0]] * 5)]
    fitted = DenseAnchorStage(strides=[8, 16, 32],
                              anchors=Anchors(sizes="auto", scales=(1.0, 1.5), aspect_ratios="auto",
                                              num_aspect_ratios=2),
                              matching=Matching(0.5, 0.4, True), box_loss="l1")
    base_sizes, ratios = fit_anchors(fitted, [(320, 320)], boxes, [torch.zeros(10, dtype=torch.long)])
    fitted.set_anchors(base_sizes, ratios)
    assert all(level[1] / level[0] == pytest.approx(1.5, rel=1e-3) for level in fitted.anchor_sizes.tolist())
    assert ratios == (0.5, 2.0)


def test_fit_weighs_every_class_alike():
    # 90 large objects of class 0 and 10 small ones of class 1: the best share over all objects would serve the
    # large ones only; averaged over the classes, both get anchors
    boxes = square_boxes(150.0, count=90) + square_boxes(30.0, count=10, seed=1)
    labels = [torch.zeros(1, dtype=torch.long)] * 90 + [torch.ones(1, dtype=torch.long)] * 10
    fitted = stage(sizes="auto")
    fitted.matcher.high_threshold = 0.7  # strict enough that one octave of sizes cannot cover both
    fitted.set_anchors(*fit_anchors(fitted, [(320, 320)] * 100, boxes, labels))
    coverage = anchor_coverage(fitted, [(320, 320)] * 100, boxes, labels)
    small = torch.cat(labels) == 1
    assert coverage.share_reaching(0.7, small) > 0.5 and coverage.share_reaching(0.7, ~small) > 0.5


def test_the_checkpoint_carries_fitted_anchors():
    options = dict(num_classes=2, backbone=Backbone(name="tiny"), fpn=Pyramid(channels=16, extra_levels=0),
                   anchors=Anchors(sizes="auto", scales=(1.0, 1.25, 1.5), aspect_ratios="auto"),
                   head=DenseHead(depth=1))
    trained = RetinaNet(**options)
    assert trained.dense.needs_fit and trained.dense.aspect_ratios.tolist() == [0.5, 1.0, 2.0]
    fitted_sizes = tuple(tuple(5.0 * s * k for k in (1.0, 1.25, 1.5)) for s in (8, 16, 32))
    trained.dense.set_anchors((40.0, 80.0, 160.0), (0.8, 1.0, 1.25))
    loaded = RetinaNet(**options)
    loaded.load_state_dict(trained.state_dict())
    assert not loaded.dense.needs_fit
    assert loaded.dense.anchor_generator.sizes == trained.dense.anchor_generator.sizes == fitted_sizes
    assert torch.equal(loaded.dense.image_anchors((64, 64)), trained.dense.image_anchors((64, 64)))
    assert not torch.equal(loaded.dense.image_anchors((64, 64)), RetinaNet(**options).dense.image_anchors((64, 64)))
    frcnn = FasterRCNN(num_classes=2, backbone=Backbone(name="tiny"),
                       fpn=Pyramid(min_level=3, channels=16, extra_levels=0),
                       anchors=Anchors(sizes="auto"), roi=RoIHead(representation_size=32))
    assert frcnn.rpn.dense.needs_fit and frcnn.rpn.dense.anchor_sizes[:, 0].tolist() == [32.0, 64.0, 128.0]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(str(root), num_train=16, num_val=4, seed=0, workers=1)
    return root


def cli_args(root: Path, tmp_path: Path, config: str, *extra: str) -> list[str]:
    data = [f"--data.{split}_{kind}={root / name}" for split in ("train", "val")
            for kind, name in (("images", "images"), ("annotations", f"instances_{split}.json"))]
    return ["--config", str(CONFIGS / config), *data, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1", "--budget.minutes", "null",
            "--data.batch_size", "4", "--model.warmup_steps", "1", "--model.detector.init_args.fpn.channels", "16",
            *extra]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("config", ["retinanet_custom.yaml", "faster_rcnn_custom.yaml"])
def test_custom_configs_fit_anchors_before_training_and_evaluation_uses_them(config, shapes_root, tmp_path, capsys):
    run = train(cli_args(shapes_root, tmp_path, config, "--data.min_size", "128", "--data.max_size", "128"))
    cli, result = run.cli, run.evaluation
    stage = next(m for m in cli.model.detector.modules() if isinstance(m, DenseAnchorStage))
    assert bool(stage.fitted) and stage.fit_sizes and stage.fit_ratios
    printed = capsys.readouterr()
    assert "anchors fitted to 16 training images" in printed.out and "anchor coverage of" in printed.out
    checkpoint = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=False)
    key = next(k for k in checkpoint["state_dict"] if k.endswith("dense.base_sizes"))
    assert torch.equal(checkpoint["state_dict"][key], stage.base_sizes)
    evaluation = evaluate(["--checkpoint", cli.trainer.checkpoint_callback.best_model_path, "--data.num_workers", "0",
                           "--results", str(tmp_path / "results.json")])
    assert evaluation.stats["AP"] == pytest.approx(result.stats["AP"], abs=1e-9)


def test_poor_anchors_are_reported_with_the_keys_to_change(shapes_root, tmp_path):
    cli = DetectionCLI(run=False, args=cli_args(shapes_root, tmp_path, "retinanet_shapes.yaml",
                                                "--model.detector.init_args.anchors.sizes", "[160, 320, 640]"))
    check = next(c for c in cli.trainer.callbacks if type(c).__name__ == "AnchorCheck")
    cli.datamodule.setup("fit")
    cli.trainer.datamodule = cli.datamodule  # what fit sets before on_fit_start
    with pytest.warns(UserWarning, match=r"init_args\.anchors\.sizes.*auto") as caught:
        check.on_fit_start(cli.trainer, cli.model)
    assert "data.min_size" in str(caught[0].message)
    coverage = check.reports["dense"]
    # huge anchors are shared by several objects, each goes to its best gt: low-quality matches rescue few
    assert coverage.poor_share > 0.9 and coverage.share_matched() < 0.5
