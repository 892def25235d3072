"""Logs: TensorBoard beside the CSV logger writes the same loss terms, learning rate and val AP into the run folder
that holds config.yaml and the checkpoints; the progress bar shows the loss."""
import csv
import json
import math
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from shapes_data import data_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from detkit.engine.cli import DetectionCLI, train
from detkit.engine.loggers import share_run_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("share", [True, False])
def test_loggers_share_the_next_free_version(tmp_path, share):
    (tmp_path / "run" / "version_0").mkdir(parents=True)  # an earlier run
    loggers = [CSVLogger(str(tmp_path), name="run"), TensorBoardLogger(str(tmp_path), name="run")]
    if share:
        share_run_folder(loggers)
    for logger in loggers:  # what the start of fit does: each makes its folder in turn
        logger.experiment  # noqa: B018
    folders = [Path(logger.log_dir).name for logger in loggers]
    # without sharing, the second logger sees the first one's new folder and takes the next number
    assert folders == (["version_1", "version_1"] if share else ["version_1", "version_2"])


def test_config_comment_example_builds_both_loggers_in_one_folder(shapes_root, tmp_path):
    # the commented logger list of the shipped configs, uncommented in place of the CSV-only logger
    lines = (REPO / "configs" / "retinanet_shapes.yaml").read_text().splitlines()
    start = lines.index("  logger:")
    example = [line.replace("  # ", "  ", 1) for line in lines if line.startswith(("  # logger:", "  #   - {"))]
    path = tmp_path / "tensorboard.yaml"
    config = "\n".join(lines[:start] + example + lines[start + 3:])
    path.write_text(config.replace("save_dir: runs", f"save_dir: {tmp_path}"))
    cli = DetectionCLI(run=False, args=["--config", str(path), *data_args(shapes_root), "--trainer.accelerator", "cpu"])
    assert [type(logger) for logger in cli.trainer.loggers] == [CSVLogger, TensorBoardLogger]
    for logger in cli.trainer.loggers:  # what the start of fit does: each makes its folder in turn
        logger.experiment  # noqa: B018
    assert [logger.log_dir for logger in cli.trainer.loggers] == [str(tmp_path / "retinanet_shapes" / "version_0")] * 2


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard tag -> [(step, value)] over every event file of the run folder."""
    values: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(run.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return values


@pytest.mark.usefixtures("one_thread")
def test_training_with_tensorboard_beside_csv(shapes_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    # the command-line form the configs' comment gives
    run = train(["--config", str(REPO / "configs" / "retinanet_shapes.yaml"), *data_args(shapes_root),
                    "--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir", str(runs),
                    "--trainer.logger+=TensorBoardLogger", "--trainer.logger.save_dir", str(runs),
                    "--trainer.logger.name", "retinanet_shapes",
                    "--budget.minutes", "null", "--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1",
                    "--trainer.log_every_n_steps", "1", "--data.batch_size", "8", "--data.val_batch_size", "4",
                    "--model.warmup_steps", "1"])
    cli = run.cli
    assert [type(logger) for logger in cli.trainer.loggers] == [CSVLogger, TensorBoardLogger]
    assert [p.name for p in (runs / "retinanet_shapes").iterdir()] == ["version_0"]  # one run folder
    run = runs / "retinanet_shapes" / "version_0"
    assert {"config.yaml", "metrics.csv", "results_val.json"} <= {p.name for p in run.iterdir()}
    assert {"best.ckpt", "last.ckpt"} <= {p.name for p in (run / "checkpoints").iterdir()}

    logged = scalars(run)
    with open(run / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    lr_tag = next(tag for tag in logged if tag.startswith("lr-"))  # LearningRateMonitor's, e.g. lr-AdamW
    for tag in ("train/loss", "train/cls", "train/box", lr_tag, "val/AP", "val/AP50"):
        from_csv = [(int(r["step"]), float(r[tag])) for r in rows if r.get(tag)]
        assert from_csv and [step for step, _ in logged[tag]] == [step for step, _ in from_csv], tag
        assert [value for _, value in logged[tag]] == pytest.approx([value for _, value in from_csv], rel=1e-6), tag
    num_train = len(json.loads((shapes_root / "instances_train.json").read_text())["images"])
    assert len(logged["train/loss"]) == math.ceil(num_train / 8)  # batches of 8, every step logged
    assert "train/loss=" in capsys.readouterr().out  # the postfix of Lightning's progress bar
