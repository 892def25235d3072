"""Training and evaluation through Lightning: ``train(args)`` and ``evaluate(args)`` take ``tools/train.py``'s and
``tools/eval.py``'s command lines; the LightningModule, callbacks and CLI glue live in the modules here."""
from __future__ import annotations


def __getattr__(name: str):
    """``train``, ``evaluate`` and ``TrainingRun`` from ``detkit.engine.cli``, imported on first use (Lightning is
    heavy)."""
    if name in ("train", "evaluate", "TrainingRun"):
        from detkit.engine import cli

        return getattr(cli, name)
    raise AttributeError(f"module 'detkit.engine' has no attribute {name!r}")
