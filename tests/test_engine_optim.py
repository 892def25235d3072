"""Optimizer parameter groups and the learning-rate schedule, against hand-computed values."""
import math

import pytest
import torch
from torch import nn

from detkit.engine.optim import (
    augmentation_strength_for,
    build_optimizer,
    check_optimization,
    lr_factor,
    parameter_groups,
    regularisation_for,
)


def test_no_weight_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.GroupNorm(2, 8), nn.Linear(8, 2))
    model[0].weight.requires_grad_(False)  # frozen parameters are left out
    decay, no_decay = parameter_groups(model, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p is model[3].weight for p in decay["params"]] == [True]
    expected = [model[0].bias, model[1].weight, model[1].bias, model[2].weight, model[2].bias, model[3].bias]
    assert len(no_decay["params"]) == len(expected) and all(a is b for a, b in zip(no_decay["params"], expected))


def test_optimizers_by_name():
    model = nn.Linear(4, 2)
    sgd = build_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    assert isinstance(build_optimizer(model, "adamw", 1e-3, 1e-4, 0.9), torch.optim.AdamW)
    with pytest.raises(ValueError, match="model.optimizer must be one of"):
        build_optimizer(model, "adam", 1e-3, 0.0, 0.9)


def factor(step, schedule, **kwargs):
    options = dict(total_steps=1000, warmup_steps=100, warmup_factor=0.001, milestones=[0.5, 800], gamma=0.1)
    return lr_factor(step, schedule=schedule, **(options | kwargs))


def test_linear_warmup():
    assert factor(0, "constant") == pytest.approx(0.001)
    assert factor(50, "constant") == pytest.approx(0.001 + 0.999 * 0.5)
    assert factor(100, "constant") == 1.0 and factor(999, "constant") == 1.0


def test_cosine_decays_to_zero():
    assert factor(100, "cosine", warmup_steps=0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert factor(500, "cosine", warmup_steps=0) == pytest.approx(0.5)
    assert factor(1000, "cosine", warmup_steps=0) == pytest.approx(0.0, abs=1e-12)
    assert factor(50, "cosine") == pytest.approx((0.001 + 0.999 * 0.5) * 0.5 * (1 + math.cos(math.pi * 0.05)))


def test_step_milestones_as_fractions_or_steps():
    assert factor(499, "step") == 1.0
    assert factor(500, "step") == pytest.approx(0.1)  # 0.5 of 1000 steps
    assert factor(800, "step") == pytest.approx(0.01)  # step 800
    with pytest.raises(ValueError, match="model.schedule"):
        factor(0, "linear")


def test_auto_regularisation_follows_the_epochs_and_steps_of_the_run():
    assert regularisation_for(2.0, 1000) == (0.01, 50)  # few epochs: light decay; warm-up 5% of the steps
    assert regularisation_for(100.0, 100) == (0.05, 20)  # many epochs: strong decay; warm-up at least 20 steps
    geometric_middle = math.sqrt(5.0 * 40.0)  # halfway in log epochs: halfway in log decay
    assert regularisation_for(geometric_middle, 100_000) == (round(math.sqrt(0.01 * 0.05), 4), 200)
    check_optimization(optimizer="adamw", lr=0.1, weight_decay="auto", momentum=0.9, schedule="cosine",
                       warmup_steps="auto", warmup_factor=0.1, gamma=0.1)
    with pytest.raises(ValueError, match="model.weight_decay"):
        check_optimization(optimizer="adamw", lr=0.1, weight_decay="sometimes", momentum=0.9, schedule="cosine",
                           warmup_steps=1, warmup_factor=0.1, gamma=0.1)


def test_auto_augmentation_strength_follows_the_epochs_of_the_run():
    assert augmentation_strength_for(3.0) == augmentation_strength_for(20.0) == 0.0  # underfitted: flips only
    assert augmentation_strength_for(40.0) == 0.5  # halfway from 20 to 80 epochs in log scale
    assert augmentation_strength_for(80.0) == augmentation_strength_for(1000.0) == 1.0
