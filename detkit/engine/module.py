"""The LightningModule that trains and evaluates any detkit detector."""
from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn

from detkit.engine.optim import SCHEDULES, Schedule, build_optimizer
from detkit.evaluation import CocoEvaluator

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class DetectionModule(L.LightningModule):
    """Sums and logs the detector's losses; evaluates COCO mAP at the end of every validation epoch.

    Args:
        detector: a detkit detector (``RetinaNet``, ``FasterRCNN``), chosen in the config by class_path.
        optimizer: "sgd" or "adamw"; lr, weight_decay (not applied to norms and biases), momentum (SGD).
        schedule: "cosine", "step" or "constant" after ``warmup_steps`` of linear warmup from
            ``warmup_factor`` * lr; ``milestones`` (fractions of the run if <= 1, else steps) and ``gamma``
            for "step".
        results_path: where validation writes the COCO results JSON (default: the run's log dir).
    """

    def __init__(
        self,
        detector: nn.Module,
        optimizer: str = "sgd",
        lr: float = 0.01,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        schedule: str = "step",
        warmup_steps: int = 500,
        warmup_factor: float = 0.001,
        milestones: list[float] = [2 / 3, 8 / 9],  # noqa: B006 - read only; a list keeps the CLI type simple
        gamma: float = 0.1,
        results_path: str | None = None,
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"model.schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.save_hyperparameters(ignore=["detector"])
        self.detector = detector
        self.evaluator: CocoEvaluator | None = None
        self.last_evaluation = None  # EvalResult of the latest validation epoch, for tools to print
        self.validated_step: int | None = None  # global step of the weights the latest validation scored
        self.lr_schedule: Schedule | None = None  # built by configure_optimizers; TimeBudget resizes it

    def forward(self, images, image_sizes, targets=None):
        return self.detector(images, image_sizes, targets)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.detector(batch["images"], batch["image_sizes"], batch["targets"])
        total = sum(losses.values())
        batch_size = len(batch["image_sizes"])
        self.log_dict({f"train/{name}": value.detach() for name, value in losses.items()}, batch_size=batch_size)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=batch_size)
        return total

    def on_validation_epoch_start(self) -> None:
        dataset = self.trainer.datamodule.val_dataset
        categories = dataset.categories
        self.evaluator = CocoEvaluator(dataset.coco, categories.category_ids, categories.class_names)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        detections = self.detector(batch["images"], batch["image_sizes"])
        for detection, target in zip(detections, batch["targets"]):
            scale = target["scale"].to(detection["boxes"]).repeat(2)  # (4,) sx, sy, sx, sy
            self.evaluator.update(int(target["image_id"]), detection["boxes"] / scale, detection["scores"], detection["labels"])

    def on_validation_epoch_end(self) -> None:
        result = self.evaluator.compute(self._results_path(), verbose=False)
        self.last_evaluation = result
        if not self.trainer.sanity_checking:
            self.validated_step = self.trainer.global_step
            self.log_dict({f"val/{name}": float(result.stats[name]) for name in METRICS})  # identical on every rank
        self.evaluator = None

    def _results_path(self) -> str | None:
        if self.hparams.results_path:
            return self.hparams.results_path
        log_dir = self.trainer.log_dir if self.trainer.logger else None
        return f"{log_dir}/results_val.json" if log_dir else None

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = build_optimizer(self.detector, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)
        total_steps = self.trainer.estimated_stepping_batches  # inf without max_epochs/max_steps: TimeBudget sizes it
        self.lr_schedule = Schedule(
            total_steps=int(total_steps) if math.isfinite(total_steps) else 1, warmup_steps=hp.warmup_steps,
            warmup_factor=hp.warmup_factor, schedule=hp.schedule, milestones=list(hp.milestones), gamma=hp.gamma,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
