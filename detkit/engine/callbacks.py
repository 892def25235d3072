"""Callbacks of detkit's own; everything else (checkpoints, LR monitor, progress bar) is Lightning's."""
from __future__ import annotations

import time

import lightning as L


class TrainingSpeed(L.Callback):
    """Measures training throughput in images per second, data loading included, validation excluded.

    Counted: each training step, and the wait for its batch after the previous step (the data
    loader's share). Validation pauses the clock, so the figure is comparable across validation
    frequencies. ``images_per_second`` and ``train_seconds`` are read by tools after ``fit``.
    """

    def __init__(self):
        self.images = 0
        self.train_seconds = 0.0
        self._last_step_end: float | None = None
        self._step_start = 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.train_seconds if self.train_seconds else 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_start = time.perf_counter()
        if self._last_step_end is not None:
            self.train_seconds += self._step_start - self._last_step_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last_step_end = time.perf_counter()
        self.train_seconds += self._last_step_end - self._step_start
        self.images += len(batch["image_sizes"]) * trainer.world_size

    def on_validation_start(self, trainer, pl_module) -> None:
        self._last_step_end = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last_step_end = None  # the loader's start-up is not a step's wait
