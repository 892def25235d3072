"""Callbacks of detkit's own; everything else (checkpoints, LR monitor, progress bar) is Lightning's."""
from __future__ import annotations

import time

import lightning as L


class StepClock:
    """Wall time of each training step, counting the wait for its batch since the previous step (the data
    loader's share); ``pause`` at epoch starts and validations, so neither counts as a step's wait."""

    def __init__(self):
        self._last_end: float | None = None
        self.step_start = 0.0

    def start(self) -> None:
        self.step_start = self._last_end if self._last_end is not None else time.perf_counter()

    def stop(self) -> float:
        """Seconds since the step (and its wait) started."""
        self._last_end = time.perf_counter()
        return self._last_end - self.step_start

    def pause(self) -> None:
        self._last_end = None


class Throughput(L.Callback):
    """Training and inference throughput in images per second.

    Training counts each step and the wait for its batch after the previous step (the data loader's
    share); validation pauses that clock, so the figure does not depend on how often validation runs.
    Inference counts each validation step: the detector's forward pass, post-processing and the
    hand-over of detections to the evaluator, not the COCOeval computation at the end of the epoch.
    Tools read ``train_images_per_second`` after ``fit`` and ``inference_images_per_second`` after ``validate``.
    """

    def __init__(self):
        self.train_images, self.train_seconds = 0, 0.0
        self.inference_images, self.inference_seconds = 0, 0.0
        self._clock = StepClock()
        self._step_start = 0.0

    @property
    def train_images_per_second(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0

    @property
    def inference_images_per_second(self) -> float:
        return self.inference_images / self.inference_seconds if self.inference_seconds else 0.0

    def reset_inference(self) -> None:
        self.inference_images, self.inference_seconds = 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._clock.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_seconds += self._clock.stop()
        self.train_images += len(batch["image_sizes"]) * trainer.world_size

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._clock.pause()  # the loader's start-up is not a step's wait

    def on_validation_start(self, trainer, pl_module) -> None:
        self._clock.pause()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._step_start = time.perf_counter()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.inference_seconds += time.perf_counter() - self._step_start
        self.inference_images += len(batch["image_sizes"]) * trainer.world_size
