"""The ``train-*`` steps of the GPU check: a short bf16-mixed training of each shapes config on the GPU
(``tools/train.py`` in a process of its own), judged by its exit status, CUDA errors in its output, the finiteness
of its logged metrics and the val AP of its best checkpoint; tiny CPU trainings in the dry run."""
from __future__ import annotations

import csv
import glob
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from detkit.benchmarks.gpu_options import GpuCheckOptions
from detkit.benchmarks.gpu_runner import REPOSITORY, Runner, cuda_error_in, tail

CONFIGS = {"retinanet": "configs/retinanet_shapes.yaml", "faster_rcnn": "configs/faster_rcnn_shapes.yaml"}
TRAIN_OVERHEAD_S = 40  # a GPU training's start-up and evaluation of its best checkpoint, beyond its budget (estimate)
DRY_RUN_BUDGET_S = 6
TRAINING_LINE = re.compile(r"training: (\d+) images in (\d+) s = ([\d.]+) images/s; (\d+) steps")
INFERENCE_LINE = re.compile(r"inference: \d+ images in [\d.]+ s = ([\d.]+) images/s")
AP_LINE = re.compile(r"Average Precision\s+\(AP\) @\[ IoU=0\.50:0\.95 \| area=\s*all \| maxDets=100 \] = (\S+)")
AP50_LINE = re.compile(r"Average Precision\s+\(AP\) @\[ IoU=0\.50 \s*\| area=\s*all \| maxDets=100 \] = (\S+)")


def prepare_data(options: GpuCheckOptions) -> tuple[list[str], Path | None]:
    """(data arguments of the trainings, a temporary folder to remove afterwards or None): the built-in dataset,
    generated here with several processes (the configs' own prepare_data would use 2); a tiny copy in a temporary
    folder for the dry run."""
    from detkit.data.shapes import generate_shapes  # after the wheels are installed: it needs albumentations

    temporary = None
    if options.force_cpu_dry_run:
        root = temporary = Path(tempfile.mkdtemp(prefix="gpu_check_shapes_tiny_"))  # not under $OUT: 40 image files
        generate_shapes(str(root), num_train=32, num_val=8, seed=0, workers=1)
    else:
        root = REPOSITORY / "data" / "shapes"
        if not all((root / name).exists() for name in ("images", "instances_train.json", "instances_val.json")):
            start = time.perf_counter()
            generate_shapes(str(root), seed=0, workers=max(1, min(8, os.cpu_count() or 1)))
            print(f"generated the built-in dataset in {root} in {time.perf_counter() - start:.0f} s", flush=True)
    data_args = ["--data.train_images", str(root / "images"), "--data.train_annotations",
                 str(root / "instances_train.json"), "--data.val_images", str(root / "images"),
                 "--data.val_annotations", str(root / "instances_val.json")]
    return data_args, temporary


