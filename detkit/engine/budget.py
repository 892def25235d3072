"""Training to a wall-clock budget: the whole learning-rate schedule, warm-up to the end of its decay, and the
last validation fit inside ``minutes`` on whatever machine runs it.

A fixed ``max_epochs`` tuned on one machine overruns the budget on a slower one, and a hard ``max_time`` then
cuts the run before its schedule has decayed and before its last validation. ``TimeBudget`` instead measures
the step time and sizes the schedule to it, again every few steps, so a machine 20% slower trains 20% fewer
steps with a complete schedule.
"""
from __future__ import annotations

import math
import statistics
import time
from collections import deque

import lightning as L

from detkit.engine.callbacks import StepClock


def plan_total_steps(budget_s: float, elapsed_s: float, steps_done: int, step_s: float, val_s: float,
                     steps_per_epoch: int, val_every_n_epochs: int | None, max_steps: int) -> int:
    """The optimizer steps of the whole run that fit the budget with every validation still to come.

    Args:
        budget_s: the budget of the whole fit; elapsed_s: spent so far (steps, validations, start-up).
        steps_done: steps taken; step_s: seconds per step from now on; val_s: seconds per validation.
        steps_per_epoch: batches of an epoch; val_every_n_epochs: periodic validation (None: only the last).
        max_steps: the cap set by ``max_epochs`` / ``max_steps`` (the budget never lengthens a run past it).
    Returns: total steps >= steps_done; the run ends when it reaches them, then validates once more.
    """
    remaining_s = budget_s - elapsed_s
    total = min(max_steps, steps_done + max(0, math.floor((remaining_s - val_s) / step_s)))  # the last validation only
    for _ in range(3):  # the periodic validations to come depend on the total: a fixed point in a round or two
        validations = 1 + _periodic_validations(steps_done, total, steps_per_epoch, val_every_n_epochs)
        total = min(max_steps, steps_done + max(0, math.floor((remaining_s - validations * val_s) / step_s)))
    return max(total, steps_done)


def _periodic_validations(steps_done: int, total: int, steps_per_epoch: int, every: int | None) -> int:
    """Epoch-end validations between steps_done and total, not counting one at the very end (the last one)."""
    if not every:
        return 0
    epochs_done, epochs_total = steps_done // steps_per_epoch, total // steps_per_epoch
    count = epochs_total // every - epochs_done // every
    ends_on_a_validation = total % steps_per_epoch == 0 and epochs_total % every == 0
    return max(0, count - ends_on_a_validation)


