"""Host-device synchronisations of one training step and one inference pass of each shapes detector: the ``syncs``
step of the GPU check (information, no limit)."""
from __future__ import annotations

import functools
import os
import warnings
from collections import Counter
from typing import Callable

import torch

from detkit.benchmarks.gpu_runner import REPOSITORY
from detkit.benchmarks.gpu_training import CONFIGS
from detkit.engine.cli import DetectionCLI


def count_syncs(device: str, precision: str, data_args: list[str]) -> int:
    """Print the host-device synchronisations (``torch.cuda.set_sync_debug_mode("warn")``) of one training step
    (forward, losses, backward) and one inference pass of each shapes detector on one batch, after a warm-up
    step, with the lines that caused them. On the CPU (dry run) nothing is counted; the same code runs. Returns 0
    (an exit status)."""
    autocast = {"device_type": device.split(":")[0], "dtype": torch.bfloat16, "enabled": precision.startswith("bf16")}
    for name, config in CONFIGS.items():
        cli = DetectionCLI(run=False, save_config_callback=None, args=[
            "--config", config, *data_args, "--trainer.accelerator", "cpu" if device == "cpu" else "gpu",
            "--trainer.devices", "1", "--trainer.logger=false", "--data.num_workers", "0"])
        cli.datamodule.setup("fit")
        batch = to_device(next(iter(cli.datamodule.train_dataloader())), device)
        detector = cli.model.detector.to(device)
        steps = (("training step", functools.partial(_train_step, detector, batch, autocast)),
                 ("inference", functools.partial(_inference, detector, batch, autocast)))
        for label, function in steps:
            function()  # warm-up: cached anchors, cuDNN plans
            where = synchronisations(function, device)
            counted = f"{sum(where.values())} syncs" if device == "cuda" else "not counted on the CPU"
            print(f"{name} {label} (batch {len(batch['image_sizes'])}): {counted}")
            for place, count in where.most_common(8):
                print(f"    {count:4d}  {place}")
    return 0


def _train_step(detector: torch.nn.Module, batch: dict, autocast: dict) -> None:
    """One forward, losses and backward of ``detector`` on ``batch`` under ``autocast`` (torch.autocast's kwargs)."""
    detector.train()
    with torch.autocast(**autocast):
        losses = detector(batch["images"], batch["image_sizes"], batch["targets"])
    sum(losses.values()).backward()
    detector.zero_grad(set_to_none=True)


def _inference(detector: torch.nn.Module, batch: dict, autocast: dict) -> None:
    """One eval-mode forward of ``detector`` on ``batch``."""
    detector.eval()
    with torch.no_grad(), torch.autocast(**autocast):
        detector(batch["images"], batch["image_sizes"])


def synchronisations(function: Callable[[], None], device: str) -> Counter:
    """Run ``function`` once; the host-device synchronisations it made per source line ("path:line"), as CUDA's sync
    debug mode reports them (none on the CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            function()
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    return Counter(f"{os.path.relpath(w.filename, REPOSITORY)}:{w.lineno}" for w in caught
                   if "synchroniz" in str(w.message))


def to_device(value, device: str):
    """Tensors (and modules) in nested dicts, lists and tuples moved to ``device``; other values as they are."""
    if hasattr(value, "to"):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value
