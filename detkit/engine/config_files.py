"""The ``--config`` files of a command line, checked for YAML syntax before jsonargparse reads them: its own
message for a syntax error names a line of "<unicode string>", not the file."""
from __future__ import annotations

import os

import yaml


def config_paths(args: list[str]) -> list[str]:
    """The values of every ``--config PATH`` / ``--config=PATH`` in ``args``, in order."""
    paths = [value for option, value in zip(args, args[1:]) if option == "--config"]
    return paths + [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]


def check_config_syntax(args: list[str]) -> None:
    """SystemExit naming the file, line and column when a ``--config`` file is not valid YAML.

    Files that do not exist are left to jsonargparse, which names them (and also takes YAML text as ``--config``).
    """
    for path in config_paths(args):
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as file:
            try:
                yaml.compose(file, Loader=yaml.SafeLoader)  # syntax only: tags are jsonargparse's business
            except yaml.YAMLError as error:
                raise SystemExit(f"error: --config {path} is not valid YAML: {error}") from None
