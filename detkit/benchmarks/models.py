"""Benchmark detkit's detectors against torchvision's of the same architecture, alternating in one process.

For each detector and size, detkit's model (built from a config in ``configs/``, as training builds it) and
torchvision's twin (``torchvision_twins``: the same trunk, anchors, heads, matching, sampling, top-n and inference
settings, read off detkit's model) are fed the same synthetic batches. Rows:

- train: images/s of a training step (forward with the losses, backward, SGD step);
- infer: images/s of a forward pass with post-processing (score threshold, top-k, NMS), under ``no_grad``;
- peak MB: the most memory a step takes above what was held just before it: activations, gradients and
  temporaries; weights, optimizer state, the batches and caches made in warm-up excluded (``timing.PeakMemory``).

Times are medians over ``steps`` steps after ``warmup`` warm-up steps, detkit and torchvision alternating step by
step (which goes first swaps every step); memory is measured on extra steps after the timed ones. ratio = detkit
images/s / torchvision images/s (above 1: detkit is faster). The last line is the worst ratio over the CPU rows.
Column ``same``: ``architecture.architecture_check`` found equal anchors, parameter counts and outputs (imports:
``torchvision_imports.weights_check``, below).

Inference with random weights: RetinaNet's classifier starts at p = 0.01 and Faster R-CNN's at 1 / (K + 1)
(0.012 for 80 classes), under the configs' 0.05 score threshold, so little reaches top-k and NMS (the same
for both: same weights); a score threshold of 0 loads post-processing fully.

quick: tiny images (64 px), batch 1-2, one warm-up and two timed steps, fewer RoIs and a narrower box head on the
ResNet-50 rows: a smoke run of a few seconds, not a measurement.

Rows "tv:<arch>" (``--only tv:``): torchvision's six COCO detectors against detkit's import of them
(``torchvision_imports``): torchvision's model with random weights, built as its checkpoints are, and
``from_torchvision`` of its state dict, so both hold the same weights; column ``same``: ``weights_check`` found
every weight equal and the same FPN maps. Both get the same batch (torchvision's transform at scale 1 normalises
and pads; detkit normalises inside), the same targets (labels: torchvision's 1..90, detkit's 0..89). quick: 64 px,
and 100 proposals / 64 sampled RoIs on both Faster R-CNN sides (the imported box heads keep their size).
"""
from __future__ import annotations

import dataclasses
import gc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torchvision
import yaml
from torch import nn

from detkit.benchmarks.architecture import Check, architecture_check
from detkit.benchmarks.batches import Batch, synthetic_batches
from detkit.benchmarks.contenders import Contender, contender, measure
from detkit.benchmarks.torchvision_imports import WeightsCheck, imported_pair, weights_check
from detkit.benchmarks.torchvision_twins import torchvision_twin
from detkit.data.coco_names import NUM_COCO_LABELS
from detkit.inference.config import RunConfig, build_detector
from detkit.models.torchvision_import import ARCHITECTURES

REPOSITORY = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Setting:
    """One detector at one size: two table rows (train, infer).

    ``size`` is (h, w) of every image before padding; ``object_sizes`` the range of box sides in pixels;
    ``overrides`` are merged into the config's ``model.detector.init_args`` (nested like it:
    ``{"inference": {"score_threshold": 0.0}}``).
    """

    detector: str  # "RetinaNet" or "Faster R-CNN"
    trunk: str  # a label for the row name
    config: str  # relative to the repository
    num_classes: int
    size: tuple[int, int]
    batch: int
    object_sizes: tuple[float, float]
    device: str = "cpu"
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; CUDA only)
    overrides: dict = field(default_factory=dict)

    def name(self, batch: int | None = None) -> str:
        """The rows' name: "RetinaNet shapes 128px b16" (with the precision on CUDA)."""
        h, w = self.size
        size = f"{h}px" if h == w else f"{h}x{w}"
        precision = f" {self.precision}" if self.device == "cuda" else ""
        return f"{self.detector} {self.trunk} {size} b{self.batch if batch is None else batch}{precision}"

    def batches(self, count: int = 3, batch: int | None = None) -> list[Batch]:
        """``count`` synthetic batches of ``batch`` images (default: the setting's) on the setting's device."""
        return synthetic_batches(size=self.size, batch=self.batch if batch is None else batch,
                                 num_classes=self.num_classes, object_sizes=self.object_sizes, device=self.device,
                                 # torchvision's Faster R-CNN counts background as class 0; its RetinaNet has none
                                 torchvision_label_offset=int(self.detector == "Faster R-CNN"), count=count)


