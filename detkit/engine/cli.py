"""Command-line glue: Lightning's own LightningCLI (jsonargparse) builds model, data and trainer from YAML.

Any key can be overridden (``--model.lr 0.001``, ``--trainer.max_epochs 5``); an unknown key is an error
that names it; the resolved config is saved as ``config.yaml`` in the run's log dir, beside ``checkpoints/``.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import torch
import yaml
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.trainer.states import TrainerStatus

from detkit.data import DetectionDataModule
from detkit.engine.anchor_check import AnchorCheck
from detkit.engine.budget import TimeBudget
from detkit.engine.callbacks import Throughput
from detkit.engine.checkpoint_io import AtomicCheckpointIO
from detkit.engine.config_files import check_config_syntax
from detkit.engine.final_validation import validate_final_weights
from detkit.engine.init_from import InitFromError
from detkit.engine.loggers import share_run_folder
from detkit.engine.module import DetectionModule, NonFiniteLossError
from detkit.engine.periodic_checkpoint import PeriodicCheckpoint
from detkit.engine.quiet_output import quiet_lightning
from detkit.engine.report import print_evaluation, print_run_report, print_training
from detkit.engine.resume import ResumeTarget, find_resume_target, keep_csv_history
from detkit.engine.rng_state import RandomState
from detkit.engine.run_outputs import check_run_outputs, check_writable, next_free_path
from detkit.engine.sizing import resolve_auto_sizing
from detkit.inference.checkpoint import (
    METADATA_KEY,
    CheckpointError,
    check_classes,
    check_state_fits,
    detector_state_dict,
    read_checkpoint,
)
from detkit.inference.config import config_beside

# Lightning's own cap when max_epochs is unset, set explicitly for a run only the time budget bounds: it sizes the
# schedule until the budget's first plan, and Lightning would otherwise warn that max_epochs was not set
BUDGET_MAX_EPOCHS = 1000

TRAIN_USAGE = "%(prog)s [--config YAML] [--resume last|CKPT] [--KEY VALUE ...]"
TRAIN_DESCRIPTION = """\
Train a detector from a config, then evaluate its best checkpoint on the val
split. Any config key listed below can be set on the command line; the main:

  --config YAML         the config, e.g. configs/retinanet_shapes.yaml
  --resume last|CKPT    continue a killed or stopped run in its own folder:
                        from CKPT, or ("last") from the newest last.ckpt of a
                        run of this config under the logger's save_dir/name.
                        A kill loses at most one epoch, or 5 minutes of a long
                        one (docs/guide/resume.md)
  --model.init_from CKPT
                        a new run starting from another checkpoint's weights
                        (one of yours, or an imported torchvision model:
                        docs/guide/pretrained.md); matching tensors load
  --budget.minutes M    wall-clock budget of training and its validations: the
                        schedule is sized to fit it (null: off; then
                        trainer.max_epochs / max_steps size the run)
  --budget.validations N
                        validations in the run, the last one included
  --last_checkpoint.every_minutes M, .every_n_steps N, .every_epoch BOOL
                        when last.ckpt is written between validations
"""


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help, with the description's line breaks kept."""


