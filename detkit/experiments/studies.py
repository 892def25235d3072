"""The studies: for each textbook claim, the arms that test it, as ordinary command-line overrides of the shipped
shapes recipes (``configs/retinanet_shapes.yaml``, ``configs/faster_rcnn_shapes.yaml``), what to tabulate and plot.

Every arm trains with the recipe's fixed seeds (``seed_everything``, ``data.seed``) and the same budget as the
other arms of its group: ``budget.minutes`` (the time budget sizes the schedule to the machine), or with the
budget off a fixed number of epochs or images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from detkit.experiments.background_weight import matching_background_weight
from detkit.experiments.config_values import resolved_config

RETINANET = "configs/retinanet_shapes.yaml"
FASTER_RCNN = "configs/faster_rcnn_shapes.yaml"
DETECTOR = "--model.detector.init_args."
NMS_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
NORMS = ("bn", "gn", "frozen_bn")
BATCH_SIZES = (2, 16)


@dataclass(frozen=True)
class Scale:
    """How much each arm trains: ``minutes`` for equal-time arms, ``epochs`` for equal-epoch arms, ``images``
    (seen in training) for equal-image arms; ``quick`` marks the short version."""

    minutes: float
    epochs: int
    images: int
    quick: bool = False


@dataclass(frozen=True)
class Arm:
    """One run of a study.

    Args:
        name: folder name under ``runs/experiments/<study>/`` (and key in ``results.json``).
        label: the row's name in the table and the plot.
        config: the shipped config it overrides (a path relative to the repository root).
        overrides: command-line overrides of ``tools/train.py`` (or of ``tools/eval.py`` for an evaluation arm).
        group: the arms compared at equal budget (e.g. "equal time"), or the line of a sweep.
        evaluates: for an evaluation-only arm, the ``name`` of the training arm whose best checkpoint it evaluates.
        value: the swept value (the x axis of a sweep plot of the evaluation arms).
    """

    name: str
    label: str
    config: str
    overrides: tuple[str, ...] = ()
    group: str = ""
    evaluates: str | None = None
    value: float | None = None


@dataclass(frozen=True)
class Plan:
    """A study's arms at one scale, with notes on how derived settings were chosen and the budget in words."""

    arms: list[Arm]
    budget: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Study:
    """A claim and how it is measured.

    Args:
        name: the command-line name; title, claim: the heading and the claim in one or two sentences.
        build: (scale, extra args given to every arm) -> Plan.
        columns: table columns (keys of ``detkit.experiments.report.COLUMNS``).
        panels: plot panels (``detkit.drawing.studies.PANELS`` kinds, "curve:<metrics.csv column>").
        full, quick: the default scales; the full one fits about an hour on a 2-core CPU.
    """

    name: str
    title: str
    claim: str
    build: Callable[[Scale, tuple[str, ...]], Plan]
    columns: tuple[str, ...]
    panels: tuple[str, ...]
    full: Scale
    quick: Scale


def detector(key: str, value) -> tuple[str, str]:
    """The override of detector argument ``key``: ("--model.detector.init_args.<key>", value as YAML)."""
    return DETECTOR + key, _yaml(value)


