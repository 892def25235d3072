"""Wall time and peak memory of one step, on the CPU or a CUDA device, for the benchmarks.

Peak memory is what a step takes above what was held just before it. CUDA: max allocated minus allocated
before (the caching allocator's reserve not counted). CPU: growth of the resident set (VmHWM after resetting it
through ``/proc/self/clear_refs``, minus VmRSS before); freed heap memory is handed back with ``malloc_trim``
first, so a step cannot reuse pages an earlier step left resident. It counts pages touched, not bytes
allocated: memory allocated but never written does not count, allocator slack does; None where
/proc/self/clear_refs cannot be written.
"""
from __future__ import annotations

import ctypes
import pathlib
import time
from typing import Callable

import torch

try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc: RSS growth then understates (freed pages stay resident)
    _malloc_trim = None


def synchronize(device: str) -> None:
    """Wait for the device's queued kernels (a no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(function: Callable[[], object], device: str) -> tuple[float, object]:
    """(seconds, result) of ``function()``, queued device work included."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def _status_kib(key: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _can_reset_peak_rss() -> bool:
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        _status_kib("VmHWM")
        return True
    except (OSError, KeyError):
        return False


class PeakMemory:
    """``with PeakMemory(device) as m: step()`` -> ``m.megabytes``: the step's peak above the memory held at
    its start (None where it cannot be measured). See the module docstring for the method and its limits."""

    rss_supported: bool | None = None

    def __init__(self, device: str):
        self.device, self.megabytes = device, None

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        if PeakMemory.rss_supported is None:
            PeakMemory.rss_supported = _can_reset_peak_rss()
        if PeakMemory.rss_supported:
            # no gc.collect(): tensors die by reference counting, and a full collection costs ~0.1 s here
            if _malloc_trim is not None:
                _malloc_trim(0)  # hand freed heap pages back: the step must fault in what it uses
            pathlib.Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self._base = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            return
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.megabytes = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        elif PeakMemory.rss_supported:
            self.megabytes = max(_status_kib("VmHWM") * 1024 - self._base, 0) / 2**20
