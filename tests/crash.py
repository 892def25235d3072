"""Lightning callbacks for resume tests: one kills its own process with SIGKILL (no clean-up, no checkpoint),

    PYTHONPATH=tests python tools/train.py --config ... --trainer.callbacks+=crash.KillAt --trainer.callbacks.step 13

one poisons batches with NaN, one records where a (resumed) fit took its first step.
"""
import os
import signal

import lightning as L


class KillAt(L.Callback):
    """``kill -9`` this process at the end of optimizer step ``step``, as a power cut or the OOM killer would."""

    def __init__(self, step: int = 1):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class NaNBatch(L.Callback):
    """Turn the images of the batches at optimizer steps ``steps`` into NaN, as a corrupt image or an overflow would."""

    def __init__(self, steps: list[int] = [1]):  # noqa: B006 - read only
        self.steps = set(steps)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step in self.steps:
            batch["images"].fill_(float("nan"))


class FirstStep(L.Callback):
    """Records ``(epoch, batch index, global step)`` when the fit's first batch starts: where a resumed run begins."""

    def __init__(self):
        self.position: tuple[int, int, int] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.position is None:
            self.position = (trainer.current_epoch, batch_idx, trainer.global_step)