class DetectionCLI(LightningCLI):
    """LightningCLI for ``DetectionModule`` + ``DetectionDataModule``.

    The detector's ``num_classes`` comes from the dataset's categories, and a best-AP checkpoint
    (``checkpoints/best.ckpt``) plus the last one are kept; both are configurable (``--checkpoint.*``), and
    ``last.ckpt`` is also rewritten at epoch ends and every few minutes (``--last_checkpoint.*``).
    Checkpoints are written atomically and hold the random state. ``resume`` ("last" or a checkpoint path)
    continues a run in its folder.
    """

    def __init__(self, *args, resume: str | None = None, **kwargs):
        quiet_lightning()
        kwargs.setdefault("save_config_kwargs", {"overwrite": False})
        self.resume = resume
        self.resume_target: ResumeTarget | None = None
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
        parser.add_lightning_class_args(PeriodicCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(RandomState, "random_state")

    def before_instantiate_classes(self) -> None:
        """Resolve the "auto" input size and levels (``detkit.engine.sizing``). For ``resume``: find the checkpoint,
        point every logger at its run folder, and save the config of the resumed part as ``config_resumed.yaml``
        there (the run's ``config.yaml`` stays as it was)."""
        resolve_auto_sizing(self.config)
        if self.resume is None:
            return
        loggers = _logger_configs(self.config["trainer"]["logger"])
        first = loggers[0].init_args if loggers else None
        self.resume_target = find_resume_target(self.resume, getattr(first, "save_dir", None),
                                                getattr(first, "name", None), self.plain_config())
        run_dir = self.resume_target.run_dir
        if run_dir is None:
            return
        for logger in loggers:
            logger.init_args.save_dir = os.path.dirname(os.path.dirname(run_dir))
            logger.init_args.name = os.path.basename(os.path.dirname(run_dir))
            logger.init_args.version = os.path.basename(run_dir)
        self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": "config_resumed.yaml",
                                   "overwrite": True}

    def parse_arguments(self, parser, args) -> None:
        """Parse ``args`` when given, without LightningCLI's warning about ``sys.argv``: detkit's tools pass
        the command line they were given, edited (their own options taken out, defaults put in)."""
        if args is None or isinstance(args, list):
            check_config_syntax(sys.argv[1:] if args is None else args)
        if isinstance(args, list):
            self.config = parser.parse_args(args)
        else:
            super().parse_arguments(parser, args)

    def plain_config(self) -> dict:
        """The resolved config as plain YAML values (``{"model": {"lr": ...}, ...}``), nulls kept as config.yaml
        keeps them."""
        return yaml.safe_load(self.parser.dump(self.config, skip_none=False))

    def after_instantiate_classes(self) -> None:
        """Embed the resolved config in every checkpoint the model writes (``detkit.load`` needs no other file)."""
        self.model.config_text = self.parser.dump(self.config, skip_none=False)

    def instantiate_trainer(self, **kwargs):
        """Lightning's trainer with atomic checkpoint writes (``AtomicCheckpointIO``), its loggers sharing one run
        folder (``detkit.engine.loggers.share_run_folder``), and ``BUDGET_MAX_EPOCHS`` when only the time budget
        bounds the run."""
        trainer_config = self._get(self.config_init, "trainer", default={})
        plugins = trainer_config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        kwargs.setdefault("plugins", [*plugins, AtomicCheckpointIO()])
        if _only_the_budget_bounds(trainer_config, self._get(self.config_init, "budget")):
            kwargs.setdefault("max_epochs", BUDGET_MAX_EPOCHS)
        trainer = super().instantiate_trainer(**kwargs)
        share_run_folder(trainer.loggers)
        return trainer


def _only_the_budget_bounds(trainer_config, budget: TimeBudget | None) -> bool:
    """Whether a time budget is set and no ``max_epochs``, ``max_steps`` or ``max_time`` (Lightning's limits)."""
    return (budget is not None and budget.minutes is not None and trainer_config.get("max_epochs") is None
            and trainer_config.get("max_steps", -1) == -1 and trainer_config.get("max_time") is None)


def _logger_configs(logger) -> list:
    """The logger entries of a parsed ``trainer.logger`` (one, a list, or True/False/None for none configured)."""
    if isinstance(logger, (list, tuple)):
        return [entry for entry in logger if hasattr(entry, "init_args")]
    return [logger] if hasattr(logger, "init_args") else []


@dataclass(frozen=True)
class TrainingRun:
    """What ``train`` returns.

    Attributes:
        cli: the ``DetectionCLI`` with the trained ``model``, the ``datamodule`` and the ``trainer``.
        evaluation: the ``EvalResult`` of the best checkpoint on the val split (``stats["AP"]``, per-class AP).
        best_checkpoint: its path ("" when no checkpoint was written: the final weights were evaluated).
        fit_seconds: wall time of training and its last validation, as the time budget counts it (0 without one).
    """

    cli: DetectionCLI
    evaluation: object
    best_checkpoint: str
    fit_seconds: float


def train(args: list[str] | None = None) -> TrainingRun:
    """Fit from a config, validate the final weights if the run stopped between validations (time budget,
    ``max_time``, Ctrl-C, SIGTERM), then evaluate the best checkpoint on the val split and print the summary.

    ``args`` are ``tools/train.py``'s command line (``sys.argv`` when None). An interrupted run exits with
    Lightning's error after its final weights are validated and saved. ``--resume last`` (or ``--resume CKPT``)
    continues a run where its newest checkpoint left it, in its folder.
    """
    args = list(sys.argv[1:] if args is None else args)
    help_text = {"usage": TRAIN_USAGE, "description": TRAIN_DESCRIPTION, "formatter_class": _HelpFormatter}
    cli = DetectionCLI(run=False, args=args, resume=_pop_option(args, "--resume"), parser_kwargs=help_text)
    trainer = cli.trainer
    check_run_outputs(trainer, cli.model.hparams.results_path, new_run=cli.resume is None)
    interruption = _fit(cli)
    throughput = _callback(cli, Throughput)
    final_validated = validate_final_weights(trainer, cli.model, cli.datamodule)
    budget = _callback(cli, TimeBudget)
    fit_seconds = budget.seconds_since_start if budget is not None else 0.0  # fit + last validation
    if interruption is not None:
        raise interruption
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    throughput.reset_inference()
    cli.model.write_pictures = True  # PR curves, confusion matrix, worst images beside the results JSON
    trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
    result = cli.model.last_evaluation
    log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
    if trainer.is_global_zero:
        print_training(throughput, trainer.global_step, cli.model.lr_schedule.total_steps, budget, fit_seconds,
                       final_validated)
        print_evaluation(result, f"best checkpoint {best or '(final weights)'}", throughput)
        print_run_report(trainer, cli.model, best, log_dir)
    return TrainingRun(cli=cli, evaluation=result, best_checkpoint=best, fit_seconds=fit_seconds)


