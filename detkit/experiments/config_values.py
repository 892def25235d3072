"""A shipped config as the arms of a study get it (with the extra arguments given to every arm), built once."""
from __future__ import annotations

import functools
import os
from pathlib import Path


REPOSITORY = Path(__file__).resolve().parents[2]


def config_path(config: str) -> str:
    """``config`` as given when it exists from the working directory, else under the detkit checkout (the studies
    name the shipped configs relative to it)."""
    return config if os.path.isabs(config) or os.path.isfile(config) else str(REPOSITORY / config)


@functools.lru_cache(maxsize=None)
def built_config(config: str, extra_args: tuple[str, ...]):
    """The ``DetectionCLI`` (model, data module, trainer; no logger, nothing written) of ``config`` + ``extra_args``."""
    from detkit.engine.cli import DetectionCLI  # lightning: imported only by the studies that read a config

    return DetectionCLI(run=False, args=["--config", config_path(config), *extra_args, "--trainer.logger=false"],
                        save_config_callback=None)


def resolved_config(config: str, extra_args: tuple[str, ...]) -> dict:
    """The resolved config of ``config`` + ``extra_args`` as plain YAML values (``{"model": {"lr": ...}, ...}``)."""
    return built_config(config, tuple(extra_args)).plain_config()
