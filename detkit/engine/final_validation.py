"""Validate and keep the final weights of a run that stopped between two validations.

Training stops between epoch-end validations when a time budget or ``max_time`` runs out, on Ctrl-C or
SIGTERM, or when ``TimeBudget`` ends its schedule mid-epoch. The last weights, usually the best ones after a
decayed schedule, would then never be scored, and ``best.ckpt`` would hold an earlier epoch.
"""
from __future__ import annotations

import os

import lightning as L
import torch


def validate_final_weights(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule) -> bool:
    """If the weights of ``trainer.global_step`` were not validated, validate them, write them as ``last.ckpt``
    and, when they score above the best checkpoint (``val/AP``), as the best checkpoint too.

    Returns True when a validation ran. The trainer's checkpoint IO (``detkit.engine.checkpoint_io``, set by the
    CLI) writes atomically: a crash during the save leaves the previous file whole.
    """
    if module.validated_step == trainer.global_step or trainer.global_step == 0 or not trainer.enable_validation:
        return False
    trainer.validate(module, datamodule=datamodule, verbose=False)
    callback = trainer.checkpoint_callback
    if callback is None or callback.dirpath is None:
        return True
    score = torch.tensor(float(module.last_evaluation.stats["AP"]))
    best = callback.best_model_score
    # the callback's state goes into the checkpoints: update it before writing them
    is_best = callback.monitor == "val/AP" and (best is None or score > best or not callback.best_model_path)
    if is_best:
        callback.best_model_path = callback.best_model_path or os.path.join(
            callback.dirpath, f"{callback.filename or 'best'}{callback.FILE_EXTENSION}")
        callback.best_model_score = score
    if callback.save_last:
        callback.last_model_path = os.path.join(callback.dirpath,
                                                f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}")
        trainer.save_checkpoint(callback.last_model_path, weights_only=False)  # whole: a resume needs it all
    if is_best:
        trainer.save_checkpoint(callback.best_model_path, weights_only=False)
    return True
