"""detkit.benchmarks.models (tools/bench_models.py): the torchvision twins have detkit's architecture, and a quick
run prints the table."""
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.benchmarks import models as bench
from detkit.benchmarks.architecture import architecture_check
from detkit.benchmarks.torchvision_twins import copy_parameters

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_models.py"

SIX = ["retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
       "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn"]
IMPORT_ROWS = [f"tv:{arch} 64px b1 {phase}" for arch in SIX for phase in ("train", "infer")]
CONFIG_ROWS = [f"{model} {size} {phase}" for model, size in (
    ("RetinaNet shapes", "64px b2"), ("Faster R-CNN shapes", "64px b2"),
    ("RetinaNet R50-FPN", "64px b1"), ("Faster R-CNN R50-FPN", "64px b1")) for phase in ("train", "infer")]
QUICK_ROWS = CONFIG_ROWS + IMPORT_ROWS
# torchvision's background outputs the import drops: RetinaNet one class of 9 anchors (3x3 conv of 256 channels +
# bias), Faster R-CNN the background box regressor (4 x (1024 + 1))
DROPPED = {"retinanet": 9 * (256 * 9 + 1), "fasterrcnn": 4 * (1024 + 1)}


def shapes_setting(detector: str) -> bench.Setting:
    """The full run's shapes setting of ``detector``, one image (checks only, nothing timed)."""
    setting = next(s for s in bench.settings(quick=False, cuda=False) if s.detector == detector and s.trunk == "shapes")
    return dataclasses.replace(setting, batch=1)


def matching_rule(matcher) -> tuple[float, float, bool]:
    """A torchvision Matcher's (fg threshold, bg threshold, low-quality matches)."""
    return matcher.high_threshold, matcher.low_threshold, matcher.allow_low_quality_matches


def test_full_run_has_the_rows_of_the_issue():
    names = [s.name() for s in bench.settings(quick=False, cuda=True)]
    assert names[:4] == ["RetinaNet shapes 128px b16", "Faster R-CNN shapes 128px b16",
                         "RetinaNet R50-FPN 512px b2", "Faster R-CNN R50-FPN 512px b2"]
    assert names[4:10] == [f"tv:{arch} 320px b1" for arch in SIX]
    assert names[10:] == [f"{model} R50-FPN 800x1333 b8 {precision}" for precision in ("fp32", "bf16")
                          for model in ("RetinaNet", "Faster R-CNN")]


def test_retinanet_twin_has_the_configs_anchors_and_head(one_thread):
    setting = shapes_setting("RetinaNet")
    ours, theirs = bench.build_pair(setting)
    check = architecture_check(ours, theirs, setting.batches(count=1)[0])
    # README: 3024 anchors per 128 px image, (16^2 + 8^2 + 4^2) locations x 3 sizes x 3 ratios
    assert check.anchors == (3024, 3024) and check.anchors_equal
    assert check.trunk_parameters[0] == check.trunk_parameters[1] > 0
    assert check.head_parameters[0] == check.head_parameters[1]
    assert check.feature_difference < 1e-5 and check.head_difference < 1e-5 and check.same
    # the config's head: 2 convs per subnet (torchvision's default is 4), GroupNorm with detkit's 16 groups
    tower = theirs.head.classification_head.conv
    assert len(tower) == 2 and all(isinstance(block[1], nn.GroupNorm) and block[1].num_groups == 16 for block in tower)
    assert len(theirs.head.regression_head.conv) == 2
    assert theirs.detections_per_img == 100 and theirs.score_thresh == 0.05


def test_faster_rcnn_twin_has_the_configs_proposal_and_roi_counts(one_thread):
    setting = shapes_setting("Faster R-CNN")
    ours, theirs = bench.build_pair(setting)
    check = architecture_check(ours, theirs, setting.batches(count=1)[0])
    # README: 8160 RPN anchors per 128 px image, (32^2 + 16^2 + 8^2 + 4^2) locations x 2 sizes x 3 ratios
    assert check.anchors == (8160, 8160) and check.anchors_equal
    assert check.trunk_parameters[0] == check.trunk_parameters[1]
    assert check.head_parameters[1] - check.head_parameters[0] == 4 * (512 + 1)  # the background box regressor
    assert check.same
    # configs/faster_rcnn_shapes.yaml
    assert theirs.rpn._pre_nms_top_n == {"training": 300, "testing": 500}
    assert theirs.rpn._post_nms_top_n == {"training": 300, "testing": 300}
    assert matching_rule(theirs.rpn.proposal_matcher) == (0.7, 0.3, True)  # Proposals' and RoIHead's defaults
    assert matching_rule(theirs.roi_heads.proposal_matcher) == (0.5, 0.5, False)
    sampler = theirs.roi_heads.fg_bg_sampler
    assert (sampler.batch_size_per_image, sampler.positive_fraction) == (32, 0.5)
    assert theirs.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2", "3"]  # P2-P5
    assert theirs.roi_heads.box_head.fc6.in_features == 64 * 7 * 7 and theirs.roi_heads.box_head.fc7.out_features == 512


