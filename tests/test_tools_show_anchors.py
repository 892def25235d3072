"""detkit.engine.show_anchors (tools/show_anchors.py): the anchors of a hand-made image split as the matcher assigns
them (hand-counted, and torchvision's Matcher as the oracle for the shipped configs' anchors), drawn in their colours
where they lie."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models.detection._utils import Matcher as TorchvisionMatcher

from detkit.drawing.anchors import IGNORED_COLOUR, POSITIVE, anchor_view
from detkit.engine.cli import DetectionCLI
from detkit.engine.show_anchors import show_anchors

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
# 128 x 128 grey image. With one square anchor a level (16 / 32 / 64 px at strides 8 / 16 / 32, centred on multiples
# of the stride): A is exactly the 16-px anchor centred on (8, 8): IoU 1; its neighbours 1/3 and 32-px anchors 1/4,
# all background (< 0.4). B (20 x 20 centred on (50, 50)): the 16-px anchor centred on (48, 48) has IoU 256/400 = 0.64,
# positive; those centred on (56, 48) and (48, 56) 192/464 = 0.41, ignored; every other anchor is below 0.4.
OBJECTS = [(0, 0, 16, 16), (40, 40, 20, 20)]  # x, y, w, h
UPSCALE = 4  # 2 * TILE_SIDE / 128


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("anchors")
    (root / "images").mkdir()
    Image.new("RGB", (128, 128), (128, 128, 128)).save(root / "images" / "1.png")
    annotations = [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": list(box), "area": box[2] * box[3],
                    "iscrowd": 0} for i, box in enumerate(OBJECTS)]
    coco = {"images": [{"id": 1, "file_name": "1.png", "width": 128, "height": 128}], "annotations": annotations,
            "categories": [{"id": 1, "name": "square"}]}
    for split in ("train", "val"):
        (root / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


def data_args(root: Path) -> list[str]:
    return ["--data.builtin", "null", "--trainer.accelerator", "cpu",
            "--data.train_images", str(root / "images"), "--data.train_annotations", str(root / "instances_train.json"),
            "--data.val_images", str(root / "images"), "--data.val_annotations", str(root / "instances_val.json")]


ONE_ANCHOR_A_LEVEL = ["--model.detector.init_args.anchors.sizes", "[16, 32, 64]",
                      "--model.detector.init_args.anchors.scales", "[1.0]",
                      "--model.detector.init_args.anchors.aspect_ratios", "[1.0]"]


def test_hand_counted_anchors_are_drawn_where_the_matcher_puts_them(root, tmp_path, capsys):
    out = tmp_path / "anchors.png"
    show_anchors([str(REPO / "configs" / "retinanet_shapes.yaml")], [*data_args(root), *ONE_ANCHOR_A_LEVEL],
                 num_background=5, out=str(out))
    # 16 x 16 + 8 x 8 + 4 x 4 anchors: 2 positive (A's and B's), 2 ignored (B's neighbours), the rest background
    assert "2 positive, 2 ignored, 332 background (5 drawn) of 336 anchors" in capsys.readouterr().out
    tile = Image.open(out).convert("RGB")
    assert tile.width == 128 * UPSCALE
    picture = tile.crop((0, tile.height - 128 * UPSCALE, tile.width, tile.height))  # below the title and legend

    def pixel(x: float, y: float):  # PIL draws a box's outline on its corner pixels and inwards
        return picture.getpixel((x * UPSCALE, y * UPSCALE))
    assert pixel(56, 44) == POSITIVE  # right edge of B's positive anchor (40, 40, 56, 56), inside B
    assert pixel(64, 44) == IGNORED_COLOUR  # right edge of the ignored anchor (48, 40, 64, 56)
    assert pixel(100, 100) == (128, 128, 128)  # no background anchor drawn there: grey, as the image


@pytest.mark.parametrize("config", ["retinanet_shapes.yaml", "faster_rcnn_shapes.yaml"])
def test_counts_equal_torchvisions_matcher_on_the_shipped_anchors(config, root):
    cli = DetectionCLI(run=False, args=["--config", str(REPO / "configs" / config), *data_args(root),
                                        "--trainer.logger=false"], save_config_callback=None)
    setup = next(m for m in cli.model.detector.modules() if hasattr(m, "imbalance_setup")).imbalance_setup()
    stage = setup["stage"]
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in OBJECTS], dtype=torch.float32)
    view = anchor_view(setup["name"], stage, (128, 128), boxes, num_background=30)
    anchors = stage.image_anchors((128, 128))
    oracle = TorchvisionMatcher(stage.matcher.high_threshold, stage.matcher.low_threshold,
                                allow_low_quality_matches=True)(torchvision.ops.box_iou(boxes, anchors))
    assert (len(view.positive), len(view.ignored), len(view.background)) == (
        int((oracle >= 0).sum()), int((oracle == -2).sum()), int((oracle == -1).sum()))
    assert len(view.background_sample) == 30
    assert torchvision.ops.box_iou(boxes, view.background_sample).max() < stage.matcher.low_threshold


def test_command_line_draws_two_configs_side_by_side(root, tmp_path):
    out = tmp_path / "both.png"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "show_anchors.py"),
                           "--config", str(REPO / "configs" / "retinanet_shapes.yaml"),
                           "--config", str(REPO / "configs" / "faster_rcnn_shapes.yaml"), *data_args(root),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = done.stdout
    assert "RetinaNet: positive IoU >= 0.5, background < 0.4" in printed
    assert "RPN: positive IoU >= 0.7, background < 0.3" in printed
    assert Image.open(out).width == 2 * 128 * UPSCALE


def test_command_line_names_the_images_of_the_split(root):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "show_anchors.py"), "--image", "3",
                           "--config", str(REPO / "configs" / "retinanet_shapes.yaml"), *data_args(root)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "error: --image 3: the train split" in done.stderr
    assert "has images 0..0" in done.stderr
