"""One command for a machine with a GPU: CUDA tests, CUDA-vs-CPU kernels, CUDA benchmark rows, bf16 training.

    python tools/gpu_check.py [--wheels .whl] [--minutes 1.5] [--count-syncs] [--seed N]
    python tools/gpu_check.py --force-cpu-dry-run        # the same logic on the CPU, tiny settings
    python tools/gpu_check.py --download-wheels .whl     # here, where PyPI is reachable: the wheelhouse

Steps, each with a header and a PASS / FAIL / SKIP line; the exit status is 1 if any step failed:
  imports     detkit, Lightning's CLI, albumentations, pycocotools import; versions and the device
  cuda-tests  pytest -k cuda tests/ (the tests marked ``requires_cuda``): none may be skipped
  ops         detkit.ops on CUDA against the same calls on the CPU, on fresh random inputs, stated tolerances
  bench       tools/bench_models.py --cuda-only, where that script exists and has the option (else SKIP)
  train-*     a short bf16-mixed training of each shapes config on the GPU: images/s and the val AP it
              reaches; FAIL on a non-zero exit, a CUDA error in its output, a non-finite logged metric or a
              NaN / too low AP
  syncs       (--count-syncs) host-device synchronisations of one training step and one inference pass
Without CUDA it prints "no CUDA device: gpu-check skipped" and exits 0 (CI has no GPU).

The GPU machine reaches no package registry and lacks albumentations, pycocotools and jsonargparse:
``make gpu-wheels`` downloads cp312 manylinux wheels of them and their missing dependencies into .whl/,
and this script installs them (pip --no-index --no-deps --target) into --site-dir when an import is
missing, then runs every step with that folder and the repository on PYTHONPATH (no venv, no install of
detkit). Logs: one combined gpu_check.log, the two trainings' metrics.csv and summary.txt, in $OUT when
set (the device tool brings back at most 8 files), else in a temporary folder.
"""
from __future__ import annotations

import argparse
import csv
import glob
import importlib.metadata
import importlib.util
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_LINE = "no CUDA device: gpu-check skipped"
CONFIGS = {"retinanet": "configs/retinanet_shapes.yaml", "faster_rcnn": "configs/faster_rcnn_shapes.yaml"}

# What the GPU image lacks (KINDS.md's package list): distribution name -> module it provides.
# typing-extensions is on that image, but pydantic here wants >= 4.16, so a copy travels too.
WHEEL_PACKAGES = {
    "albumentations": "albumentations", "albucore": "albucore", "simsimd": "simsimd", "stringzilla": "stringzilla",
    "pydantic": "pydantic", "pydantic-core": "pydantic_core", "annotated-types": "annotated_types",
    "typing-inspection": "typing_inspection", "typing-extensions": "typing_extensions",
    "pycocotools": "pycocotools",
    "jsonargparse": "jsonargparse", "docstring-parser": "docstring_parser", "typeshed-client": "typeshed_client",
}
# Imports that must work for detkit (jsonargparse[signatures] is what LightningCLI checks for).
NEEDED_MODULES = ("albumentations", "albucore", "pydantic", "pycocotools", "jsonargparse", "docstring_parser",
                  "typeshed_client")
PLATFORMS = ([f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 28, 27, 24, 17, 12, 5)]
             + ["manylinux2014_x86_64", "manylinux1_x86_64"])
