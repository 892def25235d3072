"""Checkpoint files that survive a crash during their own save, and never hold non-finite weights.

Lightning's ``TorchCheckpointIO`` opens the target file for writing and streams into it, so a process killed
mid-save leaves a truncated ``last.ckpt`` and the previous one is gone. Here the bytes go to a temporary file in
the same folder, are fsynced, and replace the target with one ``os.replace`` (atomic on POSIX and Windows).
"""
from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class NonFiniteWeightsError(RuntimeError):
    """Raised instead of writing a checkpoint whose model weights hold NaN or Inf."""


def first_non_finite(state_dict: dict[str, Any]) -> str | None:
    """Name of the first floating-point tensor in ``state_dict`` that holds a NaN or Inf, or None."""
    for name, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            return name
    return None


def save_atomically(checkpoint: dict[str, Any], path: str) -> None:
    """``torch.save(checkpoint)`` to ``path`` via a fsynced temporary file in the same folder and one rename.

    A crash at any point leaves either the previous file at ``path`` or the new one, never a partial file.
    Raises ``NonFiniteWeightsError`` (nothing written) when ``checkpoint["state_dict"]`` holds NaN or Inf.
    """
    bad = first_non_finite(checkpoint.get("state_dict", {}))
    if bad is not None:
        raise NonFiniteWeightsError(f"not writing {path}: model weight {bad!r} holds NaN or Inf")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    _fsync_folder(folder)  # the rename itself reaches the disk


def _fsync_folder(folder: str) -> None:
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes through ``save_atomically``; loading is Lightning's own."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        save_atomically(checkpoint, str(path))
