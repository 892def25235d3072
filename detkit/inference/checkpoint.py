"""Reading a detkit checkpoint safely and checking that it fits a model, with errors that name the file.

Every checkpoint is read with ``torch.load(weights_only=True)``: only tensors and plain Python values
(dicts, lists, strings, numbers) are unpickled, so a downloaded file cannot run code. Lightning writes
detkit's checkpoints in exactly those types.

Training adds a ``"detkit"`` entry to every checkpoint (``checkpoint_metadata``): the resolved config
text and the classes, so that ``detkit.load`` needs no other file and no dataset.
"""
from __future__ import annotations

import os
import pickle

import torch
from torch import nn

from detkit.data.categories import CategoryMapping

METADATA_KEY = "detkit"
DETECTOR_PREFIX = "detector."  # DetectionModule keeps the detector as ``self.detector``
MAX_NAMED = 5  # keys shown in a mismatch message
UNSAFE_GLOBAL = "Unsupported global"  # how torch's weights-only unpickler names a class it will not build


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong with it."""


def checkpoint_metadata(*, config_text: str | None, categories: CategoryMapping | None) -> dict:
    """The ``"detkit"`` entry of a checkpoint, in plain types: the resolved config YAML (None when the model
    was built without the CLI), class names and COCO category ids indexed by label (None without a dataset)."""
    return {
        "config": config_text,
        "class_names": list(categories.class_names) if categories is not None else None,
        "category_ids": list(categories.category_ids) if categories is not None else None,
    }


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a detkit (Lightning) checkpoint on the CPU with ``weights_only=True``.

    Raises ``CheckpointError`` naming ``path`` when the file is missing, truncated or corrupt, holds pickled
    objects other than tensors and plain values, or is not a checkpoint written by detkit training.
    """
    path = os.fspath(path)
    checkpoint = load_safely(path, "checkpoint", "Use a checkpoint written by detkit training")
    _check_is_detkit_checkpoint(checkpoint, path)
    return checkpoint


def load_safely(path: str, what: str, advice: str):
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain values only, so a file cannot run code.

    ``what`` names the file's role in the messages ("checkpoint", "weights file"), ``advice`` ends the refusal of
    unsafe content. CheckpointError naming ``path`` when it is missing, truncated, corrupt or unsafe.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} not found: {path}" + (" (a folder)" if os.path.isdir(path) else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if UNSAFE_GLOBAL in str(error):  # other weights-only failures ("Unsupported operand") are bad bytes
            raise CheckpointError(
                f"{path}: refused: the file holds pickled Python objects other than tensors and plain values "
                f"({_line_with(error, UNSAFE_GLOBAL)}); detkit loads {what}s with "
                f"torch.load(weights_only=True) so that a file cannot run code. {advice}") from None
        raise _unreadable(path, error) from None
    except Exception as error:  # torch/zipfile/pickle raise RuntimeError, EOFError, KeyError... on bad bytes
        raise _unreadable(path, error) from None


def _unreadable(path: str, error: Exception) -> CheckpointError:
    return CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint; the file is truncated or corrupt "
                           f"({os.path.getsize(path)} bytes; {type(error).__name__}: {_line_with(error)})")


def _line_with(error: Exception, text: str = "") -> str:
    """torch's message from ``text`` to the end of its line (the whole first line without ``text``), at most 200
    characters: its messages run over many lines of advice about ``weights_only=False`` that must not be taken."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    line = next((line for line in lines if text and text in line), lines[0])
    return line[line.index(text):][:200] if text and text in line else line[:200]


def _check_is_detkit_checkpoint(checkpoint, path: str) -> None:
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        tensors = isinstance(checkpoint, dict) and all(isinstance(v, torch.Tensor) for v in checkpoint.values())
        raise CheckpointError(
            f"{path}: not a detkit checkpoint: it has no 'state_dict' entry"
            + (f" (it looks like a bare state dict of {len(checkpoint)} tensors)" if tensors and checkpoint else "")
            + "; detkit.load and tools/eval.py take the .ckpt files that training writes in <run>/checkpoints/")
    state = checkpoint["state_dict"]
    if METADATA_KEY not in checkpoint and not any(key.startswith(DETECTOR_PREFIX) for key in state):
        raise CheckpointError(f"{path}: not a detkit checkpoint: its state_dict has no '{DETECTOR_PREFIX}*' weights "
                              f"(first keys: {list(state)[:MAX_NAMED]})")


def detector_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The detector's weights and buffers of a ``read_checkpoint`` result, keys relative to the detector."""
    return {key[len(DETECTOR_PREFIX):]: value for key, value in checkpoint["state_dict"].items()
            if key.startswith(DETECTOR_PREFIX)}


def checkpoint_classes(checkpoint: dict) -> tuple[list[str], list[int]] | None:
    """(class names, COCO category ids) indexed by label, as training recorded them; None if not recorded."""
    metadata = checkpoint.get(METADATA_KEY) or {}
    names, ids = metadata.get("class_names"), metadata.get("category_ids")
    return (list(names), list(ids)) if names is not None and ids is not None else None


def check_classes(path: str, checkpoint: dict, class_names: list[str], where: str) -> None:
    """CheckpointError unless the classes the checkpoint was trained on are ``class_names`` (label order).

    ``where`` says where ``class_names`` came from (a dataset file or a config key), for the message.
    """
    recorded = checkpoint_classes(checkpoint)
    if recorded is None or recorded[0] == list(class_names):
        return
    trained, wanted = recorded[0], list(class_names)
    if len(trained) != len(wanted):
        raise CheckpointError(f"{path}: the number of classes differs: the checkpoint was trained on {len(trained)} "
                              f"classes {trained}, {where} has {len(wanted)} {wanted}")
    raise CheckpointError(f"{path}: the classes differ: the checkpoint was trained on {trained}, {where} has {wanted}")


def check_state_fits(path: str, state: dict[str, torch.Tensor], model: nn.Module, config_source: str) -> None:
    """CheckpointError naming ``path``, ``config_source`` and the keys unless ``state`` loads into ``model`` exactly:
    the same parameter and buffer names, each of the same shape."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [f"{key} {tuple(state[key].shape)} in the checkpoint, {tuple(expected[key].shape)} in the model"
                for key in expected if key in state and state[key].shape != expected[key].shape]
    if not (missing or unexpected or reshaped):
        return
    problems = [f"{len(items)} {what} (e.g. {', '.join(items[:MAX_NAMED])})"
                for items, what in ((missing, "weights the model needs are missing"),
                                    (unexpected, "weights in the checkpoint are unknown to the model"),
                                    (reshaped, "weights differ in shape")) if items]
    raise CheckpointError(f"{path}: the checkpoint's architecture differs from the model that {config_source} "
                          f"builds ({type(model).__name__}): " + "; ".join(problems))