STEPS = ("imports", "cuda-tests", "ops", "bench", "train", "syncs")
TRAIN_OVERHEAD_S = 40  # a GPU training's start-up and evaluation of its best checkpoint, beyond its budget (estimate)
CUDA_ERROR = re.compile(r"CUDA error|device-side assert|illegal memory access|CUBLAS_STATUS|CUDNN_STATUS|"
                        r"cudaError|an illegal instruction|unspecified launch failure", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------- wheels --

def download_wheels(folder: Path, python_version: str) -> int:
    """pip download (no deps, binaries only) each WHEEL_PACKAGES at the version installed here, for CPython
    ``python_version`` on manylinux x86-64; older files of the same packages are removed (pip refuses two
    versions of one package in one install). Prints the list and the total size."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for name in WHEEL_PACKAGES:
        try:
            specs.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            specs.append(name)
    for old in folder.glob("*.whl"):
        if _wheel_project(old) in {_normalise(n) for n in WHEEL_PACKAGES}:
            old.unlink()
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp", "-d", str(folder)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    print("$", " ".join(command + specs), flush=True)
    rc = subprocess.call(command + specs)
    wheels = sorted(folder.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"  {wheel.stat().st_size / 1e6:6.2f} MB  {wheel.name}")
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {folder}/ "
          f"(carry '{folder.name}' in the device call; the limit is 64 MiB with the working tree)")
    return rc


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _wheel_project(path: Path) -> str:
    return _normalise(path.name.split("-")[0])


def ensure_packages(wheels: Path, site_dir: Path, force: bool) -> tuple[list[str], str]:
    """Make NEEDED_MODULES importable, installing the wheelhouse into ``site_dir`` when one is missing.

    Returns (extra PYTHONPATH entries, a line saying what was done); raises SystemExit with a message
    naming what is missing when it cannot.
    """
    missing = [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]
    if not missing and not force:
        return [], "all packages importable, no wheels installed"
    if site_dir.is_dir() and not force:  # a warm machine that ran this before
        sys.path.insert(0, str(site_dir))
        importlib.invalidate_caches()
        if all(importlib.util.find_spec(m) is not None for m in missing):
            return [str(site_dir)], f"packages from {site_dir} (installed earlier)"
        sys.path.remove(str(site_dir))
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not found:
        raise SystemExit(f"FAIL: missing Python packages {missing} and no wheels in {wheels}/: run `make gpu-wheels` "
                         f"where PyPI is reachable and carry '{wheels.name}' with the call")
    projects = Counter(_wheel_project(w) for w in found)
    twice = sorted(p for p, count in projects.items() if count > 1)
    if twice:
        raise SystemExit(f"FAIL: two versions of {twice} in {wheels}/: keep one of each (make gpu-wheels cleans them)")
    site_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(site_dir),
               *map(str, found)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"FAIL: pip could not install the wheels of {wheels}/ (rc {result.returncode}):\n"
                         f"{result.stdout}{result.stderr}")
    sys.path.insert(0, str(site_dir))
    importlib.invalidate_caches()
    still = [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]
    if still:
        raise SystemExit(f"FAIL: after installing {len(found)} wheels into {site_dir}, {still} still do not import")
    return [str(site_dir)], f"installed {len(found)} wheels from {wheels}/ into {site_dir}"


# ------------------------------------------------------------------------------------------- running --

class Runner:
    """Runs each step's command in its own process group, appends its output to one log, keeps results."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir, self.env = log_dir, env
        self.log = log_dir / "gpu_check.log"
        self.results: list[tuple[str, str, float, str]] = []  # (step, PASS/FAIL/SKIP, seconds, note)

    def header(self, step: str, what: str) -> None:
        print(f"\n== {step}: {what} ==", flush=True)
        with open(self.log, "a") as log:
            log.write(f"\n== {step}: {what} ==\n")

    def record(self, step: str, status: str, seconds: float, note: str) -> None:
        self.results.append((step, status, seconds, note))
        print(f"{status} {step} ({seconds:.1f} s){': ' + note if note else ''}", flush=True)
        with open(self.log, "a") as log:
            log.write(f"{status} {step} ({seconds:.1f} s){': ' + note if note else ''}\n")

    def run(self, command: list[str], timeout: float) -> tuple[int, str, float]:
        """(exit status, output, seconds); 124 on timeout (the whole process group is killed)."""
        with open(self.log, "a") as log:
            log.write("$ " + " ".join(command) + "\n")
        start = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
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
        with open(self.log, "a") as log:
            log.write(text + (f"\n[timed out after {timeout:.0f} s]\n" if rc == 124 else "") + f"[exit {rc}]\n")
        return rc, text, seconds


def tail(text: str, lines: int) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])


def cuda_error_in(text: str) -> str | None:
    match = CUDA_ERROR.search(text)
    if match is None:
        return None
    line = text[:match.start()].count("\n")
    return text.splitlines()[line].strip()[:200]


# ------------------------------------------------------------------------------------------------ steps --

def step_imports(runner: Runner, args, packages_note: str) -> None:
    runner.header("imports", "detkit, LightningCLI, albumentations, pycocotools; versions and device")
    code = (
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
    rc, text, seconds = runner.run([sys.executable, "-c", code], timeout=120)
    print(tail(text, 12))
    runner.record("imports", "PASS" if rc == 0 else "FAIL", seconds, packages_note if rc == 0 else f"exit {rc}")


def step_cuda_tests(runner: Runner, args) -> None:
    runner.header("cuda-tests", "pytest -k cuda tests/")
    if args.force_cpu_dry_run:
        runner.record("cuda-tests", "SKIP", 0.0, "dry run on the CPU: the CUDA tests would all skip")
        return
    rc, text, seconds = runner.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider",
                                    "-rs", "tests"], timeout=args.tests_timeout)
    summary = next((line for line in reversed(text.splitlines()) if re.search(r"\d+ (passed|failed|error)", line)),
                   "no summary line")
    skipped = re.search(r"(\d+) skipped", summary)
    problem = (f"exit {rc}" if rc != 0 else f"{skipped.group(1)} CUDA tests skipped with a GPU present" if skipped
               else cuda_error_in(text))
    if problem:
        print(tail(text, 40))
    runner.record("cuda-tests", "FAIL" if problem else "PASS", seconds, summary.strip("= ") +
                  (f"; {problem}" if problem else ""))


