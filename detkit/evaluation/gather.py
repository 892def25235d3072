"""Moving evaluation records between torch.distributed ranks (a no-op in a single process)."""
from __future__ import annotations

from typing import Any

import torch.distributed as dist


def distributed_world_size() -> int:
    """Number of processes in the default group; 1 when torch.distributed is unavailable or not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def distributed_rank() -> int:
    """Rank of this process in the default group; 0 when not running distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def gather_to_rank0(obj: Any) -> list[Any] | None:
    """Collect one picklable object from every rank.

    Returns on rank 0 the list of all ranks' objects in rank order (length world size), None on
    the other ranks. Every rank must call it. In a single process returns ``[obj]``.
    """
    world_size = distributed_world_size()
    if world_size == 1:
        return [obj]
    is_rank0 = distributed_rank() == 0
    gathered = [None] * world_size if is_rank0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_from_rank0(obj: Any) -> Any:
    """Return rank 0's ``obj`` on every rank (the other ranks' ``obj`` is ignored). Every rank must call it."""
    if distributed_world_size() == 1:
        return obj
    box = [obj if distributed_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
