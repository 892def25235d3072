"""A Lightning callback that stands for a slower machine, for budget tests and for real runs:

    PYTHONPATH=tests python tools/train.py --config ... --trainer.callbacks+=slow_machine.SlowMachine \\
        --trainer.callbacks.factor 0.25        # every training step takes 25% longer (a machine 20% slower)
"""
import time

import lightning as L


class SlowMachine(L.Callback):
    """Sleep after each training step: ``seconds``, plus ``factor`` times the step's own duration."""

    def __init__(self, seconds: float = 0.0, factor: float = 0.0):
        self.seconds, self.factor = seconds, factor
        self._start = 0.0

    def on_train_batch_start(self, *args) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds + self.factor * (time.perf_counter() - self._start))