def step_ops(runner: Runner, args) -> None:
    device = "cpu" if args.force_cpu_dry_run else "cuda"
    runner.header("ops", f"detkit.ops on {device} vs the CPU (seed {args.seed})")
    rc, text, seconds = runner.run([sys.executable, str(Path(__file__).resolve()), "--ops-only", "--device", device,
                                    "--seed", str(args.seed), "--cpu-threads", str(args.cpu_threads)],
                                   timeout=args.ops_timeout)
    print(tail(text, 40))
    failed = [line for line in text.splitlines() if line.rstrip().endswith("FAIL")]
    note = f"{len(failed)} disagreements" if failed else f"exit {rc}" if rc != 0 else "all kernels agree"
    runner.record("ops", "PASS" if rc == 0 and not failed else "FAIL", seconds, note)


def step_bench(runner: Runner, args) -> None:
    runner.header("bench", "tools/bench_models.py, CUDA rows only")
    script = ROOT / "tools" / "bench_models.py"
    if args.force_cpu_dry_run:
        runner.record("bench", "SKIP", 0.0, "dry run on the CPU")
        return
    if not script.is_file():
        runner.record("bench", "SKIP", 0.0, "tools/bench_models.py does not exist (yet)")
        return
    rc, text, seconds = runner.run([sys.executable, str(script), "--help"], timeout=120)
    option = next((o for o in ("--cuda-only", "--no-cpu") if re.search(re.escape(o) + r"\b", text)), None)
    if rc != 0 or option is None:
        print(tail(text, 10))
        runner.record("bench", "SKIP", seconds, "tools/bench_models.py has neither --cuda-only nor --no-cpu" if rc == 0
                      else f"tools/bench_models.py --help exited {rc}")
        return
    rc, text, seconds = runner.run([sys.executable, str(script), option, *args.bench_args.split()],
                                   timeout=args.bench_timeout)
    print(tail(text, 30))
    rows = [line for line in text.splitlines() if re.search(r"\s(cuda)\s", line)]
    broken = [line.split()[0:4] for line in rows if " failed: " in line or line.rstrip().endswith(" NO")]
    problem = ("timed out" if rc == 124 else f"exit {rc}" if rc != 0 else cuda_error_in(text)
               or (f"{len(broken)} CUDA rows failed or disagree (same = NO)" if broken
                   else "no CUDA rows printed" if not rows else None))
    runner.record("bench", "FAIL" if problem else "PASS", seconds,
                  problem or f"{len(rows)} CUDA rows ({' '.join([option, args.bench_args]).strip()})")


def prepare_data(args) -> list[str]:
    """Data arguments for the trainings: the built-in dataset, generated here with several processes
    (the configs' own prepare_data would use 2); a tiny copy in a temporary folder for the dry run."""
    from detkit.data.shapes import generate_shapes

    if args.force_cpu_dry_run:
        root = Path(tempfile.mkdtemp(prefix="gpu_check_shapes_tiny_"))  # not under $OUT: 40 image files
        args.cleanup.append(root)
        generate_shapes(str(root), num_train=32, num_val=8, seed=0, workers=1)
    else:
        root = ROOT / "data" / "shapes"
        if not all((root / name).exists() for name in ("images", "instances_train.json", "instances_val.json")):
            start = time.perf_counter()
            generate_shapes(str(root), seed=0, workers=max(1, min(8, os.cpu_count() or 1)))
            print(f"generated the built-in dataset in {root} in {time.perf_counter() - start:.0f} s", flush=True)
    return ["--data.train_images", str(root / "images"), "--data.train_annotations", str(root / "instances_train.json"),
            "--data.val_images", str(root / "images"), "--data.val_annotations", str(root / "instances_val.json")]


