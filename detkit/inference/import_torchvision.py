"""A torchvision COCO detection state dict -> a detkit checkpoint that ``detkit.load``, ``tools/eval.py``,
``tools/predict.py`` and ``--model.init_from`` take like one that training wrote.

The checkpoint holds the detector's weights (``detkit.models.torchvision_import.from_torchvision``: label i is
torchvision's label i + 1, COCO category id i + 1), the 90 class names, and a config that rebuilds the same
detector (class path and setting groups of ``detector_settings(arch)``) with torchvision's own preprocessing
(``data.resize: torchvision``, its min_size / max_size, padding to 32).
"""
from __future__ import annotations

import dataclasses
import json
import os
import urllib.error

import lightning
import torch
import torchvision
import yaml

from detkit.atomic_io import save_atomically
from detkit.data.categories import CategoryMapping
from detkit.data.coco_names import coco_category_id, coco_label_names
from detkit.inference.checkpoint import DETECTOR_PREFIX, METADATA_KEY, CheckpointError, checkpoint_metadata, load_safely
from detkit.models.torchvision_import import ARCHITECTURES, StateDictMismatch, detector_settings, from_torchvision

TORCHVISION_SIZE_DIVISOR = 32  # GeneralizedRCNNTransform's size_divisible, for all six
BLANK_PATH = ""  # the data paths of an imported model: given on the command line (--data.val_images ...)


class ImportFailed(ValueError):
    """The import cannot be done; the message names the file or option and what is wrong."""


def import_torchvision(arch: str, weights: str, out: str, force: bool = False) -> str:
    """Write the detkit checkpoint of torchvision's ``arch`` with ``weights`` to ``out``; returns ``out``.

    Args:
        arch: one of ``ARCHITECTURES`` (torchvision's builder name, e.g. "fasterrcnn_mobilenet_v3_large_320_fpn").
        weights: a file holding the state dict (as torchvision publishes it, with or without
            ``num_batches_tracked``), or a torchvision weights name ("DEFAULT", "COCO_V1": downloads, needs internet).
        out: the ``.ckpt`` to write, atomically (a failure leaves no file); an existing one only with ``force``.
    Raises:
        ImportFailed naming the file and the first mismatching key, the unknown architecture, or the missing internet.
    """
    if arch not in ARCHITECTURES:
        raise ImportFailed(f"--arch {arch!r} is not one of torchvision's six: {', '.join(ARCHITECTURES)}")
    if os.path.exists(out) and not force:
        raise ImportFailed(f"--out {out} exists: pass --force to replace it")
    state_dict, source = read_torchvision_weights(arch, weights)
    try:
        detector = from_torchvision(arch, state_dict)
    except StateDictMismatch as error:
        raise ImportFailed(f"{source}: {error} (is it a {arch} file, and whole?)") from None
    save_atomically(imported_checkpoint(arch, detector.state_dict(), source), out)
    return out


def read_torchvision_weights(arch: str, weights: str) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, where it came from) of a weights file or of torchvision's published weights by name."""
    names = [member.name for member in torchvision.models.get_model_weights(arch)]
    if weights in names or weights == "DEFAULT":
        return _download(arch, weights), f"torchvision's {arch} weights {weights}"
    try:
        contents = load_safely(weights, "weights file", "Pass the state dict torchvision publishes")
    except CheckpointError as error:
        raise ImportFailed(f"--weights: {error} (or a torchvision weights name: DEFAULT, {', '.join(names)})") from None
    if isinstance(contents, dict) and isinstance(contents.get("model"), dict):
        contents = contents["model"]  # the checkpoints of torchvision's reference training scripts
    if not isinstance(contents, dict) or not all(isinstance(v, torch.Tensor) for v in contents.values()):
        keys = list(contents)[:5] if isinstance(contents, dict) else type(contents).__name__
        raise ImportFailed(f"{weights}: not a torchvision state dict of tensors (it holds {keys})")
    return contents, weights


def _download(arch: str, name: str) -> dict[str, torch.Tensor]:
    weights = torchvision.models.get_model_weights(arch)[name]
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        raise ImportFailed(f"--weights {name}: downloading {weights.url} needs internet, which this machine does "
                           f"not reach ({error}); download the file elsewhere and pass --weights FILE") from None


def imported_config(arch: str) -> str:
    """The YAML config of the imported ``arch``: the detector (class path, setting groups) and the input settings
    of torchvision's preprocessing; data paths blank, to be given (``--data.val_images`` ...)."""
    settings = detector_settings(arch)
    detector = ARCHITECTURES[arch].detector
    init_args = {name: dataclasses.asdict(group) if dataclasses.is_dataclass(group) else group
                 for name, group in settings.items()}
    paths = ("train_images", "train_annotations", "val_images", "val_annotations")
    config = {
        "model": {"detector": {"class_path": f"{detector.__module__}.{detector.__name__}",
                               "init_args": json.loads(json.dumps(init_args))}},  # tuples -> lists
        "data": {**{key: BLANK_PATH for key in paths}, "min_size": ARCHITECTURES[arch].min_size,
                 "max_size": ARCHITECTURES[arch].max_size, "size_divisor": TORCHVISION_SIZE_DIVISOR,
                 "resize": "torchvision"},
    }
    header = f"# torchvision's {arch}, imported by tools/import_torchvision.py\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def coco_categories() -> CategoryMapping:
    """The 90 classes of torchvision's COCO checkpoints: label i is category id i + 1 ("N/A" for unused ids)."""
    return CategoryMapping([{"id": coco_category_id(label), "name": name}
                            for label, name in enumerate(coco_label_names())], source="torchvision's COCO classes")


def imported_checkpoint(arch: str, state_dict: dict[str, torch.Tensor], source: str) -> dict:
    """A checkpoint as training writes one (state dict under ``detector.``, the ``"detkit"`` metadata), at step 0."""
    metadata = checkpoint_metadata(config_text=imported_config(arch), categories=coco_categories())
    return {
        "state_dict": {DETECTOR_PREFIX + key: value for key, value in state_dict.items()},
        METADATA_KEY: {**metadata, "imported_from": {"arch": arch, "weights": source}},
        "epoch": 0, "global_step": 0, "pytorch-lightning_version": lightning.__version__,
    }
