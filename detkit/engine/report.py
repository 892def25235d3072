"""What ``tools/train.py`` and ``tools/eval.py`` print at the end: the COCO summary and where everything went."""
from __future__ import annotations

import os

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from detkit.engine.callbacks import Throughput
from detkit.evaluation import format_per_class_table


def print_evaluation(result, title: str, throughput: Throughput) -> None:
    """Print the pycocotools summary (12 lines), the per-class AP table of an ``EvalResult`` and the inference speed."""
    print(f"\n== {title}: COCO bbox evaluation on {result.num_images} images, {result.num_detections} detections ==")
    print(result.summary)
    print(format_per_class_table(result.per_class))
    print(f"inference: {throughput.inference_images} images in {throughput.inference_seconds:.1f} s = "
          f"{throughput.inference_images_per_second:.1f} images/s")


def print_training(throughput: Throughput, steps: int, planned_steps: int, budget, fit_seconds: float,
                   final_validated: bool) -> None:
    """One line: images, seconds and images/s of training, steps (of the plan and the budget when a time budget
    sized the run), and whether the final weights were validated after a stop between validations."""
    line = (f"\ntraining: {throughput.train_images} images in {throughput.train_seconds:.0f} s = "
            f"{throughput.train_images_per_second:.1f} images/s; {steps} steps")
    if budget is not None and budget.minutes is not None:
        line += (f" of a planned {planned_steps}; fit and last validation {fit_seconds:.0f} s of a "
                 f"{budget.budget_seconds:.0f} s budget")
    print(line + ("; final weights validated after the stop" if final_validated else ""))


def print_run_report(trainer, module, best_checkpoint: str, log_dir: str | None) -> None:
    """The run in a few lines: best val AP with its epoch and step, and the paths of the checkpoints, the results
    JSON, the pictures and the logs (``log_dir``: ``trainer.log_dir``, read on every rank, as it broadcasts)."""
    result, callback = module.last_evaluation, trainer.checkpoint_callback
    where = ""
    if best_checkpoint and os.path.isfile(best_checkpoint):
        saved = torch.load(best_checkpoint, map_location="cpu", weights_only=True, mmap=True)
        where = f" at epoch {saved['epoch']}, step {saved['global_step']}"
    lines = [f"best val AP {result.stats['AP']:.3f} (AP50 {result.stats['AP50']:.3f}){where}",
             f"best checkpoint: {best_checkpoint or '(none saved: the final weights were evaluated)'}"]
    if callback is not None and callback.last_model_path:
        lines.append(f"last checkpoint: {callback.last_model_path}  (continue with --resume last)")
    lines.append(f"results JSON:    {module.results_path_in_use or '(not written)'}")
    if module.pictures_dir:
        lines.append(f"pictures:        {module.pictures_dir}")
    if log_dir:
        lines.append(f"logs:            {log_dir} (metrics.csv, config.yaml)")
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            lines.append(f"TensorBoard:     tensorboard --logdir {logger.log_dir}")
    if module.nonfinite_batches:
        lines.append(f"skipped batches with a non-finite loss: {module.nonfinite_batches}")
    print("\n== run report ==\n" + "\n".join(lines))
