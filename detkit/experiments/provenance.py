"""What produced a study's numbers: the command, the commit and the machine."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess

from detkit.experiments.config_values import SOURCE_CHECKOUT


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit() -> tuple[str, bool]:
    """(``git rev-parse HEAD`` of the detkit checkout, whether tracked files differ from it); ("unknown", False)
    outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=SOURCE_CHECKOUT, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def provenance(command: str, threads: int) -> dict:
    """The command, commit, machine (CPU model, cores, threads per arm), library versions and date, as plain values."""
    commit, changed = git_commit()
    return {"command": command, "commit": commit, "uncommitted_changes": changed, "cpu": cpu_model(),
            "cores": available_cores(), "threads_per_arm": threads, "python": platform.python_version(),
            "torch": importlib.metadata.version("torch"), "lightning": importlib.metadata.version("lightning"),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
