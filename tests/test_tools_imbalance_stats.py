"""detkit.engine.imbalance_report (tools/imbalance_stats.py): the imbalance table of each detector's dense stage on
the val split, and the RPN sampler's share of positives."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from shapes_data import data_args

from detkit.engine.cli import DetectionCLI
from detkit.engine.imbalance_report import dense_stage_setups, imbalance_report, sampled_anchors
from detkit.ops import BalancedSampler

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


def config_args(config: str, root: Path) -> list[str]:
    return ["--config", str(REPO / "configs" / config), *data_args(root), "--trainer.accelerator", "cpu"]


def test_each_detector_names_its_dense_stages(shapes_root):
    names = {}
    for config in ("retinanet_shapes.yaml", "faster_rcnn_shapes.yaml"):
        cli = DetectionCLI(run=False, args=[*config_args(config, shapes_root), "--trainer.logger=false"],
                           save_config_callback=None)
        names[config] = [(setup["name"], setup["sampler"] is None) for setup in dense_stage_setups(cli.model.detector)]
    assert names == {"retinanet_shapes.yaml": [("RetinaNet", True)], "faster_rcnn_shapes.yaml": [("RPN", False)]}


def test_sampled_anchors_counts_what_the_sampler_keeps():
    matched = torch.tensor([0, 1, -1, -1, -1, -1, -2, 0])  # 3 positive, 4 background, 1 ignored
    assert sampled_anchors(BalancedSampler(4, 0.5), matched) == (2, 4)
    assert sampled_anchors(BalancedSampler(100, 0.5), matched) == (3, 7)


def test_report_on_the_val_split(shapes_root):
    text = imbalance_report(config_args("faster_rcnn_shapes.yaml", shapes_root), num_images=3)
    assert text.startswith("RPN anchors on the val split")
    assert re.search(r"^  images +3$", text, re.MULTILINE) and re.search(r"^  RPN anchors sampled per image +\d+$",
                                                                         text, re.MULTILINE)


def test_command_line_prints_the_table(shapes_root):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "imbalance_stats.py"), "--num-images", "2",
                           *config_args("retinanet_shapes.yaml", shapes_root)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("RetinaNet anchors on the val split")
    assert "background share of focal loss" in done.stdout
