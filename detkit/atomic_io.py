"""Writing files so that a crash or a full disk never leaves a half-written file at the destination: JSON, videos
and checkpoints all go through ``atomic_destination``."""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def atomic_destination(path: str | os.PathLike, durable: bool = False) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder to write to; when the block ends it is renamed to ``path``,
    and when the block raises it is removed.

    The rename is atomic: ``path`` holds either its old content or the complete new one. The temporary name
    keeps ``path``'s extension (OpenCV's video writer picks the container from it) and starts with a dot.
    ``durable`` also fsyncs the file before the rename and the folder after it (checkpoints: a power cut must not
    leave a renamed but empty file).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, extension = os.path.splitext(os.path.basename(path))
    temp_path = os.path.join(folder, f".{stem}.{os.getpid()}.partial{extension}")  # open() honours the umask
    try:
        yield temp_path
        if durable:
            _fsync(temp_path)
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp_path)
        raise
    if durable and os.name == "posix":
        _fsync(folder)  # the rename itself reaches the disk


def _fsync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class NonFiniteWeightsError(RuntimeError):
    """Raised instead of writing a checkpoint whose model weights hold NaN or Inf."""


def first_non_finite(state_dict: dict[str, Any]) -> str | None:
    """Name of the first floating-point tensor in ``state_dict`` that holds a NaN or Inf, or None."""
    import torch

    for name, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            return name
    return None


def save_atomically(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save(checkpoint)`` to ``path`` through ``atomic_destination(durable=True)``.

    A crash at any point leaves either the previous file at ``path`` or the new one, never a partial file.
    Raises ``NonFiniteWeightsError`` (nothing written) when ``checkpoint["state_dict"]`` holds NaN or Inf.
    """
    import torch

    bad = first_non_finite(checkpoint.get("state_dict", {}))
    if bad is not None:
        raise NonFiniteWeightsError(f"not writing {os.fspath(path)}: model weight {bad!r} holds NaN or Inf")
    with atomic_destination(path, durable=True) as temp_path, open(temp_path, "wb") as file:
        torch.save(checkpoint, file)


def write_json_atomically(obj: Any, path: str | os.PathLike, compact: bool = False) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder, then rename it
    (``atomic_destination``). ``compact`` drops the spaces after separators (smaller files, same content)."""
    with atomic_destination(path) as temp_path, open(temp_path, "w", encoding="utf-8") as file:
        json.dump(obj, file, separators=(",", ":") if compact else None)