def test_copy_parameters_refuses_different_layers():
    with pytest.raises(ValueError, match="differ"):
        copy_parameters(nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 1))


@pytest.fixture(scope="module")
def quick_run():
    """(printed lines, rows) of one quick CPU run of every setting, one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    lines = []
    rows = bench.run_model_benchmark(quick=True, cuda=False, warmup=0, steps=1, print_line=lines.append,
                                     log=lambda message: None)
    torch.set_num_threads(before)
    return lines, rows


def table_names(lines: list[str]) -> list[str]:
    """The row names of a printed table (its lines between the header and the worst-ratio line)."""
    return [line[:bench.NAME_WIDTH].strip() for line in lines[3:-1]]


def test_quick_run_prints_every_row_and_the_worst_cpu_ratio(quick_run):
    lines, rows = quick_run
    table = {line[:bench.NAME_WIDTH].strip(): line[bench.NAME_WIDTH:].split() for line in lines[3:-1]}
    assert list(table) == QUICK_ROWS
    ratios = {}
    for name, (device, ours, theirs, ratio, ours_mb, _theirs_mb, same) in table.items():
        assert device == "cpu" and same == "yes"
        assert float(ours) > 0 and float(theirs) > 0
        ratios[name] = float(ratio)
        assert ours_mb == "n/a" or float(ours_mb) >= 0
    worst = re.fullmatch(r"worst ratio (\d+\.\d+) \((.+)\)", lines[-1])
    assert worst, lines[-1]
    assert worst[2] in table and float(worst[1]) == min(ratios.values())
    for row in rows[:len(CONFIG_ROWS)]:  # the twins the run built had the same anchors and trunk
        assert row.check.anchors[0] == row.check.anchors[1] and row.check.anchors_equal
        assert row.check.trunk_parameters[0] == row.check.trunk_parameters[1]


def test_the_six_imported_rows_hold_equal_weights(quick_run):
    _, rows = quick_run
    imported = rows[-len(IMPORT_ROWS):]
    assert [row.name for row in imported] == IMPORT_ROWS
    for row in imported:
        check = row.check
        assert check.weights_equal and check.same, (row.name, str(check))
        assert check.dropped == DROPPED[row.name[3:].split("_")[0]]
        assert check.parameters[1] - check.parameters[0] == check.dropped
        # the trunk's first layers frozen on both sides (torchvision's trainable_backbone_layers=3)
        assert check.trainable[1] - check.trainable[0] == check.dropped and check.trainable[0] < check.parameters[0]
        assert check.feature_difference < 1e-5
        assert row.ours > 0 and row.theirs > 0


def test_weights_check_sees_one_changed_weight(one_thread):
    setting = next(s for s in bench.settings(quick=True, cuda=False) if s.name().startswith("tv:fasterrcnn_mobilenet"))
    ours, theirs = bench.build_pair(setting)
    batch = setting.batches(count=1)[0]
    assert bench.check_pair(setting, ours, theirs, batch).same
    # the two models' first trunk weights are the same numbers, read off each model's own module
    torch.testing.assert_close(ours.backbone.body.features[0][0].weight, theirs.backbone.body["0"][0].weight,
                               rtol=0, atol=0)
    with torch.no_grad():
        ours.roi_heads.predictor.cls_score.weight[0, 0] += 1e-3
    check = bench.check_pair(setting, ours, theirs, batch)
    assert not check.weights_equal and not check.same


def test_command_line_runs_one_quick_setting():
    done = subprocess.run([sys.executable, str(TOOL), "--quick", "--threads", "1", "--no-cuda", "--warmup", "0",
                           "--steps", "1", "--memory-steps", "0", "--only", "RetinaNet shapes"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert table_names(lines) == [f"RetinaNet shapes 64px b2 {phase}" for phase in ("train", "infer")]
    assert lines[-1].startswith("worst ratio ") and "anchors/image" in done.stderr
