"""Writing files so that a crash or a full disk never leaves a half-written file at the destination."""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def atomic_destination(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder to write to; when the block ends it is renamed to ``path``,
    and when the block raises it is removed.

    The rename is atomic: ``path`` holds either its old content or the complete new one. The temporary name
    keeps ``path``'s extension (OpenCV's video writer picks the container from it) and starts with a dot.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, extension = os.path.splitext(os.path.basename(path))
    temp_path = os.path.join(folder, f".{stem}.{os.getpid()}.partial{extension}")  # open() honours the umask
    try:
        yield temp_path
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp_path)
        raise


def write_json_atomically(obj: Any, path: str | os.PathLike, compact: bool = False) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder, then rename it
    (``atomic_destination``). ``compact`` drops the spaces after separators (smaller files, same content)."""
    with atomic_destination(path) as temp_path, open(temp_path, "w", encoding="utf-8") as file:
        json.dump(obj, file, separators=(",", ":") if compact else None)