def training_args(options: GpuCheckOptions, name: str, data_args: list[str], save_dir: Path, minutes: float
                  ) -> list[str]:
    """``tools/train.py``'s arguments for config ``name`` of CONFIGS: logs under ``save_dir``, ``minutes`` of
    bf16-mixed training on the GPU, or two tiny epochs on the CPU in the dry run."""
    common = ["--config", CONFIGS[name], *data_args, "--trainer.devices", "1",
              "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(save_dir)]
    if options.force_cpu_dry_run:
        return common + ["--trainer.accelerator", "cpu", "--trainer.precision", options.dry_run_precision,
                         "--budget.minutes", "0.1", "--data.num_workers", "0", "--trainer.max_epochs", "2",
                         "--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps", "1",
                         "--data.batch_size", "8", "--data.val_batch_size", "8", "--model.warmup_steps", "2"]
    return common + ["--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed",
                     "--budget.minutes", f"{minutes:g}", "--data.num_workers", str(options.num_workers)]


def training_minutes(options: GpuCheckOptions, elapsed_s: float, trainings_left: int) -> float:
    """The next training's budget: ``options.minutes``, cut (to no less than 0.5) so that the trainings left end
    within ``options.deadline`` seconds of the start, ``elapsed_s`` ago."""
    remaining = options.deadline - elapsed_s - (60 if options.count_syncs else 0)
    return min(options.minutes, max(0.5, round((remaining / trainings_left - TRAIN_OVERHEAD_S) / 60, 2)))


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


def metrics_problems(save_dir: Path, copy_to: Path) -> tuple[list[str], list[float]] | None:
    """(problems of the training's metrics.csv under ``save_dir``, its val APs), the file copied to ``copy_to``;
    None when there is no metrics.csv."""
    metrics = sorted(glob.glob(str(save_dir / "*" / "version_*" / "metrics.csv")))
    if not metrics:
        return None
    rows, bad = read_metrics(Path(metrics[-1]))
    shutil.copyfile(metrics[-1], copy_to)
    problems = []
    if bad:
        problems.append(f"non-finite metrics: {', '.join(bad[:5])}" + (f" (+{len(bad) - 5})" if len(bad) > 5 else ""))
    if not any(r.get("train/loss") for r in rows):
        problems.append("no train/loss logged")
    val_aps = [float(r["val/AP"]) for r in rows if r.get("val/AP")]
    if not val_aps:
        problems.append("no val/AP logged")
    return problems, val_aps


def speed_note(text: str) -> str:
    """Training and inference images/s as the training printed them."""
    speed, inference = TRAINING_LINE.search(text), INFERENCE_LINE.search(text)
    return ((f"{float(speed.group(3)):.0f} images/s train ({speed.group(4)} steps, {speed.group(2)} s)" if speed
             else "no training line") + (f", {float(inference.group(1)):.0f} images/s inference" if inference else ""))


def step_train(runner: Runner, options: GpuCheckOptions, name: str, data_args: list[str], minutes: float) -> None:
    """Train config ``name`` and record the step ``train-<name>``: PASS, or FAIL with its problems."""
    step = f"train-{name}"
    where = "CPU (dry run)" if options.force_cpu_dry_run else f"GPU, bf16-mixed, {minutes:g} min budget"
    runner.header(step, f"{CONFIGS[name]} on the {where}")
    save_dir = Path(tempfile.mkdtemp(prefix=f"gpu_check_{name}_"))
    command = [sys.executable, "tools/train.py", *training_args(options, name, data_args, save_dir, minutes)]
    budget_s = DRY_RUN_BUDGET_S if options.force_cpu_dry_run else 60 * minutes
    rc, text, seconds = runner.run(command, timeout=budget_s + options.train_overhead_timeout)
    problems = ["timed out" if rc == 124 else f"exit {rc}"] if rc != 0 else []
    error = cuda_error_in(text)
    if error:
        problems.append(f"CUDA error: {error}")
    metrics = metrics_problems(save_dir, runner.log_dir / f"metrics_{name}.csv")
    if metrics is None and rc == 0:
        problems.append(f"no metrics.csv under {save_dir}")
    val_aps = metrics[1] if metrics else []
    problems += metrics[0] if metrics else []
    ap_line, ap50_line = AP_LINE.search(text), AP50_LINE.search(text)
    ap = float(ap_line.group(1)) if ap_line else math.nan
    if rc == 0 and not math.isfinite(ap):
        problems.append(f"val AP of the best checkpoint is {ap_line.group(1) if ap_line else 'missing'}")
    elif math.isfinite(ap) and ap < options.min_ap:
        problems.append(f"val AP {ap:.3f} < --min-ap {options.min_ap}")
    for line in text.splitlines():
        if line.startswith(("training:", "inference:")):
            print("    " + line)
    if problems:
        print(tail(text, 30))
    note = speed_note(text) + f", val AP {ap:.3f}" + (f" (AP50 {float(ap50_line.group(1)):.3f})" if ap50_line else "")
    if val_aps:
        note += f", {len(val_aps)} validations"
    if problems:
        note += "; " + "; ".join(problems)
    runner.record(step, "FAIL" if problems else "PASS", seconds, note)
    shutil.rmtree(save_dir, ignore_errors=True)
