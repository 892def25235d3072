"""A kill loses at most one epoch: ``last.ckpt`` is written at every epoch end, so a run that validates only at its
end, SIGKILLed in its second epoch before any validation or periodic write, resumes from the end of its first."""
from __future__ import annotations

import pytest
from crash import FirstStep
from test_engine_resume import load, run, train_command

from detkit.engine.cli import train

STEPS_PER_EPOCH = 8  # the shapes_root fixture's 32 training images in batches of 4
EPOCHS, KILL_AT = 3, 12  # step 12 is mid-epoch 2 (its steps are 9-16)
VALIDATE_AT_THE_END_ONLY = ("--trainer.max_steps", "-1", "--trainer.max_epochs", str(EPOCHS),
                            "--trainer.check_val_every_n_epoch", str(EPOCHS), "--last_checkpoint.every_n_steps", "null")


@pytest.mark.usefixtures("one_thread")
def test_a_run_killed_before_any_validation_resumes_from_its_last_epoch_end(shapes_root, tmp_path):
    killed = run(train_command(shapes_root, tmp_path, *VALIDATE_AT_THE_END_ONLY, "--trainer.callbacks+=crash.KillAt",
                               f"--trainer.callbacks.step={KILL_AT}"))
    assert killed.returncode == -9, killed.stderr[-3000:]  # a real SIGKILL: no clean-up ran
    checkpoints = tmp_path / "retinanet_shapes" / "version_0" / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["last.ckpt"]  # no validation: no best.ckpt
    saved = load(checkpoints / "last.ckpt")
    assert (saved["epoch"], saved["global_step"]) == (0, STEPS_PER_EPOCH)  # the end of epoch 1

    arguments = train_command(shapes_root, tmp_path, *VALIDATE_AT_THE_END_ONLY, "--trainer.callbacks+=crash.FirstStep")
    cli = train([*arguments[2:], "--resume", "last"]).cli
    first_step = next(callback for callback in cli.trainer.callbacks if isinstance(callback, FirstStep))
    assert first_step.position == (1, 0, STEPS_PER_EPOCH)  # epoch 2's first batch, nothing trained twice
    assert cli.trainer.global_step == EPOCHS * STEPS_PER_EPOCH
    assert load(checkpoints / "last.ckpt")["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert sorted(path.name for path in (tmp_path / "retinanet_shapes").iterdir()) == ["version_0"]  # same folder
