"""One command for a machine with a GPU: CUDA tests, CUDA-vs-CPU kernels, CUDA benchmark rows, bf16 training.

Steps, each with a header and a PASS / FAIL / SKIP line; the check fails if any step failed:
  imports     detkit, Lightning's CLI, albumentations, pycocotools import; versions and the device
  cuda-tests  pytest -k cuda tests/ (the tests marked ``requires_cuda``): none may be skipped
  ops         detkit.ops on CUDA against the same calls on the CPU (``kernel_agreement``)
  bench       tools/bench_models.py --no-cpu: the CUDA rows of the model benchmark
  train-*     a short bf16-mixed training of each shapes config on the GPU (``gpu_training``)
  syncs       (count_syncs) host-device synchronisations of one training step and one inference pass
Without CUDA (and without the dry run) it prints SKIP_LINE and passes: CI has no GPU.

Every step runs in a process of its own with the wheelhouse's folder (``gpu_wheels``) and the repository on
PYTHONPATH: no venv, no install of detkit. Logs: one combined gpu_check.log, the two trainings' metrics.csv and
summary.txt, in the log folder.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import time

from detkit.benchmarks.gpu_options import GpuCheckOptions
from detkit.benchmarks.gpu_runner import REPOSITORY, Runner, cuda_error_in, python_call, tail
from detkit.benchmarks.gpu_training import CONFIGS, prepare_data, step_train, training_minutes
from detkit.benchmarks.gpu_wheels import PackagesMissing, ensure_packages

SKIP_LINE = "no CUDA device: gpu-check skipped"
TARGET_S = 480
IMPORTS_CODE = (
    "import sys, importlib, torch, torchvision, lightning, cv2\n"
    "import detkit, detkit.ops, detkit.engine.cli, detkit.models\n"
    "from lightning.pytorch.cli import _JSONARGPARSE_SIGNATURES_AVAILABLE as ok\n"
    "assert ok, f'jsonargparse[signatures] not usable: {ok}'\n"
    "print('python', sys.version.split()[0], '| torch', torch.__version__, '| torchvision', torchvision.__version__,"
    " '| lightning', lightning.__version__, '| cv2', cv2.__version__)\n"
    "for m in ('albumentations', 'pycocotools', 'jsonargparse', 'pydantic', 'numpy'):\n"
    "    mod = importlib.import_module(m)\n"
    "    print(f'{m} {getattr(mod, \"__version__\", \"?\")} from {mod.__file__}')\n"
    "print('detkit from', detkit.__file__)\n"
    "if torch.cuda.is_available():\n"
    "    p = torch.cuda.get_device_properties(0)\n"
    "    print(f'device {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB,'\n"
    "          f' {p.multi_processor_count} SMs, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}')\n"
    "    torch.ones(1, device='cuda').add_(1).item()\n"
)


def step_imports(runner: Runner, packages_note: str) -> None:
    """A fresh interpreter imports detkit and its dependencies, prints their versions and the device's."""
    runner.header("imports", "detkit, LightningCLI, albumentations, pycocotools; versions and device")
    rc, text, seconds = runner.run([sys.executable, "-c", IMPORTS_CODE], timeout=120)
    print(tail(text, 12))
    runner.record("imports", "PASS" if rc == 0 else "FAIL", seconds, packages_note if rc == 0 else f"exit {rc}")


def step_cuda_tests(runner: Runner, options: GpuCheckOptions) -> None:
    """``pytest -k cuda``: FAIL on a failure, a CUDA error, or any CUDA test skipped with a GPU present."""
    runner.header("cuda-tests", "pytest -k cuda tests/")
    if options.force_cpu_dry_run:
        runner.record("cuda-tests", "SKIP", 0.0, "dry run on the CPU: the CUDA tests would all skip")
        return
    rc, text, seconds = runner.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider",
                                    "-rs", "tests"], timeout=options.tests_timeout)
    summary = next((line for line in reversed(text.splitlines()) if re.search(r"\d+ (passed|failed|error)", line)),
                   "no summary line")
    skipped = re.search(r"(\d+) skipped", summary)
    problem = (f"exit {rc}" if rc != 0 else f"{skipped.group(1)} CUDA tests skipped with a GPU present" if skipped
               else cuda_error_in(text))
    if problem:
        print(tail(text, 40))
    runner.record("cuda-tests", "FAIL" if problem else "PASS", seconds, summary.strip("= ") +
                  (f"; {problem}" if problem else ""))


def step_ops(runner: Runner, options: GpuCheckOptions) -> None:
    """``kernel_agreement.compare_kernels`` in its own process: FAIL on any disagreeing case."""
    runner.header("ops", f"detkit.ops on {options.device} vs the CPU (seed {options.seed})")
    rc, text, seconds = runner.run(python_call("detkit.benchmarks.kernel_agreement.compare_kernels", options.device,
                                               options.seed, options.cpu_threads), timeout=options.ops_timeout)
    print(tail(text, 40))
    failed = [line for line in text.splitlines() if line.rstrip().endswith("FAIL")]
    note = f"{len(failed)} disagreements" if failed else f"exit {rc}" if rc != 0 else "all kernels agree"
    runner.record("ops", "PASS" if rc == 0 and not failed else "FAIL", seconds, note)


