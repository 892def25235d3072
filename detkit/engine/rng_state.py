"""The global random state in every checkpoint, so a resumed run draws what the uninterrupted one would have.

Lightning restores model, optimizer, schedulers, loops and callback states, not the torch / numpy / Python
generators that samplers (RPN and RoI sampling) and augmentation draw from.
"""
from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


def capture_random_state() -> dict:
    """torch (CPU and every CUDA device), numpy and Python global states, in types ``weights_only`` loading takes."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def restore_random_state(state: dict) -> None:
    """Undo ``capture_random_state``: set the global generators to the captured states."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached"]))
    random.setstate(state["python"])


class RandomState(L.Callback):
    """Saves the global random state with each checkpoint; a resumed fit restores it just before its first step,
    after set-up (anchor fitting, loaders) has drawn whatever it draws."""

    def __init__(self):
        self._to_restore: dict | None = None

    def state_dict(self) -> dict:
        return capture_random_state()

    def load_state_dict(self, state_dict: dict) -> None:
        self._to_restore = state_dict

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._to_restore is not None:
            restore_random_state(self._to_restore)
            self._to_restore = None
