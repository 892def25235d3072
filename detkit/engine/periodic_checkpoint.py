"""``last.ckpt`` every few minutes or steps, so a crash loses minutes, not epochs.

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
    """Args: every_n_steps: write ``last.ckpt`` every that many optimizer steps (null: off);
    every_minutes: and whenever that many minutes have passed since the last write (null: off)."""

    def __init__(self, every_n_steps: int | None = None, every_minutes: float | None = 5.0):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"last_checkpoint.every_n_steps must be >= 1 or null, got {every_n_steps}")
        if every_minutes is not None and every_minutes <= 0:
            raise ValueError(f"last_checkpoint.every_minutes must be > 0 or null, got {every_minutes}")
        self.every_n_steps, self.every_minutes = every_n_steps, every_minutes
        self._last_write = time.monotonic()
        self.writes = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        callback = trainer.checkpoint_callback
        if callback is None or callback.dirpath is None or not self._due(trainer):
            return
        path = os.path.join(callback.dirpath, f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}")
        callback.last_model_path = path  # set before the save: the checkpoint holds the callback's state
        trainer.save_checkpoint(path)
        self._last_write = time.monotonic()
        self.writes += 1

    def on_validation_end(self, trainer, pl_module) -> None:
        self._last_write = time.monotonic()  # ModelCheckpoint has just written last.ckpt

    def _due(self, trainer) -> bool:
        by_steps = self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0
        by_time = self.every_minutes is not None and time.monotonic() - self._last_write >= 60 * self.every_minutes
        due = torch.tensor(float(by_steps or by_time))
        if trainer.world_size > 1:  # every rank must take part in the save: rank 0's clock decides
            due = trainer.strategy.broadcast(due, src=0)
        return bool(due)
