"""Two models timed step by step in turn on the same batches: training steps and inference passes, then peak
memory on extra steps (after the timed ones, so the malloc_trim and page faults it forces stay out of the times)."""
from __future__ import annotations

import functools
import math
import statistics
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from detkit.benchmarks.timing import PeakMemory, timed


@dataclass
class Contender:
    """One model and how to call it on batch i: ``train(i)`` one optimizer step, ``infer(i)`` one detection pass;
    ``release()`` frees the last step's gradients (before a memory measurement, so that it counts them)."""

    model: nn.Module
    train: Callable[[int], None]
    infer: Callable[[int], None]
    release: Callable[[], None]


def autocast(device: str, precision: str):
    """bf16 autocast for precision "bf16", else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return nullcontext()


def contender(model: nn.Module, call: Callable[[int, bool], dict | list], *, device: str, precision: str,
              lr: float = 1e-4) -> Contender:
    """``model`` with its own SGD (momentum 0.9); ``call(i, training)`` runs it on batch i (a dict of losses when
    training)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)

    def train(i: int) -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)  # gradients are part of each step's memory
        with autocast(device, precision):
            losses = call(i, True)
        sum(losses.values()).backward()
        optimizer.step()

    def infer(i: int) -> None:
        model.eval()
        # no_grad, not inference_mode: detkit caches anchors, which training must be able to reuse
        with torch.no_grad(), autocast(device, precision):
            call(i, False)

    return Contender(model, train, infer, lambda: optimizer.zero_grad(set_to_none=True))


def measure(pair: list[Contender], phase: str, device: str, warmup: int, steps: int, memory_steps: int
            ) -> list[tuple[float, float | None]]:
    """Per contender (median seconds per step, peak MB or None) of ``phase`` ("train" or "infer").

    Steps alternate between the contenders, the first one swapping every step, so neither always runs
    on the state (caches, allocator, clocks) the other leaves.
    """
    times: list[list[float]] = [[] for _ in pair]
    for step in range(warmup + steps):
        order = range(len(pair)) if step % 2 == 0 else reversed(range(len(pair)))
        for index in order:
            seconds, _ = timed(functools.partial(getattr(pair[index], phase), step), device)
            if step >= warmup:
                times[index].append(seconds)
    peaks: list[list[float]] = [[] for _ in pair]
    for step in range(memory_steps):
        for index, one in enumerate(pair):
            one.release()
            with PeakMemory(device) as memory:
                getattr(one, phase)(step)
            if memory.megabytes is not None:
                peaks[index].append(memory.megabytes)
    return [(statistics.median(t) if t else math.nan, max(p) if p else None) for t, p in zip(times, peaks)]
