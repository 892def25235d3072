"""Checkpoints survive a crash during their own save and never hold non-finite weights; a non-finite loss is
skipped and counted or stops training with the step and the loss terms; losses stay float32 under bf16 autocast."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from scenes import SIZE, K, synthetic_batch
from test_engine_resume import train_command

from detkit.atomic_io import NonFiniteWeightsError, save_atomically
from detkit.engine.cli import train
from detkit.models import FasterRCNN, RetinaNet
from detkit.models.settings import Anchors, Backbone, Pyramid

ROOT = Path(__file__).resolve().parents[1]


def checkpoint_of(step: int, numel: int = 1000) -> dict:
    return {"global_step": step, "state_dict": {"w": torch.full((numel,), float(step))}}


def test_an_interrupted_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_atomically(checkpoint_of(1), str(path))

    def torch_save_that_dies_halfway(obj, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", torch_save_that_dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_atomically(checkpoint_of(2), str(path))
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file left behind


def test_kill_9_during_saves_leaves_a_loadable_checkpoint(tmp_path):
    # a child rewrites a 32 MB checkpoint in a loop; SIGKILL lands at some point inside one of the saves
    path = tmp_path / "last.ckpt"
    code = ("import sys; from detkit.atomic_io import save_atomically; import torch\n"
            "for step in range(10**6):\n"
            "    save_atomically({'global_step': step, "
            f"'state_dict': {{'w': torch.full((8_000_000,), float(step))}}}}, {str(path)!r})\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_mtime_ns == 0):
            time.sleep(0.05)
        first = path.stat().st_mtime_ns
        while time.monotonic() < deadline and path.stat().st_mtime_ns == first:  # a second save has finished
            time.sleep(0.02)
        time.sleep(0.13)  # some way into the next save
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] >= 1
    assert torch.equal(checkpoint["state_dict"]["w"], torch.full((8_000_000,), float(checkpoint["global_step"])))


def test_non_finite_weights_are_never_written(tmp_path):
    path = tmp_path / "last.ckpt"
    save_atomically(checkpoint_of(1), str(path))
    poisoned = checkpoint_of(2)
    poisoned["state_dict"]["w"][7] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match="'w' holds NaN or Inf"):
        save_atomically(poisoned, str(path))
    assert torch.load(path, weights_only=True)["global_step"] == 1


@pytest.mark.usefixtures("one_thread")
def test_a_nan_batch_is_skipped_and_counted(shapes_root, tmp_path):
    arguments = train_command(shapes_root, tmp_path, "--trainer.max_steps", "6", "--trainer.callbacks+=crash.NaNBatch",
                              "--trainer.callbacks.steps=[3]")[2:]
    run = train(arguments)
    cli = run.cli
    assert cli.model.nonfinite_batches == 1 and cli.trainer.global_step == 6
    saved = torch.load(cli.trainer.checkpoint_callback.last_model_path, weights_only=True)["state_dict"]
    assert all(torch.isfinite(value).all() for value in saved.values() if value.is_floating_point())


@pytest.mark.usefixtures("one_thread")
def test_nan_losses_beyond_the_patience_stop_with_the_step_and_the_terms(shapes_root, tmp_path):
    arguments = train_command(shapes_root, tmp_path, "--trainer.max_steps", "6", "--trainer.callbacks+=crash.NaNBatch",
                              "--trainer.callbacks.steps=[2, 3]", "--model.nonfinite_patience", "1")[2:]
    with pytest.raises(SystemExit, match=r"step 3: non-finite loss \(cls=nan, box=nan\); 2 batch\(es\) in a row.*"
                                         r"model\.nonfinite_patience=1"):
        train(arguments)
    # every_n_steps 3: step 3 skipped
    checkpoint = tmp_path / "retinanet_shapes" / "version_0" / "checkpoints" / "last.ckpt"
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True)["state_dict"]
        assert all(torch.isfinite(value).all() for value in saved.values() if value.is_floating_point())


@pytest.mark.parametrize("model_type", [RetinaNet, FasterRCNN])
def test_losses_are_float32_under_bf16_autocast(model_type):
    torch.manual_seed(0)
    model = model_type(num_classes=K, backbone=Backbone(name="tiny", norm="bn"),
                       fpn=Pyramid(min_level=3, channels=16, extra_levels=0), anchors=Anchors(sizes=(16, 32, 64)))
    images, targets = synthetic_batch()
    sizes = [(SIZE, SIZE)] * len(targets)
    torch.manual_seed(1)
    reference = model(images, sizes, targets)
    torch.manual_seed(1)  # the same RPN / RoI samples
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(images, sizes, targets)
    for name, value in mixed.items():
        assert value.dtype == torch.float32, name
        assert torch.isclose(value, reference[name], rtol=0.1, atol=1e-3), (name, value, reference[name])
