"""Writing JSON files so that a crash or a full disk never leaves a half-written file at the destination."""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any


def write_json_atomically(obj: Any, path: str | os.PathLike, compact: bool = False) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder, then rename it.

    The rename is atomic: ``path`` holds either its old content or the complete new one. ``compact``
    drops the spaces after separators (smaller files, same content).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temp_path = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")  # open() honours the umask
    try:
        with open(temp_path, "w", encoding="utf-8") as file:
            json.dump(obj, file, separators=(",", ":") if compact else None)
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp_path)
        raise