def _yaml(value) -> str:
    """``value`` as YAML reads it back: floats without exponents (YAML 1.1 reads "1e-05" as a string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value) if "e" not in repr(value) else f"{value:.15f}".rstrip("0")
    return "null" if value is None else str(value)


def time_budget(minutes: float) -> tuple[str, ...]:
    return ("--budget.minutes", _yaml(float(minutes)))


def epoch_budget(epochs: int) -> tuple[str, ...]:
    return ("--budget.minutes", "null", "--trainer.max_epochs", str(epochs))


def one_vs_two_stage(scale: Scale, extra_args: tuple[str, ...]) -> Plan:
    detectors = (("retinanet", "RetinaNet", RETINANET), ("faster_rcnn", "Faster R-CNN", FASTER_RCNN))
    arms = [Arm(f"{name}_time", f"{label}, {scale.minutes:g} min", config, time_budget(scale.minutes), "equal time")
            for name, label, config in detectors]
    epochs = f"{scale.epochs} epoch{'s' * (scale.epochs != 1)}"
    arms += [Arm(f"{name}_epochs", f"{label}, {epochs}", config, epoch_budget(scale.epochs), "equal epochs")
             for name, label, config in detectors]
    return Plan(arms, f"equal time: {scale.minutes:g} min per arm (budget.minutes, the schedule sized to the machine); "
                      f"equal epochs: {epochs} per arm (budget off, the schedule over those epochs)")


def imbalance(scale: Scale, extra_args: tuple[str, ...]) -> Plan:
    weight, note = matching_background_weight(RETINANET, extra_args)
    budget = time_budget(scale.minutes)
    bce = (*detector("loss.focal_gamma", 0.0), *detector("loss.focal_alpha", -1.0))
    arms = [
        Arm("focal_gamma2", "focal loss, gamma 2 (shipped)", RETINANET, budget),
        Arm("bce", "plain BCE", RETINANET, (*budget, *bce)),
        Arm("bce_background_weighted", f"BCE, background weight {weight:.3g}", RETINANET,
            (*budget, *bce, *detector("loss.background_weight", float(f"{weight:.4g}")))),
        Arm("focal_gamma1", "focal loss, gamma 1", RETINANET, (*budget, *detector("loss.focal_gamma", 1.0))),
        Arm("focal_gamma5", "focal loss, gamma 5", RETINANET, (*budget, *detector("loss.focal_gamma", 5.0))),
    ]
    return Plan(arms, f"{scale.minutes:g} min per arm (budget.minutes)", [note])


def ignore_band(scale: Scale, extra_args: tuple[str, ...]) -> Plan:
    arms = []
    for fg, bg in ((0.5, 0.4), (0.5, 0.5), (0.7, 0.3)):
        for low_quality in (True, False):
            shipped = " (shipped)" if (fg, bg, low_quality) == (0.5, 0.4, True) else ""
            arms.append(Arm(
                f"fg{fg:g}_bg{bg:g}_low_quality_{'on' if low_quality else 'off'}",
                f"fg {fg:g} / bg {bg:g}, low-quality {'on' if low_quality else 'off'}{shipped}", RETINANET,
                (*time_budget(scale.minutes), *detector("matching.fg_iou_threshold", fg),
                 *detector("matching.bg_iou_threshold", bg),
                 *detector("matching.allow_low_quality_matches", low_quality)),
                group=f"fg {fg:g} / bg {bg:g}"))
    return Plan(arms, f"{scale.minutes:g} min per arm (budget.minutes)",
                ["objects with no positive anchor: training objects (unaugmented, as the anchor check at the start "
                 "of each run counts them) that no anchor is matched to under the arm's matcher; 'below fg' counts "
                 "those whose best anchor IoU is under the fg threshold, before low-quality matching"])


def anchor_fit(scale: Scale, extra_args: tuple[str, ...]) -> Plan:
    sizes = resolved_config(RETINANET, extra_args)["model"]["detector"]["init_args"]["anchors"]["sizes"]
    budget = time_budget(scale.minutes)
    arms = [Arm("shipped", f"as shipped, sizes {list(sizes)}", RETINANET, budget),
            Arm("auto", "fitted (sizes and ratios 'auto')", RETINANET,
                (*budget, *detector("anchors.sizes", "auto"), *detector("anchors.aspect_ratios", "auto")))]
    arms += [Arm(f"{factor}x_too_large", f"{factor}x too large, sizes {[factor * s for s in sizes]}", RETINANET,
                 (*budget, *detector("anchors.sizes", [factor * s for s in sizes]))) for factor in (2, 4)]
    arms.append(Arm("one_ratio", "one aspect ratio (1.0)", RETINANET,
                    (*budget, *detector("anchors.aspect_ratios", [1.0]))))
    return Plan(arms, f"{scale.minutes:g} min per arm (budget.minutes)",
                ["no anchor at IoU >= 0.5: share of the training objects (unaugmented) whose best anchor has IoU "
                 "< 0.5; fitted anchors are fitted before training to the same boxes (detkit.models.anchor_fit)"])


def nms_threshold(scale: Scale, extra_args: tuple[str, ...]) -> Plan:
    arms = []
    for name, label, config in (("retinanet", "RetinaNet", RETINANET), ("faster_rcnn", "Faster R-CNN", FASTER_RCNN)):
        shipped = resolved_config(config, extra_args)["model"]["detector"]["init_args"]["inference"]["nms_threshold"]
        arms.append(Arm(name, f"{label}: trained, NMS {shipped:g}", config, time_budget(scale.minutes), group=label,
                        value=shipped))
        arms += [Arm(f"{name}_nms{threshold:g}", f"{label}, NMS {threshold:g}", config,
                     detector("inference.nms_threshold", threshold), group=label, evaluates=name, value=threshold)
                 for threshold in NMS_THRESHOLDS]
    return Plan(arms, f"{scale.minutes:g} min of training per detector (budget.minutes), then evaluation only",
                ["the threshold is the final detection NMS (model.detector.init_args.inference.nms_threshold; "
                 "Faster R-CNN's proposal NMS, rpn.nms_threshold, stays as shipped); each evaluation reruns the best "
                 "checkpoint of its detector's training arm on the val split, so the row at the shipped threshold "
                 "repeats the training arm's numbers"])


def normalisation(scale: Scale, extra_args: tuple[str, ...]) -> Plan:
    shipped = resolved_config(RETINANET, extra_args)
    base_batch, base_lr = shipped["data"]["batch_size"], shipped["model"]["lr"]
    base_warmup, base_log = shipped["model"]["warmup_steps"], shipped["trainer"]["log_every_n_steps"]
    arms = []
    for batch in BATCH_SIZES:
        per_batch = base_batch / batch  # steps at this batch for each step of the shipped one
        settings = ("--budget.minutes", "null", "--data.batch_size", str(batch),
                    "--trainer.max_steps", str(math.ceil(scale.images / batch)),
                    "--model.lr", _yaml(float(f"{base_lr * math.sqrt(batch / base_batch):.4g}")),
                    "--model.warmup_steps", str(round(base_warmup * per_batch)),
                    "--trainer.log_every_n_steps", str(max(1, round(base_log * per_batch))))
        arms += [Arm(f"{norm}_batch{batch}", f"{norm}, batch {batch}", RETINANET,
                     (*settings, *detector("backbone.norm", norm)))
                 for norm in NORMS]
    return Plan(arms, f"{scale.images} training images per arm (trainer.max_steps = images / batch, budget off)", [
        f"lr scaled with the square root of the batch (AdamW; shipped {base_lr:g} at batch {base_batch}), warm-up and "
        "logging intervals in images kept equal (steps x shipped batch / batch)",
        "norm is the trunk's normalisation; the head keeps its GroupNorm (head_norm) in every arm. The trunk trains "
        "from scratch, so frozen_bn is BatchNorm frozen at its initial identity: no normalisation at all"])


STUDIES = {study.name: study for study in (
    Study("one_vs_two_stage", "One-stage vs two-stage",
          "One-stage detectors are faster; two-stage detectors are more accurate.",
          one_vs_two_stage, ("group", "AP", "AP50", "AP75", "APs", "APm", "train_ips", "inference_ips", "steps",
                             "epochs", "fit_minutes", "parameters"),
          ("ap", "speed", "curve:val/AP"), full=Scale(10, 8, 0), quick=Scale(0.75, 1, 0, quick=True)),
    Study("imbalance", "Background imbalance in RetinaNet",
          "A one-stage detector drowns in easy background anchors; focal loss, or down-weighting the background, "
          "fixes that.",
          imbalance, ("AP", "AP50", "AP75", "APs", "APm", "steps"), ("ap", "curve:train/cls", "curve:val/AP"),
          full=Scale(10, 0, 0), quick=Scale(0.75, 0, 0, quick=True)),
    Study("ignore_band", "The ignore band and low-quality matches",
          "An ignore band between the fg and bg IoU thresholds keeps ambiguous anchors out of the loss; making each "
          "object's best anchor positive (low-quality matches) gives every object a positive anchor.",
          ignore_band, ("AP", "AP50", "AP75", "APs", "APm", "no_positive", "below_fg"), ("ap", "coverage:no_positive"),
          full=Scale(8, 0, 0), quick=Scale(0.75, 0, 0, quick=True)),
    Study("anchor_fit", "Anchors must fit the objects",
          "Anchors must fit the objects: too large anchors, or too few aspect ratios, leave objects without a good "
          "anchor and cost AP.",
          anchor_fit, ("AP", "AP50", "AP75", "APs", "APm", "no_anchor_half", "no_positive"),
          ("ap", "coverage:below_half"), full=Scale(10, 0, 0), quick=Scale(0.75, 0, 0, quick=True)),
    Study("nms_threshold", "The NMS IoU threshold",
          "NMS needs a well-chosen IoU threshold: too low suppresses neighbouring objects, too high keeps duplicates.",
          nms_threshold, ("group", "nms", "AP", "AP50", "AP75"), ("sweep",),
          full=Scale(10, 0, 0), quick=Scale(0.75, 0, 0, quick=True)),
    Study("normalisation", "Normalisation at small batch",
          "BatchNorm misbehaves at small batch; GroupNorm (or frozen BN) does not depend on the batch.",
          normalisation, ("AP", "AP50", "AP75", "APs", "APm", "train_ips", "steps", "epochs"),
          ("ap", "curve:train/loss"), full=Scale(0, 0, 20000), quick=Scale(0, 0, 384, quick=True)),
)}
