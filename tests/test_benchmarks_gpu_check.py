"""detkit.benchmarks' GPU check (tools/gpu_check.py) on a machine without CUDA: it skips, and the parts that judge
a step (metrics, budgets, CUDA errors, child commands, options) work on the CPU."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detkit.benchmarks.gpu_options import GpuCheckOptions
from detkit.benchmarks.gpu_runner import cuda_error_in, python_call
from detkit.benchmarks.gpu_training import read_metrics, training_minutes
from detkit.benchmarks.gpu_wheels import normalised_name, wheel_project

TOOL = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip without a GPU")
def test_without_cuda_the_check_skips():
    done = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "no CUDA device: gpu-check skipped"


def test_unknown_steps_are_refused():
    with pytest.raises(ValueError, match=r"unknown --only steps \['trian'\]"):
        GpuCheckOptions(wheels=Path("."), only=("imports", "trian")).resolved()


def test_resolved_defaults_of_the_dry_run(tmp_path):
    options = GpuCheckOptions(wheels=tmp_path, force_cpu_dry_run=True, log_dir=tmp_path).resolved()
    assert (options.min_ap, options.cpu_threads, options.device) == (0.0, 1, "cpu") and options.seed is not None
    assert options.wants("train") and not GpuCheckOptions(wheels=tmp_path, only=("ops",)).wants("train")


def test_training_budgets_shrink_to_the_deadline():
    options = GpuCheckOptions(wheels=Path("."), minutes=1.5, deadline=480)
    assert training_minutes(options, elapsed_s=0, trainings_left=2) == 1.5
    assert training_minutes(options, elapsed_s=300, trainings_left=2) == 0.83  # ((480 - 300) / 2 - 40) / 60
    assert training_minutes(options, elapsed_s=470, trainings_left=1) == 0.5


def test_non_finite_metrics_are_named(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss,val/AP\n0,1,0.5,\n0,2,nan,\n0,3,,inf\n")
    rows, bad = read_metrics(path)
    assert len(rows) == 3 and bad == ["train/loss=nan at step 2", "val/AP=inf at step 3"]


def test_cuda_errors_are_found_in_a_log():
    assert cuda_error_in("step 1\nRuntimeError: CUDA error: an illegal memory access\nmore") == (
        "RuntimeError: CUDA error: an illegal memory access")
    assert cuda_error_in("all fine\n") is None


def test_child_commands_call_a_package_function():
    # the function's return value is the exit status: sys.exit prints a string to stderr and exits 1
    done = subprocess.run(python_call("detkit.benchmarks.gpu_wheels.normalised_name", "Pydantic-Core"),
                          capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip() == "pydantic_core" == normalised_name("pydantic.core")
    assert wheel_project(Path("typing_extensions-4.16.0-py3-none-any.whl")) == "typing_extensions"