class TimeBudget(L.Callback):
    """Size the learning-rate schedule (``DetectionModule.lr_schedule.total_steps``) so that training, its
    validations and the final validation of the last weights end within ``minutes`` of the start of ``fit``.

    The step time is the median of the last ``window`` steps (the loader's wait included, validation not)
    plus, per step, the time since the first step spent outside steps and validations (epoch starts,
    checkpoint saves), re-planned every ``replan_every`` steps; a validation's time is measured by the previous
    validation (before the first: the val images at the training time per image, an overestimate). ``margin``
    of the budget is kept in reserve. Training ends when the step count reaches the plan; the caller then
    validates the final weights (``detkit.engine.final_validation``). ``max_epochs`` / ``max_steps`` still cap
    the run.

    Args:
        minutes: the budget; None turns the callback off (the schedule is sized by max_epochs / max_steps).
        validations: validations in the run, the last included, spread over its epochs by setting
            ``trainer.check_val_every_n_epoch`` at each plan (null: keep the trainer's).
        margin: share of the budget kept in reserve.
        window, replan_every, first_plan_after: steps measured, steps between plans, steps before the first plan.
    """

    def __init__(self, minutes: float | None = None, validations: int | None = None, margin: float = 0.03,
                 window: int = 50, replan_every: int = 10, first_plan_after: int = 5):
        if minutes is not None and minutes <= 0:
            raise ValueError(f"budget.minutes must be > 0 or null, got {minutes}")
        if validations is not None and validations < 1:
            raise ValueError(f"budget.validations must be >= 1 or null, got {validations}")
        if not 0 <= margin < 1:
            raise ValueError(f"budget.margin must be in [0, 1), got {margin}")
        self.minutes, self.validations, self.margin = minutes, validations, margin
        self._step_seconds_total, self._val_seconds_total = 0.0, 0.0
        self._first_step_start: float | None = None  # start-up before it (anchor fitting, loaders) is not per step
        self.replan_every, self.first_plan_after = max(1, replan_every), max(1, first_plan_after)
        self._step_times: deque[float] = deque(maxlen=max(1, window))
        self._start: float | None = None
        self._clock = StepClock()
        self.val_seconds: float | None = None
        self._val_start = 0.0
        self.max_steps = 0
        self.plans: list[tuple[int, int, float]] = []  # (at step, total steps, step seconds): the plan's history
        self._resumed: dict | None = None  # the clocks of the run a resumed fit continues

    @property
    def seconds_since_start(self) -> float:
        """Wall time since ``fit`` started (what the budget counts)."""
        return time.perf_counter() - self._start if self._start is not None else 0.0

    @property
    def budget_seconds(self) -> float:
        return 60.0 * self.minutes if self.minutes is not None else math.inf

    def on_fit_start(self, trainer, pl_module) -> None:
        # a resumed run continues the budget where its checkpoint left it; the time until the resume is not counted
        self._start = time.perf_counter() - (self._resumed["elapsed_s"] if self._resumed else 0.0)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.minutes is None:
            return
        if getattr(pl_module, "lr_schedule", None) is None:
            raise ValueError("budget.minutes needs a module with an lr_schedule (detkit's DetectionModule)")
        self.max_steps = int(min(pl_module.lr_schedule.total_steps, trainer.estimated_stepping_batches))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._clock.start()
        if self._first_step_start is None:
            self._first_step_start = self._clock.step_start - (self._resumed["training_s"] if self._resumed else 0.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._step_times.append(self._clock.stop())
        self._step_seconds_total += self._step_times[-1]
        if self.minutes is None:
            return
        step = trainer.global_step
        if step >= self.first_plan_after and (step - self.first_plan_after) % self.replan_every == 0:
            self._replan(trainer, pl_module)
        if step >= pl_module.lr_schedule.total_steps:
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._clock.pause()  # the loader's start-up is not a step's wait

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val_seconds = time.perf_counter() - self._val_start
            self._val_seconds_total += self.val_seconds
        self._clock.pause()

    def _replan(self, trainer, pl_module) -> None:
        now, steps = time.perf_counter(), max(trainer.global_step, 1)
        elapsed, training = now - self._start, now - self._first_step_start
        overhead_s = max(0.0, training - self._step_seconds_total - self._val_seconds_total) / steps
        step_s = statistics.median(self._step_times) + overhead_s
        steps_per_epoch = max(1, int(trainer.num_training_batches // trainer.accumulate_grad_batches))
        plan = dict(budget_s=self.budget_seconds * (1 - self.margin), elapsed_s=elapsed, steps_done=trainer.global_step,
                    step_s=step_s, val_s=self._val_estimate(trainer, step_s), steps_per_epoch=steps_per_epoch,
                    max_steps=self.max_steps)
        if self.validations is not None:
            # spread the validations over the epochs the run would have with the last one only
            epochs = plan_total_steps(**plan, val_every_n_epochs=None) / steps_per_epoch
            trainer.check_val_every_n_epoch = max(1, math.ceil(epochs / self.validations))
        total = plan_total_steps(**plan, val_every_n_epochs=trainer.check_val_every_n_epoch)
        pl_module.lr_schedule.total_steps = total
        if hasattr(pl_module, "plan_regularisation"):
            pl_module.plan_regularisation(total)
        self.plans.append((trainer.global_step, total, step_s))

    def _val_estimate(self, trainer, step_s: float) -> float:
        if self.val_seconds is not None:
            return self.val_seconds
        dataset = getattr(trainer.datamodule, "val_dataset", None) if trainer.datamodule is not None else None
        batch_size = getattr(trainer.datamodule, "batch_size", 1)
        if dataset is None or not trainer.enable_validation:
            return 0.0
        return len(dataset) * step_s / batch_size

    def state_dict(self) -> dict:
        now = time.perf_counter()
        return {"plans": list(self.plans), "elapsed_s": self.seconds_since_start,
                "training_s": now - self._first_step_start if self._first_step_start is not None else 0.0,
                "step_seconds_total": self._step_seconds_total, "val_seconds_total": self._val_seconds_total,
                "val_seconds": self.val_seconds, "step_times": list(self._step_times)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.plans = [tuple(plan) for plan in state_dict.get("plans", [])]
        if "elapsed_s" in state_dict:
            self._resumed = state_dict
            self._step_seconds_total = state_dict["step_seconds_total"]
            self._val_seconds_total = state_dict["val_seconds_total"]
            self.val_seconds = state_dict["val_seconds"]
            self._step_times.extend(state_dict["step_times"])
