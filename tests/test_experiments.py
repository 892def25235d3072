"""detkit.experiments: every study's arms are valid overrides that reach the config and differ only where they
should, the background weight matches focal loss's background share (hand case), and the runner runs a toy study
in processes of its own, tabulating a finished arm's numbers as its run recorded them and a failing arm as failed."""
import csv
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from shapes_data import data_args

from detkit.engine.cli import DetectionCLI
from detkit.evaluation.imbalance import ImbalanceStats
from detkit.experiments.background_weight import initial_imbalance, weight_for_share
from detkit.experiments.config_values import SOURCE_CHECKOUT, built_config, config_path
from detkit.experiments.runner import Settings, last_error, launch, next_version, run_study
from detkit.experiments.studies import RETINANET, STUDIES, Arm, Plan, Scale, Study

pytestmark = pytest.mark.usefixtures("one_thread")


def value_at(config: dict, key: str):
    """The value of a dotted config key (``model.detector.init_args.backbone.norm``) in a resolved config."""
    for part in key.split("."):
        config = config[part]
    return config


def resolved(cli: DetectionCLI, args: list[str]) -> dict:
    """Parse and instantiate ``args`` with ``cli``'s parser (what DetectionCLI does, without the trainer): the
    constructors' checks run; the resolved config as plain YAML values."""
    config = cli.parser.parse_args(args)
    cli.parser.instantiate_classes(config)
    return yaml.safe_load(cli.parser.dump(config, skip_none=False))


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_arm_is_an_override_that_reaches_the_config(name, shapes_root):
    study, extra = STUDIES[name], data_args(shapes_root)
    plan = study.build(study.quick, tuple(extra))
    budgets, configs = {}, []
    for arm in plan.arms:
        cli = built_config(arm.config, tuple(extra))  # a DetectionCLI of the shipped config, built once
        config = resolved(cli, ["--config", config_path(arm.config), *arm.overrides, *extra])
        for key, value in zip(arm.overrides[::2], arm.overrides[1::2]):
            assert value_at(config, key.removeprefix("--")) == yaml.safe_load(value), (arm.name, key)
        if arm.evaluates is None:
            configs.append(config)
            max_steps = config["trainer"]["max_steps"]
            images = max_steps * config["data"]["batch_size"] if max_steps > 0 else None
            budget = (config["budget"]["minutes"], config["trainer"]["max_epochs"], images)
            budgets.setdefault(arm.group, set()).add(budget)
    assert all(len(budget) == 1 for budget in budgets.values()), budgets  # one training budget per group
    assert all(a != b for i, a in enumerate(configs) for b in configs[i + 1:])  # no two training arms alike
    assert len({arm.name for arm in plan.arms}) == len(plan.arms)
    trained = {arm.name for arm in plan.arms if arm.evaluates is None}
    assert all(arm.evaluates in trained for arm in plan.arms if arm.evaluates is not None)


def test_background_weight_of_a_hand_case():
    # one class, prior 0.1, 1 positive and 9 background anchors: BCE gives background 9 * -log(0.9) against -log(0.1);
    # focal multiplies those by 0.75 * 0.1^2 and 0.25 * 0.9^2, so the weight is (0.75 * 0.01) / (0.25 * 0.81) = 1/27
    stats = ImbalanceStats(num_classes=1, prior=0.1, focal_alpha=0.25, focal_gamma=2.0, positive=1, background=9)
    weight = weight_for_share(stats.background_loss_share(focal=False), stats.background_loss_share(focal=True))
    assert weight == pytest.approx(1 / 27, rel=1e-9)
    background, foreground = 9 * -math.log(0.9), -math.log(0.1)
    assert weight * background / (weight * background + foreground) == pytest.approx(
        0.75 * 0.01 * background / (0.75 * 0.01 * background + 0.25 * 0.81 * foreground), rel=1e-9)
    with pytest.raises(ValueError, match="bce_share"):
        weight_for_share(0.0, 0.5)


def test_imbalance_arm_gives_bce_the_background_share_of_focal_loss(shapes_root):
    extra = tuple(data_args(shapes_root))
    arm = next(a for a in STUDIES["imbalance"].build(STUDIES["imbalance"].quick, extra).arms
               if a.name == "bce_background_weighted")
    overrides = dict(zip(arm.overrides[::2], arm.overrides[1::2]))
    weight = float(overrides["--model.detector.init_args.loss.background_weight"])
    stats, _ = initial_imbalance(RETINANET, extra)
    p, k = stats.prior, stats.num_classes  # the summed BCE loss of each kind of anchor, at the prior, by hand
    background = stats.background * k * -math.log(1 - p)
    foreground = stats.positive * (-math.log(p) + (k - 1) * -math.log(1 - p))
    assert weight * background / (weight * background + foreground) == pytest.approx(
        stats.background_loss_share(focal=True), rel=1e-3)  # the weight is rounded to 4 digits
    assert stats.images == len(json.loads((shapes_root / "instances_train.json").read_text())["images"])