def _fit(cli: DetectionCLI) -> SystemExit | None:
    """``trainer.fit``, from the resume checkpoint if there is one; returns the SystemExit of an interrupted run
    (Lightning turns Ctrl-C and SIGTERM into one after its own clean-up) and exits on non-finite losses."""
    trainer, target = cli.trainer, cli.resume_target
    checkpoint = target.checkpoint if target is not None else None
    if target is not None and target.run_dir is not None:
        step = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                keep_csv_history(logger, step)
    try:
        trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint, weights_only=True)
    except SystemExit as error:
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        return error
    except (NonFiniteLossError, InitFromError) as error:
        raise SystemExit(f"error: {error}") from None
    return None


def _callback(cli: DetectionCLI, kind: type):
    """The trainer's callback of type ``kind`` (the CLI adds one of each of detkit's), or None."""
    return next((c for c in cli.trainer.callbacks if isinstance(c, kind)), None)


def evaluate(args: list[str] | None = None):
    """``--checkpoint CKPT [--config YAML] [--results JSON] [overrides]``: COCO summary + per-class table.

    Without ``--config`` the config.yaml saved beside the checkpoint's run is used, else the config the
    checkpoint embeds. An existing results file is kept: the results go to the next free ``<stem>-v1.json``,
    ``-v2``... instead. The checkpoint is read with ``torch.load(weights_only=True)`` and checked against the
    config's model and dataset first: a missing, corrupt or unsafe file, other classes or another architecture
    exit with an error naming the file and the mismatch.
    """
    options, args = _eval_parser().parse_known_args(sys.argv[1:] if args is None else args)
    checkpoint = options.checkpoint
    contents = _read_checkpoint_or_exit(checkpoint)
    results = next_free_path(options.results or os.path.splitext(checkpoint)[0] + "_results_val.json")
    check_writable(os.path.dirname(os.path.abspath(results)), "--results")
    config = options.config or _eval_config(checkpoint, contents)
    # Evaluation writes no logs: only the results JSON and the printout.
    cli = DetectionCLI(run=False, args=["--config", config, *args, "--trainer.logger=false"], save_config_callback=None)
    _check_fits_or_exit(checkpoint, contents, cli, config if os.path.isfile(config) else "the embedded config")
    cli.model.hparams.results_path = results
    cli.model.write_pictures = True  # into <results stem>_pictures/, printed by the module
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint, verbose=False, weights_only=True)
    if cli.trainer.is_global_zero:  # under DDP every rank holds the gathered result; one prints it
        print_evaluation(cli.model.last_evaluation, f"checkpoint {checkpoint}", _callback(cli, Throughput))
        print(f"results written to {results}")
    return cli.model.last_evaluation


def _eval_parser() -> argparse.ArgumentParser:
    """The options of ``evaluate``; whatever else is on the command line overrides the config."""
    parser = argparse.ArgumentParser(
        description="Evaluate a checkpoint on the val split: COCO summary, per-class AP, results JSON, pictures.",
        epilog="Any other --KEY VALUE overrides that key of the config, as in tools/train.py (whose --help lists "
               "them): e.g. --data.val_batch_size 32, --model.eval_backend faster_coco_eval.",
        allow_abbrev=False)  # --config must not swallow --config.x, nor --checkpoint the --checkpoint.* keys
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="the checkpoint to evaluate")
    parser.add_argument("--config", metavar="YAML",
                        help="the config (default: the config.yaml of the checkpoint's run, else the one it embeds)")
    parser.add_argument("--results", metavar="JSON",
                        help="where the results go (default: <checkpoint stem>_results_val.json); an existing "
                             "file is kept and the next free <stem>-v1.json, -v2... is written instead")
    return parser


def _read_checkpoint_or_exit(checkpoint: str) -> dict:
    """The checkpoint's contents (``detkit.inference.checkpoint.read_checkpoint``), or exit naming the problem."""
    try:
        return read_checkpoint(checkpoint)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None


def _eval_config(checkpoint: str, contents: dict) -> str:
    """The config.yaml beside the checkpoint's run, else the YAML text it embeds (``--config`` takes either)."""
    beside = config_beside(checkpoint)
    embedded = (contents.get(METADATA_KEY) or {}).get("config")
    return embedded if embedded and not os.path.isfile(beside) else beside


def _check_fits_or_exit(checkpoint: str, contents: dict, cli: DetectionCLI, source: str) -> None:
    """Exit naming the file and the mismatch unless the checkpoint was trained on the eval dataset's classes and
    holds the weights of the model that ``source`` (the config) builds."""
    categories = cli.datamodule.categories
    try:
        check_classes(checkpoint, contents, categories.class_names, categories.source)
        check_state_fits(checkpoint, detector_state_dict(contents), cli.model.detector, source)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None


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
