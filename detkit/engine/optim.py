"""Optimizer and learning-rate schedule built from plain config values."""
from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AUTO = "auto"
# "auto" weight decay: log-linear from the first value at <= the first epochs to the second at >= the second
WEIGHT_DECAY_BY_EPOCHS = ((5.0, 0.01), (40.0, 0.05))
WARMUP_SHARE, WARMUP_RANGE = 0.05, (20, 200)  # "auto" warm-up: this share of the run's steps, within the range
# "auto" augmentation strength: flips only at <= the first epochs, the configured pipeline at >= the second
AUGMENTATION_BY_EPOCHS = (20.0, 80.0)


def check_optimization(*, optimizer: str, lr: float, weight_decay: float, momentum: float, schedule: str,
                       warmup_steps: int, warmup_factor: float, gamma: float) -> None:
    """Check ``DetectionModule``'s optimisation values at construction: ValueError naming the ``model.*`` key.

    A negative lr or weight decay would train the wrong way without any error; an unknown name would only
    fail when the optimizer is built, after the data is loaded.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"model.optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"model.schedule must be one of {SCHEDULES}, got {schedule!r}")
    for key, value in (("weight_decay", weight_decay), ("warmup_steps", warmup_steps)):
        if isinstance(value, str) and value != AUTO:
            raise ValueError(f"model.{key} must be a number or 'auto', got {value!r}")
    limits = (("lr", lr, lr > 0, "> 0"),
              ("weight_decay", weight_decay, weight_decay == AUTO or weight_decay >= 0, ">= 0"),
              ("momentum", momentum, 0 <= momentum < 1, "in [0, 1)"),
              ("warmup_steps", warmup_steps, warmup_steps == AUTO or warmup_steps >= 0, ">= 0"),
              ("warmup_factor", warmup_factor, 0 <= warmup_factor <= 1, "in [0, 1]"),
              ("gamma", gamma, gamma > 0, "> 0"))
    for key, value, valid, expected in limits:
        if not valid:
            raise ValueError(f"model.{key} must be {expected}, got {value}")


def regularisation_for(epochs: float, total_steps: int) -> tuple[float, int]:
    """(weight decay, warm-up steps) of "auto" for a run of ``total_steps`` steps that passes ``epochs`` times over
    the training set: a set seen 40 times needs the decay that a set seen 5 times would only slow down, and a
    fixed warm-up of a few hundred steps is half of a short run."""
    (few, low), (many, high) = WEIGHT_DECAY_BY_EPOCHS
    weight_decay = low * (high / low) ** _log_position(epochs, few, many)
    warmup = min(max(round(WARMUP_SHARE * total_steps), WARMUP_RANGE[0]), WARMUP_RANGE[1])
    return round(weight_decay, 4), int(warmup)


def augmentation_strength_for(epochs: float) -> float:
    """The "auto" augmentation strength in [0, 1] (``DetectionTransform.set_strength``) for a run that passes
    ``epochs`` times over the training set with the configured augmentation: log-linear from 0 (flips only) at
    ``AUGMENTATION_BY_EPOCHS[0]`` epochs or fewer to 1 at ``AUGMENTATION_BY_EPOCHS[1]`` or more. A set seen 20
    times is still underfitted, and scale and colour jitter then only slow it down (and cost loader time); one
    seen 80 times needs them against overfitting."""
    return round(_log_position(epochs, *AUGMENTATION_BY_EPOCHS), 2)


def _log_position(epochs: float, few: float, many: float) -> float:
    """Where ``epochs`` lies from ``few`` (0) to ``many`` (1) in log scale, clamped to [0, 1]."""
    position = (math.log(max(epochs, 1e-6)) - math.log(few)) / (math.log(many) - math.log(few))
    return min(max(position, 0.0), 1.0)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters: weight decay on conv/linear weights, none on norms and biases.

    Decaying the scale and shift of normalisation layers (and biases) only fights the normalisation;
    every 1-D parameter is one of those.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    momentum: float) -> torch.optim.Optimizer:
    """``name`` in OPTIMIZERS; SGD uses ``momentum``, AdamW its defaults betas."""
    groups = parameter_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"model.optimizer must be one of {OPTIMIZERS}, got {name!r}")


def lr_factor(step: int, total_steps: int, warmup_steps: int, warmup_factor: float, schedule: str,
              milestones: list[float], gamma: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step``.

    Linear warmup from ``warmup_factor`` over ``warmup_steps``, then: ``cosine`` decay to 0 at
    ``total_steps``; ``step`` multiplies by ``gamma`` at each milestone (a fraction of ``total_steps`` if
    <= 1, else a step number); ``constant``.
    """
    warmup = 1.0
    if step < warmup_steps:
        warmup = warmup_factor + (1 - warmup_factor) * step / warmup_steps
    if schedule == "cosine":
        progress = min(step / max(total_steps, 1), 1.0)
        return warmup * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        boundaries = [m * total_steps if m <= 1 else m for m in milestones]
        return warmup * gamma ** sum(step >= b for b in boundaries)
    if schedule == "constant":
        return warmup
    raise ValueError(f"model.schedule must be one of {SCHEDULES}, got {schedule!r}")


class Schedule:
    """``lr_factor`` as a callable of the step for ``LambdaLR``, with a ``total_steps`` that may change mid-run.

    ``detkit.engine.budget.TimeBudget`` resizes ``total_steps`` from the measured step time; LambdaLR saves
    the attributes of a callable object in its state dict, so a resumed run continues the same schedule.
    """

    def __init__(self, total_steps: int, warmup_steps: int, warmup_factor: float, schedule: str,
                 milestones: list[float], gamma: float):
        if schedule not in SCHEDULES:
            raise ValueError(f"model.schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.total_steps, self.warmup_steps, self.warmup_factor = int(total_steps), warmup_steps, warmup_factor
        self.schedule, self.milestones, self.gamma = schedule, list(milestones), gamma

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total_steps, self.warmup_steps, self.warmup_factor, self.schedule,
                         self.milestones, self.gamma)