TINY = ("--budget.minutes", "null", "--trainer.max_steps", "2", "--data.min_size", "64", "--data.max_size", "64",
        "--data.batch_size", "4", "--data.val_batch_size", "8", "--trainer.log_every_n_steps", "1",
        "--model.warmup_steps", "1", "--trainer.accelerator", "cpu")


def toy_study(arms: list[Arm]) -> Study:
    return Study("toy", "Toy study", "a claim", lambda scale, extra: Plan(arms, "2 steps per arm"),
                 columns=("AP", "AP50", "steps", "no_positive"),
                 panels=("ap", "curve:train/loss", "coverage:no_positive"),
                 full=Scale(0, 0, 0), quick=Scale(0, 0, 0, quick=True))


def test_runner_tabulates_each_arm_and_reports_a_failed_one(shapes_root, tmp_path):
    working = Arm("working", "working arm", RETINANET)
    failing = Arm("failing", "failing arm", "configs/missing.yaml")  # fails before any process starts
    settings = Settings(extra_args=(*data_args(shapes_root), *TINY), runs_dir=str(tmp_path / "runs"),
                        out_dir=str(tmp_path / "docs"), threads=1, command="python tools/experiment.py toy")
    document = run_study(toy_study([working, failing]), settings)

    out = tmp_path / "docs" / "toy"
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(document))
    done, failed = document["arms"]
    assert (done["status"], failed["status"]) == ("done", "failed")
    assert failed["error"].startswith("config configs/missing.yaml not found")
    run = Path(done["run_dir"])
    assert run == tmp_path / "runs" / "toy" / "working" / "version_0" and (run / "checkpoints" / "best.ckpt").is_file()
    with open(run / "metrics.csv") as file:
        logged = [float(row["val/AP"]) for row in csv.DictReader(file) if row.get("val/AP")]
    record = done["record"]
    assert record["stats"]["AP"] == pytest.approx(max(logged), abs=1e-6)  # the best checkpoint, re-evaluated
    assert (record["steps"], record["images_seen"], record["batch_size"]) == (2, 8, 4)
    train_json = json.loads((shapes_root / "instances_train.json").read_text())
    assert record["coverage"]["dense"]["objects"] == len(train_json["annotations"])
    assert len(record["curves"]["train/loss"]) == 2

    markdown = (out / "results.md").read_text()
    coverage = record["coverage"]["dense"]
    assert (f"| working arm | {record['stats']['AP']:.3f} | {record['stats']['AP50']:.3f} | 2 | "
            f"{coverage['no_positive']} of {coverage['objects']} (" in markdown)
    assert "| failing arm | **failed** (see below) |" in markdown and failed["error"] in markdown
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SOURCE_CHECKOUT, capture_output=True,
                          text=True).stdout.strip()
    assert f"commit: `{head}" in markdown and "`python tools/experiment.py toy`" in markdown
    assert Image.open(out / "plot.png").size == (3 * 650, 480)  # three panels

    again = run_study(toy_study([working]), dataclasses.replace(settings, reuse=True))
    assert again["arms"][0]["status"] == "reused" and again["arms"][0]["record"] == record
    assert sorted(p.name for p in (tmp_path / "runs" / "toy" / "working").iterdir()) == [
        "version_0", "version_0.json", "version_0.log"]  # nothing trained again


def test_an_arm_process_that_fails_is_reported_with_its_error(tmp_path):
    # what run_arm gets from an arm whose process raises: the exit code and the error's last line from its log
    crash = [sys.executable, "-c", "import sys; print('step 3'); sys.exit('error: step 4: non-finite loss')"]
    assert launch(crash, str(tmp_path / "arm.log"), threads=1, timeout_minutes=None) == (
        "exit code 1: error: step 4: non-finite loss")
    assert (tmp_path / "arm.log").read_text().startswith("$ OMP_NUM_THREADS=1 ")
    assert launch([sys.executable, "-c", "print('fine')"], str(tmp_path / "ok.log"), 1, None) is None
    hang = [sys.executable, "-c", "import time; time.sleep(30)"]
    assert launch(hang, str(tmp_path / "hang.log"), 1, timeout_minutes=0.01) == (
        "killed after the arm timeout of 0.01 min")


def test_next_version_and_last_error(tmp_path):
    assert next_version(str(tmp_path / "missing")) == "version_0"
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_3.log").write_text("Traceback (most recent call last):\n  File x\nValueError: bad key\n  \n")
    assert next_version(str(tmp_path)) == "version_4"
    assert last_error(str(tmp_path / "version_3.log")) == "ValueError: bad key"