@dataclass(frozen=True)
class ImportSetting:
    """One of torchvision's six at one size: two table rows (train, infer) of torchvision's model against detkit's
    import of its weights (``torchvision_imports.imported_pair``).

    ``size`` (h, w) of every image (torchvision's transform is sized to it: no resizing); ``object_sizes`` the range
    of box sides in pixels; ``overrides`` change both models, nested like detkit's setting groups
    (``{"rpn": {"post_nms_top_n_train": 100}}``; those ``torchvision_imports.torchvision_keywords`` knows).
    """

    arch: str  # a key of ARCHITECTURES
    size: tuple[int, int]
    batch: int
    object_sizes: tuple[float, float]
    device: str = "cpu"
    precision: str = "fp32"
    overrides: dict = field(default_factory=dict)
    num_classes: int = NUM_COCO_LABELS

    def name(self, batch: int | None = None) -> str:
        """The rows' name: "tv:fasterrcnn_resnet50_fpn 320px b2"."""
        h, w = self.size
        size = f"{h}px" if h == w else f"{h}x{w}"
        return f"tv:{self.arch} {size} b{self.batch if batch is None else batch}"

    def batches(self, count: int = 3, batch: int | None = None) -> list[Batch]:
        """``count`` synthetic batches of ``batch`` images (default: the setting's); torchvision's labels are
        detkit's + 1 for all six (91 outputs, background 0)."""
        return synthetic_batches(size=self.size, batch=self.batch if batch is None else batch,
                                 num_classes=self.num_classes, object_sizes=self.object_sizes, device=self.device,
                                 torchvision_label_offset=1, count=count)


# the ResNet-50 quick rows: fewer proposals and RoIs and a narrow box head keep a smoke step short
QUICK_FEWER_ROIS = {"rpn": {"post_nms_top_n_train": 100, "post_nms_top_n_test": 100},
                    "roi": {"sampling": {"batch_size_per_image": 64}}}
QUICK_R50_FASTER_RCNN = {**QUICK_FEWER_ROIS, "roi": {**QUICK_FEWER_ROIS["roi"], "representation_size": 256}}
# the six imports on the CPU: sizes torchvision's 320 px MobileNet works at, a cost two shared cores can afford
IMPORT_SIZE, IMPORT_BATCH, IMPORT_OBJECTS = (320, 320), 1, (16, 160)


def import_settings(quick: bool) -> list[ImportSetting]:
    """The six torchvision architectures on the CPU (quick: 64 px, fewer RoIs on the Faster R-CNN sides)."""
    if quick:
        return [ImportSetting(arch, (64, 64), 1, (12, 48), overrides={} if "retinanet" in arch else QUICK_FEWER_ROIS)
                for arch in ARCHITECTURES]
    return [ImportSetting(arch, IMPORT_SIZE, IMPORT_BATCH, IMPORT_OBJECTS) for arch in ARCHITECTURES]


