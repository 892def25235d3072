"""Run independent pieces of a CPU kernel on torch's threads.

torchvision's CPU RoIAlign kernels are single-threaded and release the GIL while they run. A call
splits into independent pieces (channels), and running them on a small pool of Python threads uses the
cores torch would otherwise leave idle. (NMS per class was tried too and gained nothing: its ~1 ms pieces
compete with the main thread's OpenMP threads, which spin for a while after each parallel op.)

Each pool thread runs its ATen work on one OpenMP thread. Otherwise every pool thread's first parallel
op (a kernel's zero fill) starts an OpenMP team of its own; with more OpenMP threads than cores, libgomp
stops spin-waiting, and every parallel op of the main thread afterwards waits on a futex wake-up
(measured: a 100k-box BoxCoder.encode went from 0.6 to 2.3 ms for the rest of the process).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import torch
from threadpoolctl import threadpool_limits

Item = TypeVar("Item")
Result = TypeVar("Result")

_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None  # (pid, workers): a pool does not survive fork


def thread_map(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """``[function(item) for item in items]``, on up to ``torch.get_num_threads()`` threads, in order.

    Serial where one thread is allowed or there is one item. ``function`` must be thread-safe:
    each call should only read shared tensors and return new ones.
    """
    workers = min(torch.get_num_threads(), len(items))
    if workers <= 1:
        return [function(item) for item in items]
    return list(_thread_pool(workers).map(function, items))


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_key
    key = (os.getpid(), workers)
    if _pool_key != key:
        if _pool is not None and _pool_key[0] == key[0]:
            _pool.shutdown(wait=False)  # another thread count: let the old threads end
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detkit-ops", initializer=_one_openmp_thread)
        _pool_key = key
    return _pool


def _one_openmp_thread() -> None:
    torch.get_num_threads()  # torch sets a new thread's OpenMP thread count on first use: let it, then override
    threadpool_limits(1, user_api="openmp")  # OpenMP thread counts are per calling thread
