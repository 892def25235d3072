"""``last.ckpt`` at every epoch end and every few minutes or steps, so a crash loses at most an epoch, or minutes of
a long one.

Lightning's ``ModelCheckpoint`` writes ``last.ckpt`` after each validation; between validations this callback
rewrites the same file (atomically, through detkit's checkpoint IO) and tells the ModelCheckpoint, which then
keeps writing that one file instead of ``last-v1.ckpt``.
"""
from __future__ import annotations

import os
import time

import lightning as L
import torch


class PeriodicCheckpoint(L.Callback):
    """Rewrite ``last.ckpt`` between validations.

    Args:
        every_n_steps: every that many optimizer steps (null: off).
        every_minutes: whenever that many minutes have passed since the last write (null: off).
        every_epoch: at each epoch end that did not validate (one that did has ModelCheckpoint write it).
    """

    def __init__(self, every_n_steps: int | None = None, every_minutes: float | None = 5.0, every_epoch: bool = True):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"last_checkpoint.every_n_steps must be >= 1 or null, got {every_n_steps}")
        if every_minutes is not None and every_minutes <= 0:
            raise ValueError(f"last_checkpoint.every_minutes must be > 0 or null, got {every_minutes}")
        self.every_n_steps, self.every_minutes, self.every_epoch = every_n_steps, every_minutes, every_epoch
        self._last_write = time.monotonic()
        self._step_saved: int | None = None  # the step last.ckpt holds, or will once ModelCheckpoint has written it
        self.writes = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._due(trainer):
            self._write_last(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_epoch and self._step_saved != trainer.global_step:
            self._write_last(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        callback = trainer.checkpoint_callback
        if not trainer.sanity_checking and getattr(callback, "save_last", False):
            # ModelCheckpoint writes last.ckpt after this validation, or at this epoch's end after this callback
            self._step_saved = trainer.global_step
            self._last_write = time.monotonic()

    def _write_last(self, trainer) -> None:
        callback = trainer.checkpoint_callback
        if callback is None or callback.dirpath is None:
            return
        path = os.path.join(callback.dirpath, f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}")
        callback.last_model_path = path  # set before the save: the checkpoint holds the callback's state
        trainer.save_checkpoint(path, weights_only=False)  # whole: a resume needs the optimizer and the loops
        self._step_saved, self._last_write = trainer.global_step, time.monotonic()
        self.writes += 1

    def _due(self, trainer) -> bool:
        by_steps = self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0
        by_time = self.every_minutes is not None and time.monotonic() - self._last_write >= 60 * self.every_minutes
        due = torch.tensor(float(by_steps or by_time))
        if trainer.world_size > 1:  # every rank must take part in the save: rank 0's clock decides
            due = trainer.strategy.broadcast(due, src=0)
        return bool(due)