def training_args(args, name: str, data_args: list[str], save_dir: Path, minutes: float) -> list[str]:
    common = ["--config", CONFIGS[name], *data_args, "--trainer.devices", "1",
              "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(save_dir)]
    if args.force_cpu_dry_run:
        return common + ["--trainer.accelerator", "cpu", "--trainer.precision", args.dry_run_precision,
                         "--budget.minutes", "0.1", "--data.num_workers", "0", "--trainer.max_epochs", "2",
                         "--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps", "1",
                         "--data.batch_size", "8", "--data.val_batch_size", "8", "--model.warmup_steps", "2"]
    return common + ["--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed",
                     "--budget.minutes", f"{minutes:g}", "--data.num_workers", str(args.num_workers)]


def read_metrics(path: Path) -> tuple[list[dict], list[str]]:
    """Rows of metrics.csv and the non-finite values in it ('column=value at step N')."""
    with open(path) as file:
        rows = list(csv.DictReader(file))
    bad = []
    for row in rows:
        for column, value in row.items():
            if column in ("epoch", "step") or value in ("", None):
                continue
            try:
                number = float(value)
            except ValueError:
                bad.append(f"{column}={value!r} at step {row.get('step')}")
                continue
            if not math.isfinite(number):
                bad.append(f"{column}={value} at step {row.get('step')}")
    return rows, bad


def step_train(runner: Runner, args, name: str, data_args: list[str], minutes: float) -> None:
    step = f"train-{name}"
    where = "CPU (dry run)" if args.force_cpu_dry_run else f"GPU, bf16-mixed, {minutes:g} min budget"
    runner.header(step, f"{CONFIGS[name]} on the {where}")
    save_dir = Path(tempfile.mkdtemp(prefix=f"gpu_check_{name}_"))
    command = [sys.executable, "tools/train.py", *training_args(args, name, data_args, save_dir, minutes)]
    budget_s = 6 if args.force_cpu_dry_run else 60 * minutes
    rc, text, seconds = runner.run(command, timeout=budget_s + args.train_overhead_timeout)
    problems = []
    if rc != 0:
        problems.append("timed out" if rc == 124 else f"exit {rc}")
    error = cuda_error_in(text)
    if error:
        problems.append(f"CUDA error: {error}")
    speed = re.search(r"training: (\d+) images in (\d+) s = ([\d.]+) images/s; (\d+) steps", text)
    inference = re.search(r"inference: \d+ images in [\d.]+ s = ([\d.]+) images/s", text)
    ap_line = re.search(r"Average Precision\s+\(AP\) @\[ IoU=0\.50:0\.95 \| area=\s*all \| maxDets=100 \] = (\S+)", text)
    ap50_line = re.search(r"Average Precision\s+\(AP\) @\[ IoU=0\.50 \s*\| area=\s*all \| maxDets=100 \] = (\S+)", text)
    metrics = sorted(glob.glob(str(save_dir / "*" / "version_*" / "metrics.csv")))
    val_aps = []
    if metrics:
        rows, bad = read_metrics(Path(metrics[-1]))
        shutil.copyfile(metrics[-1], runner.log_dir / f"metrics_{name}.csv")
        losses = [r["train/loss"] for r in rows if r.get("train/loss")]
        val_aps = [float(r["val/AP"]) for r in rows if r.get("val/AP")]
        if bad:
            problems.append(f"non-finite metrics: {', '.join(bad[:5])}" + (f" (+{len(bad) - 5})" if len(bad) > 5 else ""))
        if not losses:
            problems.append("no train/loss logged")
        if not val_aps:
            problems.append("no val/AP logged")
    elif rc == 0:
        problems.append(f"no metrics.csv under {save_dir}")
    ap = float(ap_line.group(1)) if ap_line else math.nan
    if rc == 0 and not math.isfinite(ap):
        problems.append(f"val AP of the best checkpoint is {ap_line.group(1) if ap_line else 'missing'}")
    elif math.isfinite(ap) and ap < args.min_ap:
        problems.append(f"val AP {ap:.3f} < --min-ap {args.min_ap}")
    for line in text.splitlines():
        if line.startswith(("training:", "inference:")):
            print("    " + line)
    if problems:
        print(tail(text, 30))
    note = (f"{float(speed.group(3)):.0f} images/s train ({speed.group(4)} steps, {speed.group(2)} s)" if speed
            else "no training line") + (f", {float(inference.group(1)):.0f} images/s inference" if inference else "")
    note += f", val AP {ap:.3f}" + (f" (AP50 {float(ap50_line.group(1)):.3f})" if ap50_line else "")
    if val_aps:
        note += f", {len(val_aps)} validations"
    runner.record(step, "FAIL" if problems else "PASS", seconds, note + ("; " + "; ".join(problems) if problems else ""))
    shutil.rmtree(save_dir, ignore_errors=True)


def step_syncs(runner: Runner, args, data_args: list[str]) -> None:
    device = "cpu" if args.force_cpu_dry_run else "cuda"
    runner.header("syncs", f"host-device synchronisations of one training step and one inference pass ({device})")
    rc, text, seconds = runner.run([sys.executable, str(Path(__file__).resolve()), "--count-syncs-only", "--device",
                                    device, "--precision", args.dry_run_precision if device == "cpu" else "bf16-mixed",
                                    "--", *data_args], timeout=240)
    print(tail(text, 40))
    error = cuda_error_in(text)
    runner.record("syncs", "PASS" if rc == 0 and not error else "FAIL", seconds,
                  "counts above (information, no limit)" if rc == 0 else f"exit {rc}")


# ---------------------------------------------------------------------------- ops: CUDA vs the CPU --

def run_ops_check(device: str, seed: int, cpu_threads: int) -> int:
    """Compare each detkit.ops kernel on ``device`` with the same call on the CPU; one line per case.

    Exact equality where the result is a choice (NMS indices, matches, anchors): NMS gets boxes on an integer
    grid (areas, intersections and unions exact in float32, so float32 and float64 IoUs decide every threshold
    the same way) and distinct scores. Elsewhere the error is max|device - cpu| / max|cpu|: float32 elementwise
    kernels (IoU, box coding, focal loss) within 1e-6 (a few ulps: libm's exp/log differ by 1-2 ulps), sums and
    RoIAlign's backward (CUDA accumulates with atomics, in another order) within 1e-5. NaN never passes.
    """
    import torch

    from detkit.ops import (AnchorGenerator, BoxCoder, Matcher, batched_nms, box_iou, generalized_box_iou, nms,
                            roi_align, sigmoid_focal_loss)

    torch.set_num_threads(cpu_threads)
    g = torch.Generator().manual_seed(seed)
    failures = 0
    print(f"{'kernel':<22}{'case':<36}{'error':>12}{'tolerance':>12}  result")

    def report(kernel: str, case: str, error: float | None, tolerance: float | None, ok: bool) -> None:
        nonlocal failures
        failures += not ok
        err = "exact" if error is None else f"{error:.2e}"
        tol = "exact" if tolerance is None else f"{tolerance:.0e}"
        print(f"{kernel:<22}{case:<36}{err:>12}{tol:>12}  {'PASS' if ok else 'FAIL'}", flush=True)

    def close(kernel: str, case: str, on_device: torch.Tensor, on_cpu: torch.Tensor, tolerance: float) -> None:
        on_device = on_device.detach().cpu()
        on_cpu = on_cpu.detach()
        if on_device.shape != on_cpu.shape or on_device.dtype != on_cpu.dtype:
            report(kernel, f"{case} {tuple(on_device.shape)}/{tuple(on_cpu.shape)} {on_device.dtype}/{on_cpu.dtype}",
                   math.inf, tolerance, False)
            return
        a, b = on_device.double(), on_cpu.double()
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            report(kernel, case + " (non-finite values)", math.nan, tolerance, False)
            return
        scale = b.abs().max().item() if b.numel() else 0.0
        error = (a - b).abs().max().item() / scale if scale > 0 else (a - b).abs().max().item() if a.numel() else 0.0
        report(kernel, case, error, tolerance, error <= tolerance)

    def equal(kernel: str, case: str, on_device: torch.Tensor, on_cpu: torch.Tensor) -> None:
        on_device = on_device.cpu()
        same = on_device.shape == on_cpu.shape and torch.equal(on_device, on_cpu)
        if not same:
            case += f" ({len(on_device)} vs {len(on_cpu)} values)"
        report(kernel, case, None, None, same)

    def float_boxes(n: int, extent: float = 1000.0, max_size: float = 200.0) -> torch.Tensor:
        top_left = torch.rand(n, 2, generator=g) * extent
        size = torch.rand(n, 2, generator=g) * max_size
        size[::7, 0] = 0  # degenerate boxes must give 0, not NaN
        return torch.cat([top_left, top_left + size], dim=1)

    def grid_boxes(n: int, extent: int = 600, max_size: int = 120) -> torch.Tensor:
        top_left = torch.randint(0, extent, (n, 2), generator=g)
        size = torch.randint(1, max_size, (n, 2), generator=g)
        return torch.cat([top_left, top_left + size], dim=1).float()

    def distinct_scores(n: int) -> torch.Tensor:
        return (torch.randperm(n, generator=g).float() + 1) / n

    # box_iou / generalized_box_iou: float32, values in [0, 1] / [-1, 1]
    b1, b2 = float_boxes(700), float_boxes(3000)
    close("box_iou", "700 x 3000 float32", box_iou(b1.to(device), b2.to(device)), box_iou(b1, b2), 1e-6)
    close("box_iou", "700 x 3000 from float16", box_iou(b1.half().to(device), b2.half().to(device)),
          box_iou(b1.half(), b2.half()), 1e-6)
    close("generalized_box_iou", "700 x 3000 float32",
          generalized_box_iou(b1.to(device), b2.to(device)), generalized_box_iou(b1, b2), 1e-6)

    # nms / batched_nms: the CPU takes its blocked (N >= 1000) and per-class-slice paths, CUDA the kernel
    for n in (500, 4000):
        boxes, scores = grid_boxes(n), distinct_scores(n)
        labels = torch.randint(0, 5, (n,), generator=g)
        for threshold in (0.5, 0.7):
            equal("nms", f"N={n} iou>{threshold}", nms(boxes.to(device), scores.to(device), threshold),
                  nms(boxes, scores, threshold))
            equal("batched_nms", f"N={n} 5 classes iou>{threshold}",
                  batched_nms(boxes.to(device), scores.to(device), labels.to(device), threshold),
                  batched_nms(boxes, scores, labels, threshold))

    # Matcher: the same IoU matrix on both; ties (quantised IoU) and continuous values; both paths
    quantised = torch.randint(0, 20, (30, 5000), generator=g).float() / 20
    continuous = box_iou(float_boxes(40, 500, 150), float_boxes(20000, 500, 150))
    for label, iou in (("30 x 5000 quantised", quantised), ("40 x 20000 box IoUs", continuous)):
        for high, low, low_quality in ((0.5, 0.4, True), (0.7, 0.3, True), (0.5, 0.5, False)):
            matcher = Matcher(high, low, low_quality)
            equal("Matcher", f"{label} {high}/{low}/{'lq' if low_quality else '-'}", matcher(iou.to(device)),
                  matcher(iou))

    # BoxCoder: encode (log), decode (exp, clamp), decode's gradient
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    gt, anchors = float_boxes(20000) + torch.tensor([0, 0, 1, 1]), float_boxes(20000) + torch.tensor([0, 0, 1, 1])
    close("BoxCoder.encode", "20000 boxes", coder.encode(gt.to(device), anchors.to(device)), coder.encode(gt, anchors),
          1e-6)
    deltas = torch.randn(20000, 4, generator=g) * 2
    deltas[::50] *= 30  # past bbox_xform_clip
    upstream = torch.randn(20000, 4, generator=g)
    results = {}
    for where in ("cpu", device) if device != "cpu" else ("cpu", "cpu2"):
        on = "cpu" if where == "cpu2" else where
        d = deltas.to(on).requires_grad_()
        decoded = coder.decode(d, anchors.to(on))
        (decoded * upstream.to(on)).sum().backward()
        results[where] = (decoded.detach(), d.grad)
    other = device if device != "cpu" else "cpu2"
    close("BoxCoder.decode", "20000 boxes, 1/50 clamped", results[other][0], results["cpu"][0], 1e-6)
    close("BoxCoder.decode bwd", "grad of deltas", results[other][1], results["cpu"][1], 1e-6)

    # sigmoid_focal_loss: forward (none, sum), backward, extreme logits, bf16 logits
    logits = torch.randn(64, 3024, 3, generator=g) * 4
    logits.view(-1)[::997] = 100.0
    logits.view(-1)[::1009] = -100.0
    targets = (torch.rand(logits.shape, generator=g) < 0.02).float()
    weight = torch.rand(logits.shape, generator=g)
    outputs = {}
    for where in ("cpu", device) if device != "cpu" else ("cpu", "cpu2"):
        on = "cpu" if where == "cpu2" else where
        x = logits.to(on).requires_grad_()
        loss = sigmoid_focal_loss(x, targets.to(on), reduction="none")
        (loss * weight.to(on)).sum().backward()
        total = sigmoid_focal_loss(logits.to(on), targets.to(on), reduction="sum")
        half = sigmoid_focal_loss(logits.to(on).bfloat16(), targets.to(on).bfloat16(), reduction="none")
        outputs[where] = (loss.detach(), x.grad, total, half)
    cases = ("fwd none, +-100 logits", "bwd (weighted sum)", "fwd sum", "fwd none, bf16 logits")
    for case, on_device, on_cpu, tolerance in zip(cases, outputs[other], outputs["cpu"], (1e-6, 1e-6, 1e-5, 1e-6)):
        close("sigmoid_focal_loss", f"{logits.numel()} {case}", on_device, on_cpu, tolerance)

    # roi_align: forward and backward; the CPU side runs its threaded channel chunks when cpu_threads > 1
    features = torch.randn(2, 64, 48, 64, generator=g)
    rois = torch.cat([torch.randint(0, 2, (512, 1), generator=g).float(), float_boxes(512, 200, 60)], dim=1)
    grad_out = torch.randn(512, 64, 7, 7, generator=g)
    for sampling_ratio, aligned in ((2, True), (0, False)):
        pooled = {}
        for where in ("cpu", device) if device != "cpu" else ("cpu", "cpu2"):
            on = "cpu" if where == "cpu2" else where
            f = features.to(on).requires_grad_()
            out = roi_align(f, rois.to(on), (7, 7), 0.25, sampling_ratio, aligned)
            out.backward(grad_out.to(on))
            pooled[where] = (out.detach(), f.grad)
        case = f"512 RoIs x 64 ch, s={sampling_ratio} aligned={aligned}"
        close("roi_align", case, pooled[other][0], pooled["cpu"][0], 1e-5)
        close("roi_align bwd", case, pooled[other][1], pooled["cpu"][1], 1e-5)

    # anchors: generated on the device, equal to the CPU's
    generator = AnchorGenerator([[8, 16], [32]], [[0.5, 1.0, 2.0], [1.0]])
    for (on_device, on_cpu) in zip(generator([(40, 30), (10, 8)], [8, 32], device=device),
                                   generator([(40, 30), (10, 8)], [8, 32])):
        equal("AnchorGenerator", f"{len(on_cpu)} anchors", on_device, on_cpu)

    if device == "cuda":
        torch.cuda.synchronize()
    print(f"{failures} of the cases above disagree" if failures else "every case agrees")
    return 1 if failures else 0


# ----------------------------------------------------------------------------------- sync counting --

def run_sync_count(device: str, precision: str, data_args: list[str]) -> int:
    """Count the host-device synchronisations (torch.cuda.set_sync_debug_mode('warn')) of one training step
    (forward, losses, backward) and one inference pass of each shapes detector on one batch, after a warm-up
    step. On the CPU (dry run) nothing is counted; the same code runs."""
    import warnings

    import torch

    from detkit.engine.cli import DetectionCLI

    autocast_dtype = torch.bfloat16 if precision.startswith("bf16") else None
    for name, config in CONFIGS.items():
        cli = DetectionCLI(run=False, save_config_callback=None, args=[
            "--config", config, *data_args, "--trainer.accelerator", "cpu" if device == "cpu" else "gpu",
            "--trainer.devices", "1", "--trainer.logger=false", "--data.num_workers", "0"])
        cli.datamodule.setup("fit")
        batch = next(iter(cli.datamodule.train_dataloader()))
        batch = _to_device(batch, device)
        detector = cli.model.detector.to(device)

        def train_step():
            detector.train()
            with torch.autocast(device.split(":")[0], dtype=autocast_dtype, enabled=autocast_dtype is not None):
                losses = detector(batch["images"], batch["image_sizes"], batch["targets"])
            sum(losses.values()).backward()
            detector.zero_grad(set_to_none=True)

        def inference():
            detector.eval()
            with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=autocast_dtype,
                                                 enabled=autocast_dtype is not None):
                detector(batch["images"], batch["image_sizes"])

        for label, function in (("training step", train_step), ("inference", inference)):
            function()  # warm-up: cached anchors, cuDNN plans
            if device == "cuda":
                torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if device == "cuda":
                    torch.cuda.set_sync_debug_mode("warn")
                try:
                    function()
                finally:
                    if device == "cuda":
                        torch.cuda.set_sync_debug_mode("default")
            syncs = [w for w in caught if "synchroniz" in str(w.message)]
            where = Counter(f"{os.path.relpath(w.filename, ROOT)}:{w.lineno}" for w in syncs)
            counted = f"{len(syncs)} syncs" if device == "cuda" else "not counted on the CPU"
            print(f"{name} {label} (batch {len(batch['image_sizes'])}): {counted}")
            for place, count in where.most_common(8):
                print(f"    {count:4d}  {place}")
    return 0


