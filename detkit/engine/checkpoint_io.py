"""Checkpoint files that survive a crash during their own save, and never hold non-finite weights.

Lightning's ``TorchCheckpointIO`` opens the target file for writing and streams into it, so a process killed
mid-save leaves a truncated ``last.ckpt`` and the previous one is gone. Here every save goes through
``detkit.atomic_io.save_atomically``: a fsynced temporary file in the same folder, then one ``os.replace``.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from detkit.atomic_io import save_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes through ``save_atomically``; loading is Lightning's own."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        save_atomically(checkpoint, str(path))
