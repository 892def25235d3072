"""A shipped config as the arms of a study get it (with the extra arguments given to every arm), built once."""
from __future__ import annotations

import functools
import os
from pathlib import Path

# the shipped configs live in configs/ of a source checkout, beside the package; an installed wheel has none
SOURCE_CHECKOUT = Path(__file__).resolve().parents[2]


def config_path(config: str) -> str:
    """``config`` as given when it exists from the working directory, else under the detkit source checkout (the
    studies name the shipped configs relative to it); FileNotFoundError naming both places when neither has it."""
    if os.path.isabs(config) or os.path.isfile(config):
        return config
    beside_package = SOURCE_CHECKOUT / config
    if not beside_package.is_file():
        raise FileNotFoundError(f"config {config} not found in {os.getcwd()} nor in {SOURCE_CHECKOUT}: the studies use "
                                "the shipped configs of a detkit source checkout; run from there or pass the path")
    return str(beside_package)


@functools.lru_cache(maxsize=None)
def built_config(config: str, extra_args: tuple[str, ...]):
    """The ``DetectionCLI`` (model, data module, trainer; no logger, nothing written) of ``config`` + ``extra_args``."""
    from detkit.engine.cli import DetectionCLI  # lightning: imported only by the studies that read a config

    return DetectionCLI(run=False, args=["--config", config_path(config), *extra_args, "--trainer.logger=false"],
                        save_config_callback=None)


def resolved_config(config: str, extra_args: tuple[str, ...]) -> dict:
    """The resolved config of ``config`` + ``extra_args`` as plain YAML values (``{"model": {"lr": ...}, ...}``)."""
    return built_config(config, tuple(extra_args)).plain_config()
