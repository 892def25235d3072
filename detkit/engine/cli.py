"""Command-line glue: Lightning's own LightningCLI (jsonargparse) builds model, data and trainer from YAML.

Any key can be overridden (``--model.lr 0.001``, ``--trainer.max_epochs 5``); an unknown key is an error
that names it; the resolved config is saved as ``config.yaml`` in the run's log dir, beside ``checkpoints/``.
"""
from __future__ import annotations

import os
import sys

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from lightning.pytorch.trainer.states import TrainerStatus

from detkit.data import DetectionDataModule
from detkit.engine.anchor_check import AnchorCheck
from detkit.engine.budget import TimeBudget
from detkit.engine.callbacks import Throughput
from detkit.engine.final_validation import validate_final_weights
from detkit.engine.module import DetectionModule
from detkit.evaluation import format_per_class_table


class DetectionCLI(LightningCLI):
    """LightningCLI for ``DetectionModule`` + ``DetectionDataModule``.

    The detector's ``num_classes`` comes from the dataset's categories, and a best-AP checkpoint
    (``checkpoints/best.ckpt``) plus the last one are kept; both are configurable (``--checkpoint.*``).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": False})
        super().__init__(DetectionModule, DetectionDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.detector.init_args.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/AP", "checkpoint.mode": "max", "checkpoint.filename": "best",
            "checkpoint.save_last": True, "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(Throughput, "speed")
        parser.add_lightning_class_args(TimeBudget, "budget")  # before "anchors": the budget counts anchor fitting
        parser.add_lightning_class_args(AnchorCheck, "anchors")

    def parse_arguments(self, parser, args) -> None:
        """Parse ``args`` when given, without LightningCLI's warning about ``sys.argv``: detkit's tools pass
        the command line they were given, edited (their own options taken out, defaults put in)."""
        if isinstance(args, list):
            self.config = parser.parse_args(args)
        else:
            super().parse_arguments(parser, args)


def print_evaluation(result, title: str, throughput: Throughput) -> None:
    """Print the pycocotools summary (12 lines), the per-class AP table of an ``EvalResult`` and the inference speed."""
    print(f"\n== {title}: COCO bbox evaluation on {result.num_images} images, {result.num_detections} detections ==")
    print(result.summary)
    print(format_per_class_table(result.per_class))
    print(f"inference: {throughput.inference_images} images in {throughput.inference_seconds:.1f} s = "
          f"{throughput.inference_images_per_second:.1f} images/s")


def train(args: list[str] | None = None) -> tuple[DetectionCLI, object]:
    """Fit from a config, validate the final weights if the run stopped between validations (time budget,
    ``max_time``, Ctrl-C, SIGTERM), then evaluate the best checkpoint on the val split and print the summary.

    An interrupted run exits with Lightning's error after its final weights are validated and saved.
    """
    cli = DetectionCLI(run=False, args=args)
    trainer = cli.trainer
    interruption = None
    try:
        trainer.fit(cli.model, datamodule=cli.datamodule)
    except SystemExit as error:  # Lightning turns Ctrl-C and SIGTERM into SystemExit after its own clean-up
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        interruption = error
    throughput = _callback(cli, Throughput)
    final_validated = validate_final_weights(trainer, cli.model, cli.datamodule)
    budget = _callback(cli, TimeBudget)
    cli.fit_seconds = budget.seconds_since_start if budget is not None else 0.0  # fit + last validation
    if interruption is not None:
        raise interruption
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    throughput.reset_inference()
    trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=best or None, verbose=False)
    result = cli.model.last_evaluation
    if trainer.is_global_zero:
        print(f"\ntraining: {throughput.train_images} images in {throughput.train_seconds:.0f} s = "
              f"{throughput.train_images_per_second:.1f} images/s; {trainer.global_step} steps"
              + (f" of a planned {cli.model.lr_schedule.total_steps}; fit and last validation "
                 f"{cli.fit_seconds:.0f} s of a {budget.budget_seconds:.0f} s budget"
                 if budget is not None and budget.minutes is not None else "")
              + ("; final weights validated after the stop" if final_validated else ""))
        print_evaluation(result, f"best checkpoint {best or '(final weights)'}", throughput)
    return cli, result


def _callback(cli: DetectionCLI, kind: type):
    """The trainer's callback of type ``kind`` (the CLI adds one of each of detkit's), or None."""
    return next((c for c in cli.trainer.callbacks if isinstance(c, kind)), None)


def _config_beside(checkpoint: str) -> str:
    """The config.yaml saved by training in the run dir that holds ``checkpoints/<checkpoint>``."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), "config.yaml")


def evaluate(args: list[str] | None = None):
    """``--checkpoint CKPT [--config YAML] [--results JSON] [overrides]``: COCO summary + per-class table.

    Without ``--config`` the config.yaml saved beside the checkpoint's run is used.
    """
    args = list(sys.argv[1:] if args is None else args)
    checkpoint = _pop_option(args, "--checkpoint")
    if checkpoint is None or not os.path.isfile(checkpoint):
        raise SystemExit(f"error: --checkpoint must name an existing checkpoint file, got {checkpoint!r}")
    results = _pop_option(args, "--results") or os.path.splitext(checkpoint)[0] + "_results_val.json"
    if "--config" not in args and not any(a.startswith("--config=") for a in args):
        args = ["--config", _config_beside(checkpoint)] + args
    # Evaluation writes no logs: only the results JSON and the printout.
    cli = DetectionCLI(run=False, args=args + ["--trainer.logger=false"], save_config_callback=None)
    cli.model.hparams.results_path = results
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint, verbose=False)
    print_evaluation(cli.model.last_evaluation, f"checkpoint {checkpoint}", _callback(cli, Throughput))
    print(f"results written to {results}")
    return cli.model.last_evaluation


def _pop_option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
            del args[i:i + 2]
            return value
        if arg.startswith(name + "="):
            del args[i]
            return arg.split("=", 1)[1]
    return None
