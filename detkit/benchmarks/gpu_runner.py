"""How the GPU check runs its steps: each step's command in its own process group, its output appended to one log,
its PASS / FAIL / SKIP line kept for the summary."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
CUDA_ERROR = re.compile(r"CUDA error|device-side assert|illegal memory access|CUBLAS_STATUS|CUDNN_STATUS|"
                        r"cudaError|an illegal instruction|unspecified launch failure", re.IGNORECASE)


class Runner:
    """Runs commands from the repository root with ``env``, logging into ``log_dir/gpu_check.log``; keeps the
    results (step, PASS/FAIL/SKIP, seconds, note)."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir, self.env = log_dir, env
        self.log = log_dir / "gpu_check.log"
        self.results: list[tuple[str, str, float, str]] = []

    def write(self, text: str) -> None:
        """Append ``text`` to the log."""
        with open(self.log, "a") as log:
            log.write(text)

    def header(self, step: str, what: str) -> None:
        """Print and log the step's heading."""
        print(f"\n== {step}: {what} ==", flush=True)
        self.write(f"\n== {step}: {what} ==\n")

    def record(self, step: str, status: str, seconds: float, note: str) -> None:
        """Keep the step's result, print and log its PASS / FAIL / SKIP line."""
        self.results.append((step, status, seconds, note))
        line = f"{status} {step} ({seconds:.1f} s){': ' + note if note else ''}"
        print(line, flush=True)
        self.write(line + "\n")

    def run(self, command: list[str], timeout: float) -> tuple[int, str, float]:
        """(exit status, output, seconds); 124 on timeout (the whole process group is killed)."""
        self.write("$ " + " ".join(command) + "\n")
        start = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out:
            process = subprocess.Popen(command, cwd=REPOSITORY, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       text=True, start_new_session=True)
            try:
                rc = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                rc = 124
            except BaseException:  # Ctrl-C: the step runs in its own session, so take it (and its loaders) down
                os.killpg(process.pid, signal.SIGKILL)
                raise
            out.seek(0)
            text = out.read()
        seconds = time.perf_counter() - start
        self.write(text + (f"\n[timed out after {timeout:.0f} s]\n" if rc == 124 else "") + f"[exit {rc}]\n")
        return rc, text, seconds

    def failed(self) -> list[str]:
        """The steps recorded as FAIL."""
        return [step for step, status, _, _ in self.results if status == "FAIL"]

    def summary_lines(self) -> list[str]:
        """One aligned line per recorded step."""
        return [f"{status:<5} {step:<18} {seconds:6.1f} s  {note}" for step, status, seconds, note in self.results]


def tail(text: str, lines: int) -> str:
    """The last ``lines`` lines of ``text``, indented."""
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])


def cuda_error_in(text: str) -> str | None:
    """The first line of ``text`` that reports a CUDA error, or None."""
    match = CUDA_ERROR.search(text)
    if match is None:
        return None
    line = text[:match.start()].count("\n")
    return text.splitlines()[line].strip()[:200]


def python_call(function: str, *args) -> list[str]:
    """A command running ``function(*args)`` of a detkit module in a fresh interpreter, its return value the exit
    status: ``python_call("detkit.benchmarks.sync_count.count_syncs", "cpu")``."""
    module, name = function.rsplit(".", 1)
    arguments = ", ".join(repr(arg) for arg in args)
    return [sys.executable, "-c", f"import sys\nfrom {module} import {name}\nsys.exit({name}({arguments}))"]
