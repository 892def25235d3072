"""The options of the GPU check (``tools/gpu_check.py --help`` describes each)."""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

STEPS = ("imports", "cuda-tests", "ops", "bench", "train", "syncs")


@dataclass(frozen=True)
class GpuCheckOptions:
    """What the check runs and the time each part may take; None: the default of ``resolved``."""

    wheels: Path
    site_dir: Path = Path(tempfile.gettempdir()) / "detkit_gpu_site"
    install_wheels: bool = False  # install the wheelhouse even if every import works
    minutes: float = 1.5  # training budget of each config
    deadline: float = 480  # seconds the whole check should take: shorter training budgets (>= 0.5 min) if needed
    num_workers: int = 4  # data loader workers of the trainings
    min_ap: float | None = None  # a training whose best val AP is lower fails (0.05; 0 in the dry run)
    count_syncs: bool = False
    seed: int | None = None  # of the ops inputs (a fresh one)
    cpu_threads: int | None = None  # of the ops reference (1 in the dry run, else up to 8)
    only: tuple[str, ...] = ()  # the steps to run, of STEPS (all)
    force_cpu_dry_run: bool = False  # the ops and training steps on the CPU with tiny settings
    dry_run_precision: str = "32-true"
    log_dir: Path | None = None  # a temporary folder
    tests_timeout: float = 180
    ops_timeout: float = 120
    bench_timeout: float = 200
    bench_args: tuple[str, ...] = ()  # more arguments of tools/bench_models.py
    train_overhead_timeout: float = 150  # seconds a training may run past its budget
    command: str = ""  # the command line, for the log

    def resolved(self) -> GpuCheckOptions:
        """These options with every None default filled in; ValueError on an unknown step name."""
        unknown = sorted(set(self.only) - set(STEPS))
        if unknown:
            raise ValueError(f"FAIL: unknown --only steps {unknown}; the steps are {', '.join(STEPS)}")
        dry = self.force_cpu_dry_run
        return dataclasses.replace(
            self, seed=self.seed if self.seed is not None else int(time.time()) % 100_000,
            cpu_threads=self.cpu_threads or (1 if dry else max(1, min(8, os.cpu_count() or 1))),
            min_ap=self.min_ap if self.min_ap is not None else (0.0 if dry else 0.05),
            log_dir=self.log_dir or Path(tempfile.mkdtemp(prefix="gpu_check_")))

    def wants(self, step: str) -> bool:
        """Whether ``step`` (of STEPS) is to run."""
        return not self.only or step in self.only

    @property
    def device(self) -> str:
        """Where the ops and trainings run: "cuda", "cpu" in the dry run."""
        return "cpu" if self.force_cpu_dry_run else "cuda"