def _to_device(value, device: str):
    if hasattr(value, "to"):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


# ----------------------------------------------------------------------------------------------- main --

def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", default=os.environ.get("GPU_WHEELS", str(ROOT / ".whl")),
                        help="wheelhouse installed when packages are missing (default: .whl/)")
    parser.add_argument("--site-dir", default=os.path.join(tempfile.gettempdir(), "detkit_gpu_site"),
                        help="where the wheels are installed (pip --target)")
    parser.add_argument("--install-wheels", action="store_true", help="install the wheels even if imports work")
    parser.add_argument("--download-wheels", metavar="DIR", help="download the wheelhouse into DIR and exit")
    parser.add_argument("--python-version", default="3.12", help="CPython of the wheels (--download-wheels)")
    parser.add_argument("--minutes", type=float, default=1.5, help="training budget of each config")
    parser.add_argument("--deadline", type=float, default=480,
                        help="seconds the whole check should take: shorter training budgets (>= 0.5 min) if needed")
    parser.add_argument("--num-workers", type=int, default=4, help="data loader workers of the trainings")
    parser.add_argument("--min-ap", type=float, default=None,
                        help="fail a training whose best val AP is lower (default 0.05; 0 in the dry run)")
    parser.add_argument("--count-syncs", action="store_true", help="also count host-device syncs of one step")
    parser.add_argument("--seed", type=int, default=None, help="seed of the ops inputs (default: fresh)")
    parser.add_argument("--cpu-threads", type=int, default=None, help="CPU threads of the ops reference")
    parser.add_argument("--only", default=None, help="comma-separated steps: imports,cuda-tests,ops,bench,train,syncs")
    parser.add_argument("--force-cpu-dry-run", action="store_true",
                        help="run the ops and training steps on the CPU with tiny settings (no CUDA needed)")
    parser.add_argument("--dry-run-precision", default="32-true", help="trainer precision of the dry run")
    parser.add_argument("--log-dir", default=os.environ.get("OUT") or None, help="default: $OUT, else a temp dir")
    parser.add_argument("--tests-timeout", type=float, default=180)
    parser.add_argument("--ops-timeout", type=float, default=120)
    parser.add_argument("--bench-timeout", type=float, default=200)
    parser.add_argument("--bench-args", default="", help="more arguments of tools/bench_models.py, e.g. '--steps 5'")
    parser.add_argument("--train-overhead-timeout", type=float, default=150,
                        help="seconds a training may run past its budget (start-up, last validations)")
    # internal: the child processes
    parser.add_argument("--ops-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count-syncs-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="bf16-mixed", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.download_wheels:
        return download_wheels(Path(args.download_wheels), args.python_version)
    if args.ops_only:
        return run_ops_check(args.device, args.seed if args.seed is not None else 0, args.cpu_threads or 1)
    if args.count_syncs_only:
        return run_sync_count(args.device, args.precision, args.rest)

    start = time.perf_counter()
    import torch

    if not args.force_cpu_dry_run and not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    dry = args.force_cpu_dry_run
    args.cleanup = []
    if args.seed is None:
        args.seed = int(time.time()) % 100_000
    if args.cpu_threads is None:
        args.cpu_threads = 1 if dry else max(1, min(8, os.cpu_count() or 1))
    if args.min_ap is None:
        args.min_ap = 0.0 if dry else 0.05
    try:
        extra_paths, packages_note = ensure_packages(Path(args.wheels), Path(args.site_dir), args.install_wheels)
    except SystemExit as error:
        print(error, flush=True)
        return 1
    sys.path.insert(0, str(ROOT))

    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([*extra_paths, str(ROOT)] + ([os.environ["PYTHONPATH"]]
                                                                       if os.environ.get("PYTHONPATH") else [])))
    if dry:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    os.environ.update(NO_ALBUMENTATIONS_UPDATE="1")
    runner = Runner(log_dir, env)
    (log_dir / "gpu_check.log").write_text(f"gpu_check {' '.join(sys.argv[1:])}\n")
    mode = "DRY RUN on the CPU (tiny settings)" if dry else torch.cuda.get_device_name(0)
    print(f"gpu-check: {mode}; python {sys.executable}; logs in {log_dir}; {packages_note}", flush=True)

    only = set(args.only.split(",")) if args.only else None
    unknown = sorted((only or set()) - set(STEPS))
    if unknown:
        print(f"FAIL: unknown --only steps {unknown}; the steps are {', '.join(STEPS)}")
        return 1
    wanted = lambda step: only is None or step in only  # noqa: E731
    if wanted("imports"):
        step_imports(runner, args, packages_note)
    if wanted("cuda-tests"):
        step_cuda_tests(runner, args)
    if wanted("ops"):
        step_ops(runner, args)
    if wanted("bench"):
        step_bench(runner, args)
    if wanted("train") or args.count_syncs and wanted("syncs"):
        data_start = time.perf_counter()
        try:
            data_args = prepare_data(args)
        except Exception as error:  # noqa: BLE001 - reported as the step's failure
            runner.header("data", "the built-in dataset")
            runner.record("data", "FAIL", time.perf_counter() - data_start, f"{type(error).__name__}: {error}")
            data_args = None
        if data_args is not None:
            if wanted("train"):
                for left, name in zip(range(len(CONFIGS), 0, -1), CONFIGS):
                    # hold the whole check to --deadline: later trainings get shorter budgets if time ran short
                    remaining = args.deadline - (time.perf_counter() - start) - (60 if args.count_syncs else 0)
                    minutes = min(args.minutes, max(0.5, round((remaining / left - TRAIN_OVERHEAD_S) / 60, 2)))
                    if minutes < args.minutes and not dry:
                        print(f"\n(budget of {name} cut to {minutes:g} min to end within --deadline {args.deadline:.0f} s)")
                    step_train(runner, args, name, data_args, minutes)
            if args.count_syncs and wanted("syncs"):
                step_syncs(runner, args, data_args)

    for path in args.cleanup:
        shutil.rmtree(path, ignore_errors=True)
    total = time.perf_counter() - start
    lines = [f"{status:<5} {step:<18} {seconds:6.1f} s  {note}" for step, status, seconds, note in runner.results]
    failed = [step for step, status, _, _ in runner.results if status == "FAIL"]
    verdict = (f"gpu-check FAILED: {', '.join(failed)}" if failed else "gpu-check passed") + f" in {total:.0f} s" + \
              (" (over the 8-minute target)" if total > 480 and not dry else "")
    summary = "\n".join(["", f"== summary ({mode}, seed {args.seed}) ==", *lines, verdict])
    print(summary, flush=True)
    (log_dir / "summary.txt").write_text(summary.lstrip() + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
