"""Resume after a crash: a training SIGKILLed mid-epoch and resumed with ``--resume last`` ends with the weights
and val AP of the same training run without interruption, bit for bit, and keeps its run folder and history.

Bitwise is possible here because every random draw is restored (global torch / numpy / Python generators, the
augmentation's generator, the sampler's epoch and position) and every run uses one CPU thread, so reductions
add in the same order. With several threads or on a GPU the kernels may reorder sums: expect ~1e-6 relative.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from shapes_data import data_args

from detkit.engine.cli import train

ROOT = Path(__file__).resolve().parents[1]
STEPS, KILL_AT, EVERY = 20, 13, 3  # 8 steps an epoch: the kill is mid-epoch 1, the newest checkpoint at step 12


def train_command(root: Path, save_dir: Path, *extra: str) -> list[str]:
    data = data_args(root)
    return [sys.executable, str(ROOT / "tools" / "train.py"),
            "--config", str(ROOT / "configs" / "retinanet_shapes.yaml"),
            *data, "--data.batch_size", "4", "--data.min_size", "64", "--data.max_size", "64",
            "--model.detector.init_args.fpn.channels", "16", "--model.warmup_steps", "3", "--budget.minutes", "null",
            "--trainer.max_epochs", "null", "--trainer.max_steps", str(STEPS), "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(save_dir),
            "--last_checkpoint.every_n_steps", str(EVERY), *extra]


def run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def val_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return [row for row in csv.DictReader(file) if row.get("val/AP")]


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(shapes_root, tmp_path):
    reference = run(train_command(shapes_root, tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    crashed = run(train_command(shapes_root, tmp_path / "crashed", "--trainer.callbacks+=crash.KillAt",
                                f"--trainer.callbacks.step={KILL_AT}"))
    assert crashed.returncode == -9  # a real SIGKILL: no clean-up ran
    run_dir = tmp_path / "crashed" / "retinanet_shapes" / "version_0"
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == KILL_AT - KILL_AT % EVERY

    resumed = run(train_command(shapes_root, tmp_path / "crashed", "--resume", "last"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "crashed" / "retinanet_shapes").iterdir()) == ["version_0"]  # same folder
    assert (run_dir / "config.yaml").is_file() and (run_dir / "config_resumed.yaml").is_file()

    expected = load(tmp_path / "reference" / "retinanet_shapes" / "version_0" / "checkpoints" / "last.ckpt")
    got = load(run_dir / "checkpoints" / "last.ckpt")
    assert got["global_step"] == expected["global_step"] == STEPS
    assert expected["state_dict"].keys() == got["state_dict"].keys()
    for name, value in expected["state_dict"].items():
        assert torch.equal(value, got["state_dict"][name]), name
    # the val AP at every epoch end and after the last step, the crashed run's history kept, nothing twice
    reference_ap = [(r["step"], r["val/AP"])
                    for r in val_rows(tmp_path / "reference" / "retinanet_shapes" / "version_0")]
    assert [(r["step"], r["val/AP"]) for r in val_rows(run_dir)] == reference_ap
    assert len(reference_ap) == 4  # epochs 1, 2 (steps 7, 15), the stop at step 20 and its final validation


def test_resume_last_without_a_matching_run_names_what_differs(shapes_root, tmp_path):
    arguments = train_command(shapes_root, tmp_path)[2:]  # in-process: the same options as the command line
    train([*arguments, "--trainer.max_steps", "2"])
    with pytest.raises(ValueError, match=r"model\.lr.*--resume <checkpoint>"):
        train([*arguments, "--model.lr", "0.5", "--resume", "last"])
    with pytest.raises(FileNotFoundError, match="nope.ckpt does not exist"):
        train([*arguments, "--resume", str(tmp_path / "nope.ckpt")])
    with pytest.raises(FileNotFoundError, match="no run has a checkpoint"):
        train([*train_command(shapes_root, tmp_path / "elsewhere")[2:], "--resume", "last"])