def step_bench(runner: Runner, options: GpuCheckOptions) -> None:
    """The CUDA rows of ``tools/bench_models.py``: FAIL on a failed row or one whose pair is not the same (NO)."""
    runner.header("bench", "tools/bench_models.py, CUDA rows only")
    if options.force_cpu_dry_run:
        runner.record("bench", "SKIP", 0.0, "dry run on the CPU")
        return
    command = [sys.executable, str(REPOSITORY / "tools" / "bench_models.py"), "--no-cpu", *options.bench_args]
    rc, text, seconds = runner.run(command, timeout=options.bench_timeout)
    print(tail(text, 30))
    rows = [line for line in text.splitlines() if re.search(r"\s(cuda)\s", line)]
    broken = [line for line in rows if " failed: " in line or line.rstrip().endswith(" NO")]
    problem = ("timed out" if rc == 124 else f"exit {rc}" if rc != 0 else cuda_error_in(text)
               or (f"{len(broken)} CUDA rows failed or disagree (same = NO)" if broken
                   else "no CUDA rows printed" if not rows else None))
    runner.record("bench", "FAIL" if problem else "PASS", seconds,
                  problem or f"{len(rows)} CUDA rows ({' '.join(['--no-cpu', *options.bench_args])})")


def step_syncs(runner: Runner, options: GpuCheckOptions, data_args: list[str]) -> None:
    """``sync_count.count_syncs`` in its own process: the counts are information; FAIL only on an error."""
    device = options.device
    runner.header("syncs", f"host-device synchronisations of one training step and one inference pass ({device})")
    precision = options.dry_run_precision if options.force_cpu_dry_run else "bf16-mixed"
    rc, text, seconds = runner.run(python_call("detkit.benchmarks.sync_count.count_syncs", device, precision,
                                               data_args), timeout=240)
    print(tail(text, 40))
    error = cuda_error_in(text)
    runner.record("syncs", "PASS" if rc == 0 and not error else "FAIL", seconds,
                  "counts above (information, no limit)" if rc == 0 else f"exit {rc}")


def steps_with_data(runner: Runner, options: GpuCheckOptions, start: float) -> None:
    """The trainings and the sync count, on the built-in dataset made first (a failure to make it is a step's)."""
    data_start = time.perf_counter()
    try:
        data_args, temporary = prepare_data(options)
    except Exception as error:  # noqa: BLE001 - reported as the step's failure
        runner.header("data", "the built-in dataset")
        runner.record("data", "FAIL", time.perf_counter() - data_start, f"{type(error).__name__}: {error}")
        return
    if options.wants("train"):
        for left, name in zip(range(len(CONFIGS), 0, -1), CONFIGS):
            # hold the whole check to the deadline: later trainings get shorter budgets if time ran short
            minutes = training_minutes(options, time.perf_counter() - start, left)
            if minutes < options.minutes and not options.force_cpu_dry_run:
                print(f"\n(budget of {name} cut to {minutes:g} min to end within --deadline {options.deadline:.0f} s)")
            step_train(runner, options, name, data_args, minutes)
    if options.count_syncs and options.wants("syncs"):
        step_syncs(runner, options, data_args)
    if temporary is not None:
        shutil.rmtree(temporary, ignore_errors=True)


def step_environment(extra_paths: list[str], dry: bool) -> dict[str, str]:
    """The steps' environment: the wheels' folder and the repository first on PYTHONPATH; one thread in the dry run."""
    python_path = [*extra_paths, str(REPOSITORY)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(python_path))
    if dry:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def run_gpu_check(options: GpuCheckOptions) -> int:
    """Run the steps ``options`` ask for, print and write the summary; returns the exit status (1 if a step
    failed, 0 otherwise, also when there is no CUDA device)."""
    start = time.perf_counter()
    import torch  # not at the top: the wheelhouse's download runs without it

    if not options.force_cpu_dry_run and not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    try:
        options = options.resolved()
        extra_paths, packages_note = ensure_packages(options.wheels, options.site_dir, options.install_wheels)
    except (ValueError, PackagesMissing) as error:
        print(error, flush=True)
        return 1
    options.log_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(options.log_dir, step_environment(extra_paths, options.force_cpu_dry_run))
    os.environ.update(NO_ALBUMENTATIONS_UPDATE="1")
    (options.log_dir / "gpu_check.log").write_text(f"gpu_check {options.command}\n")
    mode = "DRY RUN on the CPU (tiny settings)" if options.force_cpu_dry_run else torch.cuda.get_device_name(0)
    print(f"gpu-check: {mode}; python {sys.executable}; logs in {options.log_dir}; {packages_note}", flush=True)

    if options.wants("imports"):
        step_imports(runner, packages_note)
    if options.wants("cuda-tests"):
        step_cuda_tests(runner, options)
    if options.wants("ops"):
        step_ops(runner, options)
    if options.wants("bench"):
        step_bench(runner, options)
    if options.wants("train") or options.count_syncs and options.wants("syncs"):
        steps_with_data(runner, options, start)

    total = time.perf_counter() - start
    failed = runner.failed()
    over_target = total > TARGET_S and not options.force_cpu_dry_run
    verdict = (f"gpu-check FAILED: {', '.join(failed)}" if failed else "gpu-check passed") + f" in {total:.0f} s" + \
              (f" (over the {TARGET_S // 60}-minute target)" if over_target else "")
    summary = "\n".join(["", f"== summary ({mode}, seed {options.seed}) ==", *runner.summary_lines(), verdict])
    print(summary, flush=True)
    (options.log_dir / "summary.txt").write_text(summary.lstrip() + "\n")
    return 1 if failed else 0
