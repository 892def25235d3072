"""The LightningModule that trains and evaluates any detkit detector."""
from __future__ import annotations

import math
import warnings
from typing import Literal

import lightning as L
import torch
from torch import nn

from detkit.data.transforms import to_original_pixels
from detkit.engine.anchor_check import print_once
from detkit.engine.budget import TimeBudget
from detkit.engine.init_from import load_matching_weights
from detkit.engine.optim import (
    AUTO,
    Schedule,
    augmentation_strength_for,
    build_optimizer,
    check_optimization,
    regularisation_for,
)
from detkit.evaluation import CocoEvaluator, check_backend
from detkit.inference.checkpoint import METADATA_KEY, checkpoint_metadata

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
WEIGHT_DECAY_PLACEHOLDER, WARMUP_PLACEHOLDER = 0.05, 100  # "auto" until the run's length is known


class NonFiniteLossError(RuntimeError):
    """Training met more consecutive non-finite losses than ``model.nonfinite_patience`` allows."""


class DetectionModule(L.LightningModule):
    """Sums and logs the detector's losses; evaluates COCO mAP at the end of every validation epoch.

    Args:
        detector: a detkit detector (``RetinaNet``, ``FasterRCNN``), chosen in the config by class_path.
        optimizer: "sgd" or "adamw"; lr, weight_decay (not applied to norms and biases), momentum (SGD).
        schedule: "cosine", "step" or "constant" after ``warmup_steps`` of linear warmup from
            ``warmup_factor`` * lr; ``weight_decay`` and ``warmup_steps`` "auto": set from the run's length in
            epochs and steps once it is known (the time budget's plan; ``detkit.engine.optim.regularisation_for``);
            ``milestones`` (fractions of the run if <= 1, else steps) and ``gamma``
            for "step".
        results_path: where validation writes the COCO results JSON (default: the run's log dir).
        eval_backend: the COCOeval implementation: "hotcoco" (the fastest; pycocotools' numbers in every test),
            "pycocotools" (the reference) or "faster_coco_eval" (``docs/guide/evaluation_backends.md``).
        nonfinite_patience: a batch whose loss is NaN or Inf is skipped (no weight update) and counted
            (``train/nonfinite_batches``); this many in a row stop training with an error naming the step and the
            loss terms. 0 stops at the first; null skips them all.
        init_from: a checkpoint (detkit's, or one ``tools/import_torchvision.py`` wrote) whose tensors of matching
            name and shape are loaded at the start of ``fit``; the rest keep their fresh initialisation and the
            run is a new one (``detkit.engine.init_from``). A resumed run does not load it again.

    Attributes:
        write_pictures: set it (``evaluate()`` and the final validation of ``train()`` do) and the next
            validation also writes the evaluation pictures (``detkit.evaluation.pictures``) into
            ``<results stem>_pictures/`` beside the results JSON; their folder is then ``pictures_dir``.
    """

    def __init__(
        self,
        detector: nn.Module,
        optimizer: str = "sgd",
        lr: float = 0.01,
        weight_decay: float | Literal["auto"] = 1e-4,
        momentum: float = 0.9,
        schedule: str = "step",
        warmup_steps: int | Literal["auto"] = 500,
        warmup_factor: float = 0.001,
        milestones: list[float] = [2 / 3, 8 / 9],  # noqa: B006 - read only; a list keeps the CLI type simple
        gamma: float = 0.1,
        results_path: str | None = None,
        eval_backend: str = "hotcoco",
        nonfinite_patience: int | None = 3,
        init_from: str | None = None,
    ):
        super().__init__()
        check_optimization(optimizer=optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum, schedule=schedule,
                           warmup_steps=warmup_steps, warmup_factor=warmup_factor, gamma=gamma)
        if nonfinite_patience is not None and nonfinite_patience < 0:
            raise ValueError(f"model.nonfinite_patience must be >= 0 or null, got {nonfinite_patience}")
        check_backend(eval_backend, "model.eval_backend")
        self.save_hyperparameters(ignore=["detector"])
        self.detector = detector
        self.evaluator: CocoEvaluator | None = None
        self.last_evaluation = None  # EvalResult of the latest validation epoch, for tools to print
        self.validated_step: int | None = None  # global step of the weights the latest validation scored
        self.lr_schedule: Schedule | None = None  # built by configure_optimizers; TimeBudget resizes it
        self.write_pictures = False  # not at every validation of a training: the pictures take seconds
        self.pictures_dir: str | None = None
        self.results_path_in_use: str | None = None  # where the latest validation wrote its results JSON
        self.nonfinite_batches, self._nonfinite_in_a_row = 0, 0
        self.config_text: str | None = None  # the resolved config YAML; DetectionCLI sets it, checkpoints embed it
        self.restored_from_checkpoint = False  # a resume: its weights are the run's, init_from is not applied
        self._planned_regularisation: tuple | None = None  # the latest "auto" (weight decay, warm-up)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.restored_from_checkpoint = True

    def on_fit_start(self) -> None:
        """``init_from``'s weights, once, in a new run (a resume restored its own before this hook)."""
        if self.hparams.init_from and not self.restored_from_checkpoint:
            class_names = getattr(self.trainer.datamodule, "class_names", None)
            report = load_matching_weights(self.detector, self.hparams.init_from, class_names)
            self.print(report.summary(), flush=True)

    def forward(self, images, image_sizes, targets=None):
        return self.detector(images, image_sizes, targets)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        buffers = [buffer.clone() for buffer in self._float_buffers()]  # BatchNorm statistics move in the forward
        losses = self.detector(batch["images"], batch["image_sizes"], batch["targets"])
        total = sum(losses.values())
        if not self._finite_on_every_rank(total):
            torch._foreach_copy_(self._float_buffers(), buffers)
            self._skip_nonfinite(losses)
            return None  # Lightning then skips backward and the weight update
        self._nonfinite_in_a_row = 0
        batch_size = len(batch["image_sizes"])
        self.log_dict({f"train/{name}": value.detach() for name, value in losses.items()}, batch_size=batch_size)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=batch_size)
        return total

    def _float_buffers(self) -> list[torch.Tensor]:
        return [buffer for buffer in self.detector.buffers() if buffer.is_floating_point()]

    def _finite_on_every_rank(self, total: torch.Tensor) -> bool:
        finite = bool(torch.isfinite(total.detach()))
        if self.trainer.world_size > 1:  # all ranks skip together, or DDP's gradient all-reduce would hang
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        return finite

    def _skip_nonfinite(self, losses: dict[str, torch.Tensor]) -> None:
        self.nonfinite_batches += 1
        self._nonfinite_in_a_row += 1
        terms = ", ".join(f"{name}={float(value.detach()):g}" for name, value in losses.items())
        patience = self.hparams.nonfinite_patience
        message = (f"step {self.trainer.global_step}: non-finite loss ({terms}); {self._nonfinite_in_a_row} batch(es) "
                   f"in a row, {self.nonfinite_batches} in all")
        if patience is not None and self._nonfinite_in_a_row > patience:
            raise NonFiniteLossError(f"{message}: stopping (model.nonfinite_patience={patience}). The checkpoints hold "
                                     f"the weights from before; lower model.lr or check the data.")
        if self.trainer.is_global_zero:
            print(f"warning: {message}: batch skipped (model.nonfinite_patience={patience})")
        self.log("train/nonfinite_batches", float(self.nonfinite_batches), batch_size=1)

    def on_validation_epoch_start(self) -> None:
        dataset = self.trainer.datamodule.val_dataset
        categories = dataset.categories
        self.evaluator = CocoEvaluator(dataset.coco, categories.category_ids, categories.class_names,
                                       backend=self.hparams.eval_backend)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        detections = self.detector(batch["images"], batch["image_sizes"])
        for detection, target in zip(detections, batch["targets"]):
            boxes = to_original_pixels(detection["boxes"], target["scale"])
            self.evaluator.update(int(target["image_id"]), boxes, detection["scores"], detection["labels"])

    def on_validation_epoch_end(self) -> None:
        results_path = self._results_path()
        result = self.evaluator.compute(results_path, verbose=False)
        self.last_evaluation, self.results_path_in_use = result, results_path
        if self.write_pictures and results_path and not self.trainer.sanity_checking:
            self._write_pictures(results_path)
        if not self.trainer.sanity_checking:
            self.validated_step = self.trainer.global_step
            self.log_dict({f"val/{name}": float(result.stats[name]) for name in METRICS})  # identical on every rank
        self.evaluator = None

    def _write_pictures(self, results_path: str) -> None:
        """On rank 0 (the rank that evaluated): the pictures of the evaluation just computed. A picture that cannot
        be drawn (an unreadable image, a full disk) is a warning: the evaluation itself is done and saved."""
        evaluator = self.evaluator
        if evaluator.last_cocoeval is None:
            return
        from detkit.evaluation.pictures import pictures_folder, write_evaluation_pictures  # matplotlib: only now
        dataset = self.trainer.datamodule.val_dataset
        index_of_id = {image_id: index for index, image_id in enumerate(dataset.image_ids)}
        folder = pictures_folder(results_path)
        try:
            write_evaluation_pictures(
                evaluator.last_cocoeval, dataset.coco, evaluator.last_records, evaluator.category_ids,
                evaluator.class_names, load_image=lambda image_id: dataset.load_image(index_of_id[image_id]),
                folder=folder)
        except (OSError, ValueError) as error:
            warnings.warn(f"evaluation pictures not written to {folder}: {error}", stacklevel=2)
            return
        self.pictures_dir = folder
        print(f"evaluation pictures written to {folder}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Make every checkpoint self-contained for ``detkit.load``: the config and the classes, in plain types."""
        categories = getattr(self.trainer.datamodule, "categories", None)
        checkpoint[METADATA_KEY] = checkpoint_metadata(config_text=self.config_text, categories=categories)

    def _results_path(self) -> str | None:
        if self.hparams.results_path:
            return self.hparams.results_path
        log_dir = self.trainer.log_dir if self.trainer.logger else None
        return f"{log_dir}/results_val.json" if log_dir else None

    def configure_optimizers(self):
        hp = self.hparams
        total_steps = self.trainer.estimated_stepping_batches  # inf without max_epochs/max_steps: TimeBudget sizes it
        total_steps = int(total_steps) if math.isfinite(total_steps) else 1
        # "auto" values start from those of a long run; plan_regularisation sets them once the run's length is known
        weight_decay = WEIGHT_DECAY_PLACEHOLDER if hp.weight_decay == AUTO else hp.weight_decay
        warmup_steps = WARMUP_PLACEHOLDER if hp.warmup_steps == AUTO else hp.warmup_steps
        optimizer = build_optimizer(self.detector, hp.optimizer, hp.lr, weight_decay, hp.momentum)
        self.lr_schedule = Schedule(
            total_steps=total_steps, warmup_steps=warmup_steps,
            warmup_factor=hp.warmup_factor, schedule=hp.schedule, milestones=list(hp.milestones), gamma=hp.gamma,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_schedule)
        if total_steps > 1 and not any(isinstance(c, TimeBudget) and c.minutes for c in self.trainer.callbacks):
            self.plan_regularisation(total_steps, optimizer, exact=True)  # a time budget plans it instead
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def plan_regularisation(self, total_steps: int, optimizer=None, exact: bool = False) -> None:
        """Set the "auto" weight decay, warm-up and augmentation strength for a run of ``total_steps`` steps;
        ``TimeBudget`` calls it at every plan. ``exact``: the length is set (max_epochs / max_steps), not measured."""
        datamodule = self.trainer.datamodule if getattr(self, "_trainer", None) is not None else None
        if datamodule is None:
            return
        batches = max(1, int(self.trainer.num_training_batches)) if math.isfinite(self.trainer.num_training_batches) \
            else max(1, len(datamodule.train_dataloader()))
        epochs = total_steps * self.trainer.accumulate_grad_batches / batches
        if AUTO in (self.hparams.weight_decay, self.hparams.warmup_steps):
            self._plan_decay_and_warmup(epochs, total_steps, optimizer or self.optimizers(use_pl_optimizer=False))
        if getattr(datamodule, "augmentation_strength", None) == AUTO and datamodule.planned_strength is None \
                and (exact or self.trainer.global_step >= batches):
            # once; measured runs after the first epoch: the images are cached by then, so the step time is the run's
            strength = datamodule.plan_augmentation(augmentation_strength_for(epochs))
            print_once(f"augmentation strength {strength:g} for {epochs:.1f} epochs ({total_steps} steps as planned "
                       "now): the flips, and the other augmentations at this share of their p")

    def _plan_decay_and_warmup(self, epochs: float, total_steps: int, optimizer) -> None:
        hp = self.hparams
        weight_decay, warmup = regularisation_for(epochs, total_steps)
        if hp.weight_decay == AUTO:
            for group in optimizer.param_groups:
                if group["weight_decay"] > 0:
                    group["weight_decay"] = weight_decay
        step = self.trainer.global_step
        if hp.warmup_steps == AUTO and step < self.lr_schedule.warmup_steps:
            self.lr_schedule.warmup_steps = max(warmup, step)  # never shorter than done: the lr would jump
        if self._planned_regularisation is None:  # later plans move it a little
            print_once(f"regularisation for {epochs:.1f} epochs ({total_steps} steps, as first planned): weight_decay "
                       f"{weight_decay if hp.weight_decay == AUTO else hp.weight_decay}, warmup_steps "
                       f"{self.lr_schedule.warmup_steps}")
        self._planned_regularisation = (weight_decay, self.lr_schedule.warmup_steps)
