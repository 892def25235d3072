"""Lightning DDP with 2 CPU processes (gloo) trains RetinaNet to the weights one process reaches on the same
global batches, and evaluates a checkpoint to exactly the 1-process COCO numbers.

Equal up to float rounding, not bitwise: the gradient all-reduce adds the two ranks' sums in another order.
The recipe has no random augmentation and GroupNorm instead of BatchNorm: per-rank BatchNorm statistics (without
``trainer.sync_batchnorm``) and per-rank augmentation streams are real differences, not rounding.
"""
from __future__ import annotations

import re

import torch
from test_engine_resume import load, run, train_command

from detkit.engine.cli import DetectionCLI

ROOT_ARGS = ["--model.optimizer", "sgd", "--model.lr", "0.02", "--model.detector.init_args.backbone.norm", "gn",
             "--data.train_augmentations", "[]", "--trainer.max_steps", "4", "--trainer.accelerator", "cpu",
             "--last_checkpoint.every_n_steps", "100"]


def summary_numbers(stdout: str) -> list[str]:
    return re.findall(r"\] = (-?\d\.\d{3})", stdout)


def test_two_processes_train_and_evaluate_like_one(shapes_root, tmp_path):
    one = run(train_command(shapes_root, tmp_path / "one", *ROOT_ARGS, "--data.batch_size", "4",
                            "--trainer.devices", "1"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = run(train_command(shapes_root, tmp_path / "two", *ROOT_ARGS, "--data.batch_size", "2",  # per process
                            "--trainer.devices", "2", "--trainer.strategy", "ddp"))
    assert two.returncode == 0, two.stderr[-8000:]
    run_dir = "retinanet_shapes/version_0/checkpoints/last.ckpt"
    expected, got = load(tmp_path / "one" / run_dir), load(tmp_path / "two" / run_dir)
    assert got["global_step"] == expected["global_step"] == 4
    initial = DetectionCLI(run=False,
                           args=train_command(shapes_root, tmp_path / "init", *ROOT_ARGS)[2:]).model.state_dict()
    moved = 0
    for name, value in expected["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][name], value, rtol=1e-4, atol=1e-6, msg=name)
        moved += int(value.is_floating_point() and (value - initial[name]).abs().max() > 1e-4)
    assert moved > 10  # trained weights compared, not two copies of the initial ones

    checkpoint = str(tmp_path / "one" / run_dir)
    evaluate = ["tools/eval.py", "--checkpoint", checkpoint, "--trainer.accelerator", "cpu"]
    single = run([*train_command(shapes_root, tmp_path)[:1], *evaluate, "--trainer.devices", "1",
                  "--results", str(tmp_path / "single.json")])
    double = run([*train_command(shapes_root, tmp_path)[:1], *evaluate, "--trainer.devices", "2", "--trainer.strategy",
                  "ddp", "--results", str(tmp_path / "double.json")])
    assert single.returncode == 0 and double.returncode == 0, (single.stderr[-2000:], double.stderr[-2000:])
    assert len(summary_numbers(single.stdout)) == 12
    assert summary_numbers(double.stdout) == summary_numbers(single.stdout), (single.stdout[-2500:],
                                                                               double.stdout[-2500:])
