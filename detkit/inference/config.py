"""The config a checkpoint's detector is rebuilt from, and the rebuilding, without the training datasets.

Which config: the one passed explicitly, else the one training embedded in the checkpoint, else the
``config.yaml`` that training saved in the run folder beside ``checkpoints/``.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import yaml
from jsonargparse import ArgumentParser
from torch import nn

from detkit.data.categories import CategoryMapping
from detkit.data.datamodule import DetectionDataModule
from detkit.inference.checkpoint import METADATA_KEY, CheckpointError

# Detector classes an embedded or beside config may name; an explicit config may name any nn.Module.
TRUSTED_DETECTORS = "detkit.models."
INPUT_KEYS = ("min_size", "max_size", "size_divisor", "resize")


@dataclass(frozen=True)
class RunConfig:
    """A parsed training config. ``source`` names it in messages; ``explicit``: the caller chose the file."""

    values: dict
    source: str
    explicit: bool


def run_dir_of(checkpoint: str | os.PathLike) -> str:
    """The run folder ``<save_dir>/<name>/<version>`` that holds ``checkpoints/<checkpoint>`` (Lightning's layout)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))


def config_beside(checkpoint: str | os.PathLike) -> str:
    """The config.yaml saved by training in the run dir that holds ``checkpoints/<checkpoint>``."""
    return os.path.join(run_dir_of(checkpoint), "config.yaml")


def resolve_config(path: str, checkpoint: dict, config: str | os.PathLike | None = None) -> RunConfig:
    """The config to rebuild ``checkpoint``'s detector from (see the module docstring for the order).

    ``path`` is the checkpoint's file, for messages. CheckpointError when there is none or it is not YAML.
    """
    if config is not None:
        return RunConfig(read_config_file(os.fspath(config)), os.fspath(config), explicit=True)
    embedded = (checkpoint.get(METADATA_KEY) or {}).get("config")
    if embedded:
        return RunConfig(_parse_yaml(embedded, f"the config embedded in {path}"), f"the config embedded in {path}",
                         explicit=False)
    beside = config_beside(path)
    if os.path.isfile(beside):
        return RunConfig(read_config_file(beside), beside, explicit=False)
    raise CheckpointError(f"{path}: no config to rebuild the model from: the checkpoint embeds none (written "
                          f"without tools/train.py or by an older detkit) and there is no {beside}; pass config=")


def read_config_file(path: str) -> dict:
    """A YAML config file as a dict; CheckpointError naming the file when it is missing or not a YAML mapping."""
    if not os.path.isfile(path):
        raise CheckpointError(f"config not found: {path}")
    with open(path, encoding="utf-8") as file:
        return _parse_yaml(file.read(), path)


def _parse_yaml(text: str, source: str) -> dict:
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CheckpointError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{source}: expected a YAML mapping with 'model' and 'data' sections")
    return values


def _detector_section(run_config: RunConfig) -> dict:
    detector = (run_config.values.get("model") or {}).get("detector")
    if not isinstance(detector, dict) or not isinstance(detector.get("class_path"), str):
        raise CheckpointError(f"{run_config.source}: model.detector.class_path is missing: it names the detector "
                              f"class, e.g. detkit.models.RetinaNet")
    return detector


def configured_num_classes(run_config: RunConfig) -> int | None:
    """``model.detector.init_args.num_classes`` when the config sets it (training links it from the data instead)."""
    return (_detector_section(run_config).get("init_args") or {}).get("num_classes")


def build_detector(run_config: RunConfig, *, num_classes: int) -> nn.Module:
    """The detector that ``model.detector`` describes, for ``num_classes`` classes, with random weights.

    Pretrained backbone weights are not loaded (``backbone.weights`` null): the checkpoint's replace them,
    and nothing is downloaded. A config that did not come from the caller may only name a class of
    ``detkit.models``. CheckpointError naming the config and the key on any problem.
    """
    detector = _detector_section(run_config)
    class_path = detector["class_path"]
    if not run_config.explicit and not class_path.startswith(TRUSTED_DETECTORS):
        raise CheckpointError(f"{run_config.source}: model.detector.class_path {class_path!r} is not a class of "
                              f"{TRUSTED_DETECTORS.rstrip('.')}; a config that came with a checkpoint may only name "
                              f"detkit's detectors; pass config= yourself to build another class")
    init_args = {**(detector.get("init_args") or {}), "num_classes": num_classes}
    if isinstance(init_args.get("backbone"), dict):
        init_args["backbone"] = {**init_args["backbone"], "weights": None}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "detector", required=True)
    try:
        parsed = parser.parse_object({"detector": {"class_path": class_path, "init_args": init_args}})
        return parser.instantiate(parsed).detector
    except Exception as error:  # jsonargparse's ArgumentError, or the detector's own ValueError
        raise CheckpointError(f"{run_config.source}: model.detector cannot be built: {error}") from None


def configured_classes(run_config: RunConfig) -> CategoryMapping:
    """The categories of the config's data (its val annotations, or the built-in dataset's): for checkpoints
    that do not record their classes. CheckpointError naming the config when they cannot be read."""
    try:
        return DetectionDataModule(**(run_config.values.get("data") or {})).categories
    except Exception as error:  # a missing key (TypeError), a missing file, a malformed JSON
        raise CheckpointError(f"{run_config.source}: the data section gives no classes: {error}") from None


def input_settings(run_config: RunConfig) -> dict[str, int | str]:
    """``min_size``, ``max_size``, ``size_divisor`` (ints) and ``resize`` (the mode) of the config's data
    section, where unset the ``DetectionDataModule`` defaults: the resize and padding that validation applies."""
    defaults = inspect.signature(DetectionDataModule.__init__).parameters
    data = run_config.values.get("data") or {}
    settings = {key: data.get(key, defaults[key].default) for key in INPUT_KEYS}
    return {key: value if key == "resize" else int(value) for key, value in settings.items()}