def settings(quick: bool, cuda: bool, cpu: bool = True) -> list[Setting | ImportSetting]:
    """The benchmark's settings: CPU rows (the two shapes configs, ResNet-50-FPN at 512 px, torchvision's six
    imported), then CUDA rows."""
    retina_shapes = ("RetinaNet", "shapes", "configs/retinanet_shapes.yaml", 3)
    faster_shapes = ("Faster R-CNN", "shapes", "configs/faster_rcnn_shapes.yaml", 3)
    retina_r50 = ("RetinaNet", "R50-FPN", "configs/retinanet_r50_fpn_coco.yaml", 80)
    faster_r50 = ("Faster R-CNN", "R50-FPN", "configs/faster_rcnn_r50_fpn_coco.yaml", 80)
    rows: list[Setting | ImportSetting] = []
    if cpu and quick:
        rows += [Setting(*retina_shapes, (64, 64), 2, (8, 32)), Setting(*faster_shapes, (64, 64), 2, (8, 32)),
                 Setting(*retina_r50, (64, 64), 1, (12, 48)),
                 Setting(*faster_r50, (64, 64), 1, (12, 48), overrides=QUICK_R50_FASTER_RCNN)]
    elif cpu:
        rows += [Setting(*retina_shapes, (128, 128), 16, (8, 64)), Setting(*faster_shapes, (128, 128), 16, (8, 64)),
                 Setting(*retina_r50, (512, 512), 2, (16, 256)), Setting(*faster_r50, (512, 512), 2, (16, 256))]
    if cpu:
        rows += import_settings(quick)
    if cuda:
        size, batch, objects = ((128, 192), 2, (16, 96)) if quick else ((800, 1333), 8, (32, 512))
        for precision in ("fp32", "bf16"):
            rows += [Setting(*retina_r50, size, batch, objects, "cuda", precision),
                     Setting(*faster_r50, size, batch, objects, "cuda", precision,
                             QUICK_R50_FASTER_RCNN if quick else {})]
    return rows


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` put in, nested dicts merged key by key (neither argument is changed)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def detkit_model(setting: Setting) -> nn.Module:
    """detkit's detector from the setting's config and overrides, as training builds it, with random weights
    (the backbone's pretrained weights are not loaded: nothing is downloaded)."""
    values = yaml.safe_load((REPOSITORY / setting.config).read_text())
    detector = values["model"]["detector"]
    init_args = merged(detector.get("init_args") or {}, setting.overrides)
    init_args["backbone"] = {**init_args.get("backbone", {}), "weights": None}
    values["model"]["detector"] = {**detector, "init_args": init_args}
    return build_detector(RunConfig(values, setting.config, explicit=True), num_classes=setting.num_classes)


def build_pair(setting: Setting | ImportSetting) -> tuple[nn.Module, nn.Module]:
    """(detkit model, torchvision model) of the setting, on its device: detkit's config model and its torchvision
    twin (the same trunk and head weights), or torchvision's architecture and detkit's import (the same weights)."""
    if isinstance(setting, ImportSetting):
        ours, theirs = imported_pair(setting.arch, setting.size, setting.overrides)
    else:
        torch.manual_seed(0)
        ours = detkit_model(setting)
        theirs = torchvision_twin(ours, setting.size)
    return ours.to(setting.device), theirs.to(setting.device)


def check_pair(setting: Setting | ImportSetting, ours: nn.Module, theirs: nn.Module, batch: Batch
               ) -> Check | WeightsCheck:
    """The pair's check on one batch: ``architecture_check`` of a twin, ``weights_check`` of an import."""
    if isinstance(setting, ImportSetting):
        return weights_check(ours, theirs, setting.arch, batch)
    return architecture_check(ours, theirs, batch)


def contenders(ours: nn.Module, theirs: nn.Module, batches: list[Batch],
               setting: Setting | ImportSetting) -> list[Contender]:
    """detkit's and torchvision's contender: the same batches, the same optimizer (SGD, momentum 0.9)."""
    def call_ours(i: int, training: bool):
        batch = batches[i % len(batches)]
        return ours(batch.images, batch.image_sizes, batch.targets if training else None)

    def call_theirs(i: int, training: bool):
        batch = batches[i % len(batches)]
        return theirs(batch.tv_images, batch.tv_targets if training else None)

    return [contender(model, call, device=setting.device, precision=setting.precision)
            for model, call in ((ours, call_ours), (theirs, call_theirs))]


@dataclass
class Row:
    """One line of the table: images/s and peak MB of detkit and torchvision for one setting and phase."""

    name: str
    device: str
    ours: float  # images/s
    theirs: float
    ours_mb: float | None
    theirs_mb: float | None
    check: Check | WeightsCheck | None  # the pair's check (None when the row failed)
    error: str = ""

    @property
    def same(self) -> bool:
        """The pair passed its check (same architecture; for an import, same weights)."""
        return self.check is not None and self.check.same

    @property
    def ratio(self) -> float:
        """detkit images/s / torchvision images/s."""
        return self.ours / self.theirs


def run_setting(setting: Setting | ImportSetting, batch: int, warmup: int, steps: int, memory_steps: int,
                log: Callable[[str], None]) -> list[Row]:
    """Build the pair, check it, measure inference (weights still identical) then training: two rows, train first."""
    ours, theirs = build_pair(setting)
    batches = setting.batches(batch=batch)
    check = check_pair(setting, ours, theirs, batches[0])
    log(f"{setting.name(batch)}: {check}")
    pair = contenders(ours, theirs, batches, setting)
    rows = []
    for phase in ("infer", "train"):
        (ours_s, ours_mb), (theirs_s, theirs_mb) = measure(pair, phase, setting.device, warmup, steps, memory_steps)
        rows.append(Row(f"{setting.name(batch)} {phase}", setting.device, batch / ours_s, batch / theirs_s,
                        ours_mb, theirs_mb, check))
    return rows[::-1]


def failed_rows(setting: Setting | ImportSetting, batch: int, error: Exception) -> list[Row]:
    """The two rows of a setting that failed, with the error's first line."""
    message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:120]
    return [Row(f"{setting.name(batch)} {phase}", setting.device, math.nan, math.nan, None, None, None, message)
            for phase in ("train", "infer")]


def run_with_fallback(setting: Setting | ImportSetting, warmup: int, steps: int, memory_steps: int,
                      log: Callable[[str], None]) -> list[Row]:
    """``run_setting``; on CUDA, halve the batch until it fits, and report other failures as rows."""
    batch = setting.batch
    while True:
        out_of_memory = False
        try:
            return run_setting(setting, batch, warmup, steps, memory_steps, log)
        except torch.cuda.OutOfMemoryError:
            if setting.device != "cuda" or batch == 1:
                raise
            out_of_memory = True
        except Exception as error:  # noqa: BLE001 - a failing CUDA row should not cost the other rows
            if setting.device != "cuda":
                raise
            return failed_rows(setting, batch, error)
        finally:
            if setting.device == "cuda":  # free the failed try's models before the next one
                gc.collect()
                torch.cuda.empty_cache()
        if out_of_memory:
            log(f"{setting.name(batch)}: out of memory, trying batch {batch // 2}")
            batch //= 2


NAME_WIDTH = 56  # the longest row name: "tv:fasterrcnn_mobilenet_v3_large_320_fpn 320px b1 train"
HEADER = (f"{'row':<{NAME_WIDTH}} {'device':<6} {'detkit img/s':>12} {'tv img/s':>10} {'ratio':>6} "
          f"{'detkit peak MB':>14} {'tv peak MB':>10}  same")


def format_row(row: Row) -> str:
    """The row's line of the table (under HEADER)."""
    if row.error:
        return f"{row.name:<{NAME_WIDTH}} {row.device:<6} failed: {row.error}"

    def mb(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    return (f"{row.name:<{NAME_WIDTH}} {row.device:<6} {row.ours:>12.1f} {row.theirs:>10.1f} {row.ratio:>6.2f} "
            f"{mb(row.ours_mb):>14} {mb(row.theirs_mb):>10}  {'yes' if row.same else 'NO'}")


def worst_line(rows: list[Row]) -> str:
    """``worst ratio <x> (<row>)`` over the CPU rows."""
    cpu = [row for row in rows if row.device == "cpu" and not row.error]
    if not cpu:
        return "worst ratio n/a (no CPU rows)"
    worst = min(cpu, key=lambda row: row.ratio)
    return f"worst ratio {worst.ratio:.2f} ({worst.name})"


def run_model_benchmark(*, quick: bool = False, warmup: int | None = None, steps: int | None = None,
                        memory_steps: int | None = None, cuda: bool = True, cpu: bool = True, only: str = "",
                        score_threshold: float | None = None, print_line: Callable[[str], None] = print,
                        log: Callable[[str], None] = print) -> list[Row]:
    """Print the table (a header, one line per row, the worst CPU ratio) through ``print_line`` and return its rows.

    warmup, steps, memory_steps: per model and phase (default 3, 10, 2; quick 1, 2, 1). cuda, cpu: which rows
    (CUDA rows only where a GPU is present). only: the settings whose row name contains this text.
    score_threshold: both models' inference score threshold instead of the configs'. ``log`` gets each pair's
    architecture check and the batch fallbacks. Torch's CPU thread count is the caller's.
    """
    warmup = warmup if warmup is not None else (1 if quick else 3)
    steps = steps if steps is not None else (2 if quick else 10)
    memory_steps = memory_steps if memory_steps is not None else (1 if quick else 2)
    cuda = cuda and torch.cuda.is_available()
    print_line(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} CPU "
               "threads" + (f", {torch.cuda.get_device_name()}" if cuda else "")
               + f"; medians of {steps} steps after {warmup} warm-up, alternating; "
               "ratio = detkit / torchvision images/s")
    print_line(HEADER)
    print_line("-" * len(HEADER))
    rows: list[Row] = []
    for setting in settings(quick, cuda, cpu=cpu):
        if only.lower() not in setting.name().lower():
            continue
        if score_threshold is not None:
            setting = dataclasses.replace(setting, overrides=merged(
                setting.overrides, {"inference": {"score_threshold": score_threshold}}))
        for row in run_with_fallback(setting, warmup, steps, memory_steps, log):
            rows.append(row)
            print_line(format_row(row))
    print_line(worst_line(rows))
    return rows
